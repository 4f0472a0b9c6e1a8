//! The storage contract of scheduled transactions, shared by the backends: the stored schedule, its recorded
//! occurrences, the queries and updates the API and the worker make, and the event and audit rows they write.

use std::fmt;
use std::str::FromStr;

use banksim_core::ledger::TransactionKind;
use banksim_core::money::Money;
use banksim_core::schedule::{Calendar, ScheduleStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::ledger::{AuditContext, AuditRow};

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Id.
    pub id: Uuid,
    /// Owner: the payer of a debit or transfer, the receiver of a credit.
    pub user_id: Uuid,
    /// `credit`, `debit` or `transfer` (never `exchange`).
    pub transaction_type: TransactionKind,
    /// Amount of each occurrence (positive).
    pub amount: Money,
    /// Description copied onto each transaction.
    pub description: Option<String>,
    /// Receiver of a transfer.
    pub to_user_id: Option<Uuid>,
    /// When the occurrences fall (its kind is the schedule type).
    pub calendar: Calendar,
    /// How many occurrences have been processed (run, or recorded as failed or skipped).
    pub current_occurrence: u32,
    /// When the worker next takes it up (the next occurrence, or a retry); `None` once it has finished.
    pub next_execution_at: Option<DateTime<Utc>>,
    /// When the last processed occurrence was recorded.
    pub last_executed_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: ScheduleStatus,
    /// Failed attempts of the current occurrence so far (0 when none failed).
    pub attempt: u32,
    /// Failed occurrences in a row.
    pub consecutive_failures: u32,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl ScheduleRecord {
    /// Whether the schedule runs when due (the API's `is_active`).
    pub fn is_active(&self) -> bool {
        self.status == ScheduleStatus::Active
    }
}

/// What became of one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// The transaction was posted.
    Success,
    /// Every attempt failed.
    Failed,
    /// Not run (its time passed while it could not run, and the worker decided to skip it).
    Skipped,
}

impl ExecutionStatus {
    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Self::Success),
            "failed" => Ok(Self::Failed),
            "skipped" => Ok(Self::Skipped),
            _ => Err("must be one of: success, failed, skipped".to_owned()),
        }
    }
}

/// One recorded occurrence of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRecord {
    /// Its number, from 1.
    pub occurrence: u32,
    /// When it was recorded.
    pub executed_at: DateTime<Utc>,
    /// What became of it.
    pub status: ExecutionStatus,
    /// The transaction it posted, if any.
    pub transaction_id: Option<Uuid>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How many attempts it took (0 for a skipped occurrence).
    pub attempts: u32,
}

/// Which schedules of a user to list, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleQuery {
    /// The owner.
    pub user_id: Uuid,
    /// Only with this status.
    pub status: Option<ScheduleStatus>,
    /// Only active ones (`true`) or only the others (`false`).
    pub is_active: Option<bool>,
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

/// A schedule a worker has claimed. Its claim runs occurrence `current_occurrence + 1`, attempt `attempt`; only
/// the holder of `lease_token` may record that occurrence or ask for a retry, and only while the schedule is still
/// where the claim found it, so a worker whose lease expired (another took the schedule over) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleClaim {
    /// The schedule as it was when claimed.
    pub schedule: ScheduleRecord,
    /// Names this claim; a later claim of the same schedule gets another token.
    pub lease_token: Uuid,
}

impl ScheduleClaim {
    /// The occurrence this claim runs.
    pub fn occurrence(&self) -> u32 {
        self.schedule.current_occurrence.saturating_add(1)
    }
}

/// What a status change does to a schedule's next execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRun {
    /// Left as it is (pause).
    Keep,
    /// Cleared: the schedule will not run again (cancel).
    Clear,
    /// The next occurrence of its calendar after those recorded, read under the row lock (resume), so that an
    /// occurrence recorded while the change waited is never run again.
    FromCalendar,
}

impl NextRun {
    /// The new `next_execution_at` of `schedule` (read under its lock), or `None` to leave it.
    pub(crate) fn resolve(self, schedule: &ScheduleRecord) -> Option<Option<DateTime<Utc>>> {
        match self {
            Self::Keep => None,
            Self::Clear => Some(None),
            Self::FromCalendar => Some(schedule.calendar.next_after(schedule.current_occurrence)),
        }
    }
}

