//! Projections on PostgreSQL: the checkpoint row is locked `FOR UPDATE SKIP LOCKED` while a batch is applied, so
//! one consumer applies at a time and the others move on at once.

use std::collections::HashMap;

use banksim_core::statement::DayStatement;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::ledger::parse_currency;
use crate::projection::{
    Projection, ProjectionProgress, ProjectionStatus, StatementQuery, SystemTotal, WalletKey, WalletStatements,
    continues_log, day_from_row, earliest_days, events_after, group_statements, statement_changes, total_changes,
    total_from_row, wallet_movements,
};
use crate::{EventRecord, StoreError};

pub(crate) async fn status(pool: &PgPool, projection: Projection) -> Result<ProjectionStatus, StoreError> {
    let row = sqlx::query(
        "SELECT c.position, c.updated_at,
                (SELECT COALESCE(max(sequence), 0) FROM events) AS head,
                (SELECT created_at FROM events WHERE sequence > c.position ORDER BY sequence LIMIT 1) AS pending_at
         FROM projection_checkpoints c WHERE c.projection = $1",
    )
    .bind(projection.name())
    .fetch_one(pool)
    .await?;
    Ok(ProjectionStatus {
        projection,
        checkpoint: row.try_get("position")?,
        head: row.try_get("head")?,
        oldest_pending_at: row.try_get("pending_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn apply(
    pool: &PgPool,
    projection: Projection,
    events: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<ProjectionProgress, StoreError> {
    let mut tx = pool.begin().await?;
    match apply_in(&mut tx, projection, events, now).await {
        Ok(progress) => {
            tx.commit().await?;
            Ok(progress)
        }
        Err(err) => {
            // Roll back now rather than on drop, so the checkpoint's lock is free when this call returns.
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    projection: Projection,
    events: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<ProjectionProgress, StoreError> {
    let checkpoint: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = $1 FOR UPDATE SKIP LOCKED")
            .bind(projection.name())
            .fetch_optional(&mut **tx)
            .await?;
    let Some(checkpoint) = checkpoint else { return Ok(ProjectionProgress::Busy) };
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
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(ProjectionProgress::Applied { events: new.len(), checkpoint: last.sequence })
}

pub(crate) async fn reset(pool: &PgPool, projection: Projection, now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT position FROM projection_checkpoints WHERE projection = $1 FOR UPDATE")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DELETE FROM {}", projection.name())).execute(&mut *tx).await?;
    sqlx::query("UPDATE projection_checkpoints SET position = 0, updated_at = $2 WHERE projection = $1")
        .bind(projection.name())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn apply_statements(tx: &mut Transaction<'_, Postgres>, events: &[EventRecord]) -> Result<(), StoreError> {
    let movements = wallet_movements(events)?;
    if movements.is_empty() {
        return Ok(());
    }
    let earliest = earliest_days(&movements);
    let users: Vec<uuid::Uuid> = earliest.iter().map(|((user, _), _)| *user).collect();
    let currencies: Vec<String> = earliest.iter().map(|((_, currency), _)| currency.to_string()).collect();
    let days: Vec<NaiveDate> = earliest.iter().map(|(_, day)| *day).collect();
    // Each wallet's days from the last one on or before its earliest movement on: usually just its latest day, more
    // when a back-dated movement revises the days after it.
    let rows = sqlx::query(
        "SELECT s.user_id, s.currency, s.day, s.opening_minor, s.credits_minor, s.debits_minor, s.closing_minor
         FROM unnest($1::uuid[], $2::text[], $3::date[]) AS w (user_id, currency, earliest)
         JOIN daily_statements s ON s.user_id = w.user_id AND s.currency = w.currency
           AND s.day >= COALESCE((SELECT max(p.day) FROM daily_statements p
                                  WHERE p.user_id = w.user_id AND p.currency = w.currency AND p.day <= w.earliest),
                                 w.earliest)
         ORDER BY s.user_id, s.currency, s.day",
    )
    .bind(&users)
    .bind(&currencies)
    .bind(&days)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored: HashMap<WalletKey, Vec<DayStatement>> = HashMap::new();
    for row in &rows {
        let wallet = (row.try_get("user_id")?, parse_currency(row.try_get("currency")?)?);
        stored.entry(wallet).or_default().push(day_from_row(row)?);
    }
    let changes = statement_changes(movements, &stored)?;
    let mut columns = StatementColumns::default();
    for ((user_id, currency), day) in changes {
        columns.push(user_id, currency.to_string(), day);
    }
    sqlx::query(
        "INSERT INTO daily_statements (user_id, currency, day, opening_minor, credits_minor, debits_minor,
             closing_minor)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::bigint[],
             $7::bigint[])
         ON CONFLICT (user_id, currency, day) DO UPDATE SET opening_minor = EXCLUDED.opening_minor,
             credits_minor = EXCLUDED.credits_minor, debits_minor = EXCLUDED.debits_minor,
             closing_minor = EXCLUDED.closing_minor",
    )
    .bind(&columns.users)
    .bind(&columns.currencies)
    .bind(&columns.days)
    .bind(&columns.openings)
    .bind(&columns.credits)
    .bind(&columns.debits)
    .bind(&columns.closings)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Statement rows as columns, for one `unnest` insert.
#[derive(Default)]
struct StatementColumns {
    users: Vec<uuid::Uuid>,
    currencies: Vec<String>,
    days: Vec<NaiveDate>,
    openings: Vec<i64>,
    credits: Vec<i64>,
    debits: Vec<i64>,
    closings: Vec<i64>,
}

impl StatementColumns {
    fn push(&mut self, user: uuid::Uuid, currency: String, day: DayStatement) {
        self.users.push(user);
        self.currencies.push(currency);
        self.days.push(day.date);
        self.openings.push(day.opening_minor);
        self.credits.push(day.credits_minor);
        self.debits.push(day.debits_minor);
        self.closings.push(day.closing_minor);
    }
}

async fn apply_totals(tx: &mut Transaction<'_, Postgres>, events: &[EventRecord]) -> Result<(), StoreError> {
    let changes = total_changes(events)?;
    if changes.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&SystemTotal) -> i64| changes.iter().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO system_totals AS t (currency, user_balances_minor, fx_minor, money_in_minor, money_out_minor,
             transactions)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
         ON CONFLICT (currency) DO UPDATE SET
             user_balances_minor = t.user_balances_minor + EXCLUDED.user_balances_minor,
             fx_minor = t.fx_minor + EXCLUDED.fx_minor,
             money_in_minor = t.money_in_minor + EXCLUDED.money_in_minor,
             money_out_minor = t.money_out_minor + EXCLUDED.money_out_minor,
             transactions = t.transactions + EXCLUDED.transactions",
    )
    .bind(changes.iter().map(|t| t.currency.to_string()).collect::<Vec<_>>())
    .bind(column(|t| t.user_balances_minor))
    .bind(column(|t| t.fx_minor))
    .bind(column(|t| t.money_in_minor))
    .bind(column(|t| t.money_out_minor))
    .bind(column(|t| t.transactions))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn statements(pool: &PgPool, query: &StatementQuery) -> Result<Vec<WalletStatements>, StoreError> {
    let currency = query.currency.map(|c| c.to_string());
    let rows = sqlx::query(
        "SELECT currency, day, opening_minor, credits_minor, debits_minor, closing_minor FROM daily_statements
         WHERE user_id = $1 AND ($2::text IS NULL OR currency = $2) AND day BETWEEN $3 AND $4
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
    let rows = sqlx::query(
        "SELECT DISTINCT ON (currency) currency, closing_minor FROM daily_statements
         WHERE user_id = $1 AND ($2::text IS NULL OR currency = $2) AND day < $3
         ORDER BY currency, day DESC",
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

pub(crate) async fn system_totals(pool: &PgPool) -> Result<Vec<SystemTotal>, StoreError> {
    let rows = sqlx::query(
        "SELECT currency, user_balances_minor, fx_minor, money_in_minor, money_out_minor, transactions
         FROM system_totals ORDER BY currency",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(total_from_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}
