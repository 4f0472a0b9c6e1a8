//! The balance read lease on PostgreSQL: its renewals and its release. The rest is the database's: the trigger on
//! `accounts` (migration `0070_balance_read_lease.sql`) makes every other connection's change to a wallet wait until
//! the lease has run out, and closes it while others write.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{LeaseRenewal, StoreError};

/// Takes or renews `instance`'s lease for `period` from the start of its transaction (which follows the call).
pub(crate) async fn renew(pool: &PgPool, instance: Uuid, period: Duration) -> Result<Option<LeaseRenewal>, StoreError> {
    const HELD: &str = "COALESCE(holder = $1 AND valid_until > clock_timestamp(), false)";
    let period_micros = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    let held: bool = sqlx::query_scalar(&format!("SELECT {HELD} FROM balance_read_lease"))
        .bind(instance)
        .fetch_one(&mut *tx)
        .await?;
    if !held {
        // Taking it anew: every change to a wallet in flight commits first, and none begins until this one commits.
        // (Before the row's lock: a change holds `accounts` before it asks for the row.)
        sqlx::query("LOCK TABLE accounts IN SHARE MODE").execute(&mut *tx).await?;
    }
    let (still_held, open): (bool, bool) = sqlx::query_as(&format!(
        "SELECT {HELD}, closed_until <= clock_timestamp()
                        AND (holder IS NOT DISTINCT FROM $1 OR valid_until <= clock_timestamp())
         FROM balance_read_lease FOR UPDATE"
    ))
    .bind(instance)
    .fetch_one(&mut *tx)
    .await?;
    // Ran out between the two reads (it is taken anew next time, with the table's lock), or not ours to take.
    if still_held != held || !open {
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
