//! `/api/v1/admin`: operator tools: the ledger's invariant report and wallets' balance limits.

use axum::Json;
use axum::extract::State;
use banksim_core::currency::Currency;
use banksim_core::ledger::Limits;
use banksim_core::money::{Money, parse_limit};
use banksim_store::{AuditContext, LimitsChange, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::extract::ApiPath;
use crate::http::money::{MoneyJson, amount_text, invalid_amount, parse_currency};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_ledger)).routes(routes!(get_wallet_limits, put_wallet_limits))
}

/// A wallet's balance limits, as exact decimal strings (`null`: none).
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletLimits {
    /// The wallet's owner.
    user_id: Uuid,
    /// The wallet's currency.
    #[schema(example = "USD")]
    currency: String,
    /// How far below zero the balance may go (`available = posted − pending_out + overdraft`); null: not at all.
    #[schema(example = "100.00")]
    overdraft: Option<String>,
    /// The highest balance allowed; null: no ceiling.
    #[schema(example = "10000.00")]
    max_balance: Option<String>,
}

impl WalletLimits {
    fn new(user_id: Uuid, currency: Currency, limits: Limits) -> Self {
        let text = |minor: Option<i64>| minor.map(|m| Money::new(m, currency).to_decimal_string());
        Self {
            user_id,
            currency: currency.to_string(),
            overdraft: text(limits.overdraft_minor),
            max_balance: text(limits.max_balance_minor),
        }
    }
}

/// New limits for a wallet; they replace the old ones whole (an absent field is `null`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutLimitsRequest {
    /// Non-negative exact decimal (string or number) with the currency's decimals, or null for none.
    #[schema(schema_with = crate::http::money::limit_schema)]
    #[serde(default)]
    overdraft: Option<Box<RawValue>>,
    /// Non-negative exact decimal (string or number) with the currency's decimals, or null for none.
    #[schema(schema_with = crate::http::money::limit_schema)]
    #[serde(default)]
    max_balance: Option<Box<RawValue>>,
}

/// A limit field: null (or absent) for none, else a non-negative exact decimal.
fn parse_limit_field(raw: Option<&RawValue>, field: &str, currency: Currency) -> Result<Option<i64>, ApiError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => {
            let text = amount_text(raw)?;
            parse_limit(&text, currency).map(Some).map_err(|e| invalid_amount(&format!("{field}: {e}")))
        }
    }
}

/// A wallet's balance limits (admin); a wallet that does not exist has none.
#[utoipa::path(get, path = "/admin/wallets/{user_id}/{currency}/limits", tag = "admin",
    params(
        ("user_id" = Uuid, Path, description = "The wallet's owner"),
        ("currency" = String, Path, pattern = "^[A-Z]{3}$", example = "USD", description = "The wallet's currency (ISO 4217)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, body = WalletLimits),
        (status = 400, description = "`unsupported_currency` or `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
    ))]
pub async fn get_wallet_limits(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath((user_id, currency)): ApiPath<(Uuid, String)>,
) -> Result<Json<WalletLimits>, ApiError> {
    let currency = parse_currency(Some(&currency), "currency", &state.config.enabled_currencies)?;
    if state.store.find_user(user_id).await?.is_none() {
        return Err(ErrorCode::UserNotFound.into());
    }
    let limits = state.store.wallet_limits(user_id, currency).await?;
    Ok(Json(WalletLimits::new(user_id, currency, limits)))
}

/// Sets a wallet's balance limits (admin), opening the wallet if it does not exist. Movements that would take
/// `available` below `−overdraft` are then refused with `insufficient_funds`, and those that would take the balance
/// above `max_balance` with `balance_limit_exceeded`. Limits that the wallet's balance already breaks are refused.
#[utoipa::path(put, path = "/admin/wallets/{user_id}/{currency}/limits", tag = "admin",
    params(
        ("user_id" = Uuid, Path, description = "The wallet's owner"),
        ("currency" = String, Path, pattern = "^[A-Z]{3}$", example = "USD", description = "The wallet's currency (ISO 4217)"),
    ),
    request_body = PutLimitsRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = WalletLimits),
        (status = 400, description = "`invalid_amount`, `invalid_request`, `unsupported_currency`, or `balance_limit_exceeded` (the balance is outside the new limits)", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
    ))]
pub async fn put_wallet_limits(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientContext,
    ApiPath((user_id, currency)): ApiPath<(Uuid, String)>,
    MoneyJson(body): MoneyJson<PutLimitsRequest>,
) -> Result<Json<WalletLimits>, ApiError> {
    let currency = parse_currency(Some(&currency), "currency", &state.config.enabled_currencies)?;
    let limits = Limits {
        overdraft_minor: parse_limit_field(body.overdraft.as_deref(), "overdraft", currency)?,
        max_balance_minor: parse_limit_field(body.max_balance.as_deref(), "max_balance", currency)?,
    };
    let change = LimitsChange { user_id, currency, limits };
    let audit = AuditContext { actor_id: Some(admin.id), ..client.into() };
    let saved = match state.store.set_wallet_limits(&change, &audit, state.clock.now()).await {
        Err(StoreError::NotFound) => return Err(ErrorCode::UserNotFound.into()),
        other => other?,
    };
    // Cached wallets carry their limits: none may outlive the change (a rare admin action; other instances drop
    // theirs when the change bus or SQLite's data version tells them).
    state.balances.empty();
    tracing::info!(wallet.user_id = %user_id, wallet.currency = %currency, "wallet limits set");
    Ok(Json(WalletLimits::new(user_id, currency, saved)))
}

/// The ledger invariant report.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerReport {
    /// Whether every invariant holds.
    ok: bool,
    /// Accounts checked.
    accounts: u64,
    /// Transactions checked.
    transactions: u64,
    /// Postings checked.
    postings: u64,
    /// Every broken invariant, in words; empty when `ok`.
    violations: Vec<String>,
}

/// Checks every ledger invariant (postings sum to zero per currency, balances equal their postings, balances sum
/// to zero per currency, no negative wallet, posting chains, rollbacks linked both ways). Admin only.
#[utoipa::path(get, path = "/admin/ledger/verify", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "The report (`ok: false` lists the violations)", body = LedgerReport),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
))]
pub async fn verify_ledger(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<LedgerReport>, ApiError> {
    let report = state.store.verify_ledger().await?;
    Ok(Json(LedgerReport {
        ok: report.is_sound(),
        accounts: report.accounts,
        transactions: report.transactions,
        postings: report.postings,
        violations: report.violations,
    }))
}
