//! Projections: read models built from the event log alone.
//!
//! A projector (in the server) reads the events after a projection's checkpoint and hands them to
//! [`Store::apply_to_projection`](crate::Store::apply_to_projection), which changes the read model and moves the
//! checkpoint in one transaction, skipping events it has already applied. So a restart resumes where the last
//! commit left off, a duplicate delivery changes nothing, and two instances never apply an event twice.
//!
//! What each projection makes of a batch of events is computed here, once for both backends; the backends only
//! load the state it needs and write the rows back.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use banksim_core::currency::Currency;
use banksim_core::ledger::AccountKey;
use banksim_core::statement::{DayStatement, add_movements};
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::{EventRecord, StoreError};

/// A read model built from the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// Per wallet and UTC day: opening balance, credits, debits, closing balance.
    DailyStatements,
    /// Per currency: money held by users and by the FX accounts, money in and out, transactions.
    SystemTotals,
}

impl Projection {
    /// Every projection.
    pub const ALL: [Self; 2] = [Self::DailyStatements, Self::SystemTotals];

    /// The projection of this name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Its name in the checkpoint table and in metrics, and the name of the table that holds its read model.
    pub fn name(self) -> &'static str {
        match self {
            Self::DailyStatements => "daily_statements",
            Self::SystemTotals => "system_totals",
        }
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a projection stands against the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    /// Which projection.
    pub projection: Projection,
    /// The sequence of the last event applied (0 before the first).
    pub checkpoint: i64,
    /// The sequence of the log's last event (0 for an empty log).
    pub head: i64,
    /// When the oldest event not yet applied was appended; `None` when the projection is caught up.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// When the checkpoint last moved; `None` if it never did.
    pub updated_at: Option<DateTime<Utc>>,
}

impl ProjectionStatus {
    /// How far behind the log's head the projection is, in sequence numbers.
    pub fn lag_events(&self) -> i64 {
        (self.head - self.checkpoint).max(0)
    }

    /// How long the oldest event not yet applied has waited, at `now`.
    pub fn lag(&self, now: DateTime<Utc>) -> std::time::Duration {
        self.oldest_pending_at.and_then(|at| (now - at).to_std().ok()).unwrap_or_default()
    }
}

/// What [`Store::apply_to_projection`](crate::Store::apply_to_projection) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionProgress {
    /// The events after the checkpoint were applied (possibly none) and the checkpoint now stands here.
    Applied {
        /// Events applied by this call.
        events: usize,
        /// The checkpoint after the call.
        checkpoint: i64,
    },
    /// Another consumer holds the projection right now; nothing was done.
    Busy,
}

/// Which statements to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementQuery {
    /// Whose wallets.
    pub user_id: Uuid,
    /// Only this currency's wallet.
    pub currency: Option<Currency>,
    /// First day.
    pub from: NaiveDate,
    /// Last day (inclusive).
    pub to: NaiveDate,
}

/// One wallet's stored statement days in a range, and what it held before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletStatements {
    /// The wallet's currency.
    pub currency: Currency,
    /// The closing balance of the wallet's last stored day before the range; `None` if it had none.
    pub balance_before: Option<i64>,
    /// The stored days in the range (days with movements), oldest first.
    pub days: Vec<DayStatement>,
}

/// One currency's totals across the system. As a delta (what a batch changes), the same fields add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemTotal {
    /// The currency.
    pub currency: Currency,
    /// The sum of every user wallet.
    pub user_balances_minor: i64,
    /// What the FX accounts hold (exchange rounding and spread).
    pub fx_minor: i64,
    /// Money that entered the bank (credits, and rollbacks of debits).
    pub money_in_minor: i64,
    /// Money that left the bank (debits, and rollbacks of credits).
    pub money_out_minor: i64,
    /// Money movements that touched this currency.
    pub transactions: i64,
}

impl SystemTotal {
    fn zero(currency: Currency) -> Self {
        Self { currency, user_balances_minor: 0, fx_minor: 0, money_in_minor: 0, money_out_minor: 0, transactions: 0 }
    }

