//! Money on the wire: exact amounts in and out of JSON, and the money routes' body extractor.

use axum::extract::{FromRequest, Request};
use banksim_core::currency::Currency;
use banksim_core::money::{Money, format_minor};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::ApiJson;

/// A JSON body of a money route: like [`ApiJson`], but a body of the wrong shape is a 400 `invalid_request`
/// (API.md: money routes answer bad bodies with 400, other routes with 422).
#[derive(Debug)]
pub struct MoneyJson<T>(pub T);

impl<S, T> FromRequest<S> for MoneyJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        ApiJson::<T>::from_request(request, state).await.map(|ApiJson(value)| Self(value)).map_err(money_body_error)
    }
}

/// Parses a money route's body read by the handler itself (an optional one): as [`MoneyJson`] would.
pub fn parse_money_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    crate::http::extract::parse_json(bytes).map_err(money_body_error)
}

/// A body of the wrong shape is a 400 `invalid_request` on the money routes.
fn money_body_error(error: ApiError) -> ApiError {
    error.recode(ErrorCode::ValidationFailed, ErrorCode::InvalidRequest)
}

/// The exact text of a request amount: a JSON number (`500.00`) or a JSON string (`"500.00"`), never through a
/// float.
pub fn amount_text(raw: &RawValue) -> Result<String, ApiError> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|_| invalid_amount("amount must be a number or a string"))
    } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        Ok(text.to_owned())
    } else {
        Err(invalid_amount("amount must be a number or a string"))
    }
}

/// Parses a request amount exactly, with the currency's decimals and the configured maximum.
pub fn parse_amount(raw: Option<&RawValue>, currency: Currency, max_major: u64) -> Result<Money, ApiError> {
    let raw = raw.ok_or_else(|| invalid_request("amount", "is required"))?;
    let text = amount_text(raw)?;
    Money::parse(&text, currency, max_major).map_err(|e| invalid_amount(&e.to_string()))
}

/// Checks a currency code against the enabled set.
pub fn parse_currency(
    code: Option<&str>,
    field: &str,
    enabled: &banksim_core::currency::CurrencySet,
) -> Result<Currency, ApiError> {
    let code = code.ok_or_else(|| invalid_request(field, "is required"))?;
    let currency = Currency::parse(code)
        .map_err(|e| ApiError::new(ErrorCode::UnsupportedCurrency).with_message(format!("{field}: {e}")))?;
    if !enabled.contains(currency) {
        return Err(ApiError::new(ErrorCode::UnsupportedCurrency)
            .with_message(format!("{field}: {currency} is not enabled (enabled: {enabled})")));
    }
    Ok(currency)
}

/// A 400 `invalid_amount` with `message`.
pub fn invalid_amount(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidAmount).with_message(message.to_owned())
}

/// A 400 `invalid_request` naming one field.
pub fn invalid_request(field: &str, message: &str) -> ApiError {
    ApiError::validation(vec![banksim_core::FieldError::new(field, message)])
        .recode(ErrorCode::ValidationFailed, ErrorCode::InvalidRequest)
}

/// An amount as a JSON number with exactly the currency's decimals (`500.00`, JPY `500`).
pub fn amount_json(money: Money) -> Box<RawValue> {
    number_json(format_minor(money.amount_minor(), money.currency()))
}

/// A decimal text as a raw JSON number.
pub fn number_json(decimal: String) -> Box<RawValue> {
    // Callers pass formatter output (digits, a sign, a point): always a valid JSON number.
    RawValue::from_string(decimal).expect("a formatted decimal is a valid JSON number")
}
/// The OpenAPI schema of a wallet limit: like an amount, but zero is allowed and `null` means none.
pub fn limit_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Number, Type::Null]))
        .pattern(Some(r"^[0-9]{1,16}(\.[0-9]{1,16})?$"))
        .minimum(Some(0))
        .description(Some(
            "Exact non-negative amount, as a JSON number or a string, at most the currency's decimals; null for none",
        ))
        .examples([serde_json::json!("100.00")])
        .build()
}

/// The OpenAPI schema of a request amount: a JSON number, or a string of digits with an optional fraction. What a
/// schema cannot say is checked by the server (400 `invalid_amount`): more decimals than the currency's minor unit,
/// or more than the configured maximum per transaction.
pub fn amount_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Number]))
        .pattern(Some(r"^[0-9]{1,16}(\.[0-9]{1,16})?$"))
        .exclusive_minimum(Some(0))
        .description(Some(
            "Exact amount, as a JSON number (`500.00`) or a string (`\"500.00\"`): more than 0, at most the \
             configured maximum, at most the currency's decimals",
        ))
        .examples([serde_json::json!("500.00")])
        .build()
}
