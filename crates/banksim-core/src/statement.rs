//! Daily statements: per wallet and day, the opening balance, the credits, the debits and the closing balance.
//!
//! A projection keeps one stored day per wallet and day with a movement ([`add_movements`]); a reader fills in the
//! quiet days between them ([`every_day`]), so that the stored rows stay few and every day still has a statement.
//! Days are UTC calendar days. Amounts are minor units.

use chrono::NaiveDate;

/// One wallet's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayStatement {
    /// The UTC day.
    pub date: NaiveDate,
    /// Balance at the start of the day.
    pub opening_minor: i64,
    /// Money in during the day (positive).
    pub credits_minor: i64,
    /// Money out during the day (positive).
    pub debits_minor: i64,
    /// Balance at the end of the day: `opening + credits − debits`.
    pub closing_minor: i64,
}

/// Why movements cannot be added to a wallet's statements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// A movement is dated before the wallet's last statement day (a wallet's postings never go back in time, so
    /// this means the events arrived out of order).
    #[error("a movement on {movement} precedes the wallet's latest statement day, {latest}")]
    OutOfOrder {
        /// The movement's day.
        movement: NaiveDate,
        /// The wallet's last statement day.
        latest: NaiveDate,
    },
    /// A total no longer fits in 64 bits.
    #[error("statement totals overflow")]
    Overflow,
}

impl DayStatement {
    /// A day with no movement that opens (and closes) at `balance`.
    pub fn quiet(date: NaiveDate, balance_minor: i64) -> Self {
        Self { date, opening_minor: balance_minor, credits_minor: 0, debits_minor: 0, closing_minor: balance_minor }
    }

    /// Adds one signed movement: positive is a credit, negative a debit.
    pub fn record(&mut self, amount_minor: i64) -> Result<(), StatementError> {
        let total = if amount_minor >= 0 { &mut self.credits_minor } else { &mut self.debits_minor };
        *total = total
            .checked_add(amount_minor.checked_abs().ok_or(StatementError::Overflow)?)
            .ok_or(StatementError::Overflow)?;
        self.closing_minor = self.closing_minor.checked_add(amount_minor).ok_or(StatementError::Overflow)?;
        Ok(())
    }
}

/// Adds a wallet's movements `(day, signed amount)`, in log order, to its statements: `latest` is its last stored
/// day, if any. Returns every day that changed or opened, oldest first (`latest` first if it changed). A new day
/// opens at the previous day's closing balance.
pub fn add_movements(
    latest: Option<DayStatement>,
    movements: impl IntoIterator<Item = (NaiveDate, i64)>,
) -> Result<Vec<DayStatement>, StatementError> {
    let mut days: Vec<DayStatement> = Vec::new();
    let mut current = latest;
    let mut current_changed = false;
    for (date, amount_minor) in movements {
        match current {
            Some(day) if date < day.date => {
                return Err(StatementError::OutOfOrder { movement: date, latest: day.date });
            }
            Some(day) if date == day.date => {}
            Some(day) => {
                if current_changed {
                    days.push(day);
                }
                current = Some(DayStatement::quiet(date, day.closing_minor));
            }
            None => current = Some(DayStatement::quiet(date, 0)),
        }
        if let Some(day) = current.as_mut() {
            day.record(amount_minor)?;
            current_changed = true;
        }
    }
    if let (Some(day), true) = (current, current_changed) {
        days.push(day);
    }
    Ok(days)
}

