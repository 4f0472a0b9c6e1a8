//! The ledger on SQLite: batches of movements in one transaction on the single writer connection.
//!
//! The writer connection serialises every batch, so no locks beyond SQLite's own are needed; rows are written one
//! statement each (cheap in-process), all inside the batch's one commit.

use banksim_core::currency::Currency;
use banksim_core::ledger::{AccountKey, Limits, TransactionRecord};
use banksim_core::money::Money;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{instant, micros};
use crate::StoreError;
use crate::ledger::{
    AuditContext, DueHold, FxRate, HistoryEntry, HistoryQuery, LedgerReport, LimitsChange, StoredResponse,
    TransactionQuery, Wallet, check_new_limits, limits_rows, parse_currency, parse_stored, refuse_gaining_cycle,
    with_effective_balances,
};

const TRANSACTION_COLUMNS: &str = "id, kind, status, from_user_id, to_user_id, amount_minor, currency, \
    to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at, expires_at";

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
        effective_at: instant(row.try_get("effective_at")?)?,
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(instant).transpose()?,
    })
}

pub(crate) async fn find_transaction(pool: &SqlitePool, id: Uuid) -> Result<Option<TransactionRecord>, StoreError> {
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(transaction_from_row).transpose()?)
}

/// A user's transactions, newest first: two index walks (as payer, as payee) each reading no more than the page
/// needs, merged (the PostgreSQL store has the same shape in its own dialect).
pub(crate) async fn list_transactions(
    pool: &SqlitePool,
    q: &TransactionQuery,
) -> Result<Vec<TransactionRecord>, StoreError> {
    let offset = if q.before.is_some() { 0 } else { crate::model::offset_i64(q.offset) };
    // Two index walks (payer side, payee side) that SQLite merges in order as a compound `SELECT`, stopping at the
    // page's end. Arms of their own (`SELECT * FROM (… ORDER BY … LIMIT …)`) would each be sorted again in a
    // temporary b-tree, as SQLite does not know that a subquery comes out ordered.
    let mut sql = QueryBuilder::<Sqlite>::new("");
    for (branch, side) in ["from_user_id", "to_user_id"].into_iter().enumerate() {
        if branch > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE {side} = ")).push_bind(q.user_id);
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
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(q.limit));
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
        "SELECT currency, balance_minor, version, updated_at, overdraft_minor, max_balance_minor, pending_minor
         FROM accounts
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
                limits: limits_from_row(row)?,
                pending_minor: row.try_get("pending_minor")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

fn limits_from_row(row: &SqliteRow) -> Result<Limits, sqlx::Error> {
    Ok(Limits {
        overdraft_minor: row.try_get("overdraft_minor")?,
        max_balance_minor: row.try_get("max_balance_minor")?,
    })
}

pub(crate) async fn due_holds(pool: &SqlitePool, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueHold>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, from_user_id, to_user_id, currency FROM transactions
         WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(micros(now))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DueHold {
                id: row.try_get("id")?,
                from_user_id: row.try_get("from_user_id")?,
                to_user_id: row.try_get("to_user_id")?,
                currency: parse_currency(row.try_get("currency")?)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn wallet_limits(pool: &SqlitePool, user_id: Uuid, currency: Currency) -> Result<Limits, StoreError> {
    let row = sqlx::query("SELECT overdraft_minor, max_balance_minor FROM accounts WHERE id = $1")
        .bind(AccountKey::User { user_id, currency }.id())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(limits_from_row).transpose()?.unwrap_or_default())
}

/// Opens the wallet if needed, checks its balance against the new limits and stores them, with the audit entry and
/// event, on the writer connection (which serialises it with the ledger's batches).
pub(crate) async fn set_wallet_limits(
    writer: &SqlitePool,
    change: &LimitsChange,
    audit: &AuditContext,
    now: DateTime<Utc>,
) -> Result<Limits, StoreError> {
    let wallet = AccountKey::User { user_id: change.user_id, currency: change.currency };
    let mut tx = super::begin_write(writer).await?;
    let user: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(change.user_id).fetch_optional(&mut *tx).await?;
    if user.is_none() {
        return Err(StoreError::NotFound);
    }
    sqlx::query(
        "INSERT INTO accounts (id, kind, user_id, currency, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(wallet.id())
    .bind(wallet.kind())
    .bind(change.user_id)
    .bind(change.currency.code())
    .bind(micros(now))
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT balance_minor, pending_minor, overdraft_minor, max_balance_minor FROM accounts WHERE id = $1",
    )
    .bind(wallet.id())
    .fetch_one(&mut *tx)
    .await?;
    let balance_minor: i64 = row.try_get("balance_minor")?;
    check_new_limits(change.limits, balance_minor, row.try_get("pending_minor")?)?;
    sqlx::query("UPDATE accounts SET overdraft_minor = $2, max_balance_minor = $3 WHERE id = $1")
        .bind(wallet.id())
        .bind(change.limits.overdraft_minor)
        .bind(change.limits.max_balance_minor)
        .execute(&mut *tx)
        .await?;
    let (audit_row, data) = limits_rows(change, limits_from_row(&row)?, audit);
    super::journal::append_audit(&mut tx, &[audit_row], now).await?;
    super::journal::append_event(&mut tx, "wallet", wallet.id(), "WalletLimitsSet", &data, now).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(change.limits)
}

/// The balance of wallet `$1` in effect at `{at}` (an SQL expression; see the PostgreSQL store).
fn balance_in_effect(at: &str) -> String {
    format!(
        "(COALESCE((SELECT balance_after_minor FROM postings WHERE account_id = $1 AND created_at <= {at}
                    ORDER BY created_at DESC, account_version DESC LIMIT 1), 0)
          + COALESCE((SELECT sum(amount_minor) FROM postings WHERE account_id = $1 AND effective_at IS NOT NULL
                      AND created_at > {at} AND effective_at <= {at}), 0))"
    )
}

