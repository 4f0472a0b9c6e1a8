//! The traffic of each scenario as a sequence of planned operations drawn from a seeded random generator: the
//! same seed and connection index give the same plans, whatever the server answers.
//!
//! Planning is pure: it only draws from the generator. Carrying the plans out is the job of [`super::drive`].

use banksim_core::currency::Currency;
use rand::Rng;
use rand::rngs::StdRng;

use super::amount;
use super::args::Scenario;

/// What a request does, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /transactions/credit`.
    Credit,
    /// `POST /transactions/debit`.
    Debit,
    /// `POST /transactions/transfer`.
    Transfer,
    /// `POST /transactions/{id}/rollback`.
    Rollback,
    /// `GET /balances/current`.
    Balance,
    /// `GET /transactions/history?limit=20`.
    History,
    /// `POST /transactions/batch`.
    Batch,
    /// `POST /transactions/transfer` with `pending: true`.
    Hold,
    /// `POST /transactions/{id}/post`.
    Post,
    /// `POST /auth/login`.
    Login,
}

impl Operation {
    /// Every operation, in the order of their discriminants (stats index arrays with them).
    pub const ALL: [Operation; 10] = [
        Self::Credit,
        Self::Debit,
        Self::Transfer,
        Self::Rollback,
        Self::Balance,
        Self::History,
        Self::Batch,
        Self::Hold,
        Self::Post,
        Self::Login,
    ];

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credit => "credit",
            Self::Debit => "debit",
            Self::Transfer => "transfer",
            Self::Rollback => "rollback",
            Self::Balance => "balance",
            Self::History => "history",
            Self::Batch => "batch",
            Self::Hold => "hold",
            Self::Post => "post",
            Self::Login => "login",
        }
    }
}

/// One planned request. Users are indexes into the simulated users; amounts are minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `user` credits `amount` to their own wallet.
    Credit {
        /// The caller.
        user: u32,
        /// Minor units.
        amount: i64,
    },
    /// `user` debits `amount` from their own wallet.
    Debit {
        /// The caller.
        user: u32,
        /// Minor units.
        amount: i64,
    },
    /// `from` sends `amount` to `to` (never the same user).
    Transfer {
        /// The payer and caller.
        from: u32,
        /// The payee.
        to: u32,
        /// Minor units.
        amount: i64,
    },
    /// Roll back one of the connection's recent debits or transfers, as its payer: the one at `pick` modulo the
    /// number kept.
    Rollback {
        /// Which recent movement, modulo how many are kept.
        pick: u32,
    },
    /// `user` reads their current balance.
    Balance {
        /// The caller.
        user: u32,
    },
    /// `user` reads the last 20 entries of their history.
    History {
        /// The caller.
        user: u32,
    },
    /// `user` logs in with their password.
    Login {
        /// Who logs in.
        user: u32,
    },
    /// `from` holds `amount` for `to`, then posts the hold.
    HoldPost {
        /// The payer and caller.
        from: u32,
        /// The payee.
        to: u32,
        /// Minor units.
        amount: i64,
    },
    /// `from` sends an atomic batch of transfers, drawn by [`Planner::batch_items`] from `seed`.
    Batch {
        /// The payer and caller.
        from: u32,
        /// Seeds the batch's items.
        seed: u64,
    },
}

/// Weights of the mixed scenario, in percent: transfers, credits, debits, balance reads, history reads,
/// rollbacks. Writes dominate, as a ledger benchmark should; reads keep the cache and indexes honest.
pub const MIXED_WEIGHTS: [(Operation, u32); 6] = [
    (Operation::Transfer, 40),
    (Operation::Credit, 10),
    (Operation::Debit, 10),
    (Operation::Balance, 15),
    (Operation::History, 15),
    (Operation::Rollback, 10),
];

/// Draws the traffic of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Planner {
    scenario: Scenario,
    users: u32,
    currency: Currency,
    batch_size: u32,
}

impl Planner {
    /// A planner for `users` users (at least 2) moving `currency`, with batches of `batch_size` transfers.
    pub fn new(scenario: Scenario, users: u32, currency: Currency, batch_size: u32) -> Self {
        assert!(users >= 2, "a simulation needs at least two users");
        Self { scenario, users, currency, batch_size }
    }

