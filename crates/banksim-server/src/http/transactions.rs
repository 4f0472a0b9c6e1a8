//! `/api/v1/transactions`: credit, debit, transfer, exchange, rollback, one transaction, history.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use banksim_core::ledger::{Movement, Settlement, TransactionKind, TransactionRecord, TransactionStatus};
use banksim_core::money::Money;
use banksim_core::user::{Role, User};
use banksim_store::{LedgerOutcome, LedgerRequest, ResponseRenderer, TransactionQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::money::{
    MoneyJson, amount_json, invalid_request, number_json, parse_amount, parse_currency, parse_money_json,
};
use crate::http::pagination::{decode_cursor, encode_cursor, page_limit, page_offset};
use crate::replica::MinLsn;
use crate::service::ledger::{self as ledger_service, MoneyAnswer, MoneyRequest, ValidMovement, fingerprint};

/// Longest description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 500;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_credit))
        .routes(routes!(create_debit))
        .routes(routes!(create_transfer))
        .routes(routes!(create_exchange))
        .routes(routes!(rollback_transaction))
        .routes(routes!(post_transfer))
        .routes(routes!(void_transfer))
        .routes(routes!(list_transactions))
        .routes(routes!(get_transaction))
}

/// A transaction, as every route shows one.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionResponse {
    /// Id.
    id: Uuid,
    /// `credit`, `debit`, `transfer` or `exchange` (a rollback has its original's type).
    #[serde(rename = "type")]
    #[schema(example = "transfer")]
    kind: &'static str,
    /// `success`, `rolled_back`, `failed`, `pending` (a hold of a two-phase transfer), `voided` or `expired` (a hold
    /// released unposted); a 201 always shows the final status.
    #[schema(example = "success")]
    status: &'static str,
    /// The payer (null for a credit).
    from_user_id: Option<Uuid>,
    /// The payee (null for a debit).
    to_user_id: Option<Uuid>,
    /// Exact amount, with the currency's decimals.
    #[schema(value_type = f64, example = 500.00)]
    amount: Box<RawValue>,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    currency: String,
    /// Free text.
    description: Option<String>,
    /// The transaction this one reverses.
    reversal_of: Option<Uuid>,
    /// The transaction that reversed this one.
    reversed_by: Option<Uuid>,
    /// When it was posted.
    created_at: DateTime<Utc>,
    /// When it takes effect: `created_at`, or earlier for a back-dated movement (balances at a time, the history and
    /// statements follow it).
    effective_at: DateTime<Utc>,
    /// Two-phase transfers only: when the hold expires if it is not settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    /// Exchange only: the converted amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    to_amount: Option<Box<RawValue>>,
    /// Exchange only: the target currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    to_currency: Option<String>,
    /// Exchange only: the rate used.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    rate: Option<Box<RawValue>>,
}

impl From<&TransactionRecord> for TransactionResponse {
    fn from(r: &TransactionRecord) -> Self {
        Self {
            id: r.id,
            kind: r.kind.as_str(),
            status: r.status.as_str(),
            from_user_id: r.from_user_id,
            to_user_id: r.to_user_id,
            amount: amount_json(r.amount),
            currency: r.amount.currency().to_string(),
            description: r.description.clone(),
            reversal_of: r.reversal_of,
            reversed_by: r.reversed_by,
            created_at: r.created_at,
            effective_at: r.effective_at,
            expires_at: r.expires_at,
            to_amount: r.to_amount.map(amount_json),
            to_currency: r.to_amount.map(|m| m.currency().to_string()),
            rate: r.rate.map(|rate| number_json(rate.to_string())),
        }
    }
}

/// Header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The HTTP answer of a money request: 201 with the transaction, or a stored answer sent again as it was.
fn respond(answer: MoneyAnswer) -> Response {
    match answer {
        MoneyAnswer::Posted(record) => {
            (StatusCode::CREATED, Json(TransactionResponse::from(record.as_ref()))).into_response()
        }
        MoneyAnswer::Replayed(stored) => replayed(stored),
    }
}