/// A wallet's postings newest first in effective time, with the balance in effect at the newest one, in one
/// statement (one snapshot); the same shape as the PostgreSQL store's.
pub(crate) async fn balance_history(pool: &SqlitePool, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
    let account = AccountKey::User { user_id: q.user_id, currency: q.currency }.id();
    let sql = format!(
        "WITH page AS (
             SELECT * FROM (
                 SELECT * FROM (
                     SELECT transaction_id, amount_minor, created_at, created_at AS effective_at, account_version
                     FROM postings WHERE account_id = $1 AND effective_at IS NULL
                       AND ($2 IS NULL OR created_at >= $2) AND ($3 IS NULL OR created_at <= $3)
                     ORDER BY created_at DESC, account_version DESC LIMIT $4)
                 UNION ALL
                 SELECT * FROM (
                     SELECT transaction_id, amount_minor, created_at, effective_at, account_version
                     FROM postings WHERE account_id = $1 AND effective_at IS NOT NULL
                       AND ($2 IS NULL OR created_at >= $2)
                       AND ($2 IS NULL OR effective_at >= $2) AND ($3 IS NULL OR effective_at <= $3)
                     ORDER BY effective_at DESC, created_at DESC, account_version DESC LIMIT $4)
             ) ORDER BY effective_at DESC, created_at DESC, account_version DESC LIMIT $4
         ),
         newest AS (SELECT effective_at FROM page ORDER BY effective_at DESC, created_at DESC, account_version DESC
                    LIMIT 1)
         SELECT p.transaction_id, p.amount_minor, p.created_at, p.effective_at, t.kind,
                t.reversal_of IS NOT NULL AS is_reversal, (SELECT {} FROM newest n) AS newest_balance_minor
         FROM page p JOIN transactions t ON t.id = p.transaction_id
         ORDER BY p.effective_at DESC, p.created_at DESC, p.account_version DESC",
        balance_in_effect("n.effective_at")
    );
    let rows = sqlx::query(&sql)
        .bind(account)
        .bind(q.since.map(micros))
        .bind(q.until.map(micros))
        .bind(i64::from(q.limit))
        .fetch_all(pool)
        .await?;
    let newest: i64 = rows.first().map(|row| row.try_get("newest_balance_minor")).transpose()?.unwrap_or(0);
    let page = rows
        .iter()
        .map(|row| {
            Ok(HistoryEntry {
                transaction_id: row.try_get("transaction_id")?,
                change_minor: row.try_get("amount_minor")?,
                balance_after_minor: 0,
                created_at: instant(row.try_get("created_at")?)?,
                effective_at: instant(row.try_get("effective_at")?)?,
                kind: parse_stored(row.try_get("kind")?)?,
                is_reversal: row.try_get("is_reversal")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(with_effective_balances(page, newest))
}

/// The balance in effect at `at`: every posting effective at or before it.
pub(crate) async fn balance_at(
    pool: &SqlitePool,
    user_id: Uuid,
    currency: Currency,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let account = AccountKey::User { user_id, currency }.id();
    let balance: i64 = sqlx::query_scalar(&format!("SELECT {}", balance_in_effect("$2")))
        .bind(account)
        .bind(micros(at))
        .fetch_one(pool)
        .await?;
    Ok(balance)
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
