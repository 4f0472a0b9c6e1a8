//! Effective time: a movement may take effect earlier than it is recorded (a correction, a late bank file). A
//! wallet's balance at an instant is then the sum of its postings *effective* at or before that instant, and a
//! back-dated movement is admitted only if every balance of the wallet from its effective instant on stays within
//! the wallet's limits once it is added.
//!
//! Postings are recorded in order and never move; what back-dating changes is which instant each one counts at. A
//! posting is never effective after it is recorded, so the balance in effect at `t` is the balance after the last
//! posting recorded at or before `t`, plus the back-dated postings recorded after `t` that are effective at or
//! before it ([`EffectiveHistory::from_postings`] builds exactly that).

use chrono::{DateTime, Utc};

use crate::ledger::{LedgerError, Limits};

/// One wallet's balances over effective time from an instant on, as the store loaded them for a back-dated
/// movement: the balance in effect at that instant, and every later change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveHistory {
    since: DateTime<Utc>,
    /// The balance in effect at `since`.
    opening_minor: i64,
    /// Changes effective after `since`, ordered by effective instant (ties in the order they were posted).
    changes: Vec<(DateTime<Utc>, i64)>,
}

impl EffectiveHistory {
    /// The history from `since` on of a wallet whose balance after its last posting recorded at or before `since`
    /// was `recorded_minor`, given every posting recorded after `since` (effective instant, signed amount), in
    /// posting order. Those effective at or before `since` (back-dated across it) count into the opening balance.
    pub fn from_postings(
        since: DateTime<Utc>,
        recorded_minor: i64,
        later: impl IntoIterator<Item = (DateTime<Utc>, i64)>,
    ) -> Self {
        let mut history = Self { since, opening_minor: recorded_minor, changes: Vec::new() };
        for (at, amount_minor) in later {
            history.record(at, amount_minor);
        }
        history
    }

    /// The earliest instant this history can check a movement at.
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// Adds a posting effective at `at`.
    pub fn record(&mut self, at: DateTime<Utc>, amount_minor: i64) {
        if at <= self.since {
            self.opening_minor = self.opening_minor.saturating_add(amount_minor);
            return;
        }
        let place = self.changes.partition_point(|(when, _)| *when <= at);
        self.changes.insert(place, (at, amount_minor));
    }

    /// The balance in effect at `at` (at or after [`Self::since`]).
    pub fn balance_at(&self, at: DateTime<Utc>) -> i64 {
        let (balance, _, _) = self.extremes_from(at);
        balance
    }

    /// Admits `amount_minor` taking effect at `at` only if every balance from `at` on stays within `limits` with it,
    /// in the direction it moves the wallet (as for any movement: money out against the floor, money in against
    /// the ceiling). The current balance is the ledger's own check; this one covers the past.
    ///
    /// # Panics
    /// When `at` is before [`Self::since`]: the store must load the history from the earliest instant it is asked
    /// about (a bug, not an operating error).
    pub fn admits(&self, at: DateTime<Utc>, amount_minor: i64, limits: Limits) -> Result<(), LedgerError> {
        assert!(at >= self.since, "history from {} asked about {at}", self.since);
        let (_, lowest, highest) = self.extremes_from(at);
        let amount = i128::from(amount_minor);
        let below_floor = amount < 0 && lowest + amount < i128::from(limits.floor_minor());
        let above_ceiling =
            amount > 0 && limits.max_balance_minor.is_some_and(|max| highest + amount > i128::from(max));
        if below_floor || above_ceiling {
            return Err(LedgerError::InvalidEffectiveAt);
        }
        Ok(())
    }