/// The stored answer of a repeated idempotency key, sent again as it was, marked as a replay.
pub fn replayed(stored: banksim_store::StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (HeaderName::from_static(IDEMPOTENT_REPLAYED), HeaderValue::from_static("true")),
    ];
    (status, headers, stored.body).into_response()
}

/// Renders the answers stored under idempotency keys exactly as the live answers are rendered.
#[derive(Debug, Default)]
pub struct TransactionRenderer;

impl ResponseRenderer for TransactionRenderer {
    fn render(&self, request: &LedgerRequest, outcome: &LedgerOutcome) -> (u16, String) {
        let request_id = request.audit.request_id.as_deref().unwrap_or_default();
        let rendered = match outcome {
            LedgerOutcome::Posted(record) => {
                // Settling a hold answers 200 with the hold; every other movement creates a transaction (201).
                let settles = request.work.commands().any(|c| matches!(c.movement, Movement::Settle { .. }));
                let status = if settles { 200 } else { 201 };
                (status, serde_json::to_string(&TransactionResponse::from(record.as_ref())))
            }
            LedgerOutcome::Refused(refusal) => {
                let error = ApiError::from(*refusal);
                (error.code().status().as_u16(), serde_json::to_string(&error.body(request_id)))
            }
            LedgerOutcome::Batch(batch) => crate::http::batch::render(batch, request_id),
            LedgerOutcome::Replayed(stored) => (stored.status, Ok(stored.body.clone())),
        };
        (rendered.0, rendered.1.unwrap_or_else(|_| "{}".to_owned()))
    }
}

/// Credit or debit.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Exact amount as a number (`500.00`) or string (`"500.00"`); > 0, at most the maximum, at most the
    /// currency's decimals.
    #[schema(required = true, schema_with = crate::http::money::amount_schema)]
    amount: Option<Box<RawValue>>,
    /// Enabled ISO 4217 code.
    #[schema(required = true, nullable = false, pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// Free text, at most 500 characters.
    #[schema(max_length = 500, example = "Groceries")]
    description: Option<String>,
    /// Admins only: when the movement takes effect, if earlier than now (RFC 3339; at most
    /// `EFFECTIVE_AT_MAX_AGE_DAYS` ago, never in the future).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, example = "2026-01-31T09:00:00Z")]
    effective_at: Option<String>,
}

/// A transfer.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The recipient (an active user other than the caller).
    #[schema(required = true, nullable = false, example = "550e8400-e29b-41d4-a716-446655440002")]
    to_user_id: Option<Uuid>,
    /// Exact amount.
    #[schema(required = true, schema_with = crate::http::money::amount_schema)]
    amount: Option<Box<RawValue>>,
    /// Enabled ISO 4217 code.
    #[schema(required = true, nullable = false, pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// Free text, at most 500 characters.
    #[schema(max_length = 500, example = "Groceries")]
    description: Option<String>,
    /// `true` holds the amount (a two-phase transfer) until it is posted, voided or expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<bool>,
    /// A hold's lifetime in seconds, 1..2592000 (default 3600); only with `pending: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<u64>,
    /// Admins only, not with `pending: true`: when the transfer takes effect, if earlier than now (RFC 3339; at
    /// most `EFFECTIVE_AT_MAX_AGE_DAYS` ago, never in the future).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, example = "2026-01-31T09:00:00Z")]
    effective_at: Option<String>,
}

/// Default lifetime of a hold, in seconds.
pub const HOLD_TIMEOUT_SECS_DEFAULT: u64 = 3_600;

/// Longest lifetime of a hold, in seconds (30 days).
pub const HOLD_TIMEOUT_SECS_MAX: u64 = 2_592_000;

/// An exchange between two of the caller's wallets.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// Source currency.
    #[schema(required = true, nullable = false, pattern = "^[A-Z]{3}$", example = "USD")]
    from_currency: Option<String>,
    /// Target currency.
    #[schema(required = true, nullable = false, pattern = "^[A-Z]{3}$", example = "EUR")]
    to_currency: Option<String>,
    /// Exact amount in the source currency.
    #[schema(required = true, schema_with = crate::http::money::amount_schema)]
    amount: Option<Box<RawValue>>,
}

