//! Service routes: liveness, readiness and ping.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Routes under `/api/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ping)).routes(routes!(basic_metrics))
}

/// Routes at the root.
pub fn root_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(readyz)).routes(routes!(root_basic_metrics))
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process is up and answering (any method).
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness and the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` when every dependency answers, `unavailable` when the database does not.
    #[schema(example = "ok")]
    status: &'static str,
    /// One entry per dependency: `ok` or `unavailable`.
    checks: Checks,
}

/// The checked dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// The primary database.
    #[schema(example = "ok")]
    database: &'static str,
}

/// Readiness: 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "A required dependency is unavailable", body = Readiness),
))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.store.ping().await {
        Ok(()) => "ok",
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database unavailable");
            "unavailable"
        }
    };
    let ready = database == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ready { "ok" } else { "unavailable" }, checks: Checks { database } }))
}

/// `{"message": "pong"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pong {
    /// Always `pong`.
    #[schema(example = "pong")]
    message: &'static str,
}

/// Answers `pong`.
#[utoipa::path(get, path = "/ping", tag = "service", responses((status = 200, body = Pong)))]
pub async fn ping() -> Json<Pong> {
    Json(Pong { message: "pong" })
}

/// A JSON summary of the service's counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct BasicMetrics {
    /// Time since start, for people (`1h2m3s`).
    uptime: String,
    /// Time since start, in seconds.
    uptime_seconds: u64,
    /// Money movements waiting for a writer.
    queue_depth: usize,
    /// Money movements committed or refused by the writers since start.
    transactions_processed: u64,
    /// The write path's batching.
    write_batches: WriteBatches,
    /// The database connection pool.
    database: DatabasePool,
    /// The scheduler of this instance.
    scheduler: SchedulerMetrics,
}

/// What the scheduler did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulerMetrics {
    /// Occurrences that moved money.
    executions_succeeded: u64,
    /// Occurrences recorded as failed after their last attempt.
    executions_failed: u64,
    /// Refused attempts (retried or recorded).
    attempts_failed: u64,
    /// Due schedules claimed by the last poll.
    last_claimed: u64,
    /// How long the last claim took, in milliseconds.
    last_claim_ms: f64,
}

/// Group commit at work.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteBatches {
    /// Batches committed since start.
    committed: u64,
    /// Movements in the last batch.
    last_size: u64,
    /// Most movements in one batch so far.
    max_size: u64,
    /// Movements refused with 503 because the queue was full.
    rejected_queue_full: u64,
}

/// Connection pool figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabasePool {
    /// `postgres` or `sqlite`.
    backend: &'static str,
    /// Most connections.
    pool_size: u32,
}

fn basic_metrics_of(state: &AppState) -> BasicMetrics {
    use std::sync::atomic::Ordering::Relaxed;
    let uptime = state.started.elapsed().as_secs();
    let stats = state.writer.stats();
    BasicMetrics {
        uptime: format!("{}h{}m{}s", uptime / 3600, uptime / 60 % 60, uptime % 60),
        uptime_seconds: uptime,
        queue_depth: state.writer.queue_depth(),
        transactions_processed: stats.processed.load(Relaxed),
        write_batches: WriteBatches {
            committed: stats.batches.load(Relaxed),
            last_size: stats.last_batch_size.load(Relaxed),
            max_size: stats.max_batch_size.load(Relaxed),
            rejected_queue_full: stats.rejected_queue_full.load(Relaxed),
        },
        database: DatabasePool { backend: state.store.backend().name(), pool_size: state.config.database_pool_size },
        scheduler: SchedulerMetrics {
            executions_succeeded: state.scheduler_stats.succeeded.load(Relaxed),
            executions_failed: state.scheduler_stats.failed.load(Relaxed),
            attempts_failed: state.scheduler_stats.failed_attempts.load(Relaxed),
            last_claimed: state.scheduler_stats.last_claimed.load(Relaxed),
            last_claim_ms: state.scheduler_stats.last_claim_micros.load(Relaxed) as f64 / 1000.0,
        },
    }
}

/// Counters of the service: uptime, write queue depth and batch sizes, transactions processed (GET or POST).
#[utoipa::path(method(get, post), path = "/metrics/basic", tag = "service", responses((status = 200, body = BasicMetrics)))]
pub async fn basic_metrics(State(state): State<AppState>) -> Json<BasicMetrics> {
    Json(basic_metrics_of(&state))
}

/// The same counters at the root (GET or POST).
#[utoipa::path(method(get, post), path = "/metrics/basic", tag = "service", responses((status = 200, body = BasicMetrics)))]
pub async fn root_basic_metrics(State(state): State<AppState>) -> Json<BasicMetrics> {
    Json(basic_metrics_of(&state))
}
