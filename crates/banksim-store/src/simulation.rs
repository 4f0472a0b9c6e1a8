//! The storage of simulation mode: the virtual clock that every instance on a database shares, the lookup an advance
//! of that clock walks by, and the canonical dump behind the state hash.
//!
//! The state hash is computed here, once for both backends, from rows each backend reads in the same order: so the
//! same data gives the same hash on SQLite and PostgreSQL. Its exact format is in `docs/simulation.md`; the
//! functions below are that document in code ([`canonical_user`], [`canonical_wallet`], [`canonical_transaction`]).

use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::StoreError;

/// The first line of the canonical dump: names the format, so that a later format cannot be mistaken for this one.
pub const STATE_HASH_HEADER: &str = "banksim-state v1\n";

/// Rows read per query while the dump is hashed: the dump streams through the hasher, never whole in memory.
pub const STATE_DUMP_PAGE_ROWS: u32 = 1_000;

/// The shared virtual clock, the due-work lookup of an advance, and the rows of the state hash.
#[async_trait]
pub trait SimulationStore: Send + Sync {
    /// The virtual clock's instant, or `None` while the clock is the wall clock (no simulation has set it yet).
    async fn virtual_now(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Takes or renews the clock's lease for `holder` until `until` (wall-clock instants): granted when nobody
    /// holds it, `holder` does, or the holder's lease ended before `wall_now`. Only the holder moves the clock, so
    /// two advances never walk it at once.
    async fn claim_clock(
        &self,
        holder: Uuid,
        wall_now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives the clock's lease back, if `holder` holds it.
    async fn release_clock(&self, holder: Uuid) -> Result<(), StoreError>;

    /// Moves the virtual clock to `to` — only forward (or to where it stands), and only while `holder`'s lease runs
    /// at `wall_now`. Returns `false`, changing nothing, when either does not hold.
    async fn move_clock(&self, holder: Uuid, to: DateTime<Utc>, wall_now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// The earliest instant at which work falls due: an active schedule's `next_execution_at` (a claimed one too)
    /// or a pending hold's `expires_at`. `None` when nothing is waiting.
    async fn next_due_instant(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Up to `limit` users with an id greater than `after`, by id.
    async fn dump_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedUser>, StoreError>;

    /// Up to `limit` user wallets after `(user_id, currency)`, by owner id then currency code.
    async fn dump_wallets(&self, after: Option<(Uuid, String)>, limit: u32) -> Result<Vec<DumpedWallet>, StoreError>;

    /// Up to `limit` transactions with an id greater than `after`, by id.
    async fn dump_transactions(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<DumpedTransaction>, StoreError>;
}

/// A user as the state hash sees it (no password hash: its salt is random; no session state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedUser {
    /// Id.
    pub id: Uuid,
    /// Username as registered.
    pub username: String,
    /// Email, lower case.
    pub email: String,
    /// `user` or `admin`.
    pub role: String,
    /// Whether the user may log in.
    pub is_active: bool,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A user's wallet as the state hash sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedWallet {
    /// Owner.
    pub user_id: Uuid,
    /// ISO 4217 code.
    pub currency: String,
    /// Posted balance, in minor units.
    pub balance_minor: i64,
    /// Held by the owner's pending transfers, in minor units.
    pub pending_minor: i64,
    /// Overdraft limit, in minor units, if any.
    pub overdraft_minor: Option<i64>,
    /// Balance ceiling, in minor units, if any.
    pub max_balance_minor: Option<i64>,
    /// Opening instant.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A transaction as the state hash sees it: every stored column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedTransaction {
    /// Id.
    pub id: Uuid,
    /// `credit`, `debit`, `transfer` or `exchange`.
    pub kind: String,
    /// `success`, `failed`, `rolled_back`, `pending`, `voided` or `expired`.
    pub status: String,
    /// Payer.
    pub from_user_id: Option<Uuid>,
    /// Receiver.
    pub to_user_id: Option<Uuid>,
    /// Amount, in minor units of `currency`.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// An exchange's converted amount, in minor units of `to_currency`.
    pub to_amount_minor: Option<i64>,
    /// An exchange's target currency.
    pub to_currency: Option<String>,
    /// An exchange's rate, as stored (exact decimal text).
    pub rate: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The transaction this one reverses.
    pub reversal_of: Option<Uuid>,
    /// The transaction that reversed this one.
    pub reversed_by: Option<Uuid>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it takes effect.
    pub effective_at: DateTime<Utc>,
    /// A hold's expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The state hash and what it covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHash {
    /// SHA-256 of the canonical dump, 64 lower-case hex digits.
    pub hash: String,
    /// Users in the dump.
    pub users: u64,
    /// Wallets in the dump.
    pub wallets: u64,
    /// Transactions in the dump.
    pub transactions: u64,
}

/// Hashes the canonical dump of `store`'s users, wallets and transactions (see `docs/simulation.md`), page by page.
/// The pages are read one after another, not in one snapshot: hash a database nothing writes to (a paused
/// simulation) for a result that means something.
pub async fn state_hash(store: &dyn SimulationStore) -> Result<StateHash, StoreError> {
    let mut hasher = Sha256::new();
    hasher.update(STATE_HASH_HEADER.as_bytes());
    let mut line = String::new();
    let (mut users, mut wallets, mut transactions) = (0u64, 0u64, 0u64);
    let mut after = None;
    loop {
        let page = store.dump_users(after, STATE_DUMP_PAGE_ROWS).await?;
        for user in &page {
            canonical_user(&mut line, user);
            hasher.update(line.as_bytes());
        }
        users += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == STATE_DUMP_PAGE_ROWS as usize => after = Some(last.id),
            _ => break,
        }
    }
    let mut after = None;
    loop {
        let page = store.dump_wallets(after.clone(), STATE_DUMP_PAGE_ROWS).await?;
        for wallet in &page {
            canonical_wallet(&mut line, wallet);
            hasher.update(line.as_bytes());
        }
        wallets += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == STATE_DUMP_PAGE_ROWS as usize => {
                after = Some((last.user_id, last.currency.clone()));
            }
            _ => break,
        }
    }
    let mut after = None;
    loop {
        let page = store.dump_transactions(after, STATE_DUMP_PAGE_ROWS).await?;
        for transaction in &page {
            canonical_transaction(&mut line, transaction);
            hasher.update(line.as_bytes());
        }
        transactions += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == STATE_DUMP_PAGE_ROWS as usize => after = Some(last.id),
            _ => break,
        }
    }
    let hash = hasher.finalize().iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    });
    Ok(StateHash { hash, users, wallets, transactions })
}