    /// Whether the money is conserved: all the users and the FX accounts hold is what came in minus what went out.
    pub fn is_balanced(&self) -> bool {
        let held = self.user_balances_minor.checked_add(self.fx_minor);
        let net_in = self.money_in_minor.checked_sub(self.money_out_minor);
        held.is_some() && held == net_in
    }
}

/// The events of a delivery that come after `checkpoint`. A delivery must be the log's events in order.
pub(crate) fn events_after(events: &[EventRecord], checkpoint: i64) -> Result<&[EventRecord], StoreError> {
    if events.windows(2).any(|pair| pair[0].sequence >= pair[1].sequence) {
        return Err(StoreError::Corrupt("a projection was handed events out of log order".into()));
    }
    let first_new = events.partition_point(|e| e.sequence <= checkpoint);
    Ok(&events[first_new..])
}

/// Checks that a delivery's first new event is the log's next one after the checkpoint (`next`, as the database
/// reads it inside the applying transaction): a delivery that skips an event must not move the checkpoint past it.
pub(crate) fn continues_log(
    projection: Projection,
    checkpoint: i64,
    next: Option<i64>,
    first: &EventRecord,
) -> Result<(), StoreError> {
    if next == Some(first.sequence) {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "{projection} at {checkpoint} was handed event {} but the log continues at {next:?}",
        first.sequence
    )))
}

/// A wallet: owner and currency.
pub(crate) type WalletKey = (Uuid, Currency);

/// The wallet movements of the money events, per wallet, in log order: (UTC day it takes effect, signed amount).
pub(crate) fn wallet_movements(
    events: &[EventRecord],
) -> Result<BTreeMap<WalletKey, Vec<(NaiveDate, i64)>>, StoreError> {
    let mut movements: BTreeMap<WalletKey, Vec<(NaiveDate, i64)>> = BTreeMap::new();
    for event in events {
        let day = effective_at(event)?.date_naive();
        for (account, amount) in money_legs(event)? {
            if let AccountKey::User { user_id, currency } = account {
                movements.entry((user_id, currency)).or_default().push((day, amount));
            }
        }
    }
    Ok(movements)
}

/// When a money event's postings take effect: when it was recorded, unless it carries an earlier `effective_at`.
fn effective_at(event: &EventRecord) -> Result<DateTime<Utc>, StoreError> {
    match event.data.get("effective_at") {
        None => Ok(event.created_at),
        Some(at) => serde_json::from_value(at.clone()).map_err(|_| {
            StoreError::Corrupt(format!("event {} ({}): an unreadable effective_at", event.sequence, event.event_type))
        }),
    }
}

/// Per wallet, the earliest day its movements take effect on: its stored days from the last one on or before it are
/// what [`statement_changes`] needs.
pub(crate) fn earliest_days(movements: &BTreeMap<WalletKey, Vec<(NaiveDate, i64)>>) -> Vec<(WalletKey, NaiveDate)> {
    movements
        .iter()
        .filter_map(|(wallet, moves)| moves.iter().map(|(day, _)| *day).min().map(|day| (*wallet, day)))
        .collect()
}

/// The statement days that a batch's movements change or open, given each touched wallet's stored days from the
/// last one on or before its [`earliest_days`] on (oldest first).
pub(crate) fn statement_changes(
    movements: BTreeMap<WalletKey, Vec<(NaiveDate, i64)>>,
    stored: &HashMap<WalletKey, Vec<DayStatement>>,
) -> Result<Vec<(WalletKey, DayStatement)>, StoreError> {
    let mut changes = Vec::new();
    for (wallet, moves) in movements {
        let days = add_movements(stored.get(&wallet).map_or(&[][..], Vec::as_slice), moves)
            .map_err(|e| StoreError::Corrupt(format!("statements of wallet {} {}: {e}", wallet.0, wallet.1)))?;
        changes.extend(days.into_iter().map(|day| (wallet, day)));
    }
    Ok(changes)
}