    /// The balance in effect at `at`, and the lowest and highest balance from `at` on.
    fn extremes_from(&self, at: DateTime<Utc>) -> (i64, i128, i128) {
        let first_later = self.changes.partition_point(|(when, _)| *when <= at);
        let (earlier, later) = self.changes.split_at(first_later);
        let at_at: i128 = i128::from(self.opening_minor) + earlier.iter().map(|(_, a)| i128::from(*a)).sum::<i128>();
        let (mut balance, mut lowest, mut highest) = (at_at, at_at, at_at);
        for (_, amount) in later {
            balance += i128::from(*amount);
            lowest = lowest.min(balance);
            highest = highest.max(balance);
        }
        (i64::try_from(at_at).unwrap_or(i64::MAX), lowest, highest)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::*;

    fn day(n: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000 + n)
    }

    const NO_LIMITS: Limits = Limits { overdraft_minor: None, max_balance_minor: None };

    #[test]
    fn postings_back_dated_across_the_start_count_into_the_opening_balance() {
        // Recorded after day 5: +100 on day 6, and a correction of −30 effective on day 2.
        let history = EffectiveHistory::from_postings(day(5), 500, [(day(6), 100), (day(2), -30)]);
        assert_eq!(history.balance_at(day(5)), 470);
        assert_eq!(history.balance_at(day(6)), 570);
    }

    #[test]
    fn a_back_dated_debit_may_not_take_any_later_balance_below_zero() {
        // 500 on day 0, 450 spent on day 3, 1,000 received on day 8.
        let history = EffectiveHistory::from_postings(day(0), 500, [(day(3), -450), (day(8), 1_000)]);
        assert_eq!(history.admits(day(1), -50, NO_LIMITS), Ok(()), "leaves 0 between day 3 and 8");
        assert_eq!(history.admits(day(1), -51, NO_LIMITS), Err(LedgerError::InvalidEffectiveAt));
        assert_eq!(history.admits(day(9), -1_000, NO_LIMITS), Ok(()), "after the low point");
        let overdraft = Limits { overdraft_minor: Some(10), max_balance_minor: None };
        assert_eq!(history.admits(day(1), -60, overdraft), Ok(()));
    }

    #[test]
    fn a_back_dated_credit_may_not_take_any_later_balance_above_the_ceiling() {
        let history = EffectiveHistory::from_postings(day(0), 500, [(day(3), 400), (day(8), -800)]);
        let ceiling = Limits { overdraft_minor: None, max_balance_minor: Some(1_000) };
        assert_eq!(history.admits(day(1), 100, ceiling), Ok(()));
        assert_eq!(history.admits(day(1), 101, ceiling), Err(LedgerError::InvalidEffectiveAt));
        assert_eq!(history.admits(day(9), 900, ceiling), Ok(()));
    }

    #[test]
    #[should_panic(expected = "asked about")]
    fn asking_before_the_loaded_start_is_a_bug() {
        let _ = EffectiveHistory::from_postings(day(5), 0, []).admits(day(4), 1, NO_LIMITS);
    }

    proptest! {
        /// Admitted back-dated movements, in any order, keep every balance in effective time within the limits.
        #[test]
        fn admitted_movements_keep_every_balance_within_the_limits(
            overdraft in proptest::option::of(0i64..300),
            moves in proptest::collection::vec((0i64..40, -400i64..400), 1..80),
        ) {
            let limits = Limits { overdraft_minor: overdraft, max_balance_minor: Some(2_000) };
            let mut history = EffectiveHistory::from_postings(day(0), 0, []);
            let mut admitted: Vec<(DateTime<Utc>, i64)> = Vec::new();
            for (offset, amount) in moves.into_iter().filter(|(_, amount)| *amount != 0) {
                let at = day(offset);
                if history.admits(at, amount, limits).is_ok() {
                    history.record(at, amount);
                    admitted.push((at, amount));
                }
            }
            // Recomputed from scratch: the balance at each instant is the sum of what is effective by then.
            for probe in 0..=40 {
                let balance: i64 = admitted.iter().filter(|(at, _)| *at <= day(probe)).map(|(_, a)| a).sum();
                prop_assert_eq!(history.balance_at(day(probe)), balance);
                prop_assert!(limits.admit(balance).is_ok(), "day {}: {}", probe, balance);
            }
        }
    }
}
