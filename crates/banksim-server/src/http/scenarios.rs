//! `/api/v1/admin/scenarios`: simulation mode's scenario runner (see [`crate::service::scenarios`]). Admin only;
//! without `SIMULATION_MODE` it answers 404 like the other simulation routes, and without a runner installed (a
//! server not started by `banksim serve`) 503 `scenario_runner_unavailable`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use banksim_core::FieldError;
use banksim_store::{AuditContext, AuditedAction};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::money::MoneyJson;
use crate::http::simulation::SimulationMode;
use crate::service::scenarios::{RunState, RunStatus, ScenarioRefusal, ScenarioRun, Scenarios};

/// Most simulated users of one run: each registers and logs in (a deliberately slow password hash).
pub const USERS_MAX: u32 = 10_000;
/// Most concurrent connections of one run: the generator shares the server's cores.
pub const CONNECTIONS_MAX: u32 = 256;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Most requests of one run.
pub const REQUESTS_MAX: u64 = 10_000_000;
/// The largest seed: one a JavaScript number still holds exactly (2^53 − 1).
const SEED_MAX: u64 = (1 << 53) - 1;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_scenario_run, start_scenario_run, stop_scenario_run))
}

/// A run to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRunRequest {
    /// The traffic, as `banksim simulate --scenario` names it (`GET` lists them under `scenarios`).
    #[schema(example = "transfer")]
    scenario: String,
    /// Simulated users (default 10). They register themselves (or log in, when an earlier run with the same seed
    /// registered them) from the server's own address, past the per-address auth limit (docs/simulation.md).
    #[schema(minimum = 2, maximum = 10_000, example = 10)]
    users: Option<u32>,
    /// Concurrent connections (default 4).
    #[schema(minimum = 1, maximum = 256, example = 4)]
    connections: Option<u32>,
    /// How long to send traffic: whole numbers of `h`, `m`, `s` (`30s`, `2m`, `1m30s`), at most `1h`. At least one
    /// of `duration` and `requests`; with both, the run stops at whichever comes first.
    #[schema(pattern = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", min_length = 2, example = "30s")]
    duration: Option<String>,
    /// How many requests to send in all (at most 10 000 000).
    #[schema(minimum = 1, maximum = 10_000_000, example = 1000)]
    requests: Option<u64>,
    /// Seed of the user names and of every random choice (default 42, at most 2^53 − 1).
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991.0, example = 42)]
    seed: Option<u64>,
}

impl ScenarioRunRequest {
    /// The run asked for, or every problem with the body.
    fn parse(self, known: &[&'static str]) -> Result<ScenarioRun, ApiError> {
        let mut errors = Vec::new();
        if !known.contains(&self.scenario.as_str()) {
            errors.push(FieldError::new("scenario", format!("unknown scenario; one of: {}", known.join(", "))));
        }
        let users = self.users.unwrap_or(10);
        if !(2..=USERS_MAX).contains(&users) {
            errors.push(FieldError::new("users", format!("from 2 to {USERS_MAX}")));
        }
        let connections = self.connections.unwrap_or(4);
        if !(1..=CONNECTIONS_MAX).contains(&connections) {
            errors.push(FieldError::new("connections", format!("from 1 to {CONNECTIONS_MAX}")));
        }
        let duration = self.duration.as_deref().map(parse_run_length).transpose();
        let duration = duration.unwrap_or_else(|problem| {
            errors.push(FieldError::new("duration", problem));
            None
        });
        if self.requests.is_some_and(|requests| !(1..=REQUESTS_MAX).contains(&requests)) {
            errors.push(FieldError::new("requests", format!("from 1 to {REQUESTS_MAX}")));
        }
        if self.duration.is_none() && self.requests.is_none() {
            errors.push(FieldError::new("duration", "give duration, requests or both"));
        }
        let seed = self.seed.unwrap_or(42);
        if seed > SEED_MAX {
            errors.push(FieldError::new("seed", "at most 9007199254740991 (2^53 - 1)"));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors).recode(ErrorCode::ValidationFailed, ErrorCode::InvalidRequest));
        }
        Ok(ScenarioRun { scenario: self.scenario, users, connections, duration, requests: self.requests, seed })
    }
}

