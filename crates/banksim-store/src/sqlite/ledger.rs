//! The ledger on SQLite: batches of movements in one transaction on the single writer connection.
//!
//! The writer connection serialises every batch, so no locks beyond SQLite's own are needed; rows are written one
//! statement each (cheap in-process), all inside the batch's one commit.

use std::collections::HashMap;

use banksim_core::currency::Currency;
use banksim_core::effective::EffectiveHistory;
use banksim_core::ledger::{AccountKey, AccountState, Book, Leg, Limits, Original, TransactionRecord};
use banksim_core::money::Money;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{instant, micros};
use crate::StoreError;
use crate::ledger::{
    AuditContext, BatchRows, DueHold, FxRate, HISTORY_LATER_SQL, HISTORY_OPENING_SQL, HistoryEntry, HistoryQuery,
    LedgerReport, LedgerRequest, LimitsChange, PostedBatch, ResponseRenderer, StoredResponse, TransactionQuery, Wallet,
    account_key, accounts_to_open, accounts_touched, check_new_limits, history_starts, limits_rows, parse_currency,
    parse_stored, plan_batch, refuse_gaining_cycle, rollback_originals, wallet_states, with_effective_balances,
};

const TRANSACTION_COLUMNS: &str = "id, kind, status, from_user_id, to_user_id, amount_minor, currency, \
    to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at, expires_at";

pub(crate) async fn post_batch(
    writer: &SqlitePool,
    requests: &[LedgerRequest],
    render: &dyn ResponseRenderer,
    now: DateTime<Utc>,
) -> Result<PostedBatch, StoreError> {
    // IMMEDIATE takes the write lock up front: a batch reads before it writes, and another process writing in
    // between (say `banksim admin`) would otherwise fail it with SQLITE_BUSY.
    let mut tx = super::begin_write(writer).await?;
    let stored = load_stored_answers(&mut tx, requests).await?;
    let live: Vec<&LedgerRequest> = requests
        .iter()
        .filter(|r| r.idempotency.as_ref().is_none_or(|c| !stored.contains_key(&(c.user_id, c.key.clone()))))
        .collect();
    let originals = load_originals(&mut tx, &rollback_originals(&live)).await?;
    let created = open_accounts(&mut tx, &accounts_to_open(&live), now).await?;
    let mut accounts = Vec::new();
    let mut now = now;
    for ids in accounts_touched(&live, &originals).chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id, kind, user_id, currency, balance_minor, version, updated_at, overdraft_minor, max_balance_minor,
                    pending_minor
             FROM accounts WHERE id IN (",
        );
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(") ORDER BY id");
        for row in query.build().fetch_all(&mut *tx).await? {
            // Postings never go back in time on an account, even if the clock does.
            now = now.max(instant(row.try_get("updated_at")?)?);
            accounts.push(AccountState {
                id: row.try_get("id")?,
                key: account_key(row.try_get("kind")?, row.try_get("user_id")?, row.try_get("currency")?)?,
                balance_minor: row.try_get("balance_minor")?,
                version: row.try_get("version")?,
                limits: limits_from_row(&row)?,
                pending_minor: row.try_get("pending_minor")?,
            });
        }
    }
    let histories = load_histories(&mut tx, &history_starts(&live, now)).await?;
    let versions: HashMap<Uuid, i64> = accounts.iter().map(|a| (a.id, a.version)).collect();
    let book = Book::new(accounts, originals).with_histories(histories);
    let (outcomes, mut rows) = plan_batch(requests, stored, book, render, now);
    rows.accounts.retain(|a| versions.get(&a.id) != Some(&a.version));
    // A wallet opens with its first movement: drop the ones this batch created for movements it refused.
    let unused: Vec<Uuid> = created.into_iter().filter(|id| !rows.accounts.iter().any(|a| a.id == *id)).collect();
    for ids in unused.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM accounts WHERE id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(")");
        query.build().execute(&mut *tx).await?;
    }
    write_rows(&mut tx, &rows, now).await?;
    tx.commit().await.map_err(StoreError::CommitFailed)?;
    Ok(PostedBatch { outcomes, wallets: wallet_states(&rows.accounts, now) })
}

