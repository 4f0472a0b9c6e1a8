//! `/api/v1/admin/clock` and `/api/v1/admin/state-hash`: simulation mode's routes (with `/api/v1/admin/faults`, in
//! [`crate::http::faults`], and `/api/v1/admin/scenarios`, in [`crate::http::scenarios`]). Admin only; without
//! `SIMULATION_MODE` they answer 404, as if they did not exist (before any token is looked at).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use banksim_core::FieldError;
use banksim_core::{ClockChange, ClockMode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::money::MoneyJson;
use crate::service::simulation::{self, ClockReading, SimulationClock};

/// The paths of this module, as the OpenAPI document names them: a server without simulation mode leaves them out of
/// the `/openapi.json` it serves.
pub const PATHS: [&str; 4] =
    ["/api/v1/admin/clock", "/api/v1/admin/faults", "/api/v1/admin/scenarios", "/api/v1/admin/state-hash"];

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_clock, change_clock))
        .routes(routes!(state_hash))
        .merge(crate::http::faults::routes())
        .merge(crate::http::scenarios::routes())
}

/// Simulation mode is on: the extractor of this module's routes, placed before the admin check so that a server
/// without the mode answers 404 to everyone.
pub struct SimulationMode(pub Arc<SimulationClock>);

impl FromRequestParts<AppState> for SimulationMode {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.simulation.clone().map(Self).ok_or_else(|| ApiError::new(ErrorCode::NotFound))
    }
}

/// The server's clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClockView {
    /// What "now" is for every instance: the wall clock's instant, or the virtual one (RFC 3339, UTC).
    #[schema(example = "2030-01-31T09:00:00Z")]
    now: DateTime<Utc>,
    /// `system` (the wall clock; no simulation has set the clock yet) or `virtual` (stands still between moves).
    mode: ClockModeView,
}

/// Which clock "now" comes from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClockModeView {
    /// The wall clock: no simulation has set the clock yet.
    System,
    /// The virtual clock: it stands still between moves.
    Virtual,
}

impl From<ClockReading> for ClockView {
    fn from(reading: ClockReading) -> Self {
        let mode = match reading.mode {
            ClockMode::System => ClockModeView::System,
            ClockMode::Virtual => ClockModeView::Virtual,
        };
        Self { now: reading.now, mode }
    }
}

/// A move of the clock: exactly one of `advance` and `set`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockChangeRequest {
    /// How far to move forward: whole numbers of `w`, `d`, `h`, `m`, `s`, largest unit first, each once (`30d`,
    /// `1d12h`, `45m`); more than zero, at most 36525 days.
    #[schema(pattern = "^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$", min_length = 2, example = "30d")]
    advance: Option<String>,
    /// The instant to move to (RFC 3339, any offset), not before the clock's current one.
    #[schema(format = DateTime, example = "2030-03-31T00:00:00Z")]
    set: Option<String>,
}

impl ClockChangeRequest {
    /// The change asked for, or every problem with the body.
    fn parse(self) -> Result<ClockChange, ApiError> {
        let invalid = |errors: Vec<FieldError>| {
            ApiError::validation(errors).recode(ErrorCode::ValidationFailed, ErrorCode::InvalidRequest)
        };
        match (self.advance, self.set) {
            (Some(advance), None) => banksim_core::clock::parse_duration(&advance)
                .map(ClockChange::Advance)
                .map_err(|e| invalid(vec![FieldError::new("advance", e)])),
            (None, Some(set)) => banksim_core::clock::parse_instant(&set)
                .map(ClockChange::Set)
                .map_err(|e| invalid(vec![FieldError::new("set", e)])),
            (Some(_), Some(_)) => Err(invalid(vec![
                FieldError::new("advance", "give either advance or set, not both"),
                FieldError::new("set", "give either advance or set, not both"),
            ])),
            (None, None) => Err(invalid(vec![FieldError::new(
                "body",
                "give advance (a duration such as 30d) or set (an RFC 3339 instant)",
            )])),
        }
    }
}

/// The server's clock (simulation mode, admin).
#[utoipa::path(get, path = "/admin/clock", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = ClockView),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
))]
pub async fn get_clock(
    State(state): State<AppState>,
    SimulationMode(clock): SimulationMode,
    _admin: AdminUser,
) -> Result<Json<ClockView>, ApiError> {
    Ok(Json(simulation::read(&state, &clock).await?.into()))
}

/// Advances or sets the virtual clock of every instance (simulation mode, admin); never backwards. On the way it
/// stops at each instant where work falls due and runs it there, in time order: every schedule occurrence (each
/// once, whichever instance runs it) and every hold expiry; rows written meanwhile carry the virtual instants.
/// Answers when the clock has reached its target.
#[utoipa::path(post, path = "/admin/clock", tag = "admin", request_body = ClockChangeRequest,
    security(("bearer" = [])), responses(
    (status = 200, description = "The clock where it now stands (`mode: virtual`)", body = ClockView),
    (status = 400, description = "`invalid_request` (a malformed duration or instant, both or neither field, past year 9999) or `clock_backwards`", body = ErrorBody),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
    (status = 409, description = "`clock_busy`: another advance is under way and did not finish within 10 s", body = ErrorBody),
))]
pub async fn change_clock(
    State(state): State<AppState>,
    SimulationMode(clock): SimulationMode,
    AdminUser(admin): AdminUser,
    client: ClientContext,
    MoneyJson(body): MoneyJson<ClockChangeRequest>,
) -> Result<Json<ClockView>, ApiError> {
    let change = body.parse()?;
    let audit = banksim_store::AuditContext { actor_id: Some(admin.id), ..client.into() };
    let reading = simulation::change(&state, &clock, change, audit).await?;
    tracing::info!(user.id = %admin.id, clock.now = %reading.now, "virtual clock changed");
    Ok(Json(reading.into()))
}

/// The state hash: what `banksim hash` prints.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateHashView {
    /// SHA-256 of the canonical dump of users, wallets and transactions (docs/simulation.md), lower-case hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    hash: String,
    /// Users in the dump.
    users: u64,
    /// Wallets in the dump.
    wallets: u64,
    /// Transactions in the dump.
    transactions: u64,
}

/// SHA-256 over a canonical, ordered dump of users, wallets and transactions (simulation mode, admin): the same data
/// gives the same hash on SQLite and PostgreSQL. The format is in docs/simulation.md.
#[utoipa::path(get, path = "/admin/state-hash", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = StateHashView),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
))]
pub async fn state_hash(
    State(state): State<AppState>,
    _mode: SimulationMode,
    _admin: AdminUser,
) -> Result<Json<StateHashView>, ApiError> {
    let hashed = banksim_store::state_hash(state.store.as_ref()).await?;
    Ok(Json(StateHashView {
        hash: hashed.hash,
        users: hashed.users,
        wallets: hashed.wallets,
        transactions: hashed.transactions,
    }))
}
