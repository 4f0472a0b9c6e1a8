//! The application: its shared state, and how it starts and stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use banksim_core::{Clock, SystemClock};
use banksim_store::{Backend, ConnectOptions, Store};
use tokio::net::TcpListener;

use crate::auth::{PasswordHasher, TokenIssuer};
use crate::cache::BalanceCache;
use crate::config::Config;
use crate::coordination::{Redis, UserChangePublisher, UserChangeSubscriber};
use crate::http::rate_limit::RateLimits;
use crate::http::transactions::TransactionRenderer;
use crate::jobs::projector::Projector;
use crate::jobs::relay::EventRelay;
use crate::jobs::scheduler::Scheduler;
use crate::metrics::Metrics;
use crate::resilience::{Breakers, CircuitBreaker};
use crate::router;
use crate::service::simulation::{ClockFollower, SimulationClock};
use crate::service::users::UserDirectory;
use crate::writer::{LedgerWriter, WriterShape};

/// Everything a request handler may need: a handle on [`AppStateInner`], as cheap to clone as one `Arc`.
///
/// Every middleware layer and handler takes its own copy of the state for every request; one shared counter keeps
/// that from costing an atomic increment and decrement per service in it (a fifth of the CPU of a cached balance
/// read before it was a handle, with the drops).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppStateInner>,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.inner
    }
}

/// The services behind an [`AppState`].
#[derive(Clone)]
pub struct AppStateInner {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The one source of "now".
    pub clock: Arc<dyn Clock>,
    /// Access-token issuer and verifier.
    pub tokens: Arc<TokenIssuer>,
    /// Password hashing.
    pub passwords: PasswordHasher,
    /// Users by id, cached briefly for the token checks.
    pub users: UserDirectory,
    /// The money write path.
    pub writer: LedgerWriter,
    /// When the state was built (for uptime).
    pub started: std::time::Instant,
    /// The rate limits of the auth, money and read routes.
    pub rate_limits: Arc<RateLimits>,
    /// Redis, when `REDIS_URL` is set: shared rate limits and user changes.
    pub redis: Option<Arc<Redis>>,
    /// The Prometheus metrics of this instance.
    pub metrics: Metrics,
    /// The circuit breakers of this instance (`database` always; others as their dependencies are configured).
    pub breakers: Arc<Breakers>,
    /// Current balances, kept by the writer and the change bus.
    pub balances: Arc<BalanceCache>,
    /// The streaming replica for reads that may lag (`DATABASE_REPLICA_URL`), if one is configured.
    pub replica: Option<crate::replica::Replica>,
    /// The shared virtual clock in simulation mode (`SIMULATION_MODE`); then also `clock`. `None`: mode off.
    pub simulation: Option<Arc<SimulationClock>>,
    /// The random faults of this instance (simulation mode only; `None`: mode off, `X-Simulate-Fault` ignored).
    pub faults: Option<Arc<crate::http::faults::FaultInjector>>,
    /// Where the ids of new users, movements and schedules come from (derived from requests in simulation mode).
    pub ids: crate::service::ids::Ids,
    /// The scenario runner of simulation mode, when one is installed ([`AppState::with_scenario_runner`]); `None`:
    /// the scenario routes answer 503 `scenario_runner_unavailable`.
    pub scenarios: Option<Arc<crate::service::scenarios::Scenarios>>,
}

impl AppState {
    /// Builds the state on an open store.
    pub fn new(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.validate()?;
        // In simulation mode every "now" of this instance is the shared clock, `clock` until a simulation sets it.
        let simulation = config.simulation_mode.then(|| Arc::new(SimulationClock::new(clock.clone())));
        let clock: Arc<dyn Clock> = match &simulation {
            Some(simulation) => simulation.clone(),
            None => clock,
        };
        let breakers = Arc::new(Breakers::default());
        let database = breakers.register(CircuitBreaker::new("database", config.breaker_settings()));
        let store = crate::store_layer::StoreLayer::wrap(store, database);
        let replica = match config.database_replica_url() {
            Some(url) => Some(
                crate::replica::Replica::start(&url, store.clone(), &breakers, &config)
                    .map_err(|e| anyhow::anyhow!("DATABASE_REPLICA_URL: {e}"))?,
            ),
            None => None,
        };
        let secret = config.jwt_secret_bytes()?;
        let tokens = TokenIssuer::new(&secret, &config.jwt_issuer, &config.jwt_audience, config.access_token_ttl());
        let passwords = PasswordHasher::new(config.argon2_memory_kib, config.argon2_iterations)
            .map_err(|e| anyhow::anyhow!("ARGON2_MEMORY_KIB/ARGON2_ITERATIONS: {e}"))?;
        let redis = match config.redis_url() {
            Some(url) => {
                let breaker = breakers.register(CircuitBreaker::new("redis", config.breaker_settings()));
                let redis = Redis::connect(url, config.redis_timeout(), breaker)
                    .map_err(|e| anyhow::anyhow!("REDIS_URL: {}", e.detail().unwrap_or(e.category())))?;
                Some(Arc::new(redis))
            }
            None => None,
        };
        let mut users = UserDirectory::new(store.clone(), Duration::from_millis(config.user_cache_ttl_ms));
        if let Some(redis) = &redis {
            users = users.with_publisher(UserChangePublisher::new(redis.clone()));
        }
        // SQLite has one writer connection: more writer tasks would only queue behind it.
        let workers = if store.backend() == Backend::Sqlite { 1 } else { config.write_workers };
        let metrics = Metrics::new();
        let shape = WriterShape { workers, capacity: config.write_queue_capacity, batch_max: config.write_batch_max };
        let balances = Arc::new(BalanceCache::new(
            store.as_ref(),
            config.balance_cache,
            config.balance_lease,
            metrics.balance_cache().clone(),
        ));
        let writer = LedgerWriter::start(
            store.clone(),
            clock.clone(),
            Arc::new(TransactionRenderer),
            metrics.clone(),
            balances.clone(),
            shape,
        );
        let rate_limits = RateLimits::new(&config, &metrics, redis.clone());
        let state = Self::from(AppStateInner {
            store,
            config: Arc::new(config),
            clock,
            tokens: Arc::new(tokens),
            passwords,
            users,
            writer,
            started: std::time::Instant::now(),
            rate_limits: Arc::new(rate_limits),
            redis,
            metrics,
            breakers,
            balances,
            replica,
            faults: simulation.as_ref().map(|_| Arc::default()),
            ids: crate::service::ids::Ids::new(simulation.is_some()),
            simulation,
            scenarios: None,
        });
        if state.config.test_breaker_routes {
            crate::http::breakers::register_test_breakers(&state);
        }
        Ok(state)
    }

