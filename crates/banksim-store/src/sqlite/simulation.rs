//! Simulation mode on SQLite: the shared virtual clock (one row of `simulation_clock`, written through the writer
//! connection, so two processes on one file are ordered by its write lock) and the rows of the state hash.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{SqliteStore, instant, micros};
use crate::StoreError;
use crate::simulation::{DumpedTransaction, DumpedUser, DumpedWallet, SimulationStore};

#[async_trait]
impl SimulationStore for SqliteStore {
    async fn virtual_now(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // The writer's view: a clock just moved by this process is read back at once.
        let at: Option<i64> =
            sqlx::query_scalar("SELECT virtual_now FROM simulation_clock WHERE id = 1").fetch_one(&self.writer).await?;
        Ok(at.map(instant).transpose()?)
    }

    async fn claim_clock(
        &self,
        holder: Uuid,
        wall_now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE simulation_clock SET holder = $1, lease_until = $2
             WHERE id = 1 AND (holder IS NULL OR holder = $1 OR lease_until < $3)",
        )
        .bind(holder)
        .bind(micros(until))
        .bind(micros(wall_now))
        .execute(&self.writer)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn release_clock(&self, holder: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE simulation_clock SET holder = NULL, lease_until = NULL WHERE id = 1 AND holder = $1")
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn move_clock(&self, holder: Uuid, to: DateTime<Utc>, wall_now: DateTime<Utc>) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE simulation_clock SET virtual_now = $2, updated_at = $3
             WHERE id = 1 AND holder = $1 AND lease_until >= $3 AND (virtual_now IS NULL OR virtual_now <= $2)",
        )
        .bind(holder)
        .bind(micros(to))
        .bind(micros(wall_now))
        .execute(&self.writer)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    async fn next_due_instant(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        next_due_instant(&self.writer).await
    }

    async fn dump_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedUser>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, username, email, role, is_active, created_at, updated_at FROM users
             WHERE $1 IS NULL OR id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(user).collect::<Result<_, _>>().map_err(Into::into)
    }

    async fn dump_wallets(&self, after: Option<(Uuid, String)>, limit: u32) -> Result<Vec<DumpedWallet>, StoreError> {
        let (after_user, after_currency) = after.unzip();
        let rows = sqlx::query(
            "SELECT user_id, currency, balance_minor, pending_minor, overdraft_minor, max_balance_minor, created_at,
                    updated_at
             FROM accounts
             WHERE kind = 'user' AND ($1 IS NULL OR user_id > $1 OR (user_id = $1 AND currency > $2))
             ORDER BY user_id, currency LIMIT $3",
        )
        .bind(after_user)
        .bind(after_currency)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(wallet).collect::<Result<_, _>>().map_err(Into::into)
    }

    async fn dump_transactions(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedTransaction>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor, to_currency,
                    rate, description, reversal_of, reversed_by, created_at, effective_at, expires_at
             FROM transactions WHERE $1 IS NULL OR id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(transaction).collect::<Result<_, _>>().map_err(Into::into)
    }
}

async fn next_due_instant(pool: &SqlitePool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT min(at) FROM (
             SELECT min(next_execution_at) AS at FROM schedules WHERE status = 'active'
             UNION ALL
             SELECT min(expires_at) AS at FROM transactions WHERE status = 'pending') AS due",
    )
    .fetch_one(pool)
    .await?;
    Ok(at.map(instant).transpose()?)
}

fn user(row: &SqliteRow) -> Result<DumpedUser, sqlx::Error> {
    Ok(DumpedUser {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
        is_active: row.try_get("is_active")?,
        created_at: instant(row.try_get("created_at")?)?,
        updated_at: instant(row.try_get("updated_at")?)?,
    })
}

fn wallet(row: &SqliteRow) -> Result<DumpedWallet, sqlx::Error> {
    Ok(DumpedWallet {
        user_id: row.try_get("user_id")?,
        currency: row.try_get("currency")?,
        balance_minor: row.try_get("balance_minor")?,
        pending_minor: row.try_get("pending_minor")?,
        overdraft_minor: row.try_get("overdraft_minor")?,
        max_balance_minor: row.try_get("max_balance_minor")?,
        created_at: instant(row.try_get("created_at")?)?,
        updated_at: instant(row.try_get("updated_at")?)?,
    })
}

fn transaction(row: &SqliteRow) -> Result<DumpedTransaction, sqlx::Error> {
    let optional_instant = |column: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        row.try_get::<Option<i64>, _>(column)?.map(instant).transpose()
    };
    Ok(DumpedTransaction {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        from_user_id: row.try_get("from_user_id")?,
        to_user_id: row.try_get("to_user_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        to_amount_minor: row.try_get("to_amount_minor")?,
        to_currency: row.try_get("to_currency")?,
        rate: row.try_get("rate")?,
        description: row.try_get("description")?,
        reversal_of: row.try_get("reversal_of")?,
        reversed_by: row.try_get("reversed_by")?,
        created_at: instant(row.try_get("created_at")?)?,
        effective_at: instant(row.try_get("effective_at")?)?,
        expires_at: optional_instant("expires_at")?,
    })
}
