//! `/api/v1/fx-rates`: read the exchange rates; admins set them.

use axum::Json;
use axum::extract::State;
use banksim_core::currency::Currency;
use banksim_core::money::Rate;
use banksim_store::{FxRate, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{AdminUser, AuthUser};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::ApiPath;
use crate::http::money::{MoneyJson, amount_text, invalid_request, number_json, parse_currency};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_fx_rates)).routes(routes!(put_fx_rate))
}

/// One rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct FxRateResponse {
    /// From.
    #[schema(example = "USD")]
    base: String,
    /// To.
    #[schema(example = "EUR")]
    quote: String,
    /// Units of `quote` per unit of `base`, exact.
    #[schema(value_type = f64, example = 0.92)]
    rate: Box<RawValue>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

impl From<FxRate> for FxRateResponse {
    fn from(rate: FxRate) -> Self {
        Self {
            base: rate.base.to_string(),
            quote: rate.quote.to_string(),
            rate: number_json(rate.rate.to_string()),
            updated_at: rate.updated_at,
        }
    }
}

/// Every rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct FxRates {
    /// By base, then quote.
    rates: Vec<FxRateResponse>,
}

/// The exchange rates.
#[utoipa::path(get, path = "/fx-rates", tag = "fx", security(("bearer" = [])), responses(
    (status = 200, body = FxRates),
    (status = 401, description = "No valid access token", body = ErrorBody),
))]
pub async fn list_fx_rates(State(state): State<AppState>, _caller: AuthUser) -> Result<Json<FxRates>, ApiError> {
    let rates = state.store.fx_rates().await?;
    Ok(Json(FxRates { rates: rates.into_iter().map(Into::into).collect() }))
}

/// A new rate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRateRequest {
    /// Positive exact decimal (number or string), at most 12 decimals.
    #[schema(required = true, schema_with = crate::http::fx::rate_schema)]
    rate: Option<Box<RawValue>>,
}

/// The OpenAPI schema of a rate: a positive JSON number, or a string of digits with at most 12 decimals.
pub fn rate_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Number]))
        .pattern(Some(r"^[0-9]{1,16}(\.[0-9]{1,12})?$"))
        .exclusive_minimum(Some(0))
        .description(Some("Positive exact decimal, as a JSON number or a string, at most 12 decimals"))
        .examples([serde_json::json!("0.92")])
        .build()
}

/// Sets a rate (admin).
#[utoipa::path(put, path = "/fx-rates/{base}/{quote}", tag = "fx",
    params(
        ("base" = String, Path, pattern = "^[A-Z]{3}$", example = "USD", description = "From (ISO 4217)"),
        ("quote" = String, Path, pattern = "^[A-Z]{3}$", example = "EUR", description = "To (ISO 4217)"),
    ),
    request_body = PutRateRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = FxRateResponse),
        (status = 400, description = "`invalid_request` (also for a rate that would let a cycle of exchanges create money), `unsupported_currency`, `same_currency`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    ))]
pub async fn put_fx_rate(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath((base, quote)): ApiPath<(String, String)>,
    MoneyJson(body): MoneyJson<PutRateRequest>,
) -> Result<Json<FxRateResponse>, ApiError> {
    let enabled = &state.config.enabled_currencies;
    let base: Currency = parse_currency(Some(&base), "base", enabled)?;
    let quote: Currency = parse_currency(Some(&quote), "quote", enabled)?;
    if base == quote {
        return Err(ErrorCode::SameCurrency.into());
    }
    let raw = body.rate.ok_or_else(|| invalid_request("rate", "is required"))?;
    let rate = Rate::parse(&amount_text(&raw)?).map_err(|e| invalid_request("rate", &e.to_string()))?;
    let saved = match state.store.put_fx_rate(FxRate { base, quote, rate, updated_at: state.clock.now() }).await {
        Err(StoreError::RateCycle(cycle)) => {
            let path: Vec<String> = cycle.iter().map(ToString::to_string).collect();
            let message = format!(
                "at {rate}, exchanging {} would create money (the product of the rates around it exceeds 1)",
                path.join(" → ")
            );
            return Err(invalid_request("rate", &message));
        }
        other => other?,
    };
    tracing::info!(fx.base = %base, fx.quote = %quote, fx.rate = %rate, "exchange rate set");
    Ok(Json(saved.into()))
}
