//! The audit entry of a permission refused on a money route.
//!
//! A 403 comes from many places (the `AdminUser` extractor, the party check of a transaction, …), so instead of
//! each of them remembering to write the trail, one layer around every route watches the answers: a 403 on a
//! money route becomes an audit entry `permission.denied` naming the caller, the entity the route is about, the
//! error code as its outcome, and the method and route template as its details (never the raw path, query, body
//! or token). The ledger audits its own refusals (a non-payer's rollback is `transaction.rollback` with outcome
//! `insufficient_permissions`); their answers carry [`RefusalAudited`] and are not recorded again, nor are replays
//! of a stored answer, whose attempt was recorded when it was first made.
//!
//! Refusals on the other routes (user administration, the audit trail and the event log) are not recorded: they
//! neither move money nor reveal any, and recording every 403 would let any user fill the trail with noise.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use banksim_store::{AuditContext, AuditedAction};

use crate::app::AppState;
use crate::auth::CallerSlot;
use crate::error::{ErrorCode, RefusalAudited};
use crate::http::client::ClientContext;
use crate::http::transactions::IDEMPOTENT_REPLAYED;

/// The audit action of a refused permission.
pub const PERMISSION_DENIED: &str = "permission.denied";

/// The money routes (route templates equal to or under these) and the entity type their entries name.
const MONEY_ROUTES: [(&str, &str); 6] = [
    ("/api/v1/transactions", "transaction"),
    ("/api/v1/fx-rates", "fx_rate"),
    ("/api/v1/balances", "balance"),
    ("/api/v1/scheduled-transactions", "schedule"),
    ("/api/v1/admin/ledger/verify", "ledger"),
    ("/api/v1/admin/wallets", "wallet"),
];

/// Longest path parameter kept in an entity id, in characters; a refused caller chooses the path.
const PARAM_CHARS_MAX: usize = 64;

/// Serves the request and, when a money route answers 403, writes its audit entry before the answer leaves. A
/// failure to write the entry is logged and the 403 is sent all the same.
pub async fn audit_permission_refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let money = request.extensions().get::<MatchedPath>().and_then(|path| {
        let route = path.as_str();
        money_entity(route).map(|entity_type| (route.to_owned(), entity_type))
    });
    let Some((route, entity_type)) = money else { return next.run(request).await };
    let (mut parts, body) = request.into_parts();
    let Ok(client) = ClientContext::from_request_parts(&mut parts, &state).await;
    let entity_id = RawPathParams::from_request_parts(&mut parts, &state).await.ok().and_then(|params| {
        let values: Vec<String> =
            params.iter().map(|(_, value)| value.chars().take(PARAM_CHARS_MAX).collect()).collect();
        (!values.is_empty()).then(|| values.join("/"))
    });
    let method = parts.method.clone();
    let caller = CallerSlot::install(&mut parts.extensions);

    let response = next.run(Request::from_parts(parts, body)).await;
    // Refusals the ledger wrote itself, and replays of answers whose attempt was recorded when first made, are
    // already in the trail.
    if response.status() != StatusCode::FORBIDDEN
        || response.extensions().get::<RefusalAudited>().is_some()
        || response.headers().contains_key(IDEMPOTENT_REPLAYED)
    {
        return response;
    }
    let code = response.extensions().get::<ErrorCode>().copied().unwrap_or(ErrorCode::for_status(response.status()));
    let attempt = AuditedAction {
        action: PERMISSION_DENIED.to_owned(),
        entity_type,
        entity_id,
        outcome: code.as_str().to_owned(),
        details: serde_json::json!({"method": method.as_str(), "route": route}),
        context: AuditContext { actor_id: caller.get(), ..client.into() },
    };
    if let Err(error) = state.store.record_action(&attempt, state.clock.now()).await {
        tracing::error!(error.cause = ?error, "the audit entry of a refused permission was not written");
    }
    response
}

/// The entity type of a money route's template, or `None` for any other route.
fn money_entity(route: &str) -> Option<&'static str> {
    MONEY_ROUTES.iter().find_map(|(prefix, entity)| {
        let rest = route.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(*entity)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_routes_are_told_apart_from_their_neighbours() {
        assert_eq!(money_entity("/api/v1/transactions/{id}"), Some("transaction"));
        assert_eq!(money_entity("/api/v1/transactions/{id}/rollback"), Some("transaction"));
        assert_eq!(money_entity("/api/v1/fx-rates/{base}/{quote}"), Some("fx_rate"));
        assert_eq!(money_entity("/api/v1/admin/wallets/{user_id}/{currency}/limits"), Some("wallet"));
        assert_eq!(money_entity("/api/v1/balances"), Some("balance"));
        assert_eq!(money_entity("/api/v1/scheduled-transactions/{id}/pause"), Some("schedule"));
        assert_eq!(money_entity("/api/v1/admin/ledger/verify"), Some("ledger"));
        for other in ["/api/v1/users", "/api/v1/audit-logs", "/api/v1/events", "/api/v1/transactionsx", "/healthz"] {
            assert_eq!(money_entity(other), None, "{other}");
        }
    }
}
