//! Projections on SQLite: a batch is applied in a write transaction (`BEGIN IMMEDIATE` on the single writer
//! connection), so the checkpoint it reads cannot move under it, even from another process on the same file.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{instant, micros};
use crate::ledger::parse_currency;
use crate::projection::{
    Projection, ProjectionProgress, ProjectionStatus, StatementQuery, SystemTotal, WalletStatements, continues_log,
    day_from_row, earliest_days, events_after, group_statements, statement_changes, total_changes, total_from_row,
    wallet_movements,
};
use crate::{EventRecord, StoreError};

pub(crate) async fn status(pool: &SqlitePool, projection: Projection) -> Result<ProjectionStatus, StoreError> {
    let row = sqlx::query(
        "SELECT c.position, c.updated_at,
                (SELECT COALESCE(max(sequence), 0) FROM events) AS head,
                (SELECT created_at FROM events WHERE sequence > c.position ORDER BY sequence LIMIT 1) AS pending_at
         FROM projection_checkpoints c WHERE c.projection = $1",
    )
    .bind(projection.name())
    .fetch_one(pool)
    .await?;
    let optional_instant = |column| row.try_get::<Option<i64>, _>(column)?.map(instant).transpose();
    Ok(ProjectionStatus {
        projection,
        checkpoint: row.try_get("position")?,
        head: row.try_get("head")?,
        oldest_pending_at: optional_instant("pending_at")?,
        updated_at: optional_instant("updated_at")?,
    })
}

