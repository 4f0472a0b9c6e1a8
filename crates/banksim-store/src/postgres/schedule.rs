//! Scheduled transactions on PostgreSQL.
//!
//! Every change to a schedule first locks its row (`FOR UPDATE`, or the `UPDATE` itself), then appends its event
//! in a later statement: under READ COMMITTED that statement sees every event committed by whoever held the lock
//! before, so the per-aggregate version (the last one + 1) is never taken twice. Workers claim due schedules with
//! `FOR UPDATE SKIP LOCKED` and a lease, so many instances never take the same schedule at once.

use banksim_core::money::Money;
use banksim_core::schedule::{Calendar, ScheduleStatus};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::ledger::{AuditContext, AuditRow, IdempotencyClaim, parse_currency, parse_stored};
use crate::schedule::{
    AGGREGATE, ExecutionRecord, NextRun, OccurrenceUpdate, ScheduleClaim, ScheduleQuery, ScheduleRecord, audit_row,
    counter, execution_event_type, execution_json, execution_outcome, int4, lease_end, schedule_json,
    status_change_names,
};
use crate::{StoreError, model::offset_i64};

const SCHEDULE_COLUMNS: &str = "id, user_id, transaction_type, amount_minor, currency, description, to_user_id, \
    execute_at, recurrence_pattern, recurrence_end_date, max_occurrences, current_occurrence, next_execution_at, \
    last_executed_at, status, attempt, consecutive_failures, created_at, updated_at";

pub(crate) async fn create_schedule(
    pool: &PgPool,
    s: &ScheduleRecord,
    idempotency: Option<(&IdempotencyClaim, u16, &str)>,
    audit: &AuditContext,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if let Some((claim, status, body)) = idempotency {
        // The same lock the ledger takes for this key, so a schedule and a money request never race for it.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:{}", claim.user_id, claim.key))
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, key) DO NOTHING",
        )
        .bind(claim.user_id)
        .bind(&claim.key)
        .bind(&claim.request_hash)
        .bind(i32::from(status))
        .bind(body)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict("idempotency_key_taken"));
        }
    }
    sqlx::query(
        "INSERT INTO schedules (id, user_id, transaction_type, amount_minor, currency, description, to_user_id,
             schedule_type, execute_at, recurrence_pattern, recurrence_end_date, max_occurrences, current_occurrence,
             next_execution_at, last_executed_at, status, attempt, consecutive_failures, lease_until, created_at,
             updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, NULL, $19, $20)",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(s.transaction_type.as_str())
    .bind(s.amount.amount_minor())
    .bind(s.amount.currency().code())
    .bind(&s.description)
    .bind(s.to_user_id)
    .bind(s.calendar.kind().as_str())
    .bind(s.calendar.execute_at)
    .bind(s.calendar.recurrence.map(|r| r.as_str()))
    .bind(s.calendar.recurrence_end_date)
    .bind(s.calendar.max_occurrences.map(i64::from))
    .bind(int4(s.current_occurrence))
    .bind(s.next_execution_at)
    .bind(s.last_executed_at)
    .bind(s.status.as_str())
    .bind(int4(s.attempt))
    .bind(int4(s.consecutive_failures))
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(&mut *tx)
    .await?;
    let data = schedule_json(s);
    let mut row = audit_row(s.id, "schedule.create", "success".to_owned(), json!({"after": data}), Some(audit));
    row.actor_id = row.actor_id.or(Some(s.user_id));
    insert_audit(&mut tx, &row, s.created_at).await?;
    insert_event(&mut tx, s.id, "ScheduleCreated", &data, s.created_at).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(())
}

pub(crate) async fn find_schedule(pool: &PgPool, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(schedule_from_row).transpose()?)
}