/// A description as sent in `field`: at most 500 characters, none of them control characters.
pub(crate) fn description(field: &str, text: Option<String>) -> Result<Option<String>, ApiError> {
    match text {
        Some(text) if text.chars().count() > DESCRIPTION_CHARS_MAX => {
            Err(invalid_request(field, &format!("must be at most {DESCRIPTION_CHARS_MAX} characters")))
        }
        Some(text) if text.chars().any(char::is_control) => {
            Err(invalid_request(field, "must not contain control characters"))
        }
        other => Ok(other),
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|value| value.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidIdempotencyKey)))
        .transpose()
}

/// Adds money to the caller's wallet from outside the bank.
#[utoipa::path(post, path = "/transactions/credit", tag = "transactions", request_body = AmountRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries safe (1–255 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Posted", body = TransactionResponse),
        (status = 400, description = "`invalid_amount`, `unsupported_currency`, `invalid_effective_at`, `invalid_request`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`: `effective_at` from a user who is not an admin", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`write_queue_full` (see Retry-After)", body = ErrorBody),
    ))]
pub async fn create_credit(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    MoneyJson(body): MoneyJson<AmountRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = fingerprint("credit", &body);
    let movement = amount_movement(&state, &caller, body, |user_id, amount| Movement::Credit { user_id, amount });
    let request = MoneyRequest { caller: &caller, audit: client.into(), idempotency_key: key, fingerprint, movement };
    ledger_service::post(&state, request).await.map(respond)
}

/// Takes money out of the caller's wallet; never below zero.
#[utoipa::path(post, path = "/transactions/debit", tag = "transactions", request_body = AmountRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries safe (1–255 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Posted", body = TransactionResponse),
        (status = 400, description = "`insufficient_funds`, `invalid_amount`, `unsupported_currency`, `invalid_effective_at`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`: `effective_at` from a user who is not an admin", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`write_queue_full`", body = ErrorBody),
    ))]
pub async fn create_debit(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    MoneyJson(body): MoneyJson<AmountRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = fingerprint("debit", &body);
    let movement = amount_movement(&state, &caller, body, |user_id, amount| Movement::Debit { user_id, amount });
    let request = MoneyRequest { caller: &caller, audit: client.into(), idempotency_key: key, fingerprint, movement };
    ledger_service::post(&state, request).await.map(respond)
}

/// Moves money from the caller to another active user, atomically; with `pending: true`, holds it instead (201
/// with `status: "pending"` and `expires_at`) until `/transactions/{id}/post`, `/void` or the hold's expiry.
#[utoipa::path(post, path = "/transactions/transfer", tag = "transactions", request_body = TransferRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries safe (1–255 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Posted", body = TransactionResponse),
        (status = 400, description = "`insufficient_funds`, `self_transfer`, `recipient_not_found`, `invalid_amount`, `unsupported_currency`, `invalid_effective_at`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`: `effective_at` from a user who is not an admin", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`write_queue_full`", body = ErrorBody),
    ))]
pub async fn create_transfer(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    MoneyJson(body): MoneyJson<TransferRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = fingerprint("transfer", &body);
    let movement = transfer_movement(&state, &caller, body).await;
    let request = MoneyRequest { caller: &caller, audit: client.into(), idempotency_key: key, fingerprint, movement };
    ledger_service::post(&state, request).await.map(respond)
}

/// Converts between two of the caller's wallets at the current rate (rounded down to the target's minor unit).
#[utoipa::path(post, path = "/transactions/exchange", tag = "transactions", request_body = ExchangeRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries safe (1–255 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Posted", body = TransactionResponse),
        (status = 400, description = "`insufficient_funds`, `same_currency`, `rate_not_found`, `invalid_amount`, `unsupported_currency`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`write_queue_full`", body = ErrorBody),
    ))]
