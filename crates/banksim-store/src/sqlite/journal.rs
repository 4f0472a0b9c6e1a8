//! The event log and the audit trail on SQLite (JSON stored as text).

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{instant, micros};
use crate::chain::{ChainedEntry, link};
use crate::ledger::AuditRow;
use crate::{AuditQuery, AuditRecord, EventRecord, StoreError};

/// Appends audit entries to the chain, after its last entry (the single writer connection keeps appends in order).
pub(crate) async fn append_audit(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[AuditRow],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let head: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT last_hash FROM audit_chain_head").fetch_one(&mut **tx).await?;
    let links = link(rows, head, now);
    if let Some(last) = links.last() {
        sqlx::query("UPDATE audit_chain_head SET last_hash = $1").bind(&last.hash).execute(&mut **tx).await?;
    }
    // One statement per 2,000 entries (SQLite binds at most 32,766 parameters; an entry has 14), in chain order: the
    // autoincrement ids follow the VALUES order.
    let entries: Vec<_> = rows.iter().zip(links).collect();
    for chunk in entries.chunks(2_000) {
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_log (entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip,
                 user_agent, request_id, prev_hash, hash, created_at, trace_id) ",
        );
        query.push_values(chunk, |mut row, (a, link)| {
            row.push_bind(a.entry_id)
                .push_bind(a.actor_id)
                .push_bind(a.action.as_str())
                .push_bind(a.entity_type)
                .push_bind(a.entity_id.as_deref())
                .push_bind(a.outcome.as_str())
                .push_bind(a.details.as_str())
                .push_bind(a.ip.as_deref())
                .push_bind(a.user_agent.as_deref())
                .push_bind(a.request_id.as_deref())
                .push_bind(link.prev_hash.as_slice())
                .push_bind(link.hash.as_slice())
                .push_bind(micros(now))
                .push_bind(a.trace_id.as_deref());
        });
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The audit chain in id order, after entry `after_id`.
pub(crate) async fn audit_chain(pool: &SqlitePool, after_id: i64, limit: u32) -> Result<Vec<ChainedEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, entry_id, actor_id, action, entity_type, entity_id, outcome, details, ip, user_agent, request_id,
                trace_id, created_at, prev_hash, hash
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

fn json(text: &str) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) async fn list_events(pool: &SqlitePool, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT sequence, aggregate_type, aggregate_id, version, event_type, data, created_at FROM events
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
                data: json(row.try_get("data")?)?,
                created_at: instant(row.try_get("created_at")?)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn list_audit(pool: &SqlitePool, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, actor_id, action, entity_type, entity_id, outcome, details, ip, user_agent, request_id, trace_id,
                created_at
         FROM audit_log
         WHERE ($1 IS NULL OR actor_id = $1) AND ($2 IS NULL OR entity_type = $2)
           AND ($3 IS NULL OR entity_id = $3) AND ($4 IS NULL OR action = $4)
           AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at <= $6)
           AND ($7 IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
    )
    .bind(q.actor_id)
    .bind(&q.entity_type)
    .bind(&q.entity_id)
    .bind(&q.action)
    .bind(q.since.map(micros))
    .bind(q.until.map(micros))
    .bind(q.before_id)
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(audit_from_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        actor_id: row.try_get("actor_id")?,
        action: row.try_get("action")?,
        entity_type: row.try_get("entity_type")?,
        entity_id: row.try_get("entity_id")?,
        outcome: row.try_get("outcome")?,
        details: json(row.try_get("details")?)?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        request_id: row.try_get("request_id")?,
        trace_id: row.try_get("trace_id")?,
        created_at: instant(row.try_get("created_at")?)?,
    })
}

pub(crate) async fn account_balances(pool: &SqlitePool) -> Result<Vec<(Uuid, i64)>, StoreError> {
    let rows = sqlx::query_as("SELECT id, balance_minor FROM accounts ORDER BY id").fetch_all(pool).await?;
    Ok(rows)
}

/// Appends an event to the log with the aggregate's next version.
pub(crate) async fn append_event(
    tx: &mut Transaction<'_, Sqlite>,
    aggregate: &str,
    id: Uuid,
    event_type: &str,
    data: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
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
    .bind(micros(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
