//! The scheduler: runs each occurrence of each scheduled transaction exactly once.
//!
//! Every poll, a worker claims the due schedules (a lease in the database, so any number of instances can run
//! workers and none takes a schedule another holds; a lease that expires — its instance died — frees the schedule
//! again), and runs their next occurrence through the same writer as the API. The movement carries the idempotency
//! key `schedule:<id>:<occurrence>:<attempt>` of the schedule's owner: if an instance dies after the movement
//! committed but before it recorded the occurrence, the next run of that attempt replays the stored answer
//! instead of moving money again. (A refused attempt's answer is stored too, which is why a retry is a new
//! attempt with its own key.) The next instant always comes from the schedule's own calendar, so worker delay
//! causes no drift, and missed occurrences after downtime run once each, in order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use banksim_core::ledger::{Command, Movement, TransactionKind};
use banksim_core::schedule::{ScheduleStatus, retry_delay, should_retry, status_after_failed_occurrence};
use banksim_store::{
    AuditContext, ExecutionRecord, ExecutionStatus, IdempotencyClaim, LedgerOutcome, LedgerRequest, LedgerWork,
    NextRun, OccurrenceUpdate, ScheduleClaim, ScheduleRecord,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::app::AppState;

/// The idempotency keys of scheduled occurrences start with this; clients may not use it (their keys share the
/// owner's key space).
pub const SCHEDULER_KEY_PREFIX: &str = "schedule:";

/// The running scheduler: stop it to let the occurrence in progress finish.
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Scheduler {
    /// Starts polling for due schedules.
    pub fn start(state: AppState) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(state.config.scheduler_poll_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                if let Err(err) = poll(&state).await {
                    tracing::warn!(error = %err, "scheduler poll failed; retrying next tick");
                }
                if let Err(err) = crate::jobs::holds::expire_due_holds(&state).await {
                    tracing::warn!(error = %err, "hold expiry failed; retrying next tick");
                }
            }
        });
        Self { stop, task }
    }

    /// Stops after the poll in progress, if any, has finished.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Claims the due schedules and runs their next occurrence, all at once (the writer batches them); returns how many