/// What a batch of events adds to each currency's totals.
pub(crate) fn total_changes(events: &[EventRecord]) -> Result<Vec<SystemTotal>, StoreError> {
    let mut totals: BTreeMap<Currency, SystemTotal> = BTreeMap::new();
    for event in events {
        let legs = money_legs(event)?;
        let mut touched: Vec<Currency> = legs.iter().map(|(account, _)| account.currency()).collect();
        touched.sort_unstable();
        touched.dedup();
        for currency in touched {
            totals.entry(currency).or_insert_with(|| SystemTotal::zero(currency)).transactions += 1;
        }
        for (account, amount) in legs {
            let total = totals.entry(account.currency()).or_insert_with(|| SystemTotal::zero(account.currency()));
            let overflow = || StoreError::Corrupt(format!("system totals overflow at event {}", event.sequence));
            let field = match account {
                // Held money is still its payer's.
                AccountKey::User { .. } | AccountKey::Pending { .. } => &mut total.user_balances_minor,
                AccountKey::Fx { .. } => &mut total.fx_minor,
                // The world account pays what enters the bank and receives what leaves it.
                AccountKey::World { .. } if amount < 0 => &mut total.money_in_minor,
                AccountKey::World { .. } => &mut total.money_out_minor,
            };
            let change = if matches!(account, AccountKey::World { .. }) { amount.abs() } else { amount };
            *field = field.checked_add(change).ok_or_else(overflow)?;
        }
    }
    Ok(totals.into_values().collect())
}

/// Groups a user's stored days in a range and their balances before it into one entry per wallet, by currency.
pub(crate) fn group_statements(
    days: Vec<(Currency, DayStatement)>,
    before: Vec<(Currency, i64)>,
) -> Vec<WalletStatements> {
    let mut wallets: BTreeMap<Currency, WalletStatements> = BTreeMap::new();
    let empty = |currency| WalletStatements { currency, balance_before: None, days: Vec::new() };
    for (currency, balance) in before {
        wallets.entry(currency).or_insert_with(|| empty(currency)).balance_before = Some(balance);
    }
    for (currency, day) in days {
        wallets.entry(currency).or_insert_with(|| empty(currency)).days.push(day);
    }
    for w in wallets.values_mut() {
        w.days.sort_by_key(|d| d.date);
    }
    wallets.into_values().collect()
}

/// A stored statement day, from a row of either backend.
pub(crate) fn day_from_row<R: sqlx::Row>(row: &R) -> Result<DayStatement, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    NaiveDate: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DayStatement {
        date: row.try_get("day")?,
        opening_minor: row.try_get("opening_minor")?,
        credits_minor: row.try_get("credits_minor")?,
        debits_minor: row.try_get("debits_minor")?,
        closing_minor: row.try_get("closing_minor")?,
    })
}

/// A currency's stored totals, from a row of either backend.
pub(crate) fn total_from_row<R: sqlx::Row>(row: &R) -> Result<SystemTotal, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SystemTotal {
        currency: crate::ledger::parse_currency(&row.try_get::<String, _>("currency")?)?,
        user_balances_minor: row.try_get("user_balances_minor")?,
        fx_minor: row.try_get("fx_minor")?,
        money_in_minor: row.try_get("money_in_minor")?,
        money_out_minor: row.try_get("money_out_minor")?,
        transactions: row.try_get("transactions")?,
    })
}

