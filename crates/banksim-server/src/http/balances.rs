//! `/api/v1/balances`: the caller's wallets now, over time, and at an instant.

use axum::Json;
use axum::extract::State;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionKind;
use banksim_core::money::Money;
use banksim_store::{HistoryQuery, Wallet};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, AuthUser};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::money::{amount_json, parse_currency};
use crate::http::pagination::page_limit;
use crate::http::transactions::parse_instant;
use crate::replica::MinLsn;
use crate::service::statements::{daily_statements, statement_range};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_balances))
        .routes(routes!(list_user_balances))
        .routes(routes!(get_current_balance))
        .routes(routes!(get_balance_history))
        .routes(routes!(get_balance_at_time))
        .routes(routes!(get_balance_statements))
}

/// Which currency (default USD).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CurrencyParam {
    /// ISO 4217 code (default USD).
    #[param(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
}

fn currency_or_usd(state: &AppState, code: Option<&str>) -> Result<Currency, ApiError> {
    parse_currency(Some(code.unwrap_or("USD")), "currency", &state.config.enabled_currencies)
}

/// A wallet's balance now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentBalance {
    /// The caller.
    user_id: Uuid,
    /// Exact balance.
    #[schema(value_type = f64, example = 1250.75)]
    amount: Box<RawValue>,
    /// ISO 4217 code.
    currency: String,
    /// Last movement; null for a wallet that never had one.
    last_updated_at: Option<DateTime<Utc>>,
    /// Posted, held and spendable amounts.
    #[serde(flatten)]
    figures: BalanceFigures,
}

/// What every balance object carries beside `amount`: the posted balance (equal to `amount`), what the wallet's
/// pending transfers hold, and what it may still spend (`posted − pending_out + overdraft`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceFigures {
    /// The posted balance (equal to `amount`).
    #[schema(value_type = f64, example = 1250.75)]
    posted: Box<RawValue>,
    /// Held by the wallet's pending transfers (two-phase transfers not yet posted, voided or expired).
    #[schema(value_type = f64, example = 0)]
    pending_out: Box<RawValue>,
    /// What the wallet may still spend: `posted − pending_out + overdraft`.
    #[schema(value_type = f64, example = 1250.75)]
    available: Box<RawValue>,
}

impl BalanceFigures {
    /// The figures of a wallet (`None`: one that never existed, all zero).
    fn of(wallet: Option<&Wallet>, currency: Currency) -> Self {
        // Held money has left the wallet's ledger balance for the pending account, but is still posted to it.
        let balance = wallet.map_or(0, |w| w.balance_minor);
        let pending = wallet.map_or(0, |w| w.pending_minor);
        let overdraft = wallet.and_then(|w| w.limits.overdraft_minor).unwrap_or(0);
        let money = |minor: i64| amount_json(Money::new(minor, currency));
        Self {
            posted: money(balance.saturating_add(pending)),
            pending_out: money(pending),
            available: money(balance.saturating_add(overdraft)),
        }
    }
}

/// The caller's balance in one currency (0 for a wallet that never existed).
#[utoipa::path(get, path = "/balances/current", tag = "balances", params(CurrencyParam), security(("bearer" = [])),
    responses(
        (status = 200, body = CurrentBalance),
        (status = 400, description = "`unsupported_currency` or `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ))]
pub async fn get_current_balance(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiQuery(params): ApiQuery<CurrencyParam>,
) -> Result<Json<CurrentBalance>, ApiError> {
    let currency = currency_or_usd(&state, params.currency.as_deref())?;
    let wallet = state.balances.current(state.store.as_ref(), caller.id, currency).await?;
    Ok(Json(CurrentBalance {
        user_id: caller.id,
        amount: amount_json(Money::new(wallet.as_ref().map_or(0, |w| w.balance_minor + w.pending_minor), currency)),
        currency: currency.to_string(),
        figures: BalanceFigures::of(wallet.as_ref(), currency),
        last_updated_at: wallet.map(|w| w.updated_at),
    }))
}

/// One wallet.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletBalance {
    /// ISO 4217 code.
    currency: String,
    /// Exact balance.
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    /// Last movement.
    last_updated_at: DateTime<Utc>,
    /// Posted, held and spendable amounts.
    #[serde(flatten)]
    figures: BalanceFigures,
}

/// Every wallet of the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balances {
    /// By currency.
    balances: Vec<WalletBalance>,
}

