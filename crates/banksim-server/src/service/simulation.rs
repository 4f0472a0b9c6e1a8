//! Simulation mode's virtual clock: one clock for every instance on a database, moved by admins, never backwards.
//!
//! **Where it lives.** The clock is a row of the database (`simulation_clock`): `virtual_now` is NULL while the
//! clock is the wall clock ("system"), else the instant it stands at ("virtual"). A virtual clock stands still
//! between moves, so a scenario replayed on the same clock writes the same timestamps.
//!
//! **How each instance reads it.** [`SimulationClock`] is this instance's [`Clock`]: it answers from a cached
//! reading, refreshed from the database every [`CLOCK_REFRESH_INTERVAL`] (and at once by the instance that moves
//! it). A reading is never ahead of the database, only at most that long behind.
//!
//! **Why a late reading never runs work at a wrong instant.** An advance does not jump to its target: it walks
//! ([`banksim_core::clock::next_stop`]) from due instant to due instant — every schedule occurrence and hold expiry
//! that falls due in between — and at each stop it runs, or waits for other instances to finish, *all* work due at
//! or before that stop before it moves on. So whenever the database shows instant `t`, nothing is due before `t`
//! any more; an instance whose reading is a stop behind finds nothing due, and one that reads `t` runs only what is
//! due at `t`, at `t`. Each occurrence runs once because claims (leases and idempotency keys, as always) decide who
//! runs it; the walker runs them itself rather than waiting for a poll, so a 90-day advance takes as long as its
//! work, not 90 poll intervals.
//!
//! **One walker at a time.** The walker holds the clock's lease (wall-clock instants, renewed at each stop); a
//! second advance waits for it up to [`CLOCK_BUSY_WAIT`], then answers `clock_busy`. The walk runs in a task of
//! its own, so a client that gives up (or a request timeout) never stops it half-way; and were the instance to
//! die mid-walk, the clock stays at a stop, where everything before it has run, and the next advance carries on.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use banksim_core::clock::next_stop;
use banksim_core::{Clock, ClockChange, ClockError, ClockMode, SystemClock};
use banksim_store::{AuditContext, AuditedAction, SimulationStore, StoreError};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// How often each instance reads the shared clock from the database.
pub const CLOCK_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// How long the walker's lease on the clock lasts without renewal (wall clock): another advance may take the clock
/// over after this if the walker's instance died.
pub const CLOCK_LEASE: Duration = Duration::from_secs(30);
/// How long an advance waits for another one to finish before answering `clock_busy`.
pub const CLOCK_BUSY_WAIT: Duration = Duration::from_secs(10);
/// How long the walker waits between looks while other instances finish work due at a stop.
const FOREIGN_WORK_POLL: Duration = Duration::from_millis(20);

/// This instance's view of the shared clock: the virtual instant last read (or set here), else the wall clock.
pub struct SimulationClock {
    /// The clock used while no simulation has set the clock (the wall clock; tests may pass another).
    base: Arc<dyn Clock>,
    /// The virtual instant, once the database has one. Only ever moves forward.
    virtual_now: RwLock<Option<DateTime<Utc>>>,
}

impl SimulationClock {
    /// A clock that reads `base` until the shared clock turns virtual.
    pub fn new(base: Arc<dyn Clock>) -> Self {
        Self { base, virtual_now: RwLock::new(None) }
    }

    /// The clock read while the shared clock is the system clock.
    pub fn base(&self) -> Arc<dyn Clock> {
        self.base.clone()
    }

    /// `system` or `virtual`, as last read.
    pub fn mode(&self) -> ClockMode {
        if self.reading().is_some() { ClockMode::Virtual } else { ClockMode::System }
    }

    fn reading(&self) -> Option<DateTime<Utc>> {
        *self.virtual_now.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes in a reading of the shared clock; an older one than held (a slow read) changes nothing.
    pub fn observe(&self, at: DateTime<Utc>) {
        let mut held = self.virtual_now.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_none_or(|held| held < at) {
            *held = Some(at);
        }
    }

    /// Reads the shared clock from the database.
    pub async fn refresh<S: SimulationStore + ?Sized>(&self, store: &S) -> Result<(), StoreError> {
        if let Some(at) = store.virtual_now().await? {
            self.observe(at);
        }
        Ok(())
    }
}

impl Clock for SimulationClock {
    fn now(&self) -> DateTime<Utc> {
        self.reading().unwrap_or_else(|| self.base.now())
    }
}

/// The clock as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The instant.
    pub now: DateTime<Utc>,
    /// `system` or `virtual`.
    pub mode: ClockMode,
}