    /// The same state with `runner` behind the scenario routes (simulation mode only: without it they answer 404
    /// whatever is installed).
    pub fn with_scenario_runner(self, runner: Arc<dyn crate::service::scenarios::ScenarioRunner>) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.scenarios = Some(Arc::new(crate::service::scenarios::Scenarios::new(runner)));
        Self::from(inner)
    }
}

impl From<AppStateInner> for AppState {
    fn from(inner: AppStateInner) -> Self {
        Self { inner: Arc::new(inner) }
    }
}

/// Opens the configured database and applies its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let options = ConnectOptions { pool_size: config.database_pool_size, ..ConnectOptions::default() };
    let store = banksim_store::connect(&config.database_url(), options).await?;
    store.ping().await.with_context(|| format!("connecting to the {} database", store.backend().name()))?;
    store.migrate().await.context("applying database migrations")?;
    Ok(store)
}

/// Builds the application on the configured database: opens it, migrates it, and creates the first admin when
/// `BANKSIM_ADMIN_EMAIL` asks for one.
pub async fn build(config: Config) -> anyhow::Result<AppState> {
    config.validate()?;
    let store = open_store(&config).await?;
    let state = AppState::new(config, store, Arc::new(SystemClock))?;
    crate::service::simulation::load(&state).await?;
    crate::service::users::bootstrap_admin(&state).await?;
    Ok(state)
}

/// Serves the API on `listener` until `shutdown` completes, then lets in-flight requests finish and closes the
/// database.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = state.store.clone();
    let jobs = BackgroundJobs::start(&state);
    warn_if_metrics_are_public(&state.config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = match state.config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("METRICS_ADDR: binding {addr}"))?;
            Some(tokio::spawn(serve_metrics(state.clone(), listener, wait_for(stopped.clone()))))
        }
        None => None,
    };
    let app = router::build(state);
    tracing::info!(addr = %listener.local_addr()?, backend = store.backend().name(), "banksim listening");
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(wait_for(stopped))
        .await?;
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    jobs.stop().await;
    store.close().await;
    tracing::info!("banksim stopped");
    Ok(())
}

/// Serves the metrics routes alone on `listener` (`METRICS_ADDR`) until `shutdown` completes.
pub async fn serve_metrics(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, router::build_metrics(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Completes once the shutdown has been signalled.
async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// In production, metrics that anyone can read (counts of logins, money movements and users' totals) deserve a
/// warning: set `METRICS_TOKEN` or serve them on a private `METRICS_ADDR`.
fn warn_if_metrics_are_public(config: &Config) {
    if config.environment == crate::config::Environment::Prod
        && config.metrics_token.is_none()
        && config.metrics_addr.is_none()
    {
        tracing::warn!(
            "ENV=prod with neither METRICS_TOKEN nor METRICS_ADDR: /metrics and /metrics/basic are open to anyone \
             who reaches this listener"
        );
    }
}

/// The background jobs of one instance.
pub struct BackgroundJobs {
    scheduler: Option<Scheduler>,
    projector: Option<Projector>,
    relay: Option<EventRelay>,
    /// The balance cache's follower of the change bus, and how to stop it.
    balances: (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>),
    user_changes: Option<UserChangeSubscriber>,
    clock: Option<ClockFollower>,
}

impl BackgroundJobs {
    /// Starts the jobs the configuration enables, and the balance cache's follower of the change bus.
    pub fn start(state: &AppState) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn(state.balances.clone().follow(state.store.clone(), stopped));
        Self {
            scheduler: state.config.scheduler_enabled.then(|| Scheduler::start(state.clone())),
            projector: state.config.projector_enabled.then(|| Projector::start(state.clone())),
            relay: state.config.nats_url().map(|url| EventRelay::start(state.clone(), url)),
            balances: (stop, follower),
            user_changes: state.redis.clone().map(|redis| UserChangeSubscriber::start(redis, state.users.clone())),
            clock: state.simulation.clone().map(|clock| ClockFollower::start(state, clock)),
        }
    }

    /// Stops every job, letting the work in progress finish.
    pub async fn stop(self) {
        if let Some(scheduler) = self.scheduler {
            scheduler.stop().await;
        }
        if let Some(projector) = self.projector {
            projector.stop().await;
        }
        if let Some(relay) = self.relay {
            relay.stop().await;
        }
        if let Some(user_changes) = self.user_changes {
            user_changes.stop().await;
        }
        if let Some(clock) = self.clock {
            clock.stop().await;
        }
        let (stop, follower) = self.balances;
        let _ = stop.send(true);
        let _ = follower.await;
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
