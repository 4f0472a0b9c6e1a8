//! Service routes: liveness, readiness and ping.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use banksim_core::money::Money;
use banksim_store::Projection;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::money::amount_json;

/// Routes under `/api/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ping))
}

/// Routes at the root.
pub fn root_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(readyz))
}

/// The JSON summaries of the service's counters, at the root and under `/api/v1` (see `http::metrics`).
pub fn basic_metrics_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .nest("/api/v1", OpenApiRouter::new().routes(routes!(basic_metrics)))
        .routes(routes!(root_basic_metrics))
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process is up and answering (any standard method; others get a 405 like every route).
#[utoipa::path(method(get, post, put, delete, patch, head, trace), path = "/healthz", tag = "service",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness and the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` when every dependency answers, `unavailable` when the database does not, `degraded` when an optional
    /// one (Redis, the replica) does not or lags: banksim works on without it.
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
    /// Redis, when `REDIS_URL` is set (absent otherwise). While it is `unavailable` (or its circuit breaker
    /// open), rate limits are counted per instance and other instances' user changes arrive within
    /// `USER_CACHE_TTL_MS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ok")]
    redis: Option<&'static str>,
    /// The read replica, when one is configured: `ok`, `lagging` (further behind than `REPLICA_MAX_LAG_MS`) or
    /// `unavailable`; reads skip it unless `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<crate::replica::ReplicaStatus>,
}

/// Readiness: 200 when the database answers (`degraded` when Redis or the replica does not, or the replica lags),
/// 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "Ready (status `ok`, or `degraded` without an optional dependency)", body = Readiness),
    (status = 503, description = "A required dependency is unavailable", body = Readiness),
))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (database, redis) = tokio::join!(state.store.ping(), redis_check(&state));
    let database = match database {
        Ok(()) => "ok",
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database unavailable");
            "unavailable"
        }
    };
    let replica = state.replica.as_ref().map(crate::replica::Replica::status);
    let ready = database == "ok";
    let degraded = replica.is_some_and(|replica| replica != crate::replica::ReplicaStatus::Ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let degraded = degraded || redis == Some("unavailable");
    let summary = match (ready, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ok",
    };
    (status, Json(Readiness { status: summary, checks: Checks { database, redis, replica } }))
}

/// Redis's state for `/readyz`: none when it is not configured.
async fn redis_check(state: &AppState) -> Option<&'static str> {
    let redis = state.redis.as_ref()?;
    Some(match redis.ping().await {
        Ok(()) => "ok",
        Err(err) => {
            tracing::warn!(error = %err, "readiness: Redis unavailable; running on in-process rate limits");
            "unavailable"
        }
    })
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
    /// Live tokio tasks of this instance (the old service counted goroutines).
    active_tasks: usize,
    /// Money movements waiting for a writer.
    queue_depth: usize,
    /// Money movements committed or refused by the writers since start.
    transactions_processed: u64,
    /// The write path's batching.
    write_batches: WriteBatches,
    /// The database connection pool.
    database: DatabasePool,
    /// The balance cache.
    cache: CacheFigures,
    /// The rate limiter's decisions since start, over every group that is on.
    rate_limit: RateLimitFigures,
    /// The scheduler of this instance.
    scheduler: SchedulerMetrics,
    /// Each projection's place in the event log, by name (`daily_statements`, `system_totals`); empty when the
    /// database cannot be read.
    projections: BTreeMap<&'static str, ProjectionMetrics>,
    /// Per currency, from the `system_totals` projection (as far as it has come): what users and the FX accounts
    /// hold, what came in and went out, movements; empty when the database cannot be read.
    system_totals: BTreeMap<String, CurrencyTotals>,
    /// The read replica, when one is configured: its status, lag, and where reads that may lag went.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<crate::replica::ReplicaSummary>,
}

/// How far a projection is behind the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionMetrics {
    /// The sequence of the last event applied.
    checkpoint: i64,
    /// The sequence of the log's last event.
    head: i64,
    /// Events not yet applied (in sequence numbers).
    lag_events: i64,
    /// How long the oldest event not yet applied has waited, in seconds (0 when caught up).
    lag_seconds: f64,
}

/// One currency's totals across the system.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyTotals {
    /// The sum of every user wallet.
    #[schema(value_type = f64)]
    user_balances: Box<RawValue>,
    /// What the FX accounts hold (exchange rounding and spread).
    #[schema(value_type = f64)]
    fx_holdings: Box<RawValue>,
    /// Money that entered the bank.
    #[schema(value_type = f64)]
    money_in: Box<RawValue>,
    /// Money that left the bank.
    #[schema(value_type = f64)]
    money_out: Box<RawValue>,
    /// Money movements in this currency.
    transactions: i64,
    /// Whether users and FX accounts hold exactly what came in minus what went out.
    balanced: bool,
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

/// How the balance cache does.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheFigures {
    /// What keeps it correct: `in-process, PostgreSQL change bus`, `in-process, SQLite data version` or `off`.
    backend: &'static str,
    /// Reads answered from it.
    hits: u64,
    /// Reads that went to the database and filled it.
    misses: u64,
    /// Reads that went around it (freshness not shown in time, or the cache off).
    bypassed: u64,
    /// hits / (hits + misses + bypassed), 0 before the first read.
    hit_ratio: f64,
}