/// A run length with the clock's duration grammar, but only hours, minutes and seconds, and at most an hour.
fn parse_run_length(text: &str) -> Result<Duration, String> {
    let expected = "whole numbers of h, m, s (as 30s, 2m, 1m30s), at most 1h";
    if text.contains(['w', 'd']) {
        return Err(format!("{text:?}: {expected}"));
    }
    let length = banksim_core::clock::parse_duration(text).map_err(|_| format!("{text:?}: {expected}"))?;
    let length = length.to_std().map_err(|_| format!("{text:?}: {expected}"))?;
    if length > DURATION_MAX {
        return Err(format!("{text:?}: {expected}"));
    }
    Ok(length)
}

/// Where the run stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStateView {
    /// No run since the server started.
    Idle,
    /// Setting up its users or sending traffic.
    Running,
    /// Asked to stop: reading the balances back and reporting.
    Stopping,
    /// Over: see `report` (or `error`).
    Finished,
}

/// A run as asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScenarioRunView {
    /// The scenario.
    #[schema(example = "transfer")]
    scenario: String,
    /// Simulated users.
    users: u32,
    /// Concurrent connections.
    connections: u32,
    /// The run's length in seconds, if it has one.
    duration_secs: Option<u64>,
    /// The run's request count, if it has one.
    requests: Option<u64>,
    /// The seed.
    seed: u64,
}

/// The scenario runner of this instance: the current or last run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScenarioStatus {
    /// Where the run stands.
    state: RunStateView,
    /// The scenarios this server can run.
    #[schema(example = json!(["transfer", "hot", "mixed"]))]
    scenarios: Vec<&'static str>,
    /// The current or last run (null while idle).
    run: Option<ScenarioRunView>,
    /// Whether the run was asked to stop before its end.
    stop_requested: bool,
    /// Milliseconds since the run started, or how long it lasted once finished.
    elapsed_ms: u64,
    /// The report of a finished run: the object `banksim simulate --json` prints (`passed`, `requests_per_sec`,
    /// `latency_ms`, `failures`, …).
    #[schema(value_type = Option<Object>)]
    report: Option<serde_json::Value>,
    /// Why a finished run could not be made (the server unreachable, users that could not register, …).
    error: Option<String>,
}

impl ScenarioStatus {
    fn of(scenarios: &Scenarios, status: RunStatus) -> Self {
        let state = match status.state {
            RunState::Idle => RunStateView::Idle,
            RunState::Running => RunStateView::Running,
            RunState::Stopping => RunStateView::Stopping,
            RunState::Finished => RunStateView::Finished,
        };
        let run = status.run.map(|run| ScenarioRunView {
            scenario: run.scenario,
            users: run.users,
            connections: run.connections,
            duration_secs: run.duration.map(|length| length.as_secs()),
            requests: run.requests,
            seed: run.seed,
        });
        Self {
            state,
            scenarios: scenarios.names(),
            run,
            stop_requested: status.stop_requested,
            elapsed_ms: u64::try_from(status.elapsed.as_millis()).unwrap_or(u64::MAX),
            report: status.report,
            error: status.error,
        }
    }
}

/// The runner of this server, when `banksim serve` installed one.
fn runner(state: &AppState) -> Result<Arc<Scenarios>, ApiError> {
    state.scenarios.clone().ok_or_else(|| ApiError::new(ErrorCode::ScenarioRunnerUnavailable))
}

/// The current or last scenario run of this instance (simulation mode, admin).
#[utoipa::path(get, path = "/admin/scenarios", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = ScenarioStatus),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
    (status = 503, description = "`scenario_runner_unavailable`: this server was not started by `banksim serve`", body = ErrorBody),
))]
pub async fn get_scenario_run(
    State(state): State<AppState>,
    _mode: SimulationMode,
    _admin: AdminUser,
) -> Result<Json<ScenarioStatus>, ApiError> {
    let scenarios = runner(&state)?;
    Ok(Json(ScenarioStatus::of(&scenarios, scenarios.status())))
}

