//! Prometheus metrics: the `banking_*` series that the old service's dashboards read, and what an operator of a
//! payment service needs beside them (write path, ledger, scheduler, projections, pool, rate limits, auth, process).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: a registry per application state (no
//! global recorder, so several servers in one test process keep their figures apart), typed label sets (so a label
//! value can only be one of ours: the route template, never a raw path), and the OpenMetrics text format.
//!
//! Counters and histograms live in one registry and are updated where things happen; gauges that describe the
//! present (queue depth, pool, projection lag, the ledger's balance per currency, process figures) are read when
//! Prometheus scrapes, into a registry of their own for that scrape.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::AppState;

/// The content type of the answer of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `endpoint` of requests that matched no route: one label value for all of them, so that a scan of random paths
/// cannot grow the number of series.
pub const UNMATCHED_ENDPOINT: &str = "unmatched";

/// Labels of `banking_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, …
    pub method: String,
    /// The route template (`/api/v1/transactions/{id}`), or [`UNMATCHED_ENDPOINT`].
    pub endpoint: String,
    /// The answer's status.
    pub status_code: u16,
}

/// Labels of `banking_http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`, …
    pub method: String,
    /// The route template, or [`UNMATCHED_ENDPOINT`].
    pub endpoint: String,
}

/// Labels of `banksim_ledger_movements_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MovementLabels {
    /// `credit`, `debit`, `transfer`, `exchange` or `rollback`.
    pub r#type: &'static str,
    /// `posted`, `refused`, `replayed` or `failed` (no outcome: the database was unavailable or its answer lost).
    pub outcome: &'static str,
}

/// Labels of a counter split by what happened.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub outcome: &'static str,
}

/// Labels of `banksim_ledger_refusals_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The refusal's API error code (`insufficient_funds`, …).
    pub error_code: &'static str,
}

/// Labels of `banksim_cache_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Which cache (`balances`).
    pub cache: &'static str,
    /// `hit`, `miss` or `bypass`.
    pub result: &'static str,
}

/// Labels of `banksim_rate_limit_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// The limited route group (`auth`, `money`, `read`).
    pub group: &'static str,
    /// `allowed` or `limited`.
    pub decision: &'static str,
}

/// Labels of `banksim_rate_limit_fallbacks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The limited route group (`auth`, `money`, `read`).
    pub group: &'static str,
}

/// Labels of `banksim_simulated_faults_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// The fault's kind (`latency`, `error_500`, `error_503`, `timeout_after_commit`, `drop_after_commit`).
    pub kind: &'static str,
}

/// The kinds of movement, for the pre-created series.
pub const MOVEMENT_KINDS: [&str; 5] = ["credit", "debit", "transfer", "exchange", "rollback"];
/// The outcomes of a movement.
pub const MOVEMENT_OUTCOMES: [&str; 4] = ["posted", "refused", "replayed", "failed"];

/// Every metric updated where things happen. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    movements: Family<MovementLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    refresh_reuse: Counter,
    acquire_wait: Histogram,
    writer: WriterMetrics,
    scheduler: SchedulerMetrics,
    auth_rate_limit: RateLimitCounters,
    balance_cache: crate::cache::balances::CacheCounters,
    rate_limit: Family<RateLimitLabels, Counter>,
    rate_limit_fallbacks: Family<GroupLabels, Counter>,
    relay: RelayMetrics,
    simulated_faults: Family<FaultLabels, Counter>,
}

/// The write path's counters and histograms (also read by `/metrics/basic`).
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Movements committed or refused so far (`banking_transactions_processed_total`).
    pub processed: Counter,
    /// Batches committed so far.
    pub batches: Counter,
    /// Movements refused at once because the queue was full.
    pub rejected_queue_full: Counter,
    /// Movements per batch.
    pub batch_size: Histogram,
    /// How long a batch took to commit, in seconds.
    pub commit_seconds: Histogram,
    /// Size of the last batch (for `/metrics/basic`).
    pub last_batch_size: Arc<AtomicU64>,
    /// Largest batch so far (for `/metrics/basic`).
    pub max_batch_size: Arc<AtomicU64>,
}

/// The scheduler's counters (also read by `/metrics/basic`).
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    /// Occurrences that moved money.
    pub succeeded: Counter,
    /// Occurrences recorded as failed after their last attempt.
    pub failed: Counter,
    /// Attempts refused and retried later.
    pub retried: Counter,
    /// Attempts whose outcome the writer could not tell (made again under the same key).
    pub unknown: Counter,
    /// How long claiming due schedules took, in seconds.
    pub claim_seconds: Histogram,
    /// Schedules claimed by the last poll.
    pub last_claimed: Arc<AtomicU64>,
    /// How long the last claim took, in microseconds.
    pub last_claim_micros: Arc<AtomicU64>,
}