/// Every wallet of the caller.
#[utoipa::path(get, path = "/balances", tag = "balances", security(("bearer" = [])), responses(
    (status = 200, body = Balances),
    (status = 401, description = "No valid access token", body = ErrorBody),
))]
pub async fn list_balances(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
) -> Result<Json<Balances>, ApiError> {
    Ok(Json(balances_of(&state, caller.id).await?))
}

/// Every wallet of one user (admin): what `GET /balances` shows that user.
#[utoipa::path(get, path = "/users/{id}/balances", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Balances),
        (status = 400, description = "`invalid_parameter`: not a UUID", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
    ))]
pub async fn list_user_balances(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Balances>, ApiError> {
    crate::service::users::get(&state, id).await?;
    Ok(Json(balances_of(&state, id).await?))
}

/// Every wallet of `user_id`, by currency.
async fn balances_of(state: &AppState, user_id: Uuid) -> Result<Balances, ApiError> {
    let wallets = state.store.wallets(user_id, None).await?;
    Ok(Balances {
        balances: wallets
            .into_iter()
            .map(|w| WalletBalance {
                currency: w.currency.to_string(),
                amount: amount_json(Money::new(w.balance_minor + w.pending_minor, w.currency)),
                figures: BalanceFigures::of(Some(&w), w.currency),
                last_updated_at: w.updated_at,
            })
            .collect(),
    })
}

/// Which part of a wallet's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// ISO 4217 code (default USD).
    #[param(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// Most entries, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
    /// Only at or after (RFC 3339).
    #[param(format = DateTime, example = "2030-01-31T09:00:00Z")]
    since: Option<String>,
    /// Only at or before (RFC 3339).
    #[param(format = DateTime, example = "2030-01-31T09:00:00Z")]
    until: Option<String>,
}

/// One movement of a wallet.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// The transaction.
    transaction_id: Uuid,
    /// The caller.
    user_id: Uuid,
    /// The balance in effect right after this movement.
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    /// Signed change.
    #[schema(value_type = f64)]
    change: Box<RawValue>,
    /// ISO 4217 code.
    currency: String,
    /// When it takes effect (the history's order): when it was recorded, or earlier for a back-dated movement.
    timestamp: DateTime<Utc>,
    /// A back-dated movement only: when it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_at: Option<DateTime<Utc>>,
    /// `credit`, `debit`, `transfer_sent`, `transfer_received`, `rollback` or `exchange`.
    #[schema(example = "transfer_sent")]
    reason: &'static str,
}

/// A wallet's movements, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceHistory {
    /// Newest first.
    history: Vec<HistoryItem>,
    /// Page size used.
    limit: u32,
}

/// A wallet's running balance, newest first in effective time (a back-dated movement is listed when it takes
/// effect): each entry is the balance in effect after a movement and the signed change.
#[utoipa::path(get, path = "/balances/historical", tag = "balances", params(HistoryParams, MinLsn),
    security(("bearer" = [])),
    responses(
        (status = 200, body = BalanceHistory),
        (status = 400, description = "`invalid_parameter`, `invalid_timestamp`, `unsupported_currency`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ))]
pub async fn get_balance_history(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    min_lsn: MinLsn,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<BalanceHistory>, ApiError> {
    let currency = currency_or_usd(&state, params.currency.as_deref())?;
    let limit = page_limit(params.limit)?;
    let query = HistoryQuery {
        user_id: caller.id,
        currency,
        limit,
        since: parse_instant("since", params.since.as_deref())?,
        until: parse_instant("until", params.until.as_deref())?,
    };
    let entries = state.lagging_reads(&caller, min_lsn).balance_history(&query).await?;
    let history = entries
        .into_iter()
        .map(|e| HistoryItem {
            transaction_id: e.transaction_id,
            user_id: caller.id,
            amount: amount_json(Money::new(e.balance_after_minor, currency)),
            change: amount_json(Money::new(e.change_minor, currency)),
            currency: currency.to_string(),
            timestamp: e.effective_at,
            recorded_at: (e.created_at != e.effective_at).then_some(e.created_at),
            reason: match (e.is_reversal, e.kind) {
                (true, _) => "rollback",
                (false, TransactionKind::Credit) => "credit",
                (false, TransactionKind::Debit) => "debit",
                (false, TransactionKind::Exchange) => "exchange",
                (false, TransactionKind::Transfer) if e.change_minor < 0 => "transfer_sent",
                (false, TransactionKind::Transfer) => "transfer_received",
            },
        })
        .collect();
    Ok(Json(BalanceHistory { history, limit }))
}

/// Which instant.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtTimeParams {
    /// RFC 3339 instant, any offset.
    #[param(required = true, format = DateTime, example = "2030-01-31T09:00:00Z")]
    timestamp: Option<String>,
    /// ISO 4217 code (default USD).
    #[param(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
}

/// A wallet's balance at an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceAtTime {
    /// The caller.
    user_id: Uuid,
    /// Exact balance after every movement that takes effect at or before `timestamp` (back-dated ones included).
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    /// ISO 4217 code.
    currency: String,
    /// The instant asked for, in UTC.
    timestamp: DateTime<Utc>,
}

/// The exact balance after every movement that takes effect at or before an instant.
#[utoipa::path(get, path = "/balances/at-time", tag = "balances", params(AtTimeParams, MinLsn), security(("bearer" = [])),
    responses(
        (status = 200, body = BalanceAtTime),
        (status = 400, description = "`invalid_timestamp` (missing or not RFC 3339), `unsupported_currency`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ))]
pub async fn get_balance_at_time(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    min_lsn: MinLsn,
    ApiQuery(params): ApiQuery<AtTimeParams>,
) -> Result<Json<BalanceAtTime>, ApiError> {
    let timestamp = parse_instant("timestamp", params.timestamp.as_deref())?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidTimestamp).with_message("timestamp is required (RFC 3339)"))?;
    let currency = currency_or_usd(&state, params.currency.as_deref())?;
    let balance = state.lagging_reads(&caller, min_lsn).balance_at(caller.id, currency, timestamp).await?;
    Ok(Json(BalanceAtTime {
        user_id: caller.id,
        amount: amount_json(Money::new(balance, currency)),
        currency: currency.to_string(),
        timestamp,
    }))
}

/// Which days' statements.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementParams {
    /// First UTC day, `YYYY-MM-DD` (default: 29 days before `to`).
    #[param(format = Date, example = "2026-03-01")]
    from: Option<String>,
    /// Last UTC day, inclusive (default and latest: today). At most 366 days from `from`.
    #[param(format = Date, example = "2026-03-31")]
    to: Option<String>,
    /// Only this currency's wallet (default: every wallet).
    #[param(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
}