/// Reads the shared clock before the instance serves, so that its first answers already use it; starts it at
/// `SIMULATION_START` on a database whose clock was never moved.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    let Some(clock) = &state.simulation else { return Ok(()) };
    clock.refresh(state.store.as_ref()).await.map_err(|e| anyhow::anyhow!("reading the virtual clock: {e}"))?;
    if let Some(start) = state.config.simulation_start
        && clock.mode() == ClockMode::System
    {
        // Another instance starting alike may set the same instant first: setting it again changes nothing.
        let audit = banksim_store::AuditContext {
            request_id: Some("simulation-start".to_owned()),
            ..banksim_store::AuditContext::default()
        };
        change(state, clock, ClockChange::Set(start), audit)
            .await
            .map_err(|e| anyhow::anyhow!("SIMULATION_START: starting the virtual clock: {}", e.code().as_str()))?;
        tracing::info!(clock.now = %start, "virtual clock started at SIMULATION_START");
    }
    Ok(())
}

/// The clock now, freshly read from the database.
pub async fn read(state: &AppState, clock: &SimulationClock) -> Result<ClockReading, ApiError> {
    clock.refresh(state.store.as_ref()).await?;
    Ok(ClockReading { now: clock.now(), mode: clock.mode() })
}

/// Sets or advances the shared clock, running everything that falls due on the way (see the module's notes), and
/// audits the move (`simulation.clock`, from where to where) as `audit`'s actor. Returns the clock where it ends.
pub async fn change(
    state: &AppState,
    clock: &Arc<SimulationClock>,
    change: ClockChange,
    audit: AuditContext,
) -> Result<ClockReading, ApiError> {
    let (state, clock) = (state.clone(), clock.clone());
    // In a task of its own: a walk is never left half-way because its client went away.
    let walk = tokio::spawn(async move {
        let holder = Uuid::now_v7();
        take_lease(&state, holder).await?;
        let walked = walk(&state, &clock, holder, change).await;
        if let Err(error) = state.store.release_clock(holder).await {
            tracing::warn!(error = %error, "could not give the clock's lease back; it ends by itself");
        }
        let (from, reading) = walked?;
        let entry = clock_move_entry(Some(from), reading.now, change, audit);
        // The clock has moved whatever happens here: were the request failed for a lost entry, a retried
        // `advance` would move it twice, so a failure is logged rather than answered.
        if let Err(error) = state.store.record_action(&entry, reading.now).await {
            tracing::error!(error.cause = ?error, "the audit entry of a clock move was not written");
        }
        Ok(reading)
    });
    walk.await.map_err(ApiError::internal)?
}

/// The audit entry of a move of the virtual clock from `from` (`None`: the wall clock) to `to`, as `change` asked
/// (`simulation.clock`; docs/simulation.md).
pub fn clock_move_entry(
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
    change: ClockChange,
    context: AuditContext,
) -> AuditedAction {
    let asked = match change {
        ClockChange::Advance(step) => serde_json::json!({ "advance_secs": step.num_seconds() }),
        ClockChange::Set(at) => serde_json::json!({ "set": at }),
    };
    let details = serde_json::json!({ "from": from, "to": to, "change": asked });
    AuditedAction::succeeded("simulation.clock", "clock", details, context)
}

fn wall_now() -> DateTime<Utc> {
    SystemClock.now()
}

fn lease_end() -> DateTime<Utc> {
    wall_now() + chrono::Duration::from_std(CLOCK_LEASE).unwrap_or(chrono::Duration::seconds(30))
}

/// Takes the clock's lease, waiting up to [`CLOCK_BUSY_WAIT`] for another walker to finish.
async fn take_lease(state: &AppState, holder: Uuid) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + CLOCK_BUSY_WAIT;
    loop {
        if state.store.claim_clock(holder, wall_now(), lease_end()).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ErrorCode::ClockBusy.into());
        }
        tokio::time::sleep(FOREIGN_WORK_POLL * 5).await;
    }
}

