//! Outbox relays on SQLite: one row per relay in `event_relays`, leased by one process at a time. Claims and moves
//! go through the writer connection, so two processes on one file are ordered by its write lock.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{instant, micros};
use crate::{RelayStatus, StoreError};

pub(crate) async fn status(pool: &SqlitePool, relay: &str) -> Result<RelayStatus, StoreError> {
    let row = sqlx::query(
        "WITH r AS (SELECT COALESCE((SELECT position FROM event_relays WHERE relay = $1), 0) AS position)
         SELECT r.position,
                (SELECT COALESCE(max(sequence), 0) FROM events) AS head,
                (SELECT created_at FROM events WHERE sequence > r.position ORDER BY sequence LIMIT 1) AS pending_at
         FROM r",
    )
    .bind(relay)
    .fetch_one(pool)
    .await?;
    Ok(RelayStatus {
        position: row.try_get("position")?,
        head: row.try_get("head")?,
        oldest_pending_at: row.try_get::<Option<i64>, _>("pending_at")?.map(instant).transpose()?,
    })
}

pub(crate) async fn claim(
    writer: &SqlitePool,
    relay: &str,
    holder: Uuid,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let position: Option<i64> = sqlx::query_scalar(
        "INSERT INTO event_relays (relay, holder, lease_until) VALUES ($1, $2, $3)
         ON CONFLICT (relay) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
           WHERE event_relays.holder IS NULL OR event_relays.holder = excluded.holder
              OR event_relays.lease_until < $4
         RETURNING position",
    )
    .bind(relay)
    .bind(holder)
    .bind(micros(until))
    .bind(micros(now))
    .fetch_optional(writer)
    .await?;
    Ok(position)
}

pub(crate) async fn advance(
    writer: &SqlitePool,
    relay: &str,
    holder: Uuid,
    position: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let moved = sqlx::query(
        "UPDATE event_relays SET position = max(position, $3), updated_at = $4 WHERE relay = $1 AND holder = $2",
    )
    .bind(relay)
    .bind(holder)
    .bind(position)
    .bind(micros(now))
    .execute(writer)
    .await?;
    Ok(moved.rows_affected() == 1)
}
