//! `POST /api/v1/transactions/batch`: many credits, debits and transfers in one request and one database
//! transaction — all or nothing (`atomic: true`), or each item on its own.
//!
//! What is wrong with the request itself (its shape, an item's amount or currency, a user naming another payer)
//! refuses the whole batch before anything moves. What the ledger decides (funds, limits, the recipient) is an
//! item's own outcome.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use banksim_core::ledger::{LedgerError, Movement};
use banksim_core::money::Money;
use banksim_core::user::{Role, User};
use banksim_store::BatchOutcome;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::config::BATCH_MAX_LIMIT;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::extract::read_json;
use crate::http::money::{amount_text, invalid_amount, invalid_request, parse_currency};
use crate::http::transactions::{TransactionResponse, description, idempotency_key, replayed};
use crate::service::ledger::{self as ledger_service, BatchAnswer, BatchRequest, ValidMovement, fingerprint};

/// Request bytes allowed per item of a batch: a batch's body may be this many times the largest `BATCH_MAX`
/// (4 MiB) when that is more than `BODY_LIMIT_BYTES`. Bounded by the largest setting rather than the one in force,
/// so that a batch of too many items is told so (400) rather than refused for its size.
pub const BODY_BYTES_PER_ITEM: usize = 512;

/// The routes of this module. The body limit of the batch route is its own (see [`BODY_BYTES_PER_ITEM`]).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_batch)).layer(axum::extract::DefaultBodyLimit::disable())
}

/// A batch.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// `true`: every item is posted or none is (one refusal → 400 `batch_failed`); `false`: each item on its own.
    #[schema(required = true, nullable = false, example = true)]
    atomic: Option<bool>,
    /// The items, in order: 1 to `BATCH_MAX` (1,000 unless the server sets another, up to 8,190).
    #[schema(required = true, nullable = false, min_items = 1, max_items = 1000)]
    transactions: Option<Vec<BatchItem>>,
}

/// The kind of a batch item.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchItemKind {
    /// Money in from outside the bank.
    Credit,
    /// Money out of the bank.
    Debit,
    /// From a payer to a payee.
    Transfer,
}

/// One movement of a batch.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// `credit`, `debit` or `transfer`.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false)]
    kind: Option<BatchItemKind>,
    /// Exact amount.
    #[schema(required = true, schema_with = crate::http::money::amount_schema)]
    amount: Option<Box<RawValue>>,
    /// Enabled ISO 4217 code.
    #[schema(required = true, nullable = false, pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// The payee of a transfer (required) or, for an admin, of a credit (default: the caller).
    #[schema(nullable = false)]
    to_user_id: Option<Uuid>,
    /// Admins only: the payer of a debit or transfer (default: the caller).
    #[schema(nullable = false)]
    from_user_id: Option<Uuid>,
    /// Free text, at most 500 characters.
    #[schema(max_length = 500, example = "Salary")]
    description: Option<String>,
    /// Admins only: when the movement takes effect, if earlier than now (RFC 3339; at most
    /// `EFFECTIVE_AT_MAX_AGE_DAYS` ago, never in the future).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, example = "2026-01-31T09:00:00Z")]
    effective_at: Option<String>,
}

/// The answer of a batch that went through: each item's result, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// One per item.
    results: Vec<BatchItemResult>,
}

/// What became of one item.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemResult {
    /// The item's place in the request, from 0.
    index: usize,
    /// `success` or `failed`.
    #[schema(example = "success")]
    status: &'static str,
    /// The transaction, when posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<TransactionResponse>,
    /// Why it was not posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<BatchItemError>,
}

/// Why an item was not posted.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemError {
    /// The stable code (`insufficient_funds`, `recipient_not_found`, …; `batch_failed` for an item of a refused
    /// atomic batch that was itself fine).
    #[schema(example = "insufficient_funds")]
    error_code: &'static str,
    /// For people.
    error: String,
}

/// An error answer of the batch route: the usual error body, and for `batch_failed` every item's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchErrorBody {
    #[serde(flatten)]
    error: ErrorBody,
    /// `batch_failed` only: one per item.
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<BatchItemResult>>,
}