/// it claimed. A poll that claimed something is traced as a `scheduler.poll` span holding the runs (an idle poll, the
/// common case, is not). An advance of the virtual clock calls it at each stop.
pub(crate) async fn poll(state: &AppState) -> Result<usize, banksim_store::StoreError> {
    let started = std::time::Instant::now();
    let lease = Duration::from_secs(state.config.scheduler_lease_secs);
    let claimed = state.store.claim_due_schedules(state.clock.now(), lease, state.config.scheduler_batch_max).await?;
    let stats = state.metrics.scheduler();
    let took = started.elapsed();
    stats.claim_seconds.observe(took.as_secs_f64());
    stats.last_claimed.store(claimed.len() as u64, Ordering::Relaxed);
    stats.last_claim_micros.store(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    if claimed.is_empty() {
        return Ok(0);
    }
    let count = claimed.len();
    let span = tracing::info_span!(
        "scheduler.poll",
        schedules.claimed = claimed.len(),
        claim_ms = took.as_secs_f64() * 1000.0,
    );
    let runs = claimed.into_iter().map(|claim| async move {
        if let Err(err) = run_occurrence(state, &claim).await {
            // The same attempt is made again (its idempotency key keeps it single): soon if the lease can be
            // given back now, else when it expires.
            tracing::warn!(schedule.id = %claim.schedule.id, error = %err, "scheduled occurrence not recorded");
            let now = state.clock.now();
            let _ = state.store.retry_occurrence(&claim, claim.schedule.attempt, soon(state, now), now).await;
        }
    });
    futures::future::join_all(runs).instrument(span).await;
    Ok(count)
}

/// When the same attempt is made again after a writer or database error: one retry unit from now.
fn soon(state: &AppState, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    now + chrono::Duration::milliseconds(i64::try_from(state.config.scheduler_retry_base_ms).unwrap_or(i64::MAX))
}

/// What one attempt of an occurrence did.
enum Attempt {
    /// The money moved.
    Posted(Uuid),
    /// The ledger (or a check before it) refused: a failed attempt.
    Refused(String),
    /// The writer could not say (unavailable, or a commit whose outcome is unknown): the same attempt, with the
    /// same key, is made again, so a commit that did happen is replayed rather than repeated.
    Unknown(String),
}

async fn run_occurrence(state: &AppState, claim: &ScheduleClaim) -> Result<(), banksim_store::StoreError> {
    let schedule = &claim.schedule;
    let now = state.clock.now();
    let owner_active = state.store.find_user(schedule.user_id).await?.is_some_and(|u| u.is_active);
    if !owner_active {
        let audit = AuditContext {
            request_id: Some(format!("scheduler-{}", schedule.id)),
            trace_id: crate::telemetry::current_trace_id(),
            ..AuditContext::default()
        };
        let active = [ScheduleStatus::Active];
        let paused = ScheduleStatus::Paused;
        state.store.change_schedule_status(schedule.id, &active, paused, NextRun::Keep, now, &audit).await?;
        return Ok(());
    }
    let occurrence = claim.occurrence();
    let attempt = attempt(state, schedule, occurrence).await;
    let stats = state.metrics.scheduler();
    match attempt {
        Attempt::Unknown(reason) => {
            stats.unknown.inc();
            let retry_at = soon(state, now);
            tracing::warn!(schedule.id = %schedule.id, occurrence, %reason, "scheduled occurrence outcome unknown; trying the same attempt again");
            state.store.retry_occurrence(claim, schedule.attempt, retry_at, now).await?;
        }
        Attempt::Posted(transaction_id) => {
            stats.succeeded.inc();
            let finished = schedule.calendar.is_finished(occurrence);
            let update = OccurrenceUpdate {
                execution: execution(occurrence, now, ExecutionStatus::Success, Some(transaction_id), None, schedule),
                next_execution_at: schedule.calendar.next_after(occurrence),
                status: if finished { ScheduleStatus::Completed } else { ScheduleStatus::Active },
                consecutive_failures: 0,
            };
            state.store.record_occurrence(claim, &update, now).await?;
        }
        Attempt::Refused(reason) => {
            let failed_attempts = schedule.attempt + 1;
            if should_retry(failed_attempts) {
                // retry_delay counts in units of one second; the configuration sets what one unit is worth.
                let units_ms = u64::try_from(retry_delay(failed_attempts).as_millis()).unwrap_or(u64::MAX);
                let delay_ms = units_ms.saturating_mul(state.config.scheduler_retry_base_ms) / 1000;
                let retry_at = now + chrono::Duration::milliseconds(i64::try_from(delay_ms).unwrap_or(i64::MAX));
                stats.retried.inc();
                tracing::info!(schedule.id = %schedule.id, occurrence, attempt = failed_attempts, %reason, "scheduled occurrence will be retried");
                state.store.retry_occurrence(claim, failed_attempts, retry_at, now).await?;
            } else {
                stats.failed.inc();
                let failures = schedule.consecutive_failures + 1;
                let finished = schedule.calendar.is_finished(occurrence);
                let update = OccurrenceUpdate {
                    execution: execution(occurrence, now, ExecutionStatus::Failed, None, Some(reason), schedule),
                    next_execution_at: schedule.calendar.next_after(occurrence),
                    status: status_after_failed_occurrence(schedule.calendar.kind(), failures, finished),
                    consecutive_failures: failures,
                };
                state.store.record_occurrence(claim, &update, now).await?;
            }
        }
    }
    Ok(())
}

fn execution(
    occurrence: u32,
    executed_at: chrono::DateTime<chrono::Utc>,
    status: ExecutionStatus,
    transaction_id: Option<Uuid>,
    error: Option<String>,
    schedule: &ScheduleRecord,
) -> ExecutionRecord {
    ExecutionRecord { occurrence, executed_at, status, transaction_id, error, attempts: schedule.attempt + 1 }
}

/// Moves the money of one attempt through the writer. The attempt's key is looked up first: an earlier run of this
/// attempt may have committed (its instance died before recording it), and its stored answer is the outcome,
/// whatever the checks made before the writer would say now.
async fn attempt(state: &AppState, schedule: &ScheduleRecord, occurrence: u32) -> Attempt {
    let key = format!("{SCHEDULER_KEY_PREFIX}{}:{occurrence}:{}", schedule.id, schedule.attempt);
    let request_hash = Sha256::digest(key.as_bytes()).to_vec();
    match state.store.find_idempotent(schedule.user_id, &key).await {
        Ok(Some(stored)) if stored.request_hash == request_hash => return replayed(&stored),
        Ok(Some(_)) => return Attempt::Refused("idempotency_key_reused".to_owned()),
        Ok(None) => {}
        Err(error) => return Attempt::Unknown(error.to_string()),
    }
    let movement = match (schedule.transaction_type, schedule.to_user_id) {
        (TransactionKind::Credit, _) => Movement::Credit { user_id: schedule.user_id, amount: schedule.amount },
        (TransactionKind::Debit, _) => Movement::Debit { user_id: schedule.user_id, amount: schedule.amount },
        (TransactionKind::Transfer, Some(to_user_id)) => {
            if let Err(refusal) = crate::service::ledger::check_recipient(state, to_user_id).await {
                return Attempt::Refused(refusal.code().as_str().to_owned());
            }
            Movement::Transfer { from_user_id: schedule.user_id, to_user_id, amount: schedule.amount }
        }
        (kind, _) => return Attempt::Refused(format!("a scheduled {kind} cannot run")),
    };
    let request = LedgerRequest {
        work: LedgerWork::One(Command {
            transaction_id: state.ids.system_movement(&key),
            movement,
            description: schedule.description.clone(),
            effective_at: None,
        }),
        idempotency: Some(IdempotencyClaim { user_id: schedule.user_id, request_hash: request_hash.clone(), key }),
        audit: AuditContext {
            actor_id: Some(schedule.user_id),
            request_id: Some(format!("schedule-{}-{occurrence}", schedule.id)),
            trace_id: crate::telemetry::current_trace_id(),
            ..AuditContext::default()
        },
    };
    match state.writer.submit(request).await {
        Ok(LedgerOutcome::Posted(record)) => Attempt::Posted(record.id),
        Ok(LedgerOutcome::Refused(refusal)) => Attempt::Refused(refusal.code().to_owned()),
        Ok(LedgerOutcome::Replayed(stored)) if stored.request_hash == request_hash => replayed(&stored),
        Ok(LedgerOutcome::Replayed(_)) => Attempt::Refused("idempotency_key_reused".to_owned()),
        Ok(LedgerOutcome::Batch(_)) => Attempt::Unknown("one movement was answered as a batch".to_owned()),
        Err(error) => Attempt::Unknown(error.code().as_str().to_owned()),
    }
}

/// The outcome an earlier run of this attempt stored (it committed, then its instance died before recording).
fn replayed(stored: &banksim_store::StoredResponse) -> Attempt {
    let body: serde_json::Value = serde_json::from_str(&stored.body).unwrap_or_default();
    match (stored.status, body["id"].as_str().and_then(|id| id.parse().ok())) {
        (201, Some(id)) => Attempt::Posted(id),
        _ => Attempt::Refused(body["error_code"].as_str().unwrap_or("refused").to_owned()),
    }
}