/// The outbox relay's counters.
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    /// Events JetStream acknowledged.
    pub published: Counter,
    /// Rounds that stopped on a failure (NATS unreachable, an acknowledgement that did not come, …).
    pub failures: Counter,
}

/// A rate limiter's decisions.
#[derive(Debug, Clone, Default)]
pub struct RateLimitCounters {
    /// Requests let through.
    pub allowed: Counter,
    /// Requests refused with 429.
    pub limited: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, with the label combinations a dashboard reads created at zero (a series that
    /// appears only when first used shows no rate until its second sample).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "banking_http_requests",
            "HTTP requests answered, by route template and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "banking_http_request_duration_seconds",
            "Time to answer an HTTP request",
            http_duration.clone(),
        );

        let writer = WriterMetrics {
            processed: Counter::default(),
            batches: Counter::default(),
            rejected_queue_full: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            last_batch_size: Arc::default(),
            max_batch_size: Arc::default(),
        };
        registry.register(
            "banking_transactions_processed",
            "Money movements committed or refused by the writers",
            writer.processed.clone(),
        );
        registry.register("banksim_writer_batches", "Batches committed by the writers", writer.batches.clone());
        registry.register(
            "banksim_writer_queue_full",
            "Movements refused at once (503) because the write queue was full",
            writer.rejected_queue_full.clone(),
        );
        registry.register(
            "banksim_writer_batch_size",
            "Movements committed per database transaction",
            writer.batch_size.clone(),
        );
        registry.register(
            "banksim_writer_commit_duration_seconds",
            "Time to post and commit one batch",
            writer.commit_seconds.clone(),
        );

