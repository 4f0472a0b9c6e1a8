//! Daily statements: per wallet and day, the opening balance, the credits, the debits and the closing balance.
//!
//! A projection keeps one stored day per wallet and day with a movement ([`add_movements`], which also revises the
//! days after a back-dated movement); a reader fills in the quiet days between them ([`every_day`]), so that the
//! stored rows stay few and every day still has a statement. Days are the UTC calendar days on which movements
//! take effect. Amounts are minor units.

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

/// Adds a wallet's movements `(day, signed amount)`, in log order, to its statements. A movement may be dated
/// before days already stored (a back-dated one): its day changes, and every later day opens and closes that much
/// higher or lower. `stored` is the wallet's stored days from the last one on or before the earliest movement's day
/// on, oldest first (empty for a wallet with none). Returns every day that changed or opened, oldest first; a new
/// day opens at the previous day's closing balance.
pub fn add_movements(
    stored: &[DayStatement],
    movements: impl IntoIterator<Item = (NaiveDate, i64)>,
) -> Result<Vec<DayStatement>, StatementError> {
    let mut movements: Vec<(NaiveDate, i64)> = movements.into_iter().collect();
    // Stable: a day's movements keep their log order (which only matters for overflow).
    movements.sort_by_key(|(date, _)| *date);
    let Some(&(first_moved, _)) = movements.first() else { return Ok(Vec::new()) };
    let mut balance = stored.first().filter(|day| day.date <= first_moved).map_or(0, |day| day.opening_minor);
    let mut stored = stored.iter().peekable();
    let mut moves = movements.into_iter().peekable();
    let mut days = Vec::new();
    loop {
        let next_stored = stored.peek().map(|day| day.date);
        let next_move = moves.peek().map(|(date, _)| *date);
        let date = match (next_stored, next_move) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        let before = stored.next_if(|day| day.date == date).copied();
        let mut day = before.unwrap_or_else(|| DayStatement::quiet(date, balance));
        day.opening_minor = balance;
        day.closing_minor = balance
            .checked_add(day.credits_minor)
            .and_then(|b| b.checked_sub(day.debits_minor))
            .ok_or(StatementError::Overflow)?;
        while let Some((_, amount_minor)) = moves.next_if(|(d, _)| *d == date) {
            day.record(amount_minor)?;
        }
        if before != Some(day) {
            days.push(day);
        }
        balance = day.closing_minor;
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
        let days = add_movements(&[], [(day(1), 500), (day(1), -200), (day(1), 50)]).expect("add");
        assert_eq!(days, vec![stored(1, 0, 550, 200)]);
    }

    #[test]
    fn the_next_day_opens_at_the_previous_closing() {
        let days = add_movements(&[stored(1, 0, 500, 0)], [(day(3), -100), (day(4), 20)]).expect("add");
        assert_eq!(days, vec![stored(3, 500, 0, 100), stored(4, 400, 20, 0)]);
    }

    #[test]
    fn movements_on_the_latest_day_update_it() {
        let days = add_movements(&[stored(2, 100, 10, 0)], [(day(2), -30)]).expect("add");
        assert_eq!(days, vec![stored(2, 100, 10, 30)]);
    }

    #[test]
    fn an_unchanged_latest_day_is_not_returned() {
        assert_eq!(add_movements(&[stored(2, 100, 10, 0)], []).expect("add"), vec![]);
    }

    #[test]
    fn a_back_dated_movement_revises_its_day_and_every_later_one() {
        let stored_days = [stored(2, 0, 100, 0), stored(5, 100, 0, 40), stored(7, 60, 10, 0)];
        // On a stored day: that day and the later ones move.
        let days = add_movements(&stored_days, [(day(5), -20)]).expect("add");
        assert_eq!(days, vec![stored(5, 100, 0, 60), stored(7, 40, 10, 0)]);
        // On a quiet day: it opens, and the later ones move.
        let days = add_movements(&stored_days, [(day(9), 1), (day(3), 25)]).expect("add");
        assert_eq!(days, vec![stored(3, 100, 25, 0), stored(5, 125, 0, 40), stored(7, 85, 10, 0), stored(9, 95, 1, 0)]);
        // Before the wallet's first day: it opens at zero.
        let days = add_movements(&stored_days, [(day(1), 5)]).expect("add");
        assert_eq!(days[0], stored(1, 0, 5, 0));
        assert_eq!(days.last(), Some(&stored(7, 65, 10, 0)));
    }

    #[test]
    fn totals_that_overflow_are_refused() {
        let full = DayStatement { opening_minor: i64::MAX, closing_minor: i64::MAX, ..stored(1, 0, 0, 0) };
        assert_eq!(add_movements(&[full], [(day(1), 1)]), Err(StatementError::Overflow));
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

    /// What a projection does with one delivery: hand over the days from the last one on or before the earliest
    /// movement's day on, and store what comes back.
    fn deliver(store: &mut std::collections::BTreeMap<NaiveDate, DayStatement>, delivery: &[(NaiveDate, i64)]) {
        let Some(earliest) = delivery.iter().map(|(d, _)| *d).min() else { return };
        let from = store.range(..=earliest).next_back().map_or(earliest, |(d, _)| *d);
        let tail: Vec<DayStatement> = store.range(from..).map(|(_, day)| *day).collect();
        for day in add_movements(&tail, delivery.iter().copied()).expect("add") {
            store.insert(day.date, day);
        }
    }

    proptest! {
        /// However the movements are ordered (back-dated ones among them) and split into deliveries, the stored
        /// days come out as if every movement had arrived in date order at once, each day closing where the next
        /// opens.
        #[test]
        fn order_and_splitting_change_nothing(
            moves in proptest::collection::vec((0u32..8, -1_000i64..1_000), 1..40),
            split in 0usize..40,
        ) {
            let movements: Vec<(NaiveDate, i64)> = moves.iter().map(|(d, a)| (day(d + 1), *a)).collect();
            let mut sorted = movements.clone();
            sorted.sort_by_key(|(d, _)| *d);
            let whole = add_movements(&[], sorted).expect("whole");
            let split = split.min(movements.len());
            let mut store = std::collections::BTreeMap::new();
            for delivery in [&movements[..split], &movements[split..]] {
                deliver(&mut store, delivery);
            }
            prop_assert_eq!(store.into_values().collect::<Vec<_>>(), whole.clone());
            for pair in whole.windows(2) {
                prop_assert_eq!(pair[0].closing_minor, pair[1].opening_minor);
            }
            let total: i64 = movements.iter().map(|(_, a)| a).sum();
            prop_assert_eq!(whole.last().map(|d| d.closing_minor), Some(total));
        }
    }
}
