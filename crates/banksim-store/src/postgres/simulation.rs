//! Simulation mode on PostgreSQL: the shared virtual clock (one row of `simulation_clock`; each change is one
//! conditional `UPDATE`, atomic under the row's lock) and the rows of the state hash.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::PgStore;
use crate::StoreError;
use crate::simulation::{DumpedTransaction, DumpedUser, DumpedWallet, SimulationStore};

#[async_trait]
impl SimulationStore for PgStore {
    async fn virtual_now(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT virtual_now FROM simulation_clock WHERE id = 1").fetch_one(&self.pool).await?;
        Ok(at)
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
        .bind(until)
        .bind(wall_now)
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn release_clock(&self, holder: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE simulation_clock SET holder = NULL, lease_until = NULL WHERE id = 1 AND holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn move_clock(&self, holder: Uuid, to: DateTime<Utc>, wall_now: DateTime<Utc>) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE simulation_clock SET virtual_now = $2, updated_at = $3
             WHERE id = 1 AND holder = $1 AND lease_until >= $3 AND (virtual_now IS NULL OR virtual_now <= $2)",
        )
        .bind(holder)
        .bind(to)
        .bind(wall_now)
        .execute(&self.pool)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    async fn next_due_instant(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        next_due_instant(&self.pool).await
    }

    async fn dump_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedUser>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, username, email, role, is_active, created_at, updated_at FROM users
             WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user).collect::<Result<_, _>>().map_err(Into::into)
    }

    async fn dump_wallets(&self, after: Option<(Uuid, String)>, limit: u32) -> Result<Vec<DumpedWallet>, StoreError> {
        let (after_user, after_currency) = after.unzip();
        let rows = sqlx::query(
            "SELECT user_id, currency, balance_minor, pending_minor, overdraft_minor, max_balance_minor, created_at,
                    updated_at
             FROM accounts
             WHERE kind = 'user' AND ($1::uuid IS NULL OR user_id > $1 OR (user_id = $1 AND currency > $2::text))
             ORDER BY user_id, currency LIMIT $3",
        )
        .bind(after_user)
        .bind(after_currency)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(wallet).collect::<Result<_, _>>().map_err(Into::into)
    }

    async fn dump_transactions(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedTransaction>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor, to_currency,
                    rate, description, reversal_of, reversed_by, created_at, effective_at, expires_at
             FROM transactions WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(transaction).collect::<Result<_, _>>().map_err(Into::into)
    }
}

async fn next_due_instant(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(at) FROM (
             SELECT min(next_execution_at) AS at FROM schedules WHERE status = 'active'
             UNION ALL
             SELECT min(expires_at) AS at FROM transactions WHERE status = 'pending') AS due",
    )
    .fetch_one(pool)
    .await?;
    Ok(at)
}

fn user(row: &PgRow) -> Result<DumpedUser, sqlx::Error> {
    Ok(DumpedUser {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
        is_active: row.try_get("is_active")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn wallet(row: &PgRow) -> Result<DumpedWallet, sqlx::Error> {
    Ok(DumpedWallet {
        user_id: row.try_get("user_id")?,
        currency: row.try_get("currency")?,
        balance_minor: row.try_get("balance_minor")?,
        pending_minor: row.try_get("pending_minor")?,
        overdraft_minor: row.try_get("overdraft_minor")?,
        max_balance_minor: row.try_get("max_balance_minor")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn transaction(row: &PgRow) -> Result<DumpedTransaction, sqlx::Error> {
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
        created_at: row.try_get("created_at")?,
        effective_at: row.try_get("effective_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}