pub async fn create_exchange(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    MoneyJson(body): MoneyJson<ExchangeRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = fingerprint("exchange", &body);
    let movement = exchange_movement(&state, &caller, body).await;
    let request = MoneyRequest { caller: &caller, audit: client.into(), idempotency_key: key, fingerprint, movement };
    ledger_service::post(&state, request).await.map(respond)
}

/// A credit's or debit's movement (`make` builds which), or why the body is invalid.
fn amount_movement(
    state: &AppState,
    caller: &User,
    body: AmountRequest,
    make: fn(Uuid, Money) -> Movement,
) -> Result<ValidMovement, ApiError> {
    let currency = parse_currency(body.currency.as_deref(), "currency", &state.config.enabled_currencies)?;
    let amount = parse_amount(body.amount.as_deref(), currency, state.config.amount_max)?;
    Ok(ValidMovement {
        movement: make(caller.id, amount),
        description: description("description", body.description)?,
        effective_at: ledger_service::effective_at(state, caller, "effective_at", body.effective_at.as_deref())?,
    })
}

/// A transfer's movement, or why it cannot be made (the recipient must be another, active user).
async fn transfer_movement(state: &AppState, caller: &User, body: TransferRequest) -> Result<ValidMovement, ApiError> {
    let to_user_id = body.to_user_id.ok_or_else(|| invalid_request("to_user_id", "is required"))?;
    let currency = parse_currency(body.currency.as_deref(), "currency", &state.config.enabled_currencies)?;
    let amount = parse_amount(body.amount.as_deref(), currency, state.config.amount_max)?;
    if to_user_id == caller.id {
        return Err(ErrorCode::SelfTransfer.into());
    }
    let timeout_secs = match (body.pending, body.timeout_secs) {
        (Some(true), timeout) => Some(timeout.unwrap_or(HOLD_TIMEOUT_SECS_DEFAULT)),
        (_, None) => None,
        (_, Some(_)) => return Err(invalid_request("timeout_secs", "is only allowed with pending: true")),
    };
    if timeout_secs.is_some_and(|secs| !(1..=HOLD_TIMEOUT_SECS_MAX).contains(&secs)) {
        return Err(invalid_request("timeout_secs", "must be between 1 and 2592000"));
    }
    if timeout_secs.is_some() && body.effective_at.is_some() {
        return Err(invalid_request("effective_at", "is not allowed with pending: true (a hold takes effect now)"));
    }
    let effective_at = ledger_service::effective_at(state, caller, "effective_at", body.effective_at.as_deref())?;
    ledger_service::check_recipient(state, to_user_id).await?;
    let movement = match timeout_secs {
        Some(secs) => {
            let lifetime = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
            Movement::Hold { from_user_id: caller.id, to_user_id, amount, expires_at: state.clock.now() + lifetime }
        }
        None => Movement::Transfer { from_user_id: caller.id, to_user_id, amount },
    };
    Ok(ValidMovement { movement, description: description("description", body.description)?, effective_at })
}

/// An exchange's movement at the current rate, or why it cannot be made.
async fn exchange_movement(state: &AppState, caller: &User, body: ExchangeRequest) -> Result<ValidMovement, ApiError> {
    let enabled = &state.config.enabled_currencies;
    let from = parse_currency(body.from_currency.as_deref(), "from_currency", enabled)?;
    let to = parse_currency(body.to_currency.as_deref(), "to_currency", enabled)?;
    let amount = parse_amount(body.amount.as_deref(), from, state.config.amount_max)?;
    if from == to {
        return Err(ErrorCode::SameCurrency.into());
    }
    let rate = state.store.fx_rate(from, to).await?.ok_or(ErrorCode::RateNotFound)?.rate;
    let movement = Movement::Exchange { user_id: caller.id, amount, to_currency: to, rate };
    Ok(ValidMovement { movement, description: None, effective_at: None })
}

