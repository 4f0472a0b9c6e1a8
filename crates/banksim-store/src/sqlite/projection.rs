//! Projections on SQLite: a batch is applied in a write transaction (`BEGIN IMMEDIATE` on the ledger's writer
//! connection, under the single writer pool's lock), so the checkpoint it reads cannot move under it, even from
//! another process on the same file.

use std::collections::HashMap;

use banksim_core::statement::DayStatement;
use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use sqlx::{Row, SqlitePool};

use super::ledger_writer::{LedgerWriter, commit};
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

/// Applies `events` and moves the checkpoint in one transaction on the ledger's writer connection: every statement
/// runs on the calling thread, so the write lock is held for the work alone (through sqlx each of a few hundred
/// statements was a round trip to a worker thread, and the ledger's batches waited behind their sum).
pub(super) async fn apply(
    ledger_writer: &LedgerWriter,
    writer: &SqlitePool,
    projection: Projection,
    events: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<ProjectionProgress, StoreError> {
    ledger_writer
        .write(writer, |tx| {
            // Dropping `tx` on an error rolls it back before the write lock is let go.
            let progress = apply_in(&tx, projection, events, now)?;
            commit(tx)?;
            Ok(progress)
        })
        .await
}

fn apply_in(
    tx: &Transaction<'_>,
    projection: Projection,
    events: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<ProjectionProgress, StoreError> {
    let checkpoint: i64 = tx
        .prepare_cached("SELECT position FROM projection_checkpoints WHERE projection = ?1")?
        .query_row([projection.name()], |row| row.get(0))?;
    let new = events_after(events, checkpoint)?;
    let (Some(first), Some(last)) = (new.first(), new.last()) else {
        return Ok(ProjectionProgress::Applied { events: 0, checkpoint });
    };
    let next: Option<i64> = tx
        .prepare_cached("SELECT min(sequence) FROM events WHERE sequence > ?1")?
        .query_row([checkpoint], |row| row.get(0))?;
    continues_log(projection, checkpoint, next, first)?;
    match projection {
        Projection::DailyStatements => apply_statements(tx, new)?,
        Projection::SystemTotals => apply_totals(tx, new)?,
    }
    tx.prepare_cached("UPDATE projection_checkpoints SET position = ?2, updated_at = ?3 WHERE projection = ?1")?
        .execute(params![projection.name(), last.sequence, micros(now)])?;
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

fn apply_statements(tx: &Transaction<'_>, events: &[EventRecord]) -> Result<(), StoreError> {
    let movements = wallet_movements(events)?;
    // Each wallet's days from the last one on or before its earliest movement on: usually just its latest day, more
    // when a back-dated movement revises the days after it.
    let mut select = tx.prepare_cached(
        "SELECT day, opening_minor, credits_minor, debits_minor, closing_minor FROM daily_statements
         WHERE user_id = ?1 AND currency = ?2
           AND day >= COALESCE((SELECT max(day) FROM daily_statements
                                WHERE user_id = ?1 AND currency = ?2 AND day <= ?3), ?3)
         ORDER BY day",
    )?;
    let mut stored = HashMap::new();
    for ((user_id, currency), earliest) in earliest_days(&movements) {
        let days = select
            .query_map(params![user_id, currency.code(), earliest], |row| {
                Ok(DayStatement {
                    date: row.get("day")?,
                    opening_minor: row.get("opening_minor")?,
                    credits_minor: row.get("credits_minor")?,
                    debits_minor: row.get("debits_minor")?,
                    closing_minor: row.get("closing_minor")?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        stored.insert((user_id, currency), days);
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO daily_statements (user_id, currency, day, opening_minor, credits_minor, debits_minor,
             closing_minor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (user_id, currency, day) DO UPDATE SET opening_minor = excluded.opening_minor,
             credits_minor = excluded.credits_minor, debits_minor = excluded.debits_minor,
             closing_minor = excluded.closing_minor",
    )?;
    for ((user_id, currency), day) in statement_changes(movements, &stored)? {
        upsert.execute(params![
            user_id,
            currency.code(),
            day.date,
            day.opening_minor,
            day.credits_minor,
            day.debits_minor,
            day.closing_minor,
        ])?;
    }
    Ok(())
}

fn apply_totals(tx: &Transaction<'_>, events: &[EventRecord]) -> Result<(), StoreError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO system_totals AS t (currency, user_balances_minor, fx_minor, money_in_minor, money_out_minor,
             transactions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (currency) DO UPDATE SET
             user_balances_minor = t.user_balances_minor + excluded.user_balances_minor,
             fx_minor = t.fx_minor + excluded.fx_minor,
             money_in_minor = t.money_in_minor + excluded.money_in_minor,
             money_out_minor = t.money_out_minor + excluded.money_out_minor,
             transactions = t.transactions + excluded.transactions",
    )?;
    for t in total_changes(events)? {
        upsert.execute(params![
            t.currency.code(),
            t.user_balances_minor,
            t.fx_minor,
            t.money_in_minor,
            t.money_out_minor,
            t.transactions,
        ])?;
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