/// The rate limiter's decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitFigures {
    /// Requests let through.
    allowed: u64,
    /// Requests refused with 429.
    rejected: u64,
}

/// Connection pool figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabasePool {
    /// `postgres` or `sqlite`.
    backend: &'static str,
    /// Most connections.
    pool_size: u32,
    /// Connections open now.
    open: u32,
    /// Open connections waiting for work.
    idle: u32,
    /// Open connections in use.
    in_use: u32,
}

/// Every projection's lag; none if the database cannot be read (metrics never fail).
async fn projection_metrics(state: &AppState) -> BTreeMap<&'static str, ProjectionMetrics> {
    let mut metrics = BTreeMap::new();
    for projection in Projection::ALL {
        match state.store.projection_status(projection).await {
            Ok(status) => {
                let lag_seconds = status.lag(state.clock.now()).as_secs_f64();
                let figures = ProjectionMetrics {
                    checkpoint: status.checkpoint,
                    head: status.head,
                    lag_events: status.lag_events(),
                    lag_seconds,
                };
                metrics.insert(projection.name(), figures);
            }
            Err(err) => tracing::warn!(%projection, error = %err, "metrics: projection status unavailable"),
        }
    }
    metrics
}

/// The system totals by currency code; none if the database cannot be read.
async fn system_totals(state: &AppState) -> BTreeMap<String, CurrencyTotals> {
    let totals = match state.store.system_totals().await {
        Ok(totals) => totals,
        Err(err) => {
            tracing::warn!(error = %err, "metrics: system totals unavailable");
            return BTreeMap::new();
        }
    };
    let amount = |minor, currency| amount_json(Money::new(minor, currency));
    totals
        .into_iter()
        .map(|t| {
            let figures = CurrencyTotals {
                user_balances: amount(t.user_balances_minor, t.currency),
                fx_holdings: amount(t.fx_minor, t.currency),
                money_in: amount(t.money_in_minor, t.currency),
                money_out: amount(t.money_out_minor, t.currency),
                transactions: t.transactions,
                balanced: t.is_balanced(),
            };
            (t.currency.to_string(), figures)
        })
        .collect()
}

async fn basic_metrics_of(state: &AppState) -> BasicMetrics {
    use std::sync::atomic::Ordering::Relaxed;
    let uptime = state.started.elapsed().as_secs();
    let stats = state.writer.stats();
    let scheduler = state.metrics.scheduler();
    BasicMetrics {
        uptime: format!("{}h{}m{}s", uptime / 3600, uptime / 60 % 60, uptime % 60),
        uptime_seconds: uptime,
        active_tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        queue_depth: state.writer.queue_depth(),
        transactions_processed: stats.processed.get(),
        write_batches: WriteBatches {
            committed: stats.batches.get(),
            last_size: stats.last_batch_size.load(Relaxed),
            max_size: stats.max_batch_size.load(Relaxed),
            rejected_queue_full: stats.rejected_queue_full.get(),
        },
        database: {
            let pool = state.store.pool_status();
            DatabasePool {
                backend: state.store.backend().name(),
                pool_size: state.config.database_pool_size,
                open: pool.size,
                idle: pool.idle,
                in_use: pool.size.saturating_sub(pool.idle),
            }
        },
        rate_limit: {
            let (allowed, rejected) = state.rate_limits.decisions();
            RateLimitFigures { allowed, rejected }
        },
        cache: {
            let counters = state.balances.counters();
            let (hits, misses, bypassed) = (counters.hits.get(), counters.misses.get(), counters.bypassed.get());
            let reads = hits + misses + bypassed;
            CacheFigures {
                backend: state.balances.kind(),
                hits,
                misses,
                bypassed,
                hit_ratio: if reads == 0 { 0.0 } else { hits as f64 / reads as f64 },
            }
        },
        scheduler: SchedulerMetrics {
            executions_succeeded: scheduler.succeeded.get(),
            executions_failed: scheduler.failed.get(),
            attempts_failed: scheduler.retried.get() + scheduler.failed.get(),
            last_claimed: scheduler.last_claimed.load(Relaxed),
            last_claim_ms: scheduler.last_claim_micros.load(Relaxed) as f64 / 1000.0,
        },
        projections: projection_metrics(state).await,
        system_totals: system_totals(state).await,
        replica: state.replica.as_ref().map(crate::replica::Replica::summary),
    }
}

/// Counters of the service: uptime, write queue depth and batch sizes, transactions processed, scheduler,
/// projector lag and system totals per currency (GET or POST).
#[utoipa::path(method(get, post), path = "/metrics/basic", tag = "service", responses((status = 200, body = BasicMetrics)))]
pub async fn basic_metrics(State(state): State<AppState>) -> Json<BasicMetrics> {
    Json(basic_metrics_of(&state).await)
}

/// The same counters at the root (GET or POST).
#[utoipa::path(method(get, post), path = "/metrics/basic", tag = "service", responses((status = 200, body = BasicMetrics)))]
pub async fn root_basic_metrics(State(state): State<AppState>) -> Json<BasicMetrics> {
    Json(basic_metrics_of(&state).await)
}