/// Reverses a transaction with a compensating one (admins: any; users: their own debits and transfers). Once
/// only; a rollback cannot be rolled back.
#[utoipa::path(post, path = "/transactions/{id}/rollback", tag = "transactions",
    params(
        ("id" = Uuid, Path, description = "The transaction to reverse"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries safe (1–255 characters)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The compensating transaction", body = TransactionResponse),
        (status = 400, description = "`insufficient_funds`, `not_reversible`, `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`transaction_not_found`", body = ErrorBody),
        (status = 409, description = "`already_rolled_back` or `idempotency_key_reused`", body = ErrorBody),
    ))]
pub async fn rollback_transaction(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let movement =
        Movement::Rollback { original_id: id, actor_id: caller.id, actor_is_admin: caller.role == Role::Admin };
    let request = MoneyRequest {
        caller: &caller,
        audit: client.into(),
        idempotency_key: idempotency_key(&headers)?,
        fingerprint: fingerprint("rollback", &id),
        movement: Ok(ValidMovement { movement, description: None, effective_at: None }),
    };
    ledger_service::post(&state, request).await.map(respond)
}

/// The body of a post: the part of the hold to pay (default: all of it).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostTransferRequest {
    /// Exact amount, at most the hold's; the rest goes back to the payer.
    #[schema(schema_with = crate::http::money::amount_schema)]
    #[serde(default)]
    amount: Option<Box<RawValue>>,
}

/// Settles a hold of the caller's (or any, for an admin): `settlement` says how.
async fn settle_hold(
    state: &AppState,
    caller: &User,
    client: ClientContext,
    headers: &HeaderMap,
    id: Uuid,
    route: &str,
    amount: Option<&RawValue>,
) -> Result<Response, ApiError> {
    let hold = ledger_service::find(state, caller, id).await?;
    let (Some(payee_id), Some(_)) = (hold.to_user_id, hold.expires_at) else {
        return Err(ErrorCode::TransferNotPending.into());
    };
    let currency = hold.amount.currency();
    let settlement = match route {
        "void" => Settlement::Void,
        _ => {
            Settlement::Post(amount.map(|raw| parse_amount(Some(raw), currency, state.config.amount_max)).transpose()?)
        }
    };
    let movement = Movement::Settle {
        hold_id: id,
        payee_id,
        currency,
        settlement,
        actor_id: caller.id,
        actor_is_admin: caller.role == Role::Admin,
    };
    let request = MoneyRequest {
        caller,
        audit: client.into(),
        idempotency_key: idempotency_key(headers)?,
        fingerprint: fingerprint(route, &(id, amount.map(RawValue::get))),
        movement: Ok(ValidMovement { movement, description: None, effective_at: None }),
    };
    Ok(match ledger_service::post(state, request).await? {
        MoneyAnswer::Posted(record) => {
            (StatusCode::OK, Json(TransactionResponse::from(record.as_ref()))).into_response()
        }
        MoneyAnswer::Replayed(stored) => replayed(stored),
    })
}

/// Posts a hold (payer or admin): pays the payee the whole hold, or `amount` of it and releases the rest.
#[utoipa::path(post, path = "/transactions/{id}/post", tag = "transactions",
    params(
        ("id" = Uuid, Path, description = "The hold (a transfer made with `pending: true`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe (1–255 characters)"),
    ),
    request_body(content = PostTransferRequest, description = "Optional: `{}` or no body posts the whole hold"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The transfer, now `success` with the amount posted", body = TransactionResponse),
        (status = 400, description = "`invalid_amount` (more than the hold, or not an amount), `balance_limit_exceeded`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`transaction_not_found`", body = ErrorBody),
        (status = 409, description = "`transfer_not_pending` (posted, voided, expired, or not a hold) or `idempotency_key_reused`", body = ErrorBody),
    ))]
pub async fn post_transfer(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: PostTransferRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PostTransferRequest::default()
    } else {
        parse_money_json(&body)?
    };
    settle_hold(&state, &caller, client, &headers, id, "post", body.amount.as_deref()).await
}