/// The effective-time history of each wallet from its start (the writer connection serialises batches).
async fn load_histories(
    tx: &mut Transaction<'_, Sqlite>,
    starts: &[(AccountKey, DateTime<Utc>)],
) -> Result<Vec<(AccountKey, EffectiveHistory)>, StoreError> {
    let mut histories = Vec::with_capacity(starts.len());
    for &(key, since) in starts {
        let recorded: Option<i64> = sqlx::query_scalar(HISTORY_OPENING_SQL)
            .bind(key.id())
            .bind(micros(since))
            .fetch_optional(&mut **tx)
            .await?;
        let later = sqlx::query(HISTORY_LATER_SQL)
            .bind(key.id())
            .bind(micros(since))
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| Ok((instant(row.try_get("at")?)?, row.try_get("amount_minor")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        histories.push((key, EffectiveHistory::from_postings(since, recorded.unwrap_or(0), later)));
    }
    Ok(histories)
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

/// Most rows one statement writes: SQLite binds at most 32,766 parameters, and the widest row here has 15.
const ROWS_PER_STATEMENT: usize = 2_000;

/// The stored answers of the batch's idempotency keys, in one query.
async fn load_stored_answers(
    tx: &mut Transaction<'_, Sqlite>,
    requests: &[LedgerRequest],
) -> Result<HashMap<(Uuid, String), StoredResponse>, StoreError> {
    let claims: Vec<_> = requests.iter().filter_map(|r| r.idempotency.as_ref()).collect();
    let mut stored = HashMap::new();
    for chunk in claims.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT user_id, key, request_hash, status_code, response FROM idempotency_keys WHERE (user_id, key) IN (",
        );
        query.push_values(chunk, |mut row, claim| {
            row.push_bind(claim.user_id).push_bind(&claim.key);
        });
        query.push(")");
        for row in query.build().fetch_all(&mut **tx).await? {
            stored.insert((row.try_get("user_id")?, row.try_get("key")?), stored_from_row(&row)?);
        }
    }
    Ok(stored)
}

/// Creates the accounts a batch may need that do not exist yet, in one statement, and returns the ids of those it
/// created (not those that existed).
async fn open_accounts(
    tx: &mut Transaction<'_, Sqlite>,
    keys: &[AccountKey],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, StoreError> {
    let mut created = Vec::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO accounts (id, kind, user_id, currency, created_at, updated_at) ");
        query.push_values(chunk, |mut row, key| {
            row.push_bind(key.id())
                .push_bind(key.kind())
                .push_bind(key.user_id())
                .push_bind(key.currency().code())
                .push_bind(micros(now))
                .push_bind(micros(now));
        });
        query.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        for row in query.build().fetch_all(&mut **tx).await? {
            created.push(row.try_get("id")?);
        }
    }
    Ok(created)
}

/// Writes everything a batch produced with one statement per table (per 2,000 rows): the cost of a statement on
/// SQLite is mostly its round trip through the driver, not its rows.
async fn write_rows(tx: &mut Transaction<'_, Sqlite>, rows: &BatchRows, now: DateTime<Utc>) -> Result<(), StoreError> {
    let now_at = now;
    let now = micros(now);
    for chunk in rows.transactions.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO transactions (id, kind, status, from_user_id, to_user_id, amount_minor, currency,
                 to_amount_minor, to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at,
                 expires_at) ",
        );
        query.push_values(chunk, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(r.kind.as_str())
                .push_bind(r.status.as_str())
                .push_bind(r.from_user_id)
                .push_bind(r.to_user_id)
                .push_bind(r.amount.amount_minor())
                .push_bind(r.amount.currency().code())
                .push_bind(r.to_amount.map(|m| m.amount_minor()))
                .push_bind(r.to_amount.map(|m| m.currency().code()))
                .push_bind(r.rate.map(|rate| rate.to_string()))
                .push_bind(r.description.as_deref())
                .push_bind(r.reversal_of)
                .push_bind(r.reversed_by)
                .push_bind(micros(r.created_at))
                .push_bind(micros(r.effective_at))
                .push_bind(r.expires_at.map(micros));
        });
        query.build().execute(&mut **tx).await?;
    }
    for chunk in rows.updated.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE transactions SET status = r.status, amount_minor = r.amount, reversed_by = r.by
             FROM (SELECT column1 AS id, column2 AS by, column3 AS status, column4 AS amount FROM (",
        );
        query.push_values(chunk, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(r.reversed_by)
                .push_bind(r.status.as_str())
                .push_bind(r.amount.amount_minor());
        });
        query.push(")) AS r WHERE transactions.id = r.id");
        query.build().execute(&mut **tx).await?;
    }
    for chunk in rows.postings.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO postings (transaction_id, account_id, amount_minor, balance_after_minor, account_version,
                 effective_at, created_at) ",
        );
        query.push_values(chunk, |mut row, (transaction_id, p)| {
            row.push_bind(*transaction_id)
                .push_bind(p.account_id)
                .push_bind(p.amount_minor)
                .push_bind(p.balance_after_minor)
                .push_bind(p.account_version)
                .push_bind(p.effective_at.map(micros))
                .push_bind(now);
        });
        query.build().execute(&mut **tx).await?;
    }
    for chunk in rows.accounts.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE accounts SET balance_minor = n.balance, version = n.version, pending_minor = n.pending, updated_at = ",
        );
        query.push_bind(now);
        query.push(" FROM (SELECT column1 AS id, column2 AS balance, column3 AS version, column4 AS pending FROM (");
        query.push_values(chunk, |mut row, a| {
            row.push_bind(a.id).push_bind(a.balance_minor).push_bind(a.version).push_bind(a.pending_minor);
        });
        query.push(")) AS n WHERE accounts.id = n.id");
        query.build().execute(&mut **tx).await?;
    }
    for chunk in rows.events.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, aggregate_type, aggregate_id, version, event_type, data, created_at) ",
        );
        query.push_values(chunk, |mut row, e| {
            row.push_bind(e.id)
                .push_bind(e.aggregate_type)
                .push_bind(e.aggregate_id)
                .push_bind(e.version)
                .push_bind(e.event_type)
                .push_bind(e.data.to_string())
                .push_bind(now);
        });
        query.build().execute(&mut **tx).await?;
    }
    super::journal::append_audit(tx, &rows.audits, now_at).await?;
    for chunk in rows.idempotency.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at) ",
        );
        query.push_values(chunk, |mut row, k| {
            row.push_bind(k.user_id)
                .push_bind(k.key.as_str())
                .push_bind(k.request_hash.as_slice())
                .push_bind(i64::from(k.status))
                .push_bind(k.body.as_str())
                .push_bind(now);
        });
        query.build().execute(&mut **tx).await?;
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
    open_accounts(&mut tx, &[wallet], now).await?;
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