/// Starts a `banksim simulate` scenario against this server in the background (simulation mode, admin): its users
/// register (or log in), are funded, and send the scenario's traffic until `duration` or `requests`; then the
/// balances are read back and money conservation is checked. One run at a time per instance; `GET` follows it.
#[utoipa::path(post, path = "/admin/scenarios", tag = "admin", request_body = ScenarioRunRequest,
    security(("bearer" = [])), responses(
    (status = 202, description = "The run has started", body = ScenarioStatus),
    (status = 400, description = "`invalid_request`: an unknown scenario, a count or length out of range, neither `duration` nor `requests`", body = ErrorBody),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
    (status = 409, description = "`scenario_running`: a run is under way; stop it first", body = ErrorBody),
    (status = 503, description = "`scenario_runner_unavailable`: this server was not started by `banksim serve`", body = ErrorBody),
))]
pub async fn start_scenario_run(
    State(state): State<AppState>,
    _mode: SimulationMode,
    AdminUser(admin): AdminUser,
    client: ClientContext,
    MoneyJson(body): MoneyJson<ScenarioRunRequest>,
) -> Result<(axum::http::StatusCode, Json<ScenarioStatus>), ApiError> {
    let scenarios = runner(&state)?;
    let run = body.parse(&scenarios.names())?;
    tracing::info!(user.id = %admin.id, scenario = %run.scenario, users = run.users, connections = run.connections,
        "scenario run started");
    let status = scenarios.start(run).map_err(|refusal| match refusal {
        ScenarioRefusal::Running => ApiError::new(ErrorCode::ScenarioRunning),
    })?;
    let status = ScenarioStatus::of(&scenarios, status);
    let context = AuditContext { actor_id: Some(admin.id), ..client.into() };
    record(&state, "simulation.scenario.start", serde_json::json!({ "run": status.run }), context).await;
    Ok((axum::http::StatusCode::ACCEPTED, Json(status)))
}

/// Stops the scenario run under way (simulation mode, admin) and waits up to 10 s for its report (the balances are
/// read back and checked first); without a run under way it changes nothing. Answers the run's status.
#[utoipa::path(delete, path = "/admin/scenarios", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "The run's status: `finished` with its report, or `stopping` if it has not ended within 10 s", body = ScenarioStatus),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
    (status = 503, description = "`scenario_runner_unavailable`: this server was not started by `banksim serve`", body = ErrorBody),
))]
pub async fn stop_scenario_run(
    State(state): State<AppState>,
    _mode: SimulationMode,
    AdminUser(admin): AdminUser,
    client: ClientContext,
) -> Result<Json<ScenarioStatus>, ApiError> {
    let scenarios = runner(&state)?;
    let was_running = scenarios.status().state == RunState::Running;
    let status = ScenarioStatus::of(&scenarios, scenarios.stop().await);
    tracing::info!(user.id = %admin.id, "scenario run stop asked");
    if was_running {
        let context = AuditContext { actor_id: Some(admin.id), ..client.into() };
        let details = serde_json::json!({ "run": status.run, "state": status.state });
        record(&state, "simulation.scenario.stop", details, context).await;
    }
    Ok(Json(status))
}

/// The audit entry of a start or a stop: a run moves real money on the ledger, so who started and stopped it
/// belongs in the trail. The run has started (or stopped) whatever happens here, so a failure is logged.
async fn record(state: &AppState, action: &str, details: serde_json::Value, context: AuditContext) {
    let entry = AuditedAction::succeeded(action, "scenario", details, context);
    if let Err(error) = state.store.record_action(&entry, state.clock.now()).await {
        tracing::error!(error.cause = ?error, action, "the audit entry of a scenario run was not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lengths_are_hours_minutes_and_seconds_up_to_an_hour() {
        assert_eq!(parse_run_length("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_run_length("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_run_length("1h"), Ok(DURATION_MAX));
        for text in ["", "0s", "1d", "2w", "1h1s", "30", "1.5s", "s"] {
            assert!(parse_run_length(text).is_err(), "{text:?} should be refused");
        }
    }
}
