//! `/api/v1/admin`: operator tools.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_ledger))
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