/// A wallet's statement for every day from `from` to `to` (inclusive), given its stored days in that range (oldest
/// first) and its closing balance before `from` (`None` when the wallet had no movement yet). Days between stored
/// days are quiet: they open and close at the previous closing balance. Days before the wallet's first movement
/// are left out.
pub fn every_day(
    balance_before: Option<i64>,
    stored: &[DayStatement],
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<DayStatement> {
    let mut balance = balance_before;
    let mut stored = stored.iter().filter(|d| d.date >= from && d.date <= to).peekable();
    let mut days = Vec::new();
    for date in from.iter_days().take_while(|d| *d <= to) {
        match stored.next_if(|d| d.date == date) {
            Some(day) => {
                balance = Some(day.closing_minor);
                days.push(*day);
            }
            None => days.extend(balance.map(|b| DayStatement::quiet(date, b))),
        }
    }
    days
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).expect("valid day")
    }

    fn stored(d: u32, opening: i64, credits: i64, debits: i64) -> DayStatement {
        DayStatement {
            date: day(d),
            opening_minor: opening,
            credits_minor: credits,
            debits_minor: debits,
            closing_minor: opening + credits - debits,
        }
    }

    #[test]
    fn a_new_wallet_opens_at_zero_and_sums_its_first_day() {
        let days = add_movements(None, [(day(1), 500), (day(1), -200), (day(1), 50)]).expect("add");
        assert_eq!(days, vec![stored(1, 0, 550, 200)]);
    }

    #[test]
    fn the_next_day_opens_at_the_previous_closing() {
        let days = add_movements(Some(stored(1, 0, 500, 0)), [(day(3), -100), (day(4), 20)]).expect("add");
        assert_eq!(days, vec![stored(3, 500, 0, 100), stored(4, 400, 20, 0)]);
    }

    #[test]
    fn movements_on_the_latest_day_update_it() {
        let days = add_movements(Some(stored(2, 100, 10, 0)), [(day(2), -30)]).expect("add");
        assert_eq!(days, vec![stored(2, 100, 10, 30)]);
    }

    #[test]
    fn an_unchanged_latest_day_is_not_returned() {
        assert_eq!(add_movements(Some(stored(2, 100, 10, 0)), []).expect("add"), vec![]);
    }

    #[test]
    fn a_movement_before_the_latest_day_is_out_of_order() {
        let err = add_movements(Some(stored(5, 0, 1, 0)), [(day(4), 1)]).expect_err("out of order");
        assert_eq!(err, StatementError::OutOfOrder { movement: day(4), latest: day(5) });
    }

    #[test]
    fn totals_that_overflow_are_refused() {
        let full = DayStatement { closing_minor: i64::MAX, ..stored(1, 0, 0, 0) };
        assert_eq!(add_movements(Some(full), [(day(1), 1)]), Err(StatementError::Overflow));
    }

    #[test]
    fn quiet_days_repeat_the_previous_closing() {
        let days = every_day(Some(70), &[stored(3, 70, 30, 0), stored(5, 100, 0, 60)], day(2), day(6));
        assert_eq!(
            days,
            vec![
                DayStatement::quiet(day(2), 70),
                stored(3, 70, 30, 0),
                DayStatement::quiet(day(4), 100),
                stored(5, 100, 0, 60),
                DayStatement::quiet(day(6), 40),
            ]
        );
    }

    #[test]
    fn days_before_the_first_movement_are_left_out() {
        let days = every_day(None, &[stored(3, 0, 30, 0)], day(1), day(4));
        assert_eq!(days, vec![stored(3, 0, 30, 0), DayStatement::quiet(day(4), 30)]);
    }

    #[test]
    fn a_wallet_without_movements_has_no_statements() {
        assert!(every_day(None, &[], day(1), day(9)).is_empty());
    }

    proptest! {
        /// However the movements are split into deliveries, the days come out the same, each closing where the
        /// next opens.
        #[test]
        fn splitting_the_movements_changes_nothing(
            moves in proptest::collection::vec((0u32..5, -1_000i64..1_000), 1..40),
            split in 0usize..40,
        ) {
            let mut sorted = moves.clone();
            sorted.sort_by_key(|(d, _)| *d);
            let movements: Vec<(NaiveDate, i64)> = sorted.iter().map(|(d, a)| (day(d + 1), *a)).collect();
            let whole = add_movements(None, movements.clone()).expect("whole");
            let split = split.min(movements.len());
            let first = add_movements(None, movements[..split].to_vec()).expect("first part");
            let second = add_movements(first.last().copied(), movements[split..].to_vec()).expect("second part");
            let mut merged: Vec<DayStatement> = first.into_iter().filter(|d| second.iter().all(|s| s.date != d.date)).collect();
            merged.extend(second);
            prop_assert_eq!(&merged, &whole);
            for pair in whole.windows(2) {
                prop_assert_eq!(pair[0].closing_minor, pair[1].opening_minor);
            }
            let total: i64 = movements.iter().map(|(_, a)| a).sum();
            prop_assert_eq!(whole.last().map(|d| d.closing_minor), Some(total));
        }
    }
}
