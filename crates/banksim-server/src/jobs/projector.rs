//! The projectors: keep every projection (daily statements, system totals) up with the event log.
//!
//! Each round, for each projection, a projector reads the events after the projection's checkpoint and hands them
//! to the store, which applies them and moves the checkpoint in one transaction, skipping any event it already
//! applied. So a projector that dies mid-stream resumes from the last commit, a delivery read twice changes nothing
//! twice, and any number of instances may run projectors: one applies at a time (PostgreSQL hands the others
//! `Busy` at once), the rest wait for the next round. While behind, a projector goes on without waiting.

use std::time::Duration;

use banksim_store::{Projection, ProjectionProgress, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppState;

/// How long a reader waits between checks while another consumer holds a projection.
const BUSY_PAUSE: Duration = Duration::from_millis(10);

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
                let mut applied = 0;
                for projection in Projection::ALL {
                    match step(&state, projection).await {
                        Ok(events) => applied += events,
                        Err(err) => tracing::warn!(%projection, error = %err, "projector step failed; retrying"),
                    }
                }
                if *stopped.borrow() {
                    return;
                }
                if applied == 0 {
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

/// Applies one delivery (at most `PROJECTOR_BATCH_MAX` events after the checkpoint) to a projection; returns how
/// many events it applied (0 when caught up, or when another consumer holds the projection).
pub async fn step(state: &AppState, projection: Projection) -> Result<usize, StoreError> {
    let status = state.store.projection_status(projection).await?;
    if status.lag_events() == 0 {
        return Ok(0);
    }
    let events = state.store.list_events(status.checkpoint, state.config.projector_batch_max).await?;
    match state.store.apply_to_projection(projection, &events, state.clock.now()).await? {
        ProjectionProgress::Applied { events, .. } => Ok(events),
        ProjectionProgress::Busy => Ok(0),
    }
}

/// Brings a projection up to the log's head as it is now, applying the missing events here if need be, so that a
/// reader sees its own writes. Gives up after `within` (returns `false`): the projection is then read as it is.
pub async fn catch_up(state: &AppState, projection: Projection, within: Duration) -> Result<bool, StoreError> {
    let deadline = tokio::time::Instant::now() + within;
    let target = state.store.projection_status(projection).await?.head;
    loop {
        if state.store.projection_status(projection).await?.checkpoint >= target {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        if step(state, projection).await? == 0 {
            tokio::time::sleep(BUSY_PAUSE).await;
        }
    }
}