/// Walks the clock to where `change` asks (see the module's notes); answers where it started and where it ends.
async fn walk(
    state: &AppState,
    clock: &SimulationClock,
    holder: Uuid,
    change: ClockChange,
) -> Result<(DateTime<Utc>, ClockReading), ApiError> {
    clock.refresh(state.store.as_ref()).await?;
    let start = clock.now();
    let target = change.target(start).map_err(|error| refusal(change, error))?;
    let mut at = start;
    let mut stops = 0u64;
    loop {
        let next_due = state.store.next_due_instant().await?;
        let stop = next_stop(at, target, next_due);
        publish(state, clock, holder, stop).await?;
        at = stop;
        stops += 1;
        if !run_due_work(state, holder, at).await? {
            if at == target {
                // The held work runs when a later advance passes the dead claim's end.
                tracing::warn!(clock.at = %at, "work due at the target is held by another instance that does not finish it; stopping here");
                break;
            }
            // Work due here is held by an instance that stopped answering: its claim ends one lease (on this clock)
            // later, when the work can be claimed again; the walk goes on from there rather than wait for ever.
            let lease = chrono::Duration::seconds(i64::try_from(state.config.scheduler_lease_secs).unwrap_or(30));
            let resume = (at + lease).min(target);
            tracing::warn!(clock.at = %at, clock.resume = %resume, "work due at this stop is held by another instance that does not finish it; moving on past its lease");
            publish(state, clock, holder, resume).await?;
            at = resume;
            continue;
        }
        if at == target {
            break;
        }
    }
    tracing::info!(clock.from = %start, clock.to = %target, clock.stops = stops, "virtual clock moved");
    Ok((start, ClockReading { now: target, mode: ClockMode::Virtual }))
}

/// Moves the shared clock to `at` (renewing the walker's lease) and this instance's reading with it.
async fn publish(state: &AppState, clock: &SimulationClock, holder: Uuid, at: DateTime<Utc>) -> Result<(), ApiError> {
    let renewed = state.store.claim_clock(holder, wall_now(), lease_end()).await?;
    if !renewed || !state.store.move_clock(holder, at, wall_now()).await? {
        // The lease ended (this walk stalled for longer than a lease) and another walker took the clock over.
        return Err(ApiError::new(ErrorCode::ClockBusy).with_message("another advance took the clock over"));
    }
    clock.observe(at);
    Ok(())
}

/// Runs every schedule occurrence and hold expiry due at or before `at` (this instance's clock reads `at`), and
/// waits for those other instances have claimed. `false` when work stays due for a whole lease without progress.
async fn run_due_work(state: &AppState, holder: Uuid, at: DateTime<Utc>) -> Result<bool, ApiError> {
    let patience = Duration::from_secs(state.config.scheduler_lease_secs);
    let mut stalled_since = tokio::time::Instant::now();
    loop {
        let claimed = crate::jobs::scheduler::poll(state).await?;
        let expired = crate::jobs::holds::expire_due_holds(state).await?;
        if state.store.next_due_instant().await?.is_none_or(|due| due > at) {
            return Ok(true);
        }
        if claimed + expired > 0 {
            stalled_since = tokio::time::Instant::now();
            continue;
        }
        if stalled_since.elapsed() >= patience {
            return Ok(false);
        }
        // Another instance holds what is left: wait for it, keeping the lease.
        if !state.store.claim_clock(holder, wall_now(), lease_end()).await? {
            return Err(ApiError::new(ErrorCode::ClockBusy).with_message("another advance took the clock over"));
        }
        tokio::time::sleep(FOREIGN_WORK_POLL).await;
    }
}

fn refusal(change: ClockChange, error: ClockError) -> ApiError {
    let field = match change {
        ClockChange::Advance(_) => "advance",
        ClockChange::Set(_) => "set",
    };
    match error {
        ClockError::Backwards { .. } => ApiError::new(ErrorCode::ClockBackwards).with_message(error.to_string()),
        ClockError::OutOfRange => crate::http::money::invalid_request(field, &error.to_string()),
    }
}

/// Follows the shared clock: reads it every [`CLOCK_REFRESH_INTERVAL`] until stopped.
pub struct ClockFollower {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ClockFollower {
    /// Starts following the database's clock into `clock`.
    pub fn start(state: &AppState, clock: Arc<SimulationClock>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let store = state.store.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLOCK_REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                if let Err(error) = clock.refresh(store.as_ref()).await {
                    tracing::debug!(error = %error, "virtual clock not read; trying again next tick");
                }
            }
        });
        Self { stop, task }
    }

    /// Stops following.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