pub(crate) async fn list_schedules(pool: &PgPool, q: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, StoreError> {
    let sql = format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules
         WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::boolean IS NULL OR (status = 'active') = $3)
         ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    );
    let rows = sqlx::query(&sql)
        .bind(q.user_id)
        .bind(q.status.map(ScheduleStatus::as_str))
        .bind(q.is_active)
        .bind(i64::from(q.limit))
        .bind(offset_i64(q.offset))
        .fetch_all(pool)
        .await?;
    rows.iter().map(schedule_from_row).collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) async fn change_schedule_status(
    pool: &PgPool,
    id: Uuid,
    from: &[ScheduleStatus],
    to: ScheduleStatus,
    next: NextRun,
    now: DateTime<Utc>,
    audit: &AuditContext,
) -> Result<ScheduleRecord, StoreError> {
    let mut tx = pool.begin().await?;
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 FOR UPDATE");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?.ok_or(StoreError::NotFound)?;
    let before = schedule_from_row(&row)?;
    if !from.contains(&before.status) {
        return Err(StoreError::Conflict("schedule_state"));
    }
    let next_execution_at = next.resolve(&before);
    let sql = format!(
        "UPDATE schedules SET status = $2,
             next_execution_at = CASE WHEN $3 THEN $4::timestamptz ELSE next_execution_at END,
             consecutive_failures = CASE WHEN $2 = 'active' THEN 0 ELSE consecutive_failures END,
             updated_at = $5
         WHERE id = $1 RETURNING {SCHEDULE_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(to.as_str())
        .bind(next_execution_at.is_some())
        .bind(next_execution_at.flatten())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    let after = schedule_from_row(&row)?;
    let (event_type, action) = status_change_names(to);
    let data = json!({
        "schedule_id": id,
        "before": {"status": before.status, "next_execution_at": before.next_execution_at},
        "after": {"status": after.status, "next_execution_at": after.next_execution_at},
    });
    insert_audit(&mut tx, &audit_row(id, action, "success".to_owned(), data.clone(), Some(audit)), now).await?;
    insert_event(&mut tx, id, event_type, &data, now).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(after)
}

pub(crate) async fn claim_due_schedules(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<ScheduleClaim>, StoreError> {
    // A row another worker is claiming right now is skipped, not waited for; a row whose claim committed after
    // this statement's snapshot is re-checked by FOR UPDATE against its new lease, and dropped.
    let sql = format!(
        "WITH due AS (
             SELECT id AS due_id FROM schedules
             WHERE status = 'active' AND next_execution_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
             ORDER BY next_execution_at, id LIMIT $3 FOR UPDATE SKIP LOCKED
         )
         UPDATE schedules SET lease_until = $2, lease_token = $4 FROM due WHERE id = due.due_id
         RETURNING {SCHEDULE_COLUMNS}"
    );
    let lease_token = Uuid::new_v4();
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(lease_end(now, lease))
        .bind(i64::from(limit))
        .bind(lease_token)
        .fetch_all(pool)
        .await?;
    claims(&rows, lease_token)
}

/// The claims one claiming statement made, oldest due first.
fn claims(rows: &[PgRow], lease_token: Uuid) -> Result<Vec<ScheduleClaim>, StoreError> {
    let mut claimed = rows
        .iter()
        .map(|row| Ok(ScheduleClaim { schedule: schedule_from_row(row)?, lease_token }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|c| (c.schedule.next_execution_at, c.schedule.id));
    Ok(claimed)
}

pub(crate) async fn record_occurrence(
    pool: &PgPool,
    claim: &ScheduleClaim,
    update: &OccurrenceUpdate,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let e = &update.execution;
    let mut tx = pool.begin().await?;
    let id = claim.schedule.id;
    let row = sqlx::query("SELECT status, current_occurrence, lease_token FROM schedules WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let before: ScheduleStatus = parse_stored(row.try_get("status")?)?;
    let current = counter(i64::from(row.try_get::<i32, _>("current_occurrence")?), "current_occurrence")?;
    let holder: Option<Uuid> = row.try_get("lease_token")?;
    if current.checked_add(1) != Some(e.occurrence) || holder != Some(claim.lease_token) {
        // Release the row lock now: a dropped transaction is rolled back only when its connection is next used, and
        // until then a claim (`SKIP LOCKED`) would pass the schedule over.
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO schedule_executions (schedule_id, occurrence, executed_at, status, transaction_id, error, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(int4(e.occurrence))
    .bind(e.executed_at)
    .bind(e.status.as_str())
    .bind(e.transaction_id)
    .bind(&e.error)
    .bind(int4(e.attempts))
    .execute(&mut *tx)
    .await?;
    // The owner may have paused or cancelled the schedule while the occurrence ran: their choice stands, except
    // that a paused schedule whose calendar just ended (or whose only occurrence failed) takes that final status.
    let after: String = sqlx::query_scalar(
        "UPDATE schedules SET current_occurrence = $2,
             next_execution_at = CASE WHEN status = 'cancelled' THEN next_execution_at ELSE $3 END,
             status = CASE WHEN status = 'active' OR (status = 'paused' AND $4 IN ('completed', 'failed'))
                 THEN $4 ELSE status END,
             consecutive_failures = $5, last_executed_at = $6, attempt = 0, lease_until = NULL, lease_token = NULL,
             updated_at = $7
         WHERE id = $1 RETURNING status",
    )
    .bind(id)
    .bind(int4(e.occurrence))
    .bind(update.next_execution_at)
    .bind(update.status.as_str())
    .bind(int4(update.consecutive_failures))
    .bind(e.executed_at)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let after: ScheduleStatus = parse_stored(&after)?;
    let data = execution_json(id, update, before, after);
    insert_audit(&mut tx, &audit_row(id, "schedule.execute", execution_outcome(e), data.clone(), None), now).await?;
    insert_event(&mut tx, id, execution_event_type(e.status), &data, now).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(true)
}

pub(crate) async fn retry_occurrence(
    pool: &PgPool,
    claim: &ScheduleClaim,
    attempt: u32,
    retry_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let s = &claim.schedule;
    let updated = sqlx::query(
        "UPDATE schedules SET attempt = $2,
             next_execution_at = CASE WHEN status = 'cancelled' THEN next_execution_at ELSE $3 END,
             lease_until = NULL, lease_token = NULL, updated_at = $4
         WHERE id = $1 AND lease_token = $5 AND current_occurrence = $6 AND attempt = $7",
    )
    .bind(s.id)
    .bind(int4(attempt))
    .bind(retry_at)
    .bind(now)
    .bind(claim.lease_token)
    .bind(int4(s.current_occurrence))
    .bind(int4(s.attempt))
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 && find_schedule(pool, s.id).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    Ok(updated == 1)
}

pub(crate) async fn list_executions(pool: &PgPool, schedule_id: Uuid) -> Result<Vec<ExecutionRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT occurrence, executed_at, status, transaction_id, error, attempts FROM schedule_executions
         WHERE schedule_id = $1 ORDER BY occurrence",
    )
    .bind(schedule_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ExecutionRecord {
                occurrence: counter(i64::from(row.try_get::<i32, _>("occurrence")?), "occurrence")?,
                executed_at: row.try_get("executed_at")?,
                status: parse_stored(row.try_get("status")?)?,
                transaction_id: row.try_get("transaction_id")?,
                error: row.try_get("error")?,
                attempts: counter(i64::from(row.try_get::<i32, _>("attempts")?), "attempts")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Pauses every active schedule of a user who is being deactivated, each with its event and audit entry, inside
/// the deactivation's transaction.
pub(crate) async fn pause_user_schedules(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut paused: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE schedules SET status = 'paused', updated_at = $2 WHERE user_id = $1 AND status = 'active' RETURNING id",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    paused.sort_unstable();
    for id in paused {
        let data = json!({
            "schedule_id": id,
            "reason": "user_deactivated",
            "before": {"status": ScheduleStatus::Active},
            "after": {"status": ScheduleStatus::Paused},
        });
        insert_audit(tx, &audit_row(id, "schedule.pause", "success".to_owned(), data.clone(), None), now).await?;
        insert_event(tx, id, "SchedulePaused", &data, now).await?;
    }
    Ok(())
}

/// Appends a schedule event with the aggregate's next version. The caller holds the schedule's row lock.
async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    event_type: &str,
    data: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    super::journal::append_event(tx, AGGREGATE, id, event_type, data, now).await
}

async fn insert_audit(tx: &mut Transaction<'_, Postgres>, a: &AuditRow, now: DateTime<Utc>) -> Result<(), StoreError> {
    super::journal::append_audit(tx, std::slice::from_ref(a), now).await
}

fn schedule_from_row(row: &PgRow) -> Result<ScheduleRecord, sqlx::Error> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let pattern: Option<&str> = row.try_get("recurrence_pattern")?;
    let max_occurrences: Option<i64> = row.try_get("max_occurrences")?;
    let int = |name: &str| -> Result<u32, sqlx::Error> { counter(i64::from(row.try_get::<i32, _>(name)?), name) };
    Ok(ScheduleRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        transaction_type: parse_stored(row.try_get("transaction_type")?)?,
        amount: Money::new(row.try_get("amount_minor")?, currency),
        description: row.try_get("description")?,
        to_user_id: row.try_get("to_user_id")?,
        calendar: Calendar {
            execute_at: row.try_get("execute_at")?,
            recurrence: pattern.map(parse_stored).transpose()?,
            recurrence_end_date: row.try_get("recurrence_end_date")?,
            max_occurrences: max_occurrences.map(|m| counter(m, "max_occurrences")).transpose()?,
        },
        current_occurrence: int("current_occurrence")?,
        next_execution_at: row.try_get("next_execution_at")?,
        last_executed_at: row.try_get("last_executed_at")?,
        status: parse_stored(row.try_get("status")?)?,
        attempt: int("attempt")?,
        consecutive_failures: int("consecutive_failures")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