        let movements = Family::<MovementLabels, Counter>::default();
        for kind in MOVEMENT_KINDS {
            for outcome in MOVEMENT_OUTCOMES {
                drop(movements.get_or_create(&MovementLabels { r#type: kind, outcome }));
            }
        }
        registry.register("banksim_ledger_movements", "Money movements by type and outcome", movements.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        drop(refusals.get_or_create(&RefusalLabels { error_code: "insufficient_funds" }));
        registry.register(
            "banksim_ledger_refusals",
            "Movements refused by a ledger rule, by error code",
            refusals.clone(),
        );

        let executions = Family::<OutcomeLabels, Counter>::default();
        let outcome = |outcome| executions.get_or_create(&OutcomeLabels { outcome }).clone();
        let scheduler = SchedulerMetrics {
            succeeded: outcome("success"),
            failed: outcome("failed"),
            retried: outcome("retried"),
            unknown: outcome("unknown"),
            claim_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            last_claimed: Arc::default(),
            last_claim_micros: Arc::default(),
        };
        registry.register(
            "banksim_scheduler_executions",
            "Scheduled attempts by outcome (success, failed, retried, unknown)",
            executions,
        );
        registry.register(
            "banksim_scheduler_claim_duration_seconds",
            "Time to claim due schedules",
            scheduler.claim_seconds.clone(),
        );

        let rate_limit = Family::<RateLimitLabels, Counter>::default();
        let decision = |decision| rate_limit.get_or_create(&RateLimitLabels { group: "auth", decision }).clone();
        let auth_rate_limit = RateLimitCounters { allowed: decision("allowed"), limited: decision("limited") };
        registry.register(
            "banksim_rate_limit_requests",
            "Rate-limited requests by group and decision",
            rate_limit.clone(),
        );
        let rate_limit_fallbacks = Family::<GroupLabels, Counter>::default();
        registry.register(
            "banksim_rate_limit_fallbacks",
            "Rate-limit decisions made in-process because Redis gave no answer, by group",
            rate_limit_fallbacks.clone(),
        );

        let logins = Family::<OutcomeLabels, Counter>::default();
        for outcome in ["success", "failure"] {
            drop(logins.get_or_create(&OutcomeLabels { outcome }));
        }
        registry.register("banksim_auth_logins", "Logins by outcome", logins.clone());
        let refresh_reuse = Counter::default();
        registry.register(
            "banksim_auth_refresh_reuse_detected",
            "Spent refresh tokens presented again (their session is revoked)",
            refresh_reuse.clone(),
        );
        let acquire_wait = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "banksim_db_pool_acquire_wait_seconds",
            "Time to take a connection from the pool (sampled at each scrape)",
            acquire_wait.clone(),
        );

        let cache = Family::<CacheLabels, Counter>::default();
        let result = |result| cache.get_or_create(&CacheLabels { cache: "balances", result }).clone();
        let balance_cache = crate::cache::balances::CacheCounters {
            hits: result("hit"),
            misses: result("miss"),
            bypassed: result("bypass"),
            markers: Counter::default(),
            lease_held: Gauge::default(),
        };
        registry.register("banksim_cache_requests", "Cache lookups by cache and result (hit, miss, bypass)", cache);
        registry.register(
            "banksim_cache_markers",
            "Markers this instance sent round the wallet change bus (PostgreSQL)",
            balance_cache.markers.clone(),
        );
        registry.register(
            "banksim_balance_lease_held",
            "1 while this instance holds the balance read lease and answers cached balances without a marker",
            balance_cache.lease_held.clone(),
        );

        let relay = RelayMetrics::default();
        registry.register(
            "banksim_relay_published",
            "Events of the log the outbox relay published and JetStream acknowledged",
            relay.published.clone(),
        );
        registry.register(
            "banksim_relay_failures",
            "Outbox relay rounds that stopped on a failure",
            relay.failures.clone(),
        );

        let simulated_faults = Family::<FaultLabels, Counter>::default();
        for kind in crate::http::faults::FaultKind::ALL {
            drop(simulated_faults.get_or_create(&FaultLabels { kind: kind.as_str() }));
        }
        registry.register(
            "banksim_simulated_faults",
            "Faults injected on purpose in simulation mode (X-Simulate-Fault and /admin/faults), by kind",
            simulated_faults.clone(),
        );

        let inner = Inner {
            registry,
            http_requests,
            http_duration,
            movements,
            refusals,
            logins,
            refresh_reuse,
            acquire_wait,
            writer,
            scheduler,
            auth_rate_limit,
            balance_cache,
            rate_limit,
            rate_limit_fallbacks,
            relay,
            simulated_faults,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The write path's metrics, for the writer.
    pub fn writer(&self) -> &WriterMetrics {
        &self.inner.writer
    }

    /// The scheduler's metrics.
    pub fn scheduler(&self) -> &SchedulerMetrics {
        &self.inner.scheduler
    }

    /// The outbox relay's counters.
    pub fn relay(&self) -> &RelayMetrics {
        &self.inner.relay
    }

    /// The balance cache's hits and misses.
    pub fn balance_cache(&self) -> &crate::cache::balances::CacheCounters {
        &self.inner.balance_cache
    }

    /// The auth routes' rate-limit decisions.
    pub fn auth_rate_limit(&self) -> &RateLimitCounters {
        &self.inner.auth_rate_limit
    }

    /// The decisions of the rate limit of `group`, its series created now if they were not.
    pub fn rate_limit(&self, group: &'static str) -> RateLimitCounters {
        let decision = |decision| self.inner.rate_limit.get_or_create(&RateLimitLabels { group, decision }).clone();
        RateLimitCounters { allowed: decision("allowed"), limited: decision("limited") }
    }

    /// The count of `group`'s decisions made in-process because Redis gave no answer, created now if it was not.
    pub fn rate_limit_fallbacks(&self, group: &'static str) -> Counter {
        self.inner.rate_limit_fallbacks.get_or_create(&GroupLabels { group }).clone()
    }

    /// Counts an answered request.
    pub fn record_request(&self, method: &str, endpoint: &str, status_code: u16, duration: Duration) {
        let route = RouteLabels { method: method.to_owned(), endpoint: endpoint.to_owned() };
        self.inner.http_duration.get_or_create(&route).observe(duration.as_secs_f64());
        let request = RequestLabels { method: route.method, endpoint: route.endpoint, status_code };
        self.inner.http_requests.get_or_create(&request).inc();
    }

    /// Counts a movement's outcome, and its refusal code when refused.
    pub fn record_movement(&self, kind: &'static str, outcome: &'static str, refusal: Option<&'static str>) {
        self.inner.movements.get_or_create(&MovementLabels { r#type: kind, outcome }).inc();
        if let Some(error_code) = refusal {
            self.inner.refusals.get_or_create(&RefusalLabels { error_code }).inc();
        }
    }

    /// Counts a login by outcome (`success` or `failure`).
    pub fn record_login(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.inner.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a simulated fault of `kind` (a [`crate::http::faults::FaultKind`] name).
    pub fn record_simulated_fault(&self, kind: &'static str) {
        self.inner.simulated_faults.get_or_create(&FaultLabels { kind }).inc();
    }

    /// Counts a reused refresh token.
    pub fn record_refresh_reuse(&self) {
        self.inner.refresh_reuse.inc();
    }

    /// Renders every metric, reading the present state (queue, pool, projections, ledger totals, process) first.
    pub async fn render(&self, state: &AppState) -> String {
        let now = scrape::Now::read(state, &self.inner.acquire_wait).await;
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.inner.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &now.registry());
        if let Some(replica) = &state.replica {
            replica.encode_metrics(&mut text);
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What a scrape reads of the present.
mod scrape {
    use std::sync::atomic::AtomicU64;

    use banksim_store::Projection;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::{ConstCounter, Counter};
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use crate::app::AppState;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StateLabels {
        state: &'static str,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ProjectionLabels {
        projection: &'static str,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct BreakerLabels {
        breaker: &'static str,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct CurrencyLabels {
        currency: String,
    }

    /// The present, as read for one scrape.
    pub(super) struct Now {
        uptime_seconds: f64,
        queue_depth: i64,
        queue_capacity: i64,
        tasks: i64,
        pool: banksim_store::PoolStatus,
        due_backlog: Option<i64>,
        projections: Vec<(&'static str, i64, f64)>,
        /// The outbox relay's lag in events and seconds, when it runs (`NATS_URL`).
        relay: Option<(i64, f64)>,
        balanced: Vec<(String, bool)>,
        process: Option<super::process::ProcessFigures>,
        spans_dropped: u64,
        breakers: std::collections::BTreeMap<&'static str, crate::resilience::BreakerReport>,
    }

    impl Now {
        pub(super) async fn read(state: &AppState, acquire_wait: &Histogram) -> Self {
            if let Ok(wait) = state.store.acquire_wait().await {
                acquire_wait.observe(wait.as_secs_f64());
            }
            let now = state.clock.now();
            let mut projections = Vec::new();
            for projection in Projection::ALL {
                if let Ok(status) = state.store.projection_status(projection).await {
                    projections.push((projection.name(), status.lag_events(), status.lag(now).as_secs_f64()));
                }
            }
            let relay = match state.config.nats_url() {
                Some(_) => state.store.relay_status(crate::jobs::relay::RELAY).await.ok(),
                None => None,
            }
            .map(|status| (status.lag_events(), status.lag(now).as_secs_f64()));
            let balanced = match state.store.system_totals().await {
                Ok(totals) => totals.iter().map(|t| (t.currency.to_string(), t.is_balanced())).collect(),
                Err(_) => Vec::new(),
            };
            let due_backlog =
                state.store.count_due_schedules(now).await.ok().map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            Self {
                uptime_seconds: state.started.elapsed().as_secs_f64(),
                queue_depth: i64::try_from(state.writer.queue_depth()).unwrap_or(i64::MAX),
                queue_capacity: i64::try_from(state.config.write_queue_capacity).unwrap_or(i64::MAX),
                tasks: i64::try_from(tokio::runtime::Handle::current().metrics().num_alive_tasks()).unwrap_or(i64::MAX),
                pool: state.store.pool_status(),
                due_backlog,
                projections,
                relay,
                balanced,
                process: super::process::read(),
                spans_dropped: crate::telemetry::spans_dropped(),
                breakers: state.breakers.reports(),
            }
        }

        pub(super) fn registry(&self) -> Registry {
            let mut registry = Registry::default();
            let gauge = |value: i64| {
                let gauge = Gauge::<i64>::default();
                gauge.set(value);
                gauge
            };
            let float = |value: f64| {
                let gauge = Gauge::<f64, AtomicU64>::default();
                gauge.set(value);
                gauge
            };
            registry.register(
                "banking_uptime_seconds",
                "Seconds since this instance started",
                float(self.uptime_seconds),
            );
            registry.register(
                "banking_transaction_queue_depth",
                "Money movements waiting for a writer",
                gauge(self.queue_depth),
            );
            registry.register(
                "banksim_writer_queue_capacity",
                "Most movements that may wait for a writer (beyond: 503)",
                gauge(self.queue_capacity),
            );
            registry.register(
                "banking_goroutines_active",
                "Live tokio tasks of this instance (the Go service counted goroutines; in Rust the tasks are the unit of concurrency)",
                gauge(self.tasks),
            );
            registry.register(
                "banksim_db_pool_max_connections",
                "Most connections the pool may open",
                gauge(i64::from(self.pool.max)),
            );
            let connections = Family::<StateLabels, Gauge>::default();
            connections.get_or_create(&StateLabels { state: "idle" }).set(i64::from(self.pool.idle));
            connections
                .get_or_create(&StateLabels { state: "in_use" })
                .set(i64::from(self.pool.size.saturating_sub(self.pool.idle)));
            registry.register(
                "banksim_db_pool_connections",
                "Open connections of the pool, idle or in use",
                connections,
            );
            if let Some(backlog) = self.due_backlog {
                registry.register(
                    "banksim_scheduler_due_backlog",
                    "Active schedules due now and not yet run",
                    gauge(backlog),
                );
            }
            let lag_events = Family::<ProjectionLabels, Gauge>::default();
            let lag_seconds = Family::<ProjectionLabels, Gauge<f64, AtomicU64>>::default();
            for (projection, events, seconds) in &self.projections {
                lag_events.get_or_create(&ProjectionLabels { projection }).set(*events);
                lag_seconds.get_or_create(&ProjectionLabels { projection }).set(*seconds);
            }
            registry.register(
                "banksim_projection_lag_events",
                "Events of the log a projection has not applied yet",
                lag_events,
            );
            registry.register(
                "banksim_projection_lag_seconds",
                "How long the oldest event a projection has not applied has waited",
                lag_seconds,
            );
            if let Some((events, seconds)) = self.relay {
                registry.register(
                    "banksim_relay_lag_events",
                    "Events of the log the outbox relay has not published yet",
                    gauge(events),
                );
                registry.register(
                    "banksim_relay_lag_seconds",
                    "How long the oldest event the outbox relay has not published has waited",
                    float(seconds),
                );
            }
            let balanced = Family::<CurrencyLabels, Gauge>::default();
            for (currency, is_balanced) in &self.balanced {
                balanced.get_or_create(&CurrencyLabels { currency: currency.clone() }).set(i64::from(*is_balanced));
            }
            registry.register(
                "banksim_ledger_balanced",
                "1 when users and FX accounts hold exactly what came in minus what went out (system totals)",
                balanced,
            );
            registry.register(
                "banksim_otel_spans_dropped",
                "Trace spans dropped because the exporter could not keep up",
                ConstCounter::new(self.spans_dropped),
            );
            let breaker_state = Family::<BreakerLabels, Gauge>::default();
            let breaker_opens = Family::<BreakerLabels, Counter>::default();
            let breaker_failures = Family::<BreakerLabels, Counter>::default();
            for (name, report) in &self.breakers {
                let labels = BreakerLabels { breaker: name };
                let state = match report.state {
                    crate::resilience::BreakerState::Closed => 0,
                    crate::resilience::BreakerState::HalfOpen => 1,
                    crate::resilience::BreakerState::Open => 2,
                };
                breaker_state.get_or_create(&labels).set(state);
                breaker_opens.get_or_create(&labels).inc_by(report.opens);
                breaker_failures.get_or_create(&labels).inc_by(report.total_failures);
            }
            registry.register(
                "banksim_circuit_breaker_state",
                "State of each circuit breaker: 0 closed, 1 half-open, 2 open",
                breaker_state,
            );
            registry.register("banksim_circuit_breaker_opens", "Times each circuit breaker opened", breaker_opens);
            registry.register(
                "banksim_circuit_breaker_failures",
                "Failed calls counted by each circuit breaker",
                breaker_failures,
            );
            if let Some(process) = &self.process {
                registry.register(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    gauge(process.resident_memory_bytes),
                );
                registry.register(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    ConstCounter::new(process.cpu_seconds),
                );
                registry.register("process_open_fds", "Number of open file descriptors", gauge(process.open_fds));
                registry.register(
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    float(process.start_time_seconds),
                );
            }
            registry
        }
    }
}

/// The process's own figures, from `/proc` (Linux; none elsewhere).
mod process {
    /// What `/proc` tells of this process.
    pub(super) struct ProcessFigures {
        pub resident_memory_bytes: i64,
        pub cpu_seconds: f64,
        pub open_fds: i64,
        pub start_time_seconds: f64,
    }

    #[cfg(target_os = "linux")]
    pub(super) fn read() -> Option<ProcessFigures> {
        use procfs::WithCurrentSystemInfo;
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        let boot = procfs::boot_time_secs().ok()? as f64;
        Some(ProcessFigures {
            resident_memory_bytes: i64::try_from(stat.rss_bytes().get()).unwrap_or(i64::MAX),
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            open_fds: i64::try_from(me.fd_count().ok()?).unwrap_or(i64::MAX),
            start_time_seconds: boot + stat.starttime as f64 / ticks,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn read() -> Option<ProcessFigures> {
        None
    }
}
