//! The ledger on SQLite: batches of movements in one transaction on the single writer connection.
//!
//! The writer connection serialises every batch, so no locks beyond SQLite's own are needed; rows are written one
//! statement each (cheap in-process), all inside the batch's one commit.

use std::collections::HashMap;

use banksim_core::currency::Currency;
use banksim_core::ledger::{AccountKey, AccountState, Book, Leg, Original, TransactionRecord};
use banksim_core::money::Money;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{instant, micros};
use crate::StoreError;
use crate::ledger::{
    BatchRows, FxRate, HistoryEntry, HistoryQuery, LedgerReport, LedgerRequest, PostedBatch, ResponseRenderer,
    StoredResponse, TransactionQuery, Wallet, account_key, accounts_to_open, accounts_touched, parse_currency,
    parse_stored, plan_batch, refuse_gaining_cycle, rollback_originals, wallet_states,
};

const TRANSACTION_COLUMNS: &str = "id, kind, status, from_user_id, to_user_id, amount_minor, currency, \
    to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at";

pub(crate) async fn post_batch(
    writer: &SqlitePool,
    requests: &[LedgerRequest],
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> Result<PostedBatch, StoreError> {
    // IMMEDIATE takes the write lock up front: a batch reads before it writes, and another process writing in
    // between (say `banksim admin`) would otherwise fail it with SQLITE_BUSY.
    let mut tx = super::begin_write(writer).await?;
    let mut stored = HashMap::new();
    for claim in requests.iter().filter_map(|r| r.idempotency.as_ref()) {
        if let Some(response) = find_idempotent(&mut *tx, claim.user_id, &claim.key).await? {
            stored.insert((claim.user_id, claim.key.clone()), response);
        }
    }
    let live: Vec<&LedgerRequest> = requests
        .iter()
        .filter(|r| r.idempotency.as_ref().is_none_or(|c| !stored.contains_key(&(c.user_id, c.key.clone()))))
        .collect();
    let originals = load_originals(&mut tx, &rollback_originals(&live)).await?;
    let mut created = Vec::new();
    for key in accounts_to_open(&live) {
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, kind, user_id, currency, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(key.id())
        .bind(key.kind())
        .bind(key.user_id())
        .bind(key.currency().code())
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            created.push(key.id());
        }
    }
    let mut accounts = Vec::new();
    let mut now = now;
    for id in accounts_touched(&live, &originals) {
        let row = sqlx::query(
            "SELECT id, kind, user_id, currency, balance_minor, version, updated_at FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            // Postings never go back in time on an account, even if the clock does.
            now = now.max(instant(row.try_get("updated_at")?)?);
            accounts.push(AccountState {
                id: row.try_get("id")?,
                key: account_key(row.try_get("kind")?, row.try_get("user_id")?, row.try_get("currency")?)?,
                balance_minor: row.try_get("balance_minor")?,
                version: row.try_get("version")?,
            });
        }
    }
    let versions: HashMap<Uuid, i64> = accounts.iter().map(|a| (a.id, a.version)).collect();
    let (outcomes, mut rows) = plan_batch(requests, stored, Book::new(accounts, originals), render, now);
    rows.accounts.retain(|a| versions.get(&a.id) != Some(&a.version));
    // A wallet opens with its first movement: drop the ones this batch created for movements it refused.
    for id in created.into_iter().filter(|id| !rows.accounts.iter().any(|a| a.id == *id)) {
        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(id).execute(&mut *tx).await?;
    }
    write_rows(&mut tx, &rows, now).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(PostedBatch { outcomes, wallets: wallet_states(&rows.accounts, now) })
}

