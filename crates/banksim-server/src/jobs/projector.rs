//! The projectors: keep every projection (daily statements, system totals) up with the event log.
//!
//! Each round, for each projection, a projector reads the events after the projection's checkpoint and hands them
//! to the store, which applies them and moves the checkpoint in one transaction, skipping any event it already
//! applied. So a projector that dies mid-stream resumes from the last commit, a delivery read twice changes nothing
//! twice, and any number of instances may run projectors: one applies at a time (PostgreSQL hands the others
//! `Busy` at once), the rest wait for the next round. The events are read once per round for every projection.
//! While a round fills a whole delivery the projector goes on at once; otherwise it waits the poll interval, so
//! that under load each transaction applies many events rather than a few.

use std::time::Duration;

use banksim_store::{Projection, ProjectionProgress, ProjectionStatus, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::app::AppState;

/// How long a reader waits between checks while another consumer holds a projection.
const BUSY_PAUSE: Duration = Duration::from_millis(10);

/// How often a reader that found a projection busy tries to apply the missing events itself.
const APPLY_RETRY: Duration = Duration::from_millis(100);

/// The running projector of this instance: stop it to let the delivery in progress finish.
pub struct Projector {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Projector {
    /// Starts following the event log.
    pub fn start(state: AppState) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let idle = Duration::from_millis(state.config.projector_poll_interval_ms);
            loop {
                let behind = match step(&state, &Projection::ALL).await {
                    Ok(delivery) => delivery.full,
                    Err(err) => {
                        tracing::warn!(error = %err, "projector step failed; retrying after the poll interval");
                        false
                    }
                };
                if *stopped.borrow() {
                    return;
                }
                // A full delivery means more is waiting; otherwise the projections are caught up (or busy
                // elsewhere), and waiting lets the next delivery gather more events into one transaction.
                if !behind {
                    tokio::select! {
                        () = tokio::time::sleep(idle) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops after the delivery in progress, if any, has been applied.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Events applied, summed over the projections.
    pub applied: usize,
    /// Whether the delivery was as large as allowed (`PROJECTOR_BATCH_MAX`): more events are probably waiting.
    pub full: bool,
}

/// Reads the events after the lowest checkpoint of `projections` once (at most `PROJECTOR_BATCH_MAX`) and hands
/// them to each projection that is behind; each skips what it has already applied. A projection that another
/// consumer holds right now is left to it. A round with events to apply is traced as a `projector.round` span (a
/// round that finds every projection caught up, the common case, is not).
pub async fn step(state: &AppState, projections: &[Projection]) -> Result<Delivery, StoreError> {
    let mut behind = Vec::with_capacity(projections.len());
    for &projection in projections {
        let status = state.store.projection_status(projection).await?;
        if status.lag_events() > 0 {
            behind.push(status);
        }
    }
    let Some(from) = behind.iter().map(|s| s.checkpoint).min() else { return Ok(Delivery::default()) };
    let span = tracing::info_span!(
        "projector.round",
        projections.behind = behind.len(),
        events.applied = tracing::field::Empty,
        delivery.full = tracing::field::Empty,
    );
    let delivery = apply(state, behind, from).instrument(span.clone()).await?;
    span.record("events.applied", delivery.applied);
    span.record("delivery.full", delivery.full);
    Ok(delivery)
}

/// Reads the events after `from` once and hands them to each projection of `behind`.
async fn apply(state: &AppState, behind: Vec<ProjectionStatus>, from: i64) -> Result<Delivery, StoreError> {
    let batch_max = state.config.projector_batch_max;
    let events = state.store.list_events(from, batch_max).await?;
    let mut delivery = Delivery { applied: 0, full: events.len() >= batch_max as usize };
    // A projection that fails (an event it cannot read stops it until someone looks) does not hold the others back.
    let mut failure = None;
    for status in behind {
        match state.store.apply_to_projection(status.projection, &events, state.clock.now()).await {
            Ok(ProjectionProgress::Applied { events, .. }) => delivery.applied += events,
            Ok(ProjectionProgress::Busy) => {}
            Err(err) => {
                tracing::warn!(projection = %status.projection, error = %err, "projection not applied");
                failure.get_or_insert(err);
            }
        }
    }
    match failure {
        Some(err) if delivery.applied == 0 => Err(err),
        _ => Ok(delivery),
    }
}

/// Brings a projection up to the log's head as it is now, applying the missing events here if need be, so that a
/// reader sees its own writes. While another consumer holds the projection, only its checkpoint is watched (a new
/// attempt to apply is made every [`APPLY_RETRY`], in case that consumer went away). Gives up after `within`
/// (returns `false`): the projection is then read as it is.
pub async fn catch_up(state: &AppState, projection: Projection, within: Duration) -> Result<bool, StoreError> {
    let deadline = tokio::time::Instant::now() + within;
    let target = state.store.projection_status(projection).await?.head;
    let mut next_attempt = tokio::time::Instant::now();
    loop {
        if state.store.projection_status(projection).await?.checkpoint >= target {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        if now >= next_attempt && step(state, &[projection]).await?.applied > 0 {
            continue;
        }
        next_attempt = next_attempt.max(now + APPLY_RETRY);
        tokio::time::sleep(BUSY_PAUSE).await;
    }
}
