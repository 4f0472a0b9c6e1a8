//! The streaming replica (`DATABASE_REPLICA_URL`): reads that may lag a little go to it, when it answers, is
//! close enough behind the primary, and has replayed the caller's own writes.
//!
//! - **Which reads.** Only those a handler asks for through [`Reads`] (history, balance at a time, statements, audit
//!   and event listings, the admin's user list). Everything else — balances now, idempotency look-ups, token and
//!   user checks, everything inside writes, the scheduler and the projectors — reads the primary, through
//!   `AppState::store` as before.
//! - **Read-your-writes.** After each request that may have written, [`http::remember_writes`] reads the primary's
//!   WAL position past its commits (one query shared by every request that finished before it started) and raises
//!   the caller's [floor](floors) to it; the answer carries it in `X-Banksim-Min-LSN`, which a client may send back on
//!   reads (to another instance, say). A read goes to the replica only once the replica has replayed its floor,
//!   waiting up to `REPLICA_WAIT_MS` for it, else to the primary.
//! - **Health and lag.** A [monitor](monitor) reads the primary's and the replica's WAL positions every
//!   `REPLICA_POLL_INTERVAL_MS` (and at once, then every millisecond, while a read waits), and computes the lag
//!   ([`lag`]). A replica that fails (its `replica` breaker open), is not a standby, or is more than
//!   `REPLICA_MAX_LAG_MS` behind is skipped until it recovers. A read the replica fails is made on the primary;
//!   a read the primary cannot serve (its breaker open, or the call fails) is made on the replica if it shows the
//!   caller's writes. A dead replica never becomes an error answer.

pub mod floors;
pub mod http;
pub mod lag;
mod metrics;
mod monitor;
pub mod routing;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use banksim_store::postgres::PgStore;
use banksim_store::{ConnectOptions, Lsn, Store, StoreError};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use utoipa::ToSchema;
use uuid::Uuid;

pub use http::{MIN_LSN_HEADER, MinLsn, Reads};
use metrics::ReplicaMetrics;
use routing::{Conditions, Floor, Health, Reason, Route, Source, View};

use crate::config::Config;
use crate::resilience::{BreakerState, Breakers, CircuitBreaker};
use crate::store_layer::StoreLayer;

/// How long taking a replica connection may take before the read goes to the primary instead (a stopped replica
/// refuses connections, which the pool would otherwise retry for its whole acquire timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// The longest a read (or a poll) may take on the replica before it is given up (a replica that hangs, as opposed
/// to one that refuses, must not hold reads for the request timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The replica of this instance: its store, what its monitor sees, and every caller's floor. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    shared: Arc<Shared>,
}

struct Shared {
    primary: Arc<dyn Store>,
    replica: Arc<dyn Store>,
    primary_breaker: Option<Arc<CircuitBreaker>>,
    replica_breaker: Arc<CircuitBreaker>,
    view: watch::Sender<View>,
    floors: floors::Floors,
    wal: WalClock,
    wait: Duration,
    max_lag: Duration,
    poll_interval: Duration,
    metrics: ReplicaMetrics,
    /// Wakes the monitor to poll at once (a read is waiting).
    wake: Notify,
    /// Reads waiting for the replica now.
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("view", &*self.shared.view.borrow()).finish_non_exhaustive()
    }
}

/// `checks.replica` of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaStatus {
    /// It answers and is within `REPLICA_MAX_LAG_MS`.
    Ok,
    /// It answers but is further behind: reads skip it.
    Lagging,
    /// It does not answer (or is not a standby, or its breaker is open): reads skip it.
    Unavailable,
}

/// The replica in `/metrics/basic`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaSummary {
    /// `ok`, `lagging` or `unavailable`.
    pub status: ReplicaStatus,
    /// Bytes of the primary's log not replayed yet (when known).
    pub lag_bytes: Option<u64>,
    /// How old the oldest commit not replayed yet was at the last poll, in seconds (when known; reads also count
    /// the time since that poll).
    pub lag_seconds: Option<f64>,
    /// How far the replica has replayed the primary's log (`X/Y`).
    pub replayed_lsn: Option<String>,
    /// Reads that may lag, served by the replica since start.
    pub reads_replica: u64,
    /// Reads that may lag, served by the primary since start (the replica unavailable, lagging, or behind the
    /// caller's writes).
    pub reads_primary: u64,
}

