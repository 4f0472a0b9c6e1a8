//! The balance read lease on PostgreSQL: its renewals and its release. The rest is the database's: the trigger on
//! `accounts` (migration `0070_balance_read_lease.sql`) makes every other connection's change to a wallet wait until
//! the lease has run out, and closes it while others write.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{LeaseRenewal, StoreError};

/// Takes or renews `instance`'s lease for `period` from the start of its transaction (which follows the call).
pub(crate) async fn renew(pool: &PgPool, instance: Uuid, period: Duration) -> Result<Option<LeaseRenewal>, StoreError> {
    match try_renew(pool, instance, period).await {
        // A lock not granted in time: not now, the next renewal tries again.
        Err(StoreError::Other(sqlx::Error::Database(db))) if db.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            Ok(None)
        }
        other => other,
    }
}

async fn try_renew(pool: &PgPool, instance: Uuid, period: Duration) -> Result<Option<LeaseRenewal>, StoreError> {
    const HELD: &str = "COALESCE(holder = $1 AND valid_until > clock_timestamp(), false)";
    const OPEN: &str = "closed_until <= clock_timestamp()
                        AND (holder IS NOT DISTINCT FROM $1 OR valid_until <= clock_timestamp())";
    let period_micros = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    let (held, open): (bool, bool) = sqlx::query_as(&format!("SELECT {HELD}, {OPEN} FROM balance_read_lease"))
        .bind(instance)
        .fetch_one(&mut *tx)
        .await?;
    if !open {
        // Held by another instance, or closed by other writers: no lock is taken for nothing.
        tx.rollback().await?;
        return Ok(None);
    }
    if !held {
        // Taking it anew: every change to a wallet in flight commits first, and none begins until this one commits.
        // (Before the row's lock: a change holds `accounts` before it asks for the row.) Writes queue behind a
        // waiting SHARE request, so it waits briefly or not at all, and tries again at the next renewal.
        sqlx::query("SET LOCAL lock_timeout = '20ms'").execute(&mut *tx).await?;
        sqlx::query("LOCK TABLE accounts IN SHARE MODE").execute(&mut *tx).await?;
    }
    let (still_held, still_open): (bool, bool) =
        sqlx::query_as(&format!("SELECT {HELD}, {OPEN} FROM balance_read_lease FOR UPDATE"))
            .bind(instance)
            .fetch_one(&mut *tx)
            .await?;
    // Ran out between the two reads (it is taken anew next time, with the table's lock), or taken or closed meanwhile.
    if still_held != held || !still_open {
        tx.rollback().await?;
        return Ok(None);
    }
    sqlx::query(
        "UPDATE balance_read_lease
         SET holder = $1, valid_until = greatest(valid_until, now() + $2 * interval '1 microsecond')",
    )
    .bind(instance)
    .bind(period_micros)
    .execute(&mut *tx)
    .await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(Some(LeaseRenewal { continuous: held }))
}

/// SQLSTATE of a lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Ends `instance`'s lease now, if it holds one.
pub(crate) async fn release(pool: &PgPool, instance: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE balance_read_lease SET valid_until = clock_timestamp()
         WHERE holder = $1 AND valid_until > clock_timestamp()",
    )
    .bind(instance)
    .execute(pool)
    .await?;
    Ok(())
}
