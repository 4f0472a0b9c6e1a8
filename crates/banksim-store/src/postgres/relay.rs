//! Outbox relays on PostgreSQL: one row per relay in `event_relays`, leased by one instance at a time.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::{RelayStatus, StoreError};

pub(crate) async fn status(pool: &PgPool, relay: &str) -> Result<RelayStatus, StoreError> {
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
        oldest_pending_at: row.try_get("pending_at")?,
    })
}

pub(crate) async fn claim(
    pool: &PgPool,
    relay: &str,
    holder: Uuid,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    // One statement: two instances claiming at once are ordered by the row lock of the upsert.
    let position: Option<i64> = sqlx::query_scalar(
        "INSERT INTO event_relays (relay, holder, lease_until) VALUES ($1, $2, $3)
         ON CONFLICT (relay) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
           WHERE event_relays.holder IS NULL OR event_relays.holder = EXCLUDED.holder
              OR event_relays.lease_until < $4
         RETURNING position",
    )
    .bind(relay)
    .bind(holder)
    .bind(until)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(position)
}

pub(crate) async fn advance(
    pool: &PgPool,
    relay: &str,
    holder: Uuid,
    position: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let moved = sqlx::query(
        "UPDATE event_relays SET position = GREATEST(position, $3), updated_at = $4
         WHERE relay = $1 AND holder = $2",
    )
    .bind(relay)
    .bind(holder)
    .bind(position)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(moved.rows_affected() == 1)
}