/// One wallet's day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyStatement {
    /// The UTC day.
    #[schema(value_type = String, format = Date, example = "2026-03-01")]
    date: NaiveDate,
    /// ISO 4217 code.
    currency: String,
    /// Balance at the start of the day.
    #[schema(value_type = f64, example = 100.00)]
    opening: Box<RawValue>,
    /// Money in during the day.
    #[schema(value_type = f64, example = 50.00)]
    credits: Box<RawValue>,
    /// Money out during the day.
    #[schema(value_type = f64, example = 20.00)]
    debits: Box<RawValue>,
    /// Balance at the end of the day (`opening + credits − debits`).
    #[schema(value_type = f64, example = 130.00)]
    closing: Box<RawValue>,
}

/// Daily statements, by day and then currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyStatements {
    /// One per wallet and day from the wallet's first movement on; quiet days carry the previous closing balance.
    statements: Vec<DailyStatement>,
    /// First day covered.
    #[schema(value_type = String, format = Date)]
    from: NaiveDate,
    /// Last day covered.
    #[schema(value_type = String, format = Date)]
    to: NaiveDate,
}

/// The caller's daily statements (UTC days), built by a projection of the event log; they include every movement
/// made before the request.
#[utoipa::path(get, path = "/balances/statements", tag = "balances", params(StatementParams, MinLsn),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DailyStatements),
        (status = 400, description = "`invalid_parameter` (dates, range), `unsupported_currency`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ))]
pub async fn get_balance_statements(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    min_lsn: MinLsn,
    ApiQuery(params): ApiQuery<StatementParams>,
) -> Result<Json<DailyStatements>, ApiError> {
    let range = statement_range(params.from.as_deref(), params.to.as_deref(), state.clock.now().date_naive())?;
    let currency = match params.currency.as_deref() {
        Some(code) => Some(parse_currency(Some(code), "currency", &state.config.enabled_currencies)?),
        None => None,
    };
    let days = daily_statements(&state, state.lagging_reads(&caller, min_lsn), caller.id, currency, range).await?;
    let amount = |minor, currency| amount_json(Money::new(minor, currency));
    let statements = days
        .into_iter()
        .map(|(currency, day)| DailyStatement {
            date: day.date,
            currency: currency.to_string(),
            opening: amount(day.opening_minor, currency),
            credits: amount(day.credits_minor, currency),
            debits: amount(day.debits_minor, currency),
            closing: amount(day.closing_minor, currency),
        })
        .collect();
    Ok(Json(DailyStatements { statements, from: range.from, to: range.to }))
}