/// Posts up to `BATCH_MAX` credits, debits and transfers in one database transaction. Users move their own money;
/// admins may name any payer and payee (payroll, seeding). One `Idempotency-Key` covers the whole batch.
#[utoipa::path(post, path = "/transactions/batch", tag = "transactions", request_body = BatchBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries of the whole batch safe (1–255 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Applied: every item of an atomic batch posted, or each item's own outcome", body = BatchResponse),
        (status = 400, description = "`batch_failed` (atomic, an item was refused: nothing applied; see `results`), `invalid_amount`, `unsupported_currency`, `invalid_effective_at`, `invalid_request`", body = BatchErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`: a user named another payer, credited another user or sent `effective_at`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`write_queue_full` (see Retry-After)", body = ErrorBody),
    ))]
pub async fn create_batch(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = state.config.body_limit_bytes.max(BATCH_MAX_LIMIT * BODY_BYTES_PER_ITEM);
    let body: BatchBody = read_json(request, limit)
        .await
        .map_err(|error| error.recode(ErrorCode::ValidationFailed, ErrorCode::InvalidRequest))?;
    let idempotency_key = idempotency_key(&headers)?;
    let fingerprint = fingerprint("batch", &body);
    let request_id = client.request_id.clone().unwrap_or_default();
    let items = match body.atomic {
        Some(_) => batch_items(&state, &caller, body.transactions).await,
        None => Err(invalid_request("atomic", "is required")),
    };
    let request = BatchRequest {
        caller: &caller,
        audit: client.into(),
        idempotency_key,
        fingerprint,
        items,
        // Without `atomic` the request is refused before the ledger: this value is never used.
        atomic: body.atomic.unwrap_or(true),
    };
    Ok(match ledger_service::post_batch(&state, request).await? {
        BatchAnswer::Done(outcome) => {
            let (status, body) = render(&outcome, &request_id);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = body.map_err(ApiError::internal)?;
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        BatchAnswer::Replayed(stored) => replayed(stored),
    })
}

/// Checks every item: the movements (or an item's own refusal), or why the batch as a whole is refused.
async fn batch_items(
    state: &AppState,
    caller: &User,
    items: Option<Vec<BatchItem>>,
) -> Result<Vec<Result<ValidMovement, LedgerError>>, ApiError> {
    let items = items.ok_or_else(|| invalid_request("transactions", "is required"))?;
    let batch_max = state.config.batch_max;
    if !(1..=batch_max).contains(&items.len()) {
        return Err(invalid_request("transactions", &format!("must hold 1 to {batch_max} items")));
    }
    let mut movements = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        movements.push(item_movement(state, caller, index, item).await?);
    }
    Ok(movements)
}

/// One item's movement; `Err` inside when the recipient is not an active user (the item's own refusal).
async fn item_movement(
    state: &AppState,
    caller: &User,
    index: usize,
    item: BatchItem,
) -> Result<Result<ValidMovement, LedgerError>, ApiError> {
    let field = |name: &str| format!("transactions[{index}].{name}");
    let kind = item.kind.ok_or_else(|| invalid_request(&field("type"), "is required"))?;
    let currency = parse_currency(item.currency.as_deref(), &field("currency"), &state.config.enabled_currencies)?;
    let raw = item.amount.as_deref().ok_or_else(|| invalid_request(&field("amount"), "is required"))?;
    let amount = Money::parse(&amount_text(raw)?, currency, state.config.amount_max)
        .map_err(|e| invalid_amount(&format!("{}: {e}", field("amount"))))?;
    let description = description(&field("description"), item.description)?;
    let effective_at =
        ledger_service::effective_at(state, caller, &field("effective_at"), item.effective_at.as_deref())?;
    let is_admin = caller.role == Role::Admin;
    let named = |user_id: Option<Uuid>, name: &str| -> Result<Uuid, ApiError> {
        match user_id {
            Some(id) if id != caller.id && !is_admin => Err(ApiError::new(ErrorCode::InsufficientPermissions)
                .with_message(format!("{}: only an admin may name another user", field(name)))),
            Some(id) => Ok(id),
            None => Ok(caller.id),
        }
    };
    let not_on = |user_id: Option<Uuid>, name: &str| match user_id {
        Some(_) => Err(invalid_request(&field(name), &format!("is not allowed on a {}", kind_name(kind)))),
        None => Ok(()),
    };
    let (movement, payee) = match kind {
        BatchItemKind::Credit => {
            not_on(item.from_user_id, "from_user_id")?;
            let user_id = named(item.to_user_id, "to_user_id")?;
            (Movement::Credit { user_id, amount }, Some(user_id))
        }
        BatchItemKind::Debit => {
            not_on(item.to_user_id, "to_user_id")?;
            (Movement::Debit { user_id: named(item.from_user_id, "from_user_id")?, amount }, None)
        }
        BatchItemKind::Transfer => {
            let to_user_id = item.to_user_id.ok_or_else(|| invalid_request(&field("to_user_id"), "is required"))?;
            let from_user_id = named(item.from_user_id, "from_user_id")?;
            (Movement::Transfer { from_user_id, to_user_id, amount }, Some(to_user_id))
        }
    };
    // Money only goes to active users; the caller is one (a credit to oneself needs no lookup).
    if let Some(payee) = payee.filter(|payee| *payee != caller.id)
        && ledger_service::check_recipient(state, payee).await.is_err()
    {
        return Ok(Err(LedgerError::RecipientNotFound));
    }
    Ok(Ok(ValidMovement { movement, description, effective_at }))
}

fn kind_name(kind: BatchItemKind) -> &'static str {
    match kind {
        BatchItemKind::Credit => "credit",
        BatchItemKind::Debit => "debit",
        BatchItemKind::Transfer => "transfer",
    }
}

/// The status and body of a batch's outcome (also stored under its idempotency key): 201 with each item's result,
/// or 400 `batch_failed` with them when an atomic batch was refused.
pub fn render(batch: &BatchOutcome, request_id: &str) -> (u16, serde_json::Result<String>) {
    let results: Vec<BatchItemResult> = batch
        .items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Ok(record) if batch.applied => BatchItemResult {
                index,
                status: "success",
                transaction: Some(TransactionResponse::from(record)),
                error: None,
            },
            Ok(_) => failed(index, "batch_failed", "not applied: another item of the atomic batch was refused"),
            Err(refusal) => failed(index, refusal.code(), &refusal.to_string()),
        })
        .collect();
    if batch.applied {
        return (StatusCode::CREATED.as_u16(), serde_json::to_string(&BatchResponse { results }));
    }
    let first = results.iter().find(|r| r.error.as_ref().is_some_and(|e| e.error_code != "batch_failed"));
    let mut error = ApiError::new(ErrorCode::BatchFailed);
    if let Some(first) = first.and_then(|r| r.error.as_ref().map(|e| (r.index, e.error_code))) {
        error = error.with_message(format!("item {} was refused ({}); nothing was applied", first.0, first.1));
    }
    let body = BatchErrorBody { error: error.body(request_id), results: Some(results) };
    (error.code().status().as_u16(), serde_json::to_string(&body))
}

fn failed(index: usize, error_code: &'static str, message: &str) -> BatchItemResult {
    BatchItemResult {
        index,
        status: "failed",
        transaction: None,
        error: Some(BatchItemError { error_code, error: message.to_owned() }),
    }
}