async fn load_originals(tx: &mut Transaction<'_, Sqlite>, ids: &[Uuid]) -> Result<Vec<Original>, StoreError> {
    let mut originals = Vec::with_capacity(ids.len());
    for id in ids {
        let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = $1");
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await? else { continue };
        let legs = sqlx::query(
            "SELECT p.amount_minor, a.kind, a.user_id, a.currency
             FROM postings p JOIN accounts a ON a.id = p.account_id WHERE p.transaction_id = $1 ORDER BY p.id",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|leg| {
            Ok(Leg {
                account: account_key(leg.try_get("kind")?, leg.try_get("user_id")?, leg.try_get("currency")?)?,
                amount_minor: leg.try_get("amount_minor")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        originals.push(Original { record: transaction_from_row(&row)?, legs });
    }
    Ok(originals)
}

async fn write_rows(tx: &mut Transaction<'_, Sqlite>, rows: &BatchRows, now: DateTime<Utc>) -> Result<(), StoreError> {
    let now_at = now;
    let now = micros(now);
    for r in &rows.transactions {
        sqlx::query(
            "INSERT INTO transactions (id, kind, status, from_user_id, to_user_id, amount_minor, currency,
                 to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
        )
        .bind(r.id)
        .bind(r.kind.as_str())
        .bind(r.status.as_str())
        .bind(r.from_user_id)
        .bind(r.to_user_id)
        .bind(r.amount.amount_minor())
        .bind(r.amount.currency().code())
        .bind(r.to_amount.map(|m| m.amount_minor()))
        .bind(r.to_amount.map(|m| m.currency().code()))
        .bind(r.rate.map(|rate| rate.to_string()))
        .bind(&r.description)
        .bind(r.reversal_of)
        .bind(r.reversed_by)
        .bind(micros(r.created_at))
        .execute(&mut **tx)
        .await?;
    }
    for (original, by) in &rows.reversed {
        sqlx::query("UPDATE transactions SET status = 'rolled_back', reversed_by = $2 WHERE id = $1")
            .bind(original)
            .bind(by)
            .execute(&mut **tx)
            .await?;
    }
    for (transaction_id, p) in &rows.postings {
        sqlx::query(
            "INSERT INTO postings (transaction_id, account_id, amount_minor, balance_after_minor, account_version,
                 created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(transaction_id)
        .bind(p.account_id)
        .bind(p.amount_minor)
        .bind(p.balance_after_minor)
        .bind(p.account_version)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    for a in &rows.accounts {
        sqlx::query("UPDATE accounts SET balance_minor = $2, version = $3, updated_at = $4 WHERE id = $1")
            .bind(a.id)
            .bind(a.balance_minor)
            .bind(a.version)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    for e in &rows.events {
        sqlx::query(
            "INSERT INTO events (id, aggregate_type, aggregate_id, version, event_type, data, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.id)
        .bind(e.aggregate_type)
        .bind(e.aggregate_id)
        .bind(e.version)
        .bind(e.event_type)
        .bind(e.data.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    super::journal::append_audit(tx, &rows.audits, now_at).await?;
    for k in &rows.idempotency {
        sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(k.user_id)
        .bind(&k.key)
        .bind(&k.request_hash)
        .bind(i64::from(k.status))
        .bind(&k.body)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn transaction_from_row(row: &SqliteRow) -> Result<TransactionRecord, sqlx::Error> {
    let currency = parse_currency(row.try_get("currency")?)?;
    let to_amount: Option<i64> = row.try_get("to_amount_minor")?;
    let to_currency: Option<&str> = row.try_get("to_currency")?;
    let to_amount = match (to_amount, to_currency) {
        (Some(minor), Some(code)) => Some(Money::new(minor, parse_currency(code)?)),
        _ => None,
    };
    let rate: Option<&str> = row.try_get("rate")?;
    Ok(TransactionRecord {
        id: row.try_get("id")?,
        kind: parse_stored(row.try_get("kind")?)?,
        status: parse_stored(row.try_get("status")?)?,
        from_user_id: row.try_get("from_user_id")?,
        to_user_id: row.try_get("to_user_id")?,
        amount: Money::new(row.try_get("amount_minor")?, currency),
        to_amount,
        rate: rate.map(parse_stored).transpose()?,
        description: row.try_get("description")?,
        reversal_of: row.try_get("reversal_of")?,
        reversed_by: row.try_get("reversed_by")?,
        created_at: instant(row.try_get("created_at")?)?,
    })
}

pub(crate) async fn find_transaction(pool: &SqlitePool, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(transaction_from_row).transpose()?)
}

/// A user's transactions, newest first: two index walks (as payer, as payee) each reading no more than the page
/// needs, merged (see the PostgreSQL store: the same shape).
pub(crate) async fn list_transactions(
    pool: &SqlitePool,
    q: &TransactionQuery,
) -> Result<Vec<TransactionRecord>, StoreError> {
    let offset = if q.before.is_some() { 0 } else { crate::model::offset_i64(q.offset) };
    let window = i64::from(q.limit).saturating_add(offset);
    let mut sql = QueryBuilder::<Sqlite>::new(format!("SELECT {TRANSACTION_COLUMNS} FROM ("));
    for (branch, side) in ["from_user_id", "to_user_id"].into_iter().enumerate() {
        if branch > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(format!("SELECT * FROM (SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE {side} = "))
            .push_bind(q.user_id);
        if branch > 0 {
            // A transaction of the user's on both sides (an exchange) came with the first walk.
            sql.push(" AND from_user_id IS NOT ").push_bind(q.user_id);
        }
        if let Some(kind) = q.kind {
            sql.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(status) = q.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(currency) = q.currency {
            sql.push(" AND currency = ").push_bind(currency.code());
        }
        if let Some(since) = q.since {
            sql.push(" AND created_at >= ").push_bind(micros(since));
        }
        if let Some(until) = q.until {
            sql.push(" AND created_at <= ").push_bind(micros(until));
        }
        if let Some((at, id)) = q.before {
            sql.push(" AND (created_at, id) < (").push_bind(micros(at)).push(", ").push_bind(id).push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(window).push(")");
    }
    sql.push(") ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(q.limit));
    sql.push(" OFFSET ").push_bind(offset);
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(transaction_from_row).collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) async fn wallets(
    pool: &SqlitePool,
    user_id: Uuid,
    currency: Option<Currency>,
) -> Result<Vec<Wallet>, StoreError> {
    let rows = sqlx::query(
        "SELECT currency, balance_minor, version, updated_at FROM accounts
         WHERE kind = 'user' AND user_id = $1 AND ($2 IS NULL OR currency = $2) ORDER BY currency",
    )
    .bind(user_id)
    .bind(currency.map(Currency::code))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Wallet {
                currency: parse_currency(row.try_get("currency")?)?,
                balance_minor: row.try_get("balance_minor")?,
                version: row.try_get("version")?,
                updated_at: instant(row.try_get("updated_at")?)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn balance_history(pool: &SqlitePool, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
    let account = AccountKey::User { user_id: q.user_id, currency: q.currency }.id();
    let rows = sqlx::query(
        "SELECT p.transaction_id, p.amount_minor, p.balance_after_minor, p.created_at, t.kind,
                t.reversal_of IS NOT NULL AS is_reversal
         FROM postings p JOIN transactions t ON t.id = p.transaction_id
         WHERE p.account_id = $1 AND ($2 IS NULL OR p.created_at >= $2) AND ($3 IS NULL OR p.created_at <= $3)
         ORDER BY p.created_at DESC, p.account_version DESC LIMIT $4",
    )
    .bind(account)
    .bind(q.since.map(micros))
    .bind(q.until.map(micros))
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(HistoryEntry {
                transaction_id: row.try_get("transaction_id")?,
                change_minor: row.try_get("amount_minor")?,
                balance_after_minor: row.try_get("balance_after_minor")?,
                created_at: instant(row.try_get("created_at")?)?,
                kind: parse_stored(row.try_get("kind")?)?,
                is_reversal: row.try_get("is_reversal")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn balance_at(
    pool: &SqlitePool,
    user_id: Uuid,
    currency: Currency,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let account = AccountKey::User { user_id, currency }.id();
    let balance: Option<i64> = sqlx::query_scalar(
        "SELECT balance_after_minor FROM postings WHERE account_id = $1 AND created_at <= $2
         ORDER BY created_at DESC, account_version DESC LIMIT 1",
    )
    .bind(account)
    .bind(micros(at))
    .fetch_optional(pool)
    .await?;
    Ok(balance.unwrap_or(0))
}

/// The stored answer for a user's idempotency key, read with any executor (the pool, or a batch's transaction).
pub(crate) async fn find_idempotent<'c, E>(
    executor: E,
    user_id: Uuid,
    key: &str,
) -> Result<Option<StoredResponse>, StoreError>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let row =
        sqlx::query("SELECT request_hash, status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2")
            .bind(user_id)
            .bind(key)
            .fetch_optional(executor)
            .await?;
    row.as_ref().map(stored_from_row).transpose().map_err(Into::into)
}

fn stored_from_row(row: &SqliteRow) -> Result<StoredResponse, sqlx::Error> {
    let status: i64 = row.try_get("status_code")?;
    Ok(StoredResponse {
        request_hash: row.try_get("request_hash")?,
        status: u16::try_from(status).unwrap_or(500),
        body: row.try_get("response")?,
    })
}

fn fx_from_row(row: &SqliteRow) -> Result<FxRate, sqlx::Error> {
    Ok(FxRate {
        base: parse_currency(row.try_get("base")?)?,
        quote: parse_currency(row.try_get("quote")?)?,
        rate: parse_stored(row.try_get("rate")?)?,
        updated_at: instant(row.try_get("updated_at")?)?,
    })
}

pub(crate) async fn fx_rates(pool: &SqlitePool) -> Result<Vec<FxRate>, StoreError> {
    let rows =
        sqlx::query("SELECT base, quote, rate, updated_at FROM fx_rates ORDER BY base, quote").fetch_all(pool).await?;
    rows.iter().map(fx_from_row).collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) async fn fx_rate(pool: &SqlitePool, base: Currency, quote: Currency) -> Result<Option<FxRate>, StoreError> {
    let row = sqlx::query("SELECT base, quote, rate, updated_at FROM fx_rates WHERE base = $1 AND quote = $2")
        .bind(base.code())
        .bind(quote.code())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(fx_from_row).transpose()?)
}

pub(crate) async fn put_fx_rate(writer: &SqlitePool, rate: &FxRate) -> Result<FxRate, StoreError> {
    let mut tx = super::begin_write(writer).await?;
    let table = sqlx::query("SELECT base, quote, rate, updated_at FROM fx_rates").fetch_all(&mut *tx).await?;
    let table = table.iter().map(fx_from_row).collect::<Result<Vec<_>, _>>()?;
    refuse_gaining_cycle(&table, rate)?;
    let row = sqlx::query(
        "INSERT INTO fx_rates (base, quote, rate, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (base, quote) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at
         RETURNING base, quote, rate, updated_at",
    )
    .bind(rate.base.code())
    .bind(rate.quote.code())
    .bind(rate.rate.to_string())
    .bind(micros(rate.updated_at))
    .fetch_one(&mut *tx)
    .await?;
    let saved = fx_from_row(&row)?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(saved)
}

/// Walks the audit chain from its start and names its first broken link.
async fn first_broken_link(pool: &SqlitePool) -> Result<Option<String>, StoreError> {
    const PAGE: u32 = 1_000;
    let (mut after, mut prev) = (0, None);
    loop {
        let page = super::journal::audit_chain(pool, after, PAGE).await?;
        let Some(last) = page.last() else {
            // Entries removed from the end leave the head pointing past the last one.
            let head: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT last_hash FROM audit_chain_head").fetch_one(pool).await?;
            return Ok((head.is_some() && head != prev).then(|| "the last entries were removed".to_owned()));
        };
        after = last.record.id;
        let (broken, next) = crate::chain::check(&page, prev);
        if broken.is_some() {
            return Ok(broken);
        }
        prev = next;
    }
}

pub(crate) async fn verify(pool: &SqlitePool) -> Result<LedgerReport, StoreError> {
    let count = |sql: &'static str| async move {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        Ok::<u64, StoreError>(n.unsigned_abs())
    };
    let mut report = LedgerReport {
        accounts: count("SELECT count(*) FROM accounts").await?,
        transactions: count("SELECT count(*) FROM transactions").await?,
        postings: count("SELECT count(*) FROM postings").await?,
        violations: Vec::new(),
    };
    for (query, what) in crate::verify::CHECKS {
        let rows: Vec<String> = sqlx::query_scalar(&crate::verify::sqlite_sql(query)).fetch_all(pool).await?;
        report.violations.extend(rows.into_iter().map(|detail| format!("{what}: {detail}")));
    }
    if let Some(broken) = first_broken_link(pool).await? {
        report.violations.push(format!("the audit chain is broken: {broken}"));
    }
    Ok(report)
}
