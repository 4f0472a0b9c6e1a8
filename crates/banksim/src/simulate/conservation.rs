//! The conservation check: the money the simulated users hold together may change only by what entered or left
//! the system through movements the generator saw succeed.
//!
//! Credits bring money in from the outside world and debits send it out; transfers only move it between users.
//! Rollbacks apply the inverse movement: a rolled-back transfer moves money back between users (no change to the
//! sum), while a rolled-back debit brings the debited money back in from the outside (the sum grows by it).
//! The check compares the users' balances after the run with their balances before the funding credits plus that
//! net inflow, so it holds for reused users that already held money.

use banksim_core::currency::Currency;

use super::amount;

/// The money that entered or left the simulated users' wallets, as the generator saw it, in minor units.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Funding credits made during setup.
    pub funded: i128,
    /// Credits made during the run.
    pub credited: i128,
    /// Debits made during the run.
    pub debited: i128,
    /// Debits of this run that were rolled back: that money came back.
    pub debits_rolled_back: i128,
    /// Money requests whose outcome is unknown (every attempt failed in transport): the check cannot be exact.
    pub uncertain: u64,
}

impl Tally {
    /// Adds another connection's tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.funded += other.funded;
        self.credited += other.credited;
        self.debited += other.debited;
        self.debits_rolled_back += other.debits_rolled_back;
        self.uncertain += other.uncertain;
    }

    /// How much the sum of the users' balances must have grown (negative: shrunk).
    pub fn net_inflow(&self) -> i128 {
        self.funded + self.credited - self.debited + self.debits_rolled_back
    }
}

/// The outcome of the check, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conservation {
    /// Sum of the users' balances before funding.
    pub before: i128,
    /// Sum of the users' balances after the run.
    pub after: i128,
    /// What `after` must be: `before` plus the tally's net inflow.
    pub expected: i128,
    /// Money requests with an unknown outcome (see [`Tally::uncertain`]).
    pub uncertain: u64,
}

impl Conservation {
    /// Compares the balances after the run with those before and what moved in between.
    pub fn check(before: i128, after: i128, tally: &Tally) -> Self {
        Self { before, after, expected: before + tally.net_inflow(), uncertain: tally.uncertain }
    }

    /// Money found minus money expected: positive if money appeared, negative if it vanished.
    pub fn difference(&self) -> i128 {
        self.after - self.expected
    }

    /// Whether every minor unit is accounted for.
    pub fn is_ok(&self) -> bool {
        self.difference() == 0
    }

    /// One line for the text report: `ok (…)` or what is missing or extra.
    pub fn describe(&self, currency: Currency) -> String {
        let sum = |value: i128| amount::format_sum(value, currency);
        let unknown = if self.uncertain > 0 {
            format!("; {} money requests had an unknown outcome", self.uncertain)
        } else {
            String::new()
        };
        if self.is_ok() {
            format!(
                "ok (sum {} {currency} = {} before + {} moved in{unknown})",
                sum(self.after),
                sum(self.before),
                sum(self.expected - self.before)
            )
        } else {
            format!(
                "FAILED: the users hold {} {currency}, expected {} (difference {}{unknown})",
                sum(self.after),
                sum(self.expected),
                sum(self.difference())
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_do_not_change_the_sum_and_credits_and_debits_do() {
        let tally = Tally { funded: 100_000, credited: 2_500, debited: 1_000, ..Tally::default() };
        assert_eq!(tally.net_inflow(), 101_500);
        let check = Conservation::check(7_000, 108_500, &tally);
        assert!(check.is_ok());
        assert_eq!(check.expected, 108_500);
        assert_eq!(check.describe(Currency::USD), "ok (sum 1085.00 USD = 70.00 before + 1015.00 moved in)");
    }

    #[test]
    fn a_rolled_back_debit_brings_its_money_back() {
        let tally = Tally { funded: 10_000, debited: 300, debits_rolled_back: 300, ..Tally::default() };
        assert!(Conservation::check(0, 10_000, &tally).is_ok());
        assert!(!Conservation::check(0, 9_700, &tally).is_ok());
    }

    #[test]
    fn a_difference_is_reported_with_its_sign() {
        let tally = Tally { funded: 10_000, uncertain: 2, ..Tally::default() };
        let check = Conservation::check(0, 9_999, &tally);
        assert_eq!(check.difference(), -1);
        assert_eq!(
            check.describe(Currency::USD),
            "FAILED: the users hold 99.99 USD, expected 100.00 (difference -0.01; 2 money requests had an unknown \
             outcome)"
        );
    }

    #[test]
    fn tallies_of_connections_add_up() {
        let mut total = Tally { funded: 1, credited: 2, debited: 3, debits_rolled_back: 4, uncertain: 5 };
        total.merge(&Tally { funded: 10, credited: 20, debited: 30, debits_rolled_back: 40, uncertain: 50 });
        assert_eq!(total, Tally { funded: 11, credited: 22, debited: 33, debits_rolled_back: 44, uncertain: 55 });
    }
}
