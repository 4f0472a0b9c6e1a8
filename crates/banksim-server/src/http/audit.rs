//! `/api/v1/audit-logs` and `/api/v1/events`: the audit trail and the event log, for admins.

use axum::Json;
use axum::extract::State;
use banksim_store::{AuditQuery, AuditRecord, EventRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::pagination::page_limit;
use crate::http::transactions::parse_instant;
use crate::replica::MinLsn;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_logs)).routes(routes!(list_events))
}

/// Filters and paging of the audit trail.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only by this actor.
    actor_id: Option<Uuid>,
    /// Only on this kind of entity (`transaction`, `schedule`).
    entity_type: Option<String>,
    /// Only on this entity.
    entity_id: Option<String>,
    /// Only this action (`transaction.transfer`, `schedule.pause`, …).
    action: Option<String>,
    /// Only at or after (RFC 3339).
    #[param(format = DateTime, example = "2030-01-31T09:00:00Z")]
    since: Option<String>,
    /// Only at or before (RFC 3339).
    #[param(format = DateTime, example = "2030-01-31T09:00:00Z")]
    until: Option<String>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Order of the trail.
    id: i64,
    /// Who (null for the system).
    actor_id: Option<Uuid>,
    /// What.
    action: String,
    /// On what kind of entity.
    entity_type: String,
    /// On which entity.
    entity_id: Option<String>,
    /// `success` or why it was refused.
    outcome: String,
    /// Before/after details.
    details: serde_json::Value,
    /// The client's IP.
    ip: Option<String>,
    /// The client's user agent.
    user_agent: Option<String>,
    /// The request id.
    request_id: Option<String>,
    /// The trace id of the request (`X-Trace-ID`) or job run that wrote it; null for entries written before trace
    /// ids were kept.
    #[schema(example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    trace_id: Option<String>,
    /// When.
    created_at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            actor_id: r.actor_id,
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            outcome: r.outcome,
            details: r.details,
            ip: r.ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            trace_id: r.trace_id,
            created_at: r.created_at,
        }
    }
}

/// A page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    audit_logs: Vec<AuditEntry>,
    /// Page size used.
    limit: u32,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The audit trail, newest first (admin).
#[utoipa::path(get, path = "/audit-logs", tag = "admin", params(AuditParams, MinLsn), security(("bearer" = [])), responses(
    (status = 200, body = AuditPage),
    (status = 400, description = "`invalid_parameter` or `invalid_timestamp`", body = ErrorBody),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
))]
pub async fn list_audit_logs(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    min_lsn: MinLsn,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = page_limit(params.limit)?;
    let before_id = params
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().map_err(|_| ApiError::parameter("cursor", "is not a cursor returned by this route")))
        .transpose()?;
    let query = AuditQuery {
        actor_id: params.actor_id,
        entity_type: params.entity_type,
        entity_id: params.entity_id,
        action: params.action,
        since: parse_instant("since", params.since.as_deref())?,
        until: parse_instant("until", params.until.as_deref())?,
        limit,
        before_id,
    };
    let entries = state.lagging_reads(&admin, min_lsn).list_audit(&query).await?;
    let next_cursor = (entries.len() == limit as usize).then(|| entries.last().map(|e| e.id.to_string())).flatten();
    Ok(Json(AuditPage { audit_logs: entries.into_iter().map(Into::into).collect(), limit, next_cursor }))
}

/// Paging of the event log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events after this sequence number (default 0: from the start).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
}

/// One event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    /// Global order.
    sequence: i64,
    /// `transaction`, `schedule`.
    aggregate_type: String,
    /// The aggregate.
    aggregate_id: Uuid,
    /// The aggregate's version after this event.
    version: i64,
    /// `MoneyTransferred`, `SchedulePaused`, …
    event_type: String,
    /// Content.
    data: serde_json::Value,
    /// When.
    created_at: DateTime<Utc>,
}

impl From<EventRecord> for Event {
    fn from(e: EventRecord) -> Self {
        Self {
            sequence: e.sequence,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            version: e.version,
            event_type: e.event_type,
            data: e.data,
            created_at: e.created_at,
        }
    }
}

/// A page of the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// In log order.
    events: Vec<Event>,
    /// Pass as `after` for the next page.
    next_after: i64,
}

/// The event log in order (admin).
#[utoipa::path(get, path = "/events", tag = "admin", params(EventParams, MinLsn), security(("bearer" = [])), responses(
    (status = 200, body = EventPage),
    (status = 400, description = "`invalid_parameter`", body = ErrorBody),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
))]
pub async fn list_events(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    min_lsn: MinLsn,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = page_limit(params.limit)?;
    let after = params.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::parameter("after", "must be 0 or a sequence number"));
    }
    let events = state.lagging_reads(&admin, min_lsn).list_events(after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.sequence);
    Ok(Json(EventPage { events: events.into_iter().map(Into::into).collect(), next_after }))
}