/// Writes the canonical line of a user into `line` (replacing what it held).
pub fn canonical_user(line: &mut String, u: &DumpedUser) {
    line.clear();
    line.push_str("user");
    let fields = [
        u.id.to_string(),
        text(&u.username),
        text(&u.email),
        u.role.clone(),
        u.is_active.to_string(),
        instant(u.created_at),
        instant(u.updated_at),
    ];
    push_fields(line, &fields);
}

/// Writes the canonical line of a wallet into `line` (replacing what it held).
pub fn canonical_wallet(line: &mut String, w: &DumpedWallet) {
    line.clear();
    line.push_str("wallet");
    let fields = [
        w.user_id.to_string(),
        w.currency.clone(),
        w.balance_minor.to_string(),
        w.pending_minor.to_string(),
        optional(w.overdraft_minor),
        optional(w.max_balance_minor),
        instant(w.created_at),
        instant(w.updated_at),
    ];
    push_fields(line, &fields);
}

/// Writes the canonical line of a transaction into `line` (replacing what it held).
pub fn canonical_transaction(line: &mut String, t: &DumpedTransaction) {
    line.clear();
    line.push_str("transaction");
    let fields = [
        t.id.to_string(),
        t.kind.clone(),
        t.status.clone(),
        optional(t.from_user_id),
        optional(t.to_user_id),
        t.amount_minor.to_string(),
        t.currency.clone(),
        optional(t.to_amount_minor),
        t.to_currency.clone().unwrap_or_else(|| NULL.to_owned()),
        t.rate.as_deref().map_or_else(|| NULL.to_owned(), text),
        t.description.as_deref().map_or_else(|| NULL.to_owned(), text),
        optional(t.reversal_of),
        optional(t.reversed_by),
        instant(t.created_at),
        instant(t.effective_at),
        t.expires_at.map_or_else(|| NULL.to_owned(), instant),
    ];
    push_fields(line, &fields);
}

/// How an absent value is written.
const NULL: &str = "null";

fn push_fields(line: &mut String, fields: &[String]) {
    for field in fields {
        line.push('\t');
        line.push_str(field);
    }
    line.push('\n');
}

/// Free text as a JSON string: quotes, backslashes and control characters escaped (so a tab or a newline in a
/// description can never pass for a separator), everything else as its UTF-8 bytes.
fn text(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// An instant in UTC with exactly six fractional digits (the microseconds both databases keep) and a `Z`.
fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| NULL.to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("instant").with_timezone(&Utc)
    }

    #[test]
    fn canonical_lines_are_tab_separated_with_json_text_micro_instants_and_null() {
        let mut line = String::new();
        let user = DumpedUser {
            id: Uuid::from_u128(1),
            username: "sefa".into(),
            email: "sefa@example.com".into(),
            role: "user".into(),
            is_active: true,
            created_at: at("2030-01-31T09:00:00Z"),
            updated_at: at("2030-01-31T09:00:00.5Z"),
        };
        canonical_user(&mut line, &user);
        assert_eq!(
            line,
            "user\t00000000-0000-0000-0000-000000000001\t\"sefa\"\t\"sefa@example.com\"\tuser\ttrue\t\
             2030-01-31T09:00:00.000000Z\t2030-01-31T09:00:00.500000Z\n"
        );
        let transaction = DumpedTransaction {
            id: Uuid::from_u128(2),
            kind: "transfer".into(),
            status: "success".into(),
            from_user_id: Some(Uuid::from_u128(1)),
            to_user_id: None,
            amount_minor: 150,
            currency: "USD".into(),
            to_amount_minor: None,
            to_currency: None,
            rate: None,
            description: Some("rent\tJanuary \"flat\"\n".into()),
            reversal_of: None,
            reversed_by: None,
            created_at: at("2030-02-28T09:00:00.123456Z"),
            effective_at: at("2030-02-28T09:00:00.123456Z"),
            expires_at: None,
        };
        canonical_transaction(&mut line, &transaction);
        assert_eq!(
            line,
            "transaction\t00000000-0000-0000-0000-000000000002\ttransfer\tsuccess\t\
             00000000-0000-0000-0000-000000000001\tnull\t150\tUSD\tnull\tnull\tnull\t\
             \"rent\\tJanuary \\\"flat\\\"\\n\"\tnull\tnull\t2030-02-28T09:00:00.123456Z\t\
             2030-02-28T09:00:00.123456Z\tnull\n"
        );
        assert_eq!(line.matches('\t').count(), 16, "a tab in the text never splits a field");
    }
}