pub(crate) async fn apply(
    writer: &SqlitePool,
    projection: Projection,
    events: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<ProjectionProgress, StoreError> {
    let mut tx = super::begin_write(writer).await?;
    match apply_in(&mut tx, projection, events, now).await {
        Ok(progress) => {
            tx.commit().await?;
            Ok(progress)
        }
        Err(err) => {
            // Roll back now rather than on drop, so the write lock is free when this call returns.
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

async fn apply_in(
    tx: &mut Transaction<'_, Sqlite>,
    projection: Projection,
    events: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<ProjectionProgress, StoreError> {
    let checkpoint: i64 = sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = $1")
        .bind(projection.name())
        .fetch_one(&mut **tx)
        .await?;
    let new = events_after(events, checkpoint)?;
    let (Some(first), Some(last)) = (new.first(), new.last()) else {
        return Ok(ProjectionProgress::Applied { events: 0, checkpoint });
    };
    let next: Option<i64> = sqlx::query_scalar("SELECT min(sequence) FROM events WHERE sequence > $1")
        .bind(checkpoint)
        .fetch_one(&mut **tx)
        .await?;
    continues_log(projection, checkpoint, next, first)?;
    match projection {
        Projection::DailyStatements => apply_statements(tx, new).await?,
        Projection::SystemTotals => apply_totals(tx, new).await?,
    }
    sqlx::query("UPDATE projection_checkpoints SET position = $2, updated_at = $3 WHERE projection = $1")
        .bind(projection.name())
        .bind(last.sequence)
        .bind(micros(now))
        .execute(&mut **tx)
        .await?;
    Ok(ProjectionProgress::Applied { events: new.len(), checkpoint: last.sequence })
}

pub(crate) async fn reset(writer: &SqlitePool, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = super::begin_write(writer).await?;
    sqlx::query(&format!("DELETE FROM {}", projection.name())).execute(&mut *tx).await?;
    sqlx::query("UPDATE projection_checkpoints SET position = 0, updated_at = $2 WHERE projection = $1")
        .bind(projection.name())
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn apply_statements(tx: &mut Transaction<'_, Sqlite>, events: &[EventRecord]) -> Result<(), StoreError> {
    let movements = wallet_movements(events)?;
    // Each wallet's days from the last one on or before its earliest movement on: usually just its latest day, more
    // when a back-dated movement revises the days after it.
    let mut stored = HashMap::new();
    for ((user_id, currency), earliest) in earliest_days(&movements) {
        let rows = sqlx::query(
            "SELECT day, opening_minor, credits_minor, debits_minor, closing_minor FROM daily_statements
             WHERE user_id = $1 AND currency = $2
               AND day >= COALESCE((SELECT max(day) FROM daily_statements
                                    WHERE user_id = $1 AND currency = $2 AND day <= $3), $3)
             ORDER BY day",
        )
        .bind(user_id)
        .bind(currency.to_string())
        .bind(earliest)
        .fetch_all(&mut **tx)
        .await?;
        let days = rows.iter().map(day_from_row).collect::<Result<Vec<_>, sqlx::Error>>()?;
        stored.insert((user_id, currency), days);
    }
    for ((user_id, currency), day) in statement_changes(movements, &stored)? {
        sqlx::query(
            "INSERT INTO daily_statements (user_id, currency, day, opening_minor, credits_minor, debits_minor,
                 closing_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id, currency, day) DO UPDATE SET opening_minor = excluded.opening_minor,
                 credits_minor = excluded.credits_minor, debits_minor = excluded.debits_minor,
                 closing_minor = excluded.closing_minor",
        )
        .bind(user_id)
        .bind(currency.to_string())
        .bind(day.date)
        .bind(day.opening_minor)
        .bind(day.credits_minor)
        .bind(day.debits_minor)
        .bind(day.closing_minor)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn apply_totals(tx: &mut Transaction<'_, Sqlite>, events: &[EventRecord]) -> Result<(), StoreError> {
    for t in total_changes(events)? {
        sqlx::query(
            "INSERT INTO system_totals AS t (currency, user_balances_minor, fx_minor, money_in_minor,
                 money_out_minor, transactions)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (currency) DO UPDATE SET
                 user_balances_minor = t.user_balances_minor + excluded.user_balances_minor,
                 fx_minor = t.fx_minor + excluded.fx_minor,
                 money_in_minor = t.money_in_minor + excluded.money_in_minor,
                 money_out_minor = t.money_out_minor + excluded.money_out_minor,
                 transactions = t.transactions + excluded.transactions",
        )
        .bind(t.currency.to_string())
        .bind(t.user_balances_minor)
        .bind(t.fx_minor)
        .bind(t.money_in_minor)
        .bind(t.money_out_minor)
        .bind(t.transactions)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(crate) async fn statements(pool: &SqlitePool, query: &StatementQuery) -> Result<Vec<WalletStatements>, StoreError> {
    let currency = query.currency.map(|c| c.to_string());
    let rows = sqlx::query(
        "SELECT currency, day, opening_minor, credits_minor, debits_minor, closing_minor FROM daily_statements
         WHERE user_id = $1 AND ($2 IS NULL OR currency = $2) AND day BETWEEN $3 AND $4
         ORDER BY currency, day",
    )
    .bind(query.user_id)
    .bind(&currency)
    .bind(query.from)
    .bind(query.to)
    .fetch_all(pool)
    .await?;
    let days = rows
        .iter()
        .map(|row| Ok((parse_currency(row.try_get("currency")?)?, day_from_row(row)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // SQLite returns the bare column's value from the row that holds the max().
    let rows = sqlx::query(
        "SELECT currency, closing_minor, max(day) FROM daily_statements
         WHERE user_id = $1 AND ($2 IS NULL OR currency = $2) AND day < $3
         GROUP BY currency",
    )
    .bind(query.user_id)
    .bind(&currency)
    .bind(query.from)
    .fetch_all(pool)
    .await?;
    let before = rows
        .iter()
        .map(|row| Ok((parse_currency(row.try_get("currency")?)?, row.try_get("closing_minor")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(group_statements(days, before))
}

pub(crate) async fn system_totals(pool: &SqlitePool) -> Result<Vec<SystemTotal>, StoreError> {
    let rows = sqlx::query(
        "SELECT currency, user_balances_minor, fx_minor, money_in_minor, money_out_minor, transactions
         FROM system_totals ORDER BY currency",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(total_from_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}