/// What the worker decided for the occurrence it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccurrenceUpdate {
    /// The row to record (its occurrence is the schedule's `current_occurrence + 1`).
    pub execution: ExecutionRecord,
    /// The schedule's next execution, `None` once it has finished.
    pub next_execution_at: Option<DateTime<Utc>>,
    /// The schedule's status afterwards.
    pub status: ScheduleStatus,
    /// Failed occurrences in a row afterwards.
    pub consecutive_failures: u32,
}

/// The `aggregate_type` of schedule events.
pub(crate) const AGGREGATE: &str = "schedule";

/// The `entity_type` of schedule audit entries.
const ENTITY: &str = "schedule";

/// The event type and audit action of a move to `status` by its owner.
pub(crate) fn status_change_names(to: ScheduleStatus) -> (&'static str, &'static str) {
    match to {
        ScheduleStatus::Paused => ("SchedulePaused", "schedule.pause"),
        ScheduleStatus::Active => ("ScheduleResumed", "schedule.resume"),
        ScheduleStatus::Cancelled => ("ScheduleCancelled", "schedule.cancel"),
        ScheduleStatus::Completed => ("ScheduleCompleted", "schedule.complete"),
        ScheduleStatus::Failed => ("ScheduleFailed", "schedule.fail"),
    }
}

/// The event type of a recorded occurrence.
pub(crate) fn execution_event_type(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Success => "ScheduleExecuted",
        ExecutionStatus::Failed => "ScheduleFailed",
        ExecutionStatus::Skipped => "ScheduleSkipped",
    }
}

/// The schedule as event and audit data.
pub(crate) fn schedule_json(s: &ScheduleRecord) -> serde_json::Value {
    json!({
        "id": s.id,
        "user_id": s.user_id,
        "transaction_type": s.transaction_type,
        "amount": s.amount,
        "description": s.description,
        "to_user_id": s.to_user_id,
        "schedule_type": s.calendar.kind(),
        "execute_at": s.calendar.execute_at,
        "recurrence_pattern": s.calendar.recurrence,
        "recurrence_end_date": s.calendar.recurrence_end_date,
        "max_occurrences": s.calendar.max_occurrences,
        "current_occurrence": s.current_occurrence,
        "next_execution_at": s.next_execution_at,
        "status": s.status,
    })
}

/// The data of an occurrence's event and audit entry.
pub(crate) fn execution_json(
    id: Uuid,
    update: &OccurrenceUpdate,
    before: ScheduleStatus,
    after: ScheduleStatus,
) -> serde_json::Value {
    let e = &update.execution;
    json!({
        "schedule_id": id,
        "occurrence": e.occurrence,
        "executed_at": e.executed_at,
        "status": e.status,
        "transaction_id": e.transaction_id,
        "error": e.error,
        "attempts": e.attempts,
        "next_execution_at": update.next_execution_at,
        "consecutive_failures": update.consecutive_failures,
        "before": {"status": before},
        "after": {"status": after},
    })
}

/// An audit entry about a schedule.
pub(crate) fn audit_row(
    id: Uuid,
    action: &str,
    outcome: String,
    details: serde_json::Value,
    audit: Option<&AuditContext>,
) -> AuditRow {
    AuditRow {
        entry_id: Uuid::now_v7(),
        actor_id: audit.and_then(|a| a.actor_id),
        action: action.to_owned(),
        entity_type: ENTITY,
        entity_id: Some(id.to_string()),
        outcome,
        details: details.to_string(),
        ip: audit.and_then(|a| a.ip.clone()),
        user_agent: audit.and_then(|a| a.user_agent.clone()),
        request_id: audit.and_then(|a| a.request_id.clone()),
        trace_id: audit.and_then(|a| a.trace_id.clone()),
    }
}

/// The audit outcome of a recorded occurrence: "success", or the failure text.
pub(crate) fn execution_outcome(execution: &ExecutionRecord) -> String {
    match execution.status {
        ExecutionStatus::Success => "success".to_owned(),
        ExecutionStatus::Skipped => "skipped".to_owned(),
        ExecutionStatus::Failed => execution.error.clone().unwrap_or_else(|| "failed".to_owned()),
    }
}

/// A stored counter (never negative, never beyond `u32`) back as a `u32`.
pub(crate) fn counter(raw: i64, what: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(raw).map_err(|_| sqlx::Error::Decode(format!("{what} out of range: {raw}").into()))
}

/// A `u32` counter for an `integer` column. Counters grow by one per occurrence, so they never come near
/// `i32::MAX`; saturating keeps the conversion total all the same.
pub(crate) fn int4(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `now + lease`, saturating at the latest representable instant.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