/// The legs of a money event (account, signed amount); none for any other event.
fn money_legs(event: &EventRecord) -> Result<Vec<(AccountKey, i64)>, StoreError> {
    if event.aggregate_type != "transaction" {
        return Ok(Vec::new());
    }
    let unreadable =
        |what: &str| StoreError::Corrupt(format!("event {} ({}): {what}", event.sequence, event.event_type));
    let legs = event.data["legs"].as_array().ok_or_else(|| unreadable("no legs"))?;
    legs.iter()
        .map(|leg| {
            let account = serde_json::from_value::<AccountKey>(leg["account"].clone())
                .map_err(|_| unreadable("a leg without a readable account"))?;
            let amount = leg["amount_minor"].as_i64().ok_or_else(|| unreadable("a leg without an amount"))?;
            Ok((account, amount))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    fn event(sequence: i64, day: u32, legs: serde_json::Value) -> EventRecord {
        EventRecord {
            sequence,
            aggregate_type: "transaction".into(),
            aggregate_id: Uuid::new_v4(),
            version: 1,
            event_type: "MoneyTransferred".into(),
            data: json!({ "legs": legs }),
            created_at: NaiveDate::from_ymd_opt(2026, 5, day)
                .expect("day")
                .and_hms_opt(23, 59, 59)
                .expect("time")
                .and_utc(),
        }
    }

    fn user_leg(user: Uuid, amount: i64) -> serde_json::Value {
        json!({"account": {"kind": "user", "user_id": user, "currency": "USD"}, "amount_minor": amount})
    }

    fn world_leg(amount: i64) -> serde_json::Value {
        json!({"account": {"kind": "world", "currency": "USD"}, "amount_minor": amount})
    }

    #[test]
    fn only_events_after_the_checkpoint_are_new() {
        let events: Vec<EventRecord> = (1..=5).map(|s| event(s, 1, json!([]))).collect();
        let new = events_after(&events, 3).expect("in order");
        assert_eq!(new.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![4, 5]);
        assert!(events_after(&events, 9).expect("in order").is_empty());
    }

    #[test]
    fn a_delivery_out_of_log_order_is_refused() {
        let events = [event(2, 1, json!([])), event(1, 1, json!([]))];
        assert!(matches!(events_after(&events, 0), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn wallet_movements_are_dated_by_their_event() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            event(1, 1, json!([world_leg(-500), user_leg(alice, 500)])),
            event(2, 2, json!([user_leg(alice, -200), user_leg(bob, 200)])),
        ];
        let moves = wallet_movements(&events).expect("readable");
        let day = |d| NaiveDate::from_ymd_opt(2026, 5, d).expect("day");
        assert_eq!(moves[&(alice, usd())], vec![(day(1), 500), (day(2), -200)]);
        assert_eq!(moves[&(bob, usd())], vec![(day(2), 200)]);
    }

    #[test]
    fn back_dated_movements_are_dated_by_when_they_take_effect() {
        let alice = Uuid::new_v4();
        let mut late = event(3, 9, json!([world_leg(-70), user_leg(alice, 70)]));
        late.data["effective_at"] = json!("2026-05-02T10:00:00Z");
        let events = [event(1, 4, json!([world_leg(-500), user_leg(alice, 500)])), late];
        let moves = wallet_movements(&events).expect("readable");
        let day = |d| NaiveDate::from_ymd_opt(2026, 5, d).expect("day");
        assert_eq!(moves[&(alice, usd())], vec![(day(4), 500), (day(2), 70)]);
        assert_eq!(earliest_days(&moves), vec![((alice, usd()), day(2))]);
        let mut garbled = event(4, 9, json!([]));
        garbled.data["effective_at"] = json!("yesterday");
        assert!(matches!(wallet_movements(&[garbled]), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn totals_follow_money_in_out_and_between_users() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            event(1, 1, json!([world_leg(-500), user_leg(alice, 500)])),
            event(2, 1, json!([user_leg(alice, -200), user_leg(bob, 200)])),
            event(3, 1, json!([user_leg(bob, -50), world_leg(50)])),
        ];
        let totals = total_changes(&events).expect("readable");
        assert_eq!(
            totals,
            vec![SystemTotal {
                currency: usd(),
                user_balances_minor: 450,
                fx_minor: 0,
                money_in_minor: 500,
                money_out_minor: 50,
                transactions: 3,
            }]
        );
        assert!(totals[0].is_balanced());
    }

    #[test]
    fn events_other_than_money_change_nothing() {
        let mut registered = event(1, 1, json!({}));
        registered.aggregate_type = "user".into();
        assert!(total_changes(&[registered.clone()]).expect("readable").is_empty());
        assert!(wallet_movements(&[registered]).expect("readable").is_empty());
    }

    #[test]
    fn an_unreadable_money_event_is_reported() {
        let broken = event(7, 1, json!([{"account": "nowhere", "amount_minor": 1}]));
        assert!(matches!(total_changes(&[broken]), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn totals_that_overflow_are_not_balanced() {
        let overflowing = SystemTotal { user_balances_minor: i64::MAX, fx_minor: 1, ..SystemTotal::zero(usd()) };
        let also = SystemTotal { money_in_minor: i64::MIN, money_out_minor: 1, ..overflowing };
        assert!(!also.is_balanced());
    }
}
