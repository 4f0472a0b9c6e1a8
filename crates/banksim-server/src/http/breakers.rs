//! The circuit-breaker report (`/api/v1/metrics/circuit-breakers`, with the metrics: behind `METRICS_TOKEN`) and
//! the demo routes that show a breaker at work (`/api/v1/test/circuit-breaker/*`, switched off with
//! `TEST_BREAKER_ROUTES=false`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::resilience::{BreakerReport, BreakerSettings, CircuitBreaker, Guarded};

/// The demo routes' breakers.
pub const TEST_SUCCESS_SERVICE: &str = "test-success-service";
/// The breaker of the route that always fails.
pub const TEST_FAILURE_SERVICE: &str = "test-failure-service";
/// The breaker of the route whose call outlasts its timeout.
pub const TEST_TIMEOUT_SERVICE: &str = "test-timeout-service";

/// The report route, under `/api/v1` (served with the metrics).
pub fn report_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().nest("/api/v1", OpenApiRouter::new().routes(routes!(circuit_breakers)))
}

/// The demo routes, under `/api/v1`.
pub fn test_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(test_success)).routes(routes!(test_failure)).routes(routes!(test_timeout))
}

/// Registers the demo routes' breakers (the configured threshold and reset timeout).
pub fn register_test_breakers(state: &AppState) {
    let config = &state.config;
    let settings = BreakerSettings {
        failure_threshold: config.test_breaker_failure_threshold,
        reset_timeout: Duration::from_millis(config.test_breaker_reset_timeout_ms),
        half_open_max_calls: 1,
    };
    for name in [TEST_SUCCESS_SERVICE, TEST_FAILURE_SERVICE, TEST_TIMEOUT_SERVICE] {
        state.breakers.register(CircuitBreaker::new(name, settings));
    }
}

/// Every circuit breaker.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerReports {
    /// By name: `database`, `replica` and `redis` when configured, and the demo routes' services.
    circuit_breakers: BTreeMap<&'static str, BreakerReport>,
}

/// Every circuit breaker of this instance: state, calls, failures, opens (GET or POST).
#[utoipa::path(method(get, post), path = "/metrics/circuit-breakers", tag = "service",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, body = BreakerReports),
        (status = 401, description = "`unauthorized`: `METRICS_TOKEN` is set and the request does not carry it", body = ErrorBody),
    ))]
pub async fn circuit_breakers(State(state): State<AppState>) -> Json<BreakerReports> {
    Json(BreakerReports { circuit_breakers: state.breakers.reports() })
}

/// `{"message": …, "status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestAnswer {
    /// What happened.
    #[schema(example = "Circuit breaker test - success")]
    message: &'static str,
    /// Always `ok`.
    status: &'static str,
}

/// A failure of a simulated service.
#[derive(Debug)]
enum Simulated {
    Failed,
    TimedOut,
}

/// Calls the simulated service behind `breaker`, answering 503 `circuit_open` at once while it is open.
async fn through(
    state: &AppState,
    breaker: &'static str,
    call: impl std::future::Future<Output = Result<(), Simulated>>,
) -> Result<Json<TestAnswer>, ApiError> {
    let breaker = state.breakers.get(breaker).ok_or(ErrorCode::NotFound)?;
    match breaker.run(call, |_| true).await {
        Ok(()) => Ok(Json(TestAnswer { message: "Circuit breaker test - success", status: "ok" })),
        Err(Guarded::Open(open)) => Err(ApiError::circuit_open(open.name, open.retry_after)),
        Err(Guarded::Failed(Simulated::Failed)) => Err(ErrorCode::SimulatedFailure.into()),
        Err(Guarded::Failed(Simulated::TimedOut)) => Err(ApiError::new(ErrorCode::RequestTimeout)
            .with_message("Circuit breaker test - the call outlasted the breaker's timeout")),
    }
}

/// A call to a healthy service, through its breaker.
#[utoipa::path(get, path = "/test/circuit-breaker/success", tag = "service",
    responses((status = 200, body = TestAnswer), (status = 503, description = "`circuit_open`", body = ErrorBody)))]
pub async fn test_success(State(state): State<AppState>) -> Result<Json<TestAnswer>, ApiError> {
    through(&state, TEST_SUCCESS_SERVICE, async { Ok(()) }).await
}

/// A call to a service that always fails: 500 until its breaker opens (after `TEST_BREAKER_FAILURE_THRESHOLD`
/// failures), then 503 at once; after `TEST_BREAKER_RESET_TIMEOUT_MS` one trial call goes through.
#[utoipa::path(get, path = "/test/circuit-breaker/failure", tag = "service",
    responses(
        (status = 500, description = "`simulated_failure`", body = ErrorBody),
        (status = 503, description = "`circuit_open`, naming the `service`", body = ErrorBody),
    ))]
pub async fn test_failure(State(state): State<AppState>) -> Result<Json<TestAnswer>, ApiError> {
    through(&state, TEST_FAILURE_SERVICE, async { Err(Simulated::Failed) }).await
}

/// A call that outlasts the breaker's call timeout: cut off with 504, counted as a failure.
#[utoipa::path(get, path = "/test/circuit-breaker/timeout", tag = "service",
    responses(
        (status = 504, description = "`request_timeout`", body = ErrorBody),
        (status = 503, description = "`circuit_open`", body = ErrorBody),
    ))]
pub async fn test_timeout(State(state): State<AppState>) -> Result<Json<TestAnswer>, ApiError> {
    let limit = Duration::from_millis(state.config.test_breaker_call_timeout_ms);
    let slow = tokio::time::sleep(limit * 2);
    through(&state, TEST_TIMEOUT_SERVICE, async move {
        tokio::time::timeout(limit, slow).await.map_err(|_| Simulated::TimedOut)
    })
    .await
}