impl Replica {
    /// Opens the replica at `url` (lazily: a replica that is down at start only makes reads go to the primary)
    /// behind a `replica` breaker, and starts its monitor.
    pub fn start(url: &str, primary: Arc<dyn Store>, breakers: &Breakers, config: &Config) -> Result<Self, StoreError> {
        let options = ConnectOptions { pool_size: config.database_pool_size, acquire_timeout: CONNECT_TIMEOUT };
        let store: Arc<dyn Store> = Arc::new(PgStore::connect_lazy(url, options)?);
        let replica_breaker = breakers.register(CircuitBreaker::new("replica", config.breaker_settings()));
        let replica = StoreLayer::wrap(store, replica_breaker.clone());
        let now = Instant::now();
        let shared = Arc::new(Shared {
            wal: WalClock::new(primary.clone()),
            primary,
            replica,
            primary_breaker: breakers.get("database"),
            replica_breaker,
            view: watch::Sender::new(View::unknown(now)),
            floors: floors::Floors::default(),
            wait: Duration::from_millis(config.replica_wait_ms),
            max_lag: Duration::from_millis(config.replica_max_lag_ms),
            poll_interval: Duration::from_millis(config.replica_poll_interval_ms),
            metrics: ReplicaMetrics::default(),
            wake: Notify::new(),
            waiting: AtomicUsize::new(0),
        });
        tokio::spawn(monitor::run(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// What the monitor saw last.
    pub fn view(&self) -> View {
        *self.shared.view.borrow()
    }

    /// `ok`, `lagging` or `unavailable`, as `/readyz` reports it.
    pub fn status(&self) -> ReplicaStatus {
        let view = self.view();
        if view.health != Health::Standby || self.shared.replica_breaker.state() != BreakerState::Closed {
            ReplicaStatus::Unavailable
        } else if view.lag_at(Instant::now()).is_none_or(|lag| lag > self.shared.max_lag) {
            ReplicaStatus::Lagging
        } else {
            ReplicaStatus::Ok
        }
    }

    /// The replica's figures for `/metrics/basic`.
    pub fn summary(&self) -> ReplicaSummary {
        let view = self.view();
        let metrics = &self.shared.metrics;
        ReplicaSummary {
            status: self.status(),
            lag_bytes: view.lag_bytes,
            lag_seconds: view.lag.map(|lag| lag.as_secs_f64()),
            replayed_lsn: view.replayed.map(|lsn| lsn.to_string()),
            reads_replica: metrics.served_by(Source::Replica),
            reads_primary: metrics.served_by(Source::Primary),
        }
    }

    /// Writes the replica's series for `/metrics`.
    pub fn encode_metrics(&self, text: &mut String) {
        let view = self.view();
        self.shared.metrics.encode(text, view.lag_bytes, view.lag.map(|lag| lag.as_secs_f64()));
    }

    /// What a read of `caller` must see: their own writes, and what the client says it saw.
    pub fn floor(&self, caller: Uuid, client: Option<Lsn>) -> Floor {
        let floor = self.shared.floors.of(caller);
        client.map_or(floor, |lsn| floor.max(Floor::at(lsn)))
    }

    /// Records that a request of `caller` that may have written finished at `finished`, and returns the caller's
    /// floor, raised to the primary's WAL position read after that instant (past every commit the request made).
    pub async fn note_write(&self, caller: Uuid, finished: Instant) -> Floor {
        let floor = self.floor_after(finished).await;
        self.shared.floors.raise(caller, floor)
    }

    /// A floor of everything committed on the primary so far.
    pub async fn primary_floor(&self) -> Floor {
        self.floor_after(Instant::now()).await
    }

    /// The primary's WAL position past every commit that returned before `since` (one reading shared with
    /// concurrent askers). If it cannot be read, a floor that keeps the caller off the replica until anything
    /// committed by now is surely on a replica within its lag bound.
    async fn floor_after(&self, since: Instant) -> Floor {
        match self.shared.wal.position_after(since).await {
            Ok(lsn) => Floor::at(lsn),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the primary's WAL position; the caller reads the primary");
                Floor { lsn: None, until: Some(Instant::now() + self.shared.max_lag) }
            }
        }
    }

    fn conditions(&self) -> Conditions {
        let shared = &self.shared;
        Conditions {
            replica_open: shared.replica_breaker.state() != BreakerState::Closed,
            primary_open: shared.primary_breaker.as_ref().is_some_and(|b| b.state() == BreakerState::Open),
            max_lag: shared.max_lag,
        }
    }

    /// Where a read with `floor` goes, after waiting (up to `REPLICA_WAIT_MS`) for the replica to replay the floor
    /// if that is what it lacks.
    async fn route(&self, floor: Floor) -> Reason {
        let shared = &self.shared;
        if let Route::Go(reason) = routing::decide(&self.view(), &floor, Instant::now(), self.conditions()) {
            return reason;
        }
        let started = Instant::now();
        let deadline = started + shared.wait;
        if floor.until.is_some_and(|until| until > deadline) {
            // A write of unknown position: no replay the replica makes within the wait can show it.
            return Reason::ReadYourWrites;
        }
        let mut views = shared.view.subscribe();
        let _waiting = Waiting::new(shared);
        let reason = loop {
            match routing::decide(&views.borrow_and_update(), &floor, Instant::now(), self.conditions()) {
                Route::Go(Reason::CaughtUp) => break Reason::Waited,
                Route::Go(reason) => break reason,
                Route::Wait => {}
            }
            if tokio::time::timeout_at(deadline, views.changed()).await.is_err() {
                break Reason::ReadYourWrites;
            }
        };
        shared.metrics.wait_seconds.observe(started.elapsed().as_secs_f64());
        reason
    }

    /// A read met a replica that does not answer: reads skip it from now on, until the monitor's next poll
    /// finds it answering (which it is woken to make at once).
    fn suspect(&self) {
        self.shared.view.send_if_modified(|view| {
            let was = view.health;
            view.health = Health::Unavailable;
            was != Health::Unavailable
        });
        self.shared.wake.notify_one();
    }

    /// Whether the replica may stand in for a primary that failed a read with `floor`.
    fn can_stand_in(&self, floor: &Floor) -> bool {
        let view = self.view();
        let conditions = self.conditions();
        view.health == Health::Standby && !conditions.replica_open && floor.is_met(view.replayed, Instant::now())
    }
}

/// A read waiting for the replica, counted while it waits (also when its request is dropped meanwhile), so that
/// the monitor polls fast exactly as long as someone waits.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        shared.wake.notify_one();
        Self(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The position of the primary's log past every commit that has returned, read at most once at a time: a request
/// that finished writing at `t` needs a reading started after `t`, and every request waiting while one reading is
/// made shares the next, so a thousand writes a second cost a reading per database round trip, not a thousand.
///
/// The position read is the flushed one: a commit returns only once its record is flushed (banksim's 2xx means
/// durable, so `synchronous_commit` stays on), hence a flush position read after it is past it, and it is as far as
/// a replica can stream. The insert position would be safe even with `synchronous_commit = off` (it is used then),
/// but it runs ahead of the flushed one by the records of transactions still open, which the replica cannot have
/// until they commit or the WAL writer flushes them (up to `wal_writer_delay`, 200 ms): reads would wait for
/// nothing. Reading it inside the transaction before `COMMIT` would be wrong: the commit record comes after it, so
/// a replica could pass that position without showing the transaction.
struct WalClock {
    primary: Arc<dyn Store>,
    /// The last reading: when it started, and what it read.
    last: tokio::sync::Mutex<Option<(Instant, Lsn)>>,
}

impl WalClock {
    fn new(primary: Arc<dyn Store>) -> Self {
        Self { primary, last: tokio::sync::Mutex::new(None) }
    }

    /// A position read by a query that started at or after `since`.
    async fn position_after(&self, since: Instant) -> Result<Lsn, PositionError> {
        let mut last = self.last.lock().await;
        if let Some((started, lsn)) = *last
            && started >= since
        {
            return Ok(lsn);
        }
        let started = Instant::now();
        let position = tokio::time::timeout(CALL_TIMEOUT, self.primary.wal_position())
            .await
            .map_err(|_| PositionError::TimedOut)?
            .map_err(PositionError::Failed)?;
        let lsn = position
            .and_then(|p| if p.durable_commits { p.flushed } else { p.inserted })
            .ok_or(PositionError::NotPrimary)?;
        *last = Some((started, lsn));
        Ok(lsn)
    }
}

/// Why the primary's position could not be read.
#[derive(Debug, thiserror::Error)]
enum PositionError {
    #[error(transparent)]
    Failed(StoreError),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    TimedOut,
    #[error("the primary reports no WAL position (is DATABASE_URL a standby?)")]
    NotPrimary,
}

/// Routes one read: `call` on the database chosen for `floor`, falling back to the other when it fails.
async fn read<'a, T>(
    replica: &'a Replica,
    floor: Floor,
    call: impl Fn(&'a dyn Store) -> BoxFuture<'a, Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let shared = &replica.shared;
    let mut reason = replica.route(floor).await;
    let value = match reason.served_by() {
        Source::Replica => match on_replica(call(shared.replica.as_ref())).await {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, "replica read failed; reading the primary");
                if error.is_outage() {
                    replica.suspect();
                }
                reason = Reason::ReplicaFailed;
                call(shared.primary.as_ref()).await?
            }
        },
        Source::Primary => match call(shared.primary.as_ref()).await {
            Ok(value) => value,
            Err(error) if primary_is_out(&error) && replica.can_stand_in(&floor) => {
                tracing::debug!(%error, "primary read failed; reading the replica");
                reason = Reason::PrimaryUnavailable;
                on_replica(call(shared.replica.as_ref())).await.map_err(|_| error)?
            }
            Err(error) => return Err(error),
        },
    };
    shared.metrics.count(reason);
    Ok(value)
}

/// A call on the replica, given up after [`CALL_TIMEOUT`].
async fn on_replica<T>(call: BoxFuture<'_, Result<T, StoreError>>) -> Result<T, ReplicaFailure> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(ReplicaFailure::Failed),
        Err(_) => Err(ReplicaFailure::TimedOut),
    }
}

/// Why the replica did not answer a read.
#[derive(Debug, thiserror::Error)]
enum ReplicaFailure {
    #[error(transparent)]
    Failed(StoreError),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    TimedOut,
}

impl ReplicaFailure {
    /// Whether the replica itself failed (down, unreachable, hung), not the read.
    fn is_outage(&self) -> bool {
        match self {
            Self::Failed(error) => error.is_outage() || matches!(error, StoreError::CircuitOpen { .. }),
            Self::TimedOut => true,
        }
    }
}

/// Whether a read failed because the primary is down (rather than because of the read).
fn primary_is_out(error: &StoreError) -> bool {
    error.is_outage() || matches!(error, StoreError::CircuitOpen { .. })
}
