//! The event log and the audit trail on PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::chain::ChainedEntry;
use crate::ledger::AuditRow;
use crate::{AuditQuery, AuditRecord, EventRecord, StoreError};

/// Appends audit entries to the chain, holding its head until commit.
pub(crate) async fn append_audit(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[AuditRow],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let links = super::ledger::link_audit(tx, rows, now).await?;
    super::ledger::move_audit_head(tx, &links).await?;
    for (a, link) in rows.iter().zip(links) {
        sqlx::query(
            "INSERT INTO audit_log (entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip,
                 user_agent, request_id, prev_hash, hash, created_at, trace_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(a.entry_id)
        .bind(a.actor_id)
        .bind(&a.action)
        .bind(a.entity_type)
        .bind(&a.entity_id)
        .bind(&a.outcome)
        .bind(&a.details)
        .bind(&a.ip)
        .bind(&a.user_agent)
        .bind(&a.request_id)
        .bind(link.prev_hash)
        .bind(link.hash)
        .bind(now)
        .bind(&a.trace_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The audit chain in id order, after entry `after_id`.
pub(crate) async fn audit_chain(pool: &PgPool, after_id: i64, limit: u32) -> Result<Vec<ChainedEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, entry_id, actor_id, action, entity_type, entity_id, outcome, details::json AS details, ip,
                user_agent, request_id, trace_id, created_at, prev_hash, hash
         FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ChainedEntry {
                record: audit_from_row(row)?,
                entry_id: row.try_get("entry_id")?,
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn list_events(pool: &PgPool, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT sequence, aggregate_type, aggregate_id, version, event_type, data::json AS data, created_at FROM events
         WHERE sequence > $1 ORDER BY sequence LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(EventRecord {
                sequence: row.try_get("sequence")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                version: row.try_get("version")?,
                event_type: row.try_get("event_type")?,
                data: row.try_get("data")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn list_audit(pool: &PgPool, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, actor_id, action, entity_type, entity_id, outcome, details::json AS details, ip, user_agent,
                request_id, trace_id, created_at
         FROM audit_log
         WHERE ($1::uuid IS NULL OR actor_id = $1) AND ($2::text IS NULL OR entity_type = $2)
           AND ($3::text IS NULL OR entity_id = $3) AND ($4::text IS NULL OR action = $4)
           AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at <= $6)
           AND ($7::bigint IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
    )
    .bind(q.actor_id)
    .bind(&q.entity_type)
    .bind(&q.entity_id)
    .bind(&q.action)
    .bind(q.since)
    .bind(q.until)
    .bind(q.before_id)
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(audit_from_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}

fn audit_from_row(row: &PgRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        actor_id: row.try_get("actor_id")?,
        action: row.try_get("action")?,
        entity_type: row.try_get("entity_type")?,
        entity_id: row.try_get("entity_id")?,
        outcome: row.try_get("outcome")?,
        details: row.try_get("details")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        request_id: row.try_get("request_id")?,
        trace_id: row.try_get("trace_id")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn account_balances(pool: &PgPool) -> Result<Vec<(Uuid, i64)>, StoreError> {
    let rows = sqlx::query_as("SELECT id, balance_minor FROM accounts ORDER BY id").fetch_all(pool).await?;
    Ok(rows)
}

/// Appends an event to the log with the aggregate's next version, holding the audit chain's head first (a no-op
/// when the transaction already holds it): events then take their sequence numbers and commit in the same order,
/// so a projector that reads "after its checkpoint" never misses an event that commits late.
pub(crate) async fn append_event(
    tx: &mut Transaction<'_, Postgres>,
    aggregate: &str,
    id: Uuid,
    event_type: &str,
    data: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM audit_chain_head FOR UPDATE").execute(&mut **tx).await?;
    sqlx::query(
        "INSERT INTO events (id, aggregate_type, aggregate_id, version, event_type, data, created_at)
         VALUES ($1, $2, $3,
             COALESCE((SELECT max(version) FROM events WHERE aggregate_type = $2 AND aggregate_id = $3), 0) + 1,
             $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(aggregate)
    .bind(id)
    .bind(event_type)
    .bind(data.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