    /// The items of a batch planned as `Plan::Batch { from, seed }`: (payee, amount) pairs, never paying `from`.
    pub fn batch_items(&self, from: u32, seed: u64) -> Vec<(u32, i64)> {
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(seed);
        (0..self.batch_size).map(|_| (self.other_than(from, &mut rng), self.small_amount(&mut rng))).collect()
    }

    /// The next request. `can_roll_back` says whether the connection has a recent movement to roll back: a
    /// rollback drawn without one becomes a balance read.
    pub fn next(&self, rng: &mut StdRng, can_roll_back: bool) -> Plan {
        match self.scenario {
            Scenario::Transfer => self.transfer(rng),
            Scenario::Hot => {
                Plan::Transfer { from: rng.gen_range(1..self.users), to: 0, amount: self.small_amount(rng) }
            }
            Scenario::Balance => Plan::Balance { user: self.user(rng) },
            Scenario::History => Plan::History { user: self.user(rng) },
            Scenario::Login => Plan::Login { user: self.user(rng) },
            Scenario::Batch => Plan::Batch { from: self.user(rng), seed: rng.r#gen() },
            Scenario::TwoPhase => match self.transfer(rng) {
                Plan::Transfer { from, to, amount } => Plan::HoldPost { from, to, amount },
                other => other,
            },
            Scenario::Mixed => {
                let mut roll = rng.gen_range(0..100);
                let operation = MIXED_WEIGHTS
                    .iter()
                    .find(|(_, weight)| {
                        let hit = roll < *weight;
                        roll = roll.saturating_sub(*weight);
                        hit
                    })
                    .map_or(Operation::Transfer, |(operation, _)| *operation);
                match operation {
                    Operation::Transfer => self.transfer(rng),
                    Operation::Credit => Plan::Credit { user: self.user(rng), amount: self.medium_amount(rng) },
                    Operation::Debit => Plan::Debit { user: self.user(rng), amount: self.medium_amount(rng) },
                    Operation::Rollback if can_roll_back => Plan::Rollback { pick: rng.r#gen() },
                    // The mixed weights draw none of the others.
                    Operation::Balance
                    | Operation::Rollback
                    | Operation::Batch
                    | Operation::Hold
                    | Operation::Post
                    | Operation::Login => Plan::Balance { user: self.user(rng) },
                    Operation::History => Plan::History { user: self.user(rng) },
                }
            }
        }
    }

    fn transfer(&self, rng: &mut StdRng) -> Plan {
        let from = self.user(rng);
        let to = self.other_than(from, rng);
        Plan::Transfer { from, to, amount: self.small_amount(rng) }
    }

    /// A user other than `user`: drawn among the others only, so the pair is always distinct without retrying.
    fn other_than(&self, user: u32, rng: &mut StdRng) -> u32 {
        let other = rng.gen_range(0..self.users - 1);
        if other >= user { other + 1 } else { other }
    }

    fn user(&self, rng: &mut StdRng) -> u32 {
        rng.gen_range(0..self.users)
    }

    fn small_amount(&self, rng: &mut StdRng) -> i64 {
        rng.gen_range(amount::small_range(self.currency))
    }

    fn medium_amount(&self, rng: &mut StdRng) -> i64 {
        rng.gen_range(amount::medium_range(self.currency))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn operation(plan: &Plan) -> Operation {
        match plan {
            Plan::Credit { .. } => Operation::Credit,
            Plan::Debit { .. } => Operation::Debit,
            Plan::Transfer { .. } => Operation::Transfer,
            Plan::Rollback { .. } => Operation::Rollback,
            Plan::Balance { .. } => Operation::Balance,
            Plan::History { .. } => Operation::History,
            Plan::Login { .. } => Operation::Login,
            Plan::Batch { .. } => Operation::Batch,
            Plan::HoldPost { .. } => Operation::Hold,
        }
    }

    fn plans(scenario: Scenario, seed: u64, count: usize) -> Vec<Plan> {
        let planner = Planner::new(scenario, 10, Currency::USD, 5);
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count).map(|_| planner.next(&mut rng, true)).collect()
    }

    #[test]
    fn the_same_seed_plans_the_same_traffic() {
        for scenario in [
            Scenario::Transfer,
            Scenario::Hot,
            Scenario::Mixed,
            Scenario::Balance,
            Scenario::History,
            Scenario::Batch,
            Scenario::TwoPhase,
            Scenario::Login,
        ] {
            assert_eq!(plans(scenario, 42, 500), plans(scenario, 42, 500), "{scenario:?}");
            assert_ne!(plans(scenario, 42, 500), plans(scenario, 43, 500), "{scenario:?}");
        }
    }

    #[test]
    fn transfers_join_distinct_users_with_small_amounts() {
        let seen: std::collections::HashSet<(u32, u32)> = plans(Scenario::Transfer, 7, 5_000)
            .into_iter()
            .map(|plan| match plan {
                Plan::Transfer { from, to, amount } => {
                    assert!(from != to && from < 10 && to < 10, "{plan:?}");
                    assert!((1..=100).contains(&amount), "{plan:?}");
                    (from, to)
                }
                other => panic!("the transfer scenario planned {other:?}"),
            })
            .collect();
        assert_eq!(seen.len(), 90, "every ordered pair of distinct users comes up");
    }

    #[test]
    fn the_hot_scenario_pays_user_zero_from_everyone_else() {
        let payers: std::collections::HashSet<u32> = plans(Scenario::Hot, 7, 2_000)
            .into_iter()
            .map(|plan| match plan {
                Plan::Transfer { from, to: 0, .. } if from != 0 => from,
                other => panic!("the hot scenario planned {other:?}"),
            })
            .collect();
        assert_eq!(payers.len(), 9);
    }

    #[test]
    fn the_mixed_scenario_follows_its_weights() {
        let count = 20_000;
        let mut by_operation = std::collections::HashMap::new();
        for plan in plans(Scenario::Mixed, 7, count) {
            *by_operation.entry(operation(&plan)).or_insert(0_usize) += 1;
        }
        for (operation, weight) in MIXED_WEIGHTS {
            let share = by_operation[&operation] * 100 / count;
            assert!(share.abs_diff(weight as usize) <= 2, "{operation:?}: {share} % for a weight of {weight}");
        }
        assert_eq!(MIXED_WEIGHTS.iter().map(|(_, weight)| weight).sum::<u32>(), 100);
    }

    #[test]
    fn batches_pay_others_than_their_payer_the_same_way_for_the_same_seed() {
        let planner = Planner::new(Scenario::Batch, 10, Currency::USD, 200);
        for plan in plans(Scenario::Batch, 9, 50) {
            let Plan::Batch { from, seed } = plan else { panic!("the batch scenario planned {plan:?}") };
            let items = planner.batch_items(from, seed);
            assert_eq!(items.len(), 200);
            assert_eq!(items, planner.batch_items(from, seed));
            assert!(items.iter().all(|&(to, amount)| to != from && to < 10 && (1..=100).contains(&amount)));
        }
    }

    #[test]
    fn the_read_scenarios_only_read() {
        assert!(plans(Scenario::Balance, 3, 1_000).iter().all(|p| operation(p) == Operation::Balance));
        assert!(plans(Scenario::History, 3, 1_000).iter().all(|p| operation(p) == Operation::History));
        assert!(plans(Scenario::Login, 3, 1_000).iter().all(|p| operation(p) == Operation::Login));
    }

    #[test]
    fn without_anything_to_roll_back_a_rollback_becomes_a_balance_read() {
        let planner = Planner::new(Scenario::Mixed, 10, Currency::USD, 5);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..2_000).all(|_| operation(&planner.next(&mut rng, false)) != Operation::Rollback));
    }

    #[test]
    fn operations_are_indexed_by_their_discriminant() {
        for (index, operation) in Operation::ALL.iter().enumerate() {
            assert_eq!(*operation as usize, index);
        }
    }
}