/// Voids a hold (payer, payee or admin): the whole amount goes back to the payer.
#[utoipa::path(post, path = "/transactions/{id}/void", tag = "transactions",
    params(
        ("id" = Uuid, Path, description = "The hold (a transfer made with `pending: true`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe (1–255 characters)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The transfer, now `voided`", body = TransactionResponse),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`transaction_not_found`", body = ErrorBody),
        (status = 409, description = "`transfer_not_pending` or `idempotency_key_reused`", body = ErrorBody),
    ))]
pub async fn void_transfer(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    settle_hold(&state, &caller, client, &headers, id, "void", None).await
}

/// One transaction, for a party to it or an admin.
#[utoipa::path(get, path = "/transactions/{id}", tag = "transactions",
    params(("id" = Uuid, Path, description = "Transaction id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TransactionResponse),
        (status = 400, description = "`invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`: not a party", body = ErrorBody),
        (status = 404, description = "`transaction_not_found`", body = ErrorBody),
    ))]
pub async fn get_transaction(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TransactionResponse>, ApiError> {
    let record = ledger_service::find(&state, &caller, id).await?;
    Ok(Json(TransactionResponse::from(&record)))
}

/// Filters and paging of the history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
    /// Rows to skip (ignored with `cursor`).
    offset: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
    /// `credit`, `debit`, `transfer` or `exchange`.
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = "^(credit|debit|transfer|exchange)$", example = "transfer")]
    kind: Option<String>,
    /// `success`, `rolled_back`, `failed` or `pending`.
    #[param(pattern = "^(success|rolled_back|failed|pending)$", example = "success")]
    status: Option<String>,
    /// ISO 4217 code.
    #[param(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// Only at or after this instant (RFC 3339).
    #[param(format = DateTime, example = "2030-01-31T09:00:00Z")]
    since: Option<String>,
    /// Only at or before this instant (RFC 3339).
    #[param(format = DateTime, example = "2030-01-31T09:00:00Z")]
    until: Option<String>,
}

/// A page of transactions.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionList {
    /// Newest first.
    transactions: Vec<TransactionResponse>,
    /// Page size used.
    limit: u32,
    /// Offset used (0 with a cursor).
    offset: u64,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Parses an optional RFC 3339 instant (any offset, years 1 to 9999) of a query.
pub fn parse_instant(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        banksim_core::clock::parse_instant(t)
            .map_err(|message| ApiError::new(ErrorCode::InvalidTimestamp).with_message(format!("{field} {message}")))
    })
    .transpose()
}

/// The caller's transactions, as payer or payee, newest first.
#[utoipa::path(get, path = "/transactions/history", tag = "transactions", params(HistoryParams, MinLsn),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TransactionList),
        (status = 400, description = "`invalid_parameter`, `invalid_timestamp`, `unsupported_currency`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ))]
pub async fn list_transactions(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    min_lsn: MinLsn,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<TransactionList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let before = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let offset = if before.is_some() { 0 } else { page_offset(params.offset)? };
    let kind = params
        .kind
        .as_deref()
        .map(|k| k.parse::<TransactionKind>().map_err(|m| ApiError::parameter("type", m)))
        .transpose()?;
    let status = params
        .status
        .as_deref()
        .map(|s| s.parse::<TransactionStatus>().map_err(|m| ApiError::parameter("status", m)))
        .transpose()?;
    let currency = match params.currency.as_deref() {
        Some(code) => Some(parse_currency(Some(code), "currency", &state.config.enabled_currencies)?),
        None => None,
    };
    let query = TransactionQuery {
        user_id: caller.id,
        kind,
        status,
        currency,
        since: parse_instant("since", params.since.as_deref())?,
        until: parse_instant("until", params.until.as_deref())?,
        limit,
        offset,
        before,
    };
    let records = state.lagging_reads(&caller, min_lsn).list_transactions(&query).await?;
    let next_cursor =
        (records.len() == limit as usize).then(|| records.last().map(|r| encode_cursor(r.created_at, r.id))).flatten();
    Ok(Json(TransactionList {
        transactions: records.iter().map(TransactionResponse::from).collect(),
        limit,
        offset,
        next_cursor,
    }))
}
