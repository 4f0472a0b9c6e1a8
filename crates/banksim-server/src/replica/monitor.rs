//! The replica's monitor: a task that reads the primary's flushed position and the replica's replay position,
//! and publishes what it sees (health, replay position, lag) to the reads that route on it.
//!
//! Every `REPLICA_POLL_INTERVAL_MS` it asks both (the primary's position feeds the lag history). While a read
//! waits for the replica to replay its caller's write, it asks the replica alone at once, then every
//! millisecond until no read waits: one query serves every waiting read, and an idle instance asks twice per
//! interval. Its calls go through the `replica` and `database` breakers like any other, so a replica that stops
//! answering opens its breaker, and the monitor's call after the reset timeout is the trial that closes it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use banksim_store::WalPosition;
use tokio::time::Instant;

use super::lag::LagEstimator;
use super::routing::{Health, View};
use super::{CALL_TIMEOUT, Shared};

/// Between two polls while reads wait: about the time a standby takes to replay a commit it has received.
const WAITING_POLL_GAP: Duration = Duration::from_millis(1);

/// Runs until the replica is dropped.
pub(super) async fn run(shared: Weak<Shared>) {
    let mut estimator = LagEstimator::default();
    let mut next_full = Instant::now();
    loop {
        let Some(shared) = shared.upgrade() else { return };
        let now = Instant::now();
        let full = now >= next_full;
        if full {
            next_full = now + shared.poll_interval;
            primary_round(&shared, &mut estimator).await;
        }
        replica_round(&shared, &mut estimator).await;
        let until = if shared.waiting.load(Ordering::SeqCst) > 0 {
            (Instant::now() + WAITING_POLL_GAP).min(next_full)
        } else {
            next_full
        };
        wait(&shared, until).await;
    }
}

async fn wait(shared: &Arc<Shared>, until: Instant) {
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        () = shared.wake.notified() => {}
    }
}

/// Records the primary's flushed position (a failure leaves the lag history as it was: the view then ages).
async fn primary_round(shared: &Shared, estimator: &mut LagEstimator) {
    let asked = Instant::now();
    match tokio::time::timeout(CALL_TIMEOUT, shared.primary.wal_position()).await {
        Ok(Ok(Some(WalPosition { flushed: Some(flushed), .. }))) => estimator.primary_seen(asked, flushed),
        Ok(Ok(_)) => tracing::debug!("replica monitor: the primary reports no WAL position"),
        Ok(Err(err)) => tracing::debug!(error = %err, "replica monitor: the primary's position is unavailable"),
        Err(_) => tracing::debug!("replica monitor: the primary's position did not come in time"),
    }
}

/// Reads the replica's position and publishes the view.
async fn replica_round(shared: &Shared, estimator: &mut LagEstimator) {
    let answer = tokio::time::timeout(CALL_TIMEOUT, shared.replica.wal_position()).await;
    let now = Instant::now();
    let view = match answer {
        Ok(Ok(Some(position))) if position.in_recovery => {
            let replay_age = position.replayed_commit_at.map(|at| (position.now - at).to_std().unwrap_or_default());
            let lag = position.replayed.and_then(|replayed| estimator.lag(now, replayed, replay_age));
            if let Some(replayed) = position.replayed {
                shared.floors.replica_replayed(replayed);
            }
            View {
                health: Health::Standby,
                replayed: position.replayed,
                lag: lag.and_then(|lag| lag.staleness),
                lag_bytes: lag.map(|lag| lag.bytes),
                seen_at: lag.map_or(now, |lag| lag.as_of),
            }
        }
        Ok(Ok(_)) => View { health: Health::NotStandby, ..View::unknown(now) },
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "replica monitor: the replica is unavailable");
            View { health: Health::Unavailable, ..View::unknown(now) }
        }
        Err(_) => View { health: Health::Unavailable, ..View::unknown(now) },
    };
    let before = shared.view.send_replace(view).health;
    if before != view.health {
        match view.health {
            Health::Standby => tracing::info!("replica available: reads that may lag use it again"),
            Health::NotStandby => {
                tracing::warn!("DATABASE_REPLICA_URL is not a standby (not in recovery): reads skip it")
            }
            Health::Unavailable | Health::Unknown => {
                tracing::warn!("replica unavailable: reads that may lag go to the primary")
            }
        }
    }
}
