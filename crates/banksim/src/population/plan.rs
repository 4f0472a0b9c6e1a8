//! The plan of a population: who its users are, which wallets they hold, and every movement of their history with
//! its instant. Plain computation from the seed, no I/O: the same [`Spec`] gives the same plan, value for value.
//!
//! One generator (`StdRng::seed_from_u64(seed)`) is drawn from in a fixed order — the users one by one, then each
//! day's draws user by user — so every id and amount follows from the seed alone. A day is planned in two passes:
//! first every user's wishes for the day are drawn (independent of balances), then they are walked in the order they
//! will be posted (by hour, then by user) against the balances the plan keeps, and a payment the wallet cannot
//! cover is dropped, as a declined card would be. So the ledger never has a reason to refuse a planned movement.

use banksim_core::currency::Currency;
use banksim_core::ledger::{Command, Movement};
use banksim_core::money::Money;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::amounts::{self, Rounding};

/// Most users a population may have: far beyond the benchmark (100,000), small enough for one process's memory.
pub const USERS_MAX: u32 = 10_000_000;

/// Longest history, in days (ten years).
pub const HISTORY_DAYS_MAX: u32 = 3_660;

/// Everything a population follows from: the same spec gives the same plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// How many users.
    pub users: u32,
    /// The generator's seed.
    pub seed: u64,
    /// The currencies of the wallets; the first is the most common main currency.
    pub currencies: Vec<Currency>,
    /// Whole days of history.
    pub history_days: u32,
    /// Where the timeline ends: the history covers the `history_days` whole UTC days before this instant's day.
    pub until: DateTime<Utc>,
}

/// Why a spec cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `--population` out of range.
    #[error("--population must be between 1 and {USERS_MAX}")]
    Users,
    /// `--history-days` out of range.
    #[error("--history-days must be between 1 and {HISTORY_DAYS_MAX}")]
    HistoryDays,
    /// No currency, or one twice.
    #[error("--currencies must name at least one currency, each once")]
    Currencies,
    /// A currency without a rate in the population's table.
    #[error("--currencies: {0} cannot be seeded (supported: {supported})", supported = amounts::supported().join(","))]
    Unsupported(&'static str),
    /// The history would start before year 1.
    #[error("--until is too early for {0} days of history")]
    TooEarly(u32),
}

impl Spec {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=USERS_MAX).contains(&self.users) {
            return Err(SpecError::Users);
        }
        if !(1..=HISTORY_DAYS_MAX).contains(&self.history_days) {
            return Err(SpecError::HistoryDays);
        }
        let mut codes: Vec<&str> = self.currencies.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        if codes.is_empty() || codes.len() != self.currencies.len() {
            return Err(SpecError::Currencies);
        }
        if let Some(currency) = self.currencies.iter().find(|c| !amounts::is_supported(**c)) {
            return Err(SpecError::Unsupported(currency.code()));
        }
        self.first_day().map(|_| ()).ok_or(SpecError::TooEarly(self.history_days))
    }

    /// The first day of the history (midnight UTC); the users are registered and their savings credited then.
    pub fn start(&self) -> DateTime<Utc> {
        self.first_day().map_or(self.until, |day| day.and_time(NaiveTime::MIN).and_utc())
    }

    fn first_day(&self) -> Option<NaiveDate> {
        self.until.date_naive().checked_sub_days(Days::new(u64::from(self.history_days)))
    }
}

/// A user of the population.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUser {
    /// Id, from the generator.
    pub id: Uuid,
    /// `[A-Za-z0-9_]`, unique by its number.
    pub username: String,
    /// Lower case, unique by its number, at the reserved domain `population.example`.
    pub email: String,
}

/// Movements that share one instant: they are posted together, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The instant of every movement (its transactions' `created_at`).
    pub at: DateTime<Utc>,
    /// The movements, each with its id from the generator.
    pub commands: Vec<Command>,
}

/// When a user's salary arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayDay {
    /// On this day of the month (at most 28, so every month has it).
    Day(u32),
    /// On the month's last day.
    LastDay,
}

impl PayDay {
    fn falls_on(self, date: NaiveDate) -> bool {
        match self {
            Self::Day(day) => date.day() == day,
            Self::LastDay => date.succ_opt().is_none_or(|next| next.month() != date.month()),
        }
    }
}

/// A user's habits, drawn once.
#[derive(Debug, Clone)]
struct Profile {
    /// Index into the spec's currencies of the main wallet.
    main: usize,
    /// The user's wallets: (currency index, balance in minor units, as the plan has posted so far).
    wallets: Vec<(usize, i64)>,
    /// Monthly salary in US cents, and its day; none for users without a salary.
    salary: Option<(i64, PayDay)>,
    /// Monthly rent (US cents), its day of the month and the landlord (a user index).
    rent: Option<(i64, u32, u32)>,
    /// Day of the month of the utilities bill.
    utilities_day: Option<u32>,
    /// Card payments per day, in tenths (10 = one a day on average).
    card_tenths_per_day: u32,
    /// Card payment sizes, in percent of the table's (big earners spend more).
    spending_percent: i64,
}

/// Share of users with a salary, in percent (the rest are students, retired, between jobs).
const SALARIED_PERCENT: u32 = 88;
/// Share of users who pay rent to a landlord of the population, in percent.
const TENANT_PERCENT: u32 = 65;
/// Share of users who are landlords, in per mille.
const LANDLORD_PER_MILLE: u32 = 30;
/// Share of users who pay a monthly utilities bill, in percent.
const UTILITIES_PERCENT: u32 = 80;
/// Chance that a user holds a wallet in each currency besides the main one, in percent.
const SECOND_WALLET_PERCENT: u32 = 20;
/// Chance that a user sends a friend money on a given day, in per mille.
const FRIEND_TRANSFER_PER_MILLE: u32 = 40;
/// Chance that a card payment is made from a wallet in another currency (travel, online shops), in percent.
const FOREIGN_CARD_PERCENT: u32 = 10;
/// Card payments per day, in tenths: from 0.2 to 3, most people about one every day or two.
const CARD_TENTHS: amounts::Quantiles =
    amounts::Quantiles::new(&[(0, 2), (250_000, 4), (500_000, 7), (900_000, 14), (1_000_000, 30)]);

/// Hours of the day at which card payments are made, weighted like a shop's till: few early, a lunch peak, an
/// evening peak.
const CARD_HOURS: [(u32, u32); 15] = [
    (8, 3),
    (9, 4),
    (10, 5),
    (11, 6),
    (12, 10),
    (13, 9),
    (14, 6),
    (15, 6),
    (16, 7),
    (17, 9),
    (18, 10),
    (19, 9),
    (20, 7),
    (21, 5),
    (22, 4),
];
/// When salaries arrive.
const SALARY_HOUR: u32 = 9;
/// When rents are paid.
const RENT_HOUR: u32 = 10;
/// When utilities bills are paid.
const UTILITIES_HOUR: u32 = 11;
/// When friends pay each other back.
const FRIEND_HOUR: u32 = 19;

const FIRST_NAMES: [&str; 16] = [
    "ayse", "kerem", "sefa", "mehmet", "elif", "john", "maria", "yuki", "hans", "sofia", "liam", "emma", "noah",
    "olivia", "lucas", "mia",
];
const LAST_NAMES: [&str; 12] =
    ["kaya", "yilmaz", "smith", "garcia", "tanaka", "mueller", "rossi", "dubois", "novak", "silva", "berg", "jones"];

/// One wish of a user for a day, before the balances decide whether it happens.
#[derive(Debug, Clone)]
struct Wish {
    hour: u32,
    user: u32,
    id: Uuid,
    kind: WishKind,
}

#[derive(Debug, Clone)]
enum WishKind {
    Salary { amount_minor: i64 },
    Rent { landlord: u32, amount_minor: i64 },
    Utilities { amount_minor: i64 },
    Card { wallet: usize, amount_minor: i64 },
    Friend { friend: u32, amount_minor: i64 },
}

/// A population being planned: its users, their habits and the balances posted so far.
#[derive(Debug)]
pub struct Population {
    spec: Spec,
    rng: StdRng,
    users: Vec<PlannedUser>,
    profiles: Vec<Profile>,
}

impl Population {
    /// Draws the users and their habits. The spec must be valid ([`Spec::validate`]).
    pub fn new(spec: Spec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let landlords: Vec<u32> = (0..spec.users).filter(|_| rng.gen_range(0..1_000) < LANDLORD_PER_MILLE).collect();
        let mut users = Vec::with_capacity(spec.users as usize);
        let mut profiles = Vec::with_capacity(spec.users as usize);
        for index in 0..spec.users {
            users.push(draw_user(&mut rng, index));
            profiles.push(draw_profile(&mut rng, &spec, index, &landlords));
        }
        Self { spec, rng, users, profiles }
    }

    /// The users, in the order they are numbered.
    pub fn users(&self) -> &[PlannedUser] {
        &self.users
    }

    /// The spec it follows.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The opening step: every wallet's savings, credited when the history starts.
    pub fn openings(&mut self) -> Step {
        let mut commands = Vec::new();
        for index in 0..self.users.len() {
            for slot in 0..self.profiles[index].wallets.len() {
                let (currency_index, _) = self.profiles[index].wallets[slot];
                let currency = self.spec.currencies[currency_index];
                // A second wallet holds a fifth of what a main wallet holds, as savings go.
                let cents = amounts::SAVINGS.draw(&mut self.rng) / if slot == 0 { 1 } else { 5 };
                let amount_minor = amounts::convert(cents, currency, Rounding::Minor);
                self.profiles[index].wallets[slot].1 = amount_minor;
                let user_id = self.users[index].id;
                let movement = Movement::Credit { user_id, amount: Money::new(amount_minor, currency) };
                commands.push(command(&mut self.rng, movement, "opening balance"));
            }
        }
        Step { at: self.spec.start(), commands }
    }

    /// Day `day` (0 for the first) of the history, as steps in time order.
    pub fn day(&mut self, day: u32) -> Vec<Step> {
        let date = self.spec.start().date_naive() + Days::new(u64::from(day));
        let mut wishes = Vec::new();
        for user in 0..self.spec.users {
            self.draw_wishes(user, date, &mut wishes);
        }
        // Posting order: by hour, then in the order drawn (stable), which is by user.
        wishes.sort_by_key(|wish| wish.hour);
        let midnight = date.and_time(NaiveTime::MIN).and_utc();
        let mut steps: Vec<Step> = Vec::new();
        for wish in wishes {
            let at = midnight + TimeDelta::hours(i64::from(wish.hour));
            let Some(command) = self.settle(wish) else { continue };
            match steps.last_mut() {
                Some(step) if step.at == at => step.commands.push(command),
                _ => steps.push(Step { at, commands: vec![command] }),
            }
        }
        steps
    }

    /// Draws what `user` would like to do on `date` (independent of balances, so the draws do not depend on order).
    fn draw_wishes(&mut self, user: u32, date: NaiveDate, wishes: &mut Vec<Wish>) {
        let profile = &self.profiles[user as usize];
        let main = self.spec.currencies[profile.main];
        let rng = &mut self.rng;
        let mut wish = |rng: &mut StdRng, hour: u32, kind: WishKind| {
            wishes.push(Wish { hour, user, id: random_id(rng), kind });
        };
        if let Some((cents, pay_day)) = profile.salary
            && pay_day.falls_on(date)
        {
            wish(rng, SALARY_HOUR, WishKind::Salary { amount_minor: amounts::convert(cents, main, Rounding::Major) });
        }
        if let Some((cents, day, landlord)) = profile.rent
            && date.day() == day
        {
            let amount_minor = amounts::convert(cents, main, Rounding::Major);
            wish(rng, RENT_HOUR, WishKind::Rent { landlord, amount_minor });
        }
        if profile.utilities_day == Some(date.day()) {
            let amount_minor = amounts::convert(amounts::UTILITIES.draw(rng), main, Rounding::Major);
            wish(rng, UTILITIES_HOUR, WishKind::Utilities { amount_minor });
        }
        // Up to four payments a day, each with a quarter of the daily rate: a binomial draw with the user's mean.
        let weekend = date.weekday().number_from_monday() >= 6;
        let tenths = if weekend { profile.card_tenths_per_day * 5 / 4 } else { profile.card_tenths_per_day };
        for _ in 0..4 {
            if rng.gen_range(0..40) >= tenths {
                continue;
            }
            let hour = draw_hour(rng);
            let wallet = if profile.wallets.len() > 1 && rng.gen_range(0..100) < FOREIGN_CARD_PERCENT {
                rng.gen_range(1..profile.wallets.len())
            } else {
                0
            };
            let currency = self.spec.currencies[profile.wallets[wallet].0];
            let cents = amounts::CARD_PAYMENT.draw(rng) * profile.spending_percent / 100;
            let amount_minor = amounts::convert(cents, currency, Rounding::Minor);
            wish(rng, hour, WishKind::Card { wallet, amount_minor });
        }
        if self.spec.users > 1 && rng.gen_range(0..1_000) < FRIEND_TRANSFER_PER_MILLE {
            // Anyone but oneself: draw among the others, then skip over oneself.
            let other = rng.gen_range(0..self.spec.users - 1);
            let friend = if other >= user { other + 1 } else { other };
            let amount_minor = amounts::convert(amounts::FRIEND_TRANSFER.draw(rng), main, Rounding::Minor);
            wish(rng, FRIEND_HOUR, WishKind::Friend { friend, amount_minor });
        }
    }

    /// The command for a wish, if the balances allow it; updates the balances the plan keeps.
    fn settle(&mut self, wish: Wish) -> Option<Command> {
        let user = wish.user as usize;
        let main = self.profiles[user].main;
        let user_id = self.users[user].id;
        let (movement, description) = match wish.kind {
            WishKind::Salary { amount_minor } => {
                self.receive(user, main, amount_minor);
                (Movement::Credit { user_id, amount: self.money(amount_minor, main) }, "salary")
            }
            WishKind::Rent { landlord, amount_minor } => {
                self.spend(user, 0, amount_minor)?;
                self.receive(landlord as usize, main, amount_minor);
                let to_user_id = self.users[landlord as usize].id;
                let amount = self.money(amount_minor, main);
                (Movement::Transfer { from_user_id: user_id, to_user_id, amount }, "rent")
            }
            WishKind::Utilities { amount_minor } => {
                self.spend(user, 0, amount_minor)?;
                (Movement::Debit { user_id, amount: self.money(amount_minor, main) }, "utilities")
            }
            WishKind::Card { wallet, amount_minor } => {
                let currency_index = self.spend(user, wallet, amount_minor)?;
                (Movement::Debit { user_id, amount: self.money(amount_minor, currency_index) }, "card payment")
            }
            WishKind::Friend { friend, amount_minor } => {
                self.spend(user, 0, amount_minor)?;
                self.receive(friend as usize, main, amount_minor);
                let to_user_id = self.users[friend as usize].id;
                let amount = self.money(amount_minor, main);
                (Movement::Transfer { from_user_id: user_id, to_user_id, amount }, "transfer to a friend")
            }
        };
        Some(Command {
            transaction_id: wish.id,
            movement,
            description: Some(description.to_owned()),
            effective_at: None,
        })
    }

    /// Takes `amount_minor` out of the user's wallet in slot `wallet`, if it holds that much; returns the wallet's
    /// currency index.
    fn spend(&mut self, user: usize, wallet: usize, amount_minor: i64) -> Option<usize> {
        let (currency_index, balance) = &mut self.profiles[user].wallets[wallet];
        if *balance < amount_minor {
            return None;
        }
        *balance -= amount_minor;
        Some(*currency_index)
    }

    /// Adds `amount_minor` to the user's wallet in that currency, opening it (as the ledger does on a first credit).
    fn receive(&mut self, user: usize, currency_index: usize, amount_minor: i64) {
        let wallets = &mut self.profiles[user].wallets;
        match wallets.iter_mut().find(|(c, _)| *c == currency_index) {
            Some((_, balance)) => *balance += amount_minor,
            None => wallets.push((currency_index, amount_minor)),
        }
    }

    fn money(&self, amount_minor: i64, currency_index: usize) -> Money {
        Money::new(amount_minor, self.spec.currencies[currency_index])
    }

    /// What each wallet holds now, as the plan has posted: (user id, currency, balance in minor units).
    #[cfg(test)]
    pub fn balances(&self) -> Vec<(Uuid, Currency, i64)> {
        self.users
            .iter()
            .zip(&self.profiles)
            .flat_map(|(user, profile)| {
                profile.wallets.iter().map(|(c, balance)| (user.id, self.spec.currencies[*c], *balance))
            })
            .collect()
    }
}

fn draw_user(rng: &mut StdRng, index: u32) -> PlannedUser {
    let id = random_id(rng);
    let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())];
    // The number makes names unique; seven digits hold every population up to USERS_MAX.
    PlannedUser {
        id,
        username: format!("{first}_{last}_{index:07}"),
        email: format!("{first}.{last}.{index:07}@population.example"),
    }
}

fn draw_profile(rng: &mut StdRng, spec: &Spec, index: u32, landlords: &[u32]) -> Profile {
    // The first currency is the main one of 70% of users; the others share the rest.
    let main = if spec.currencies.len() == 1 || rng.gen_range(0..100) < 70 {
        0
    } else {
        rng.gen_range(1..spec.currencies.len())
    };
    let mut wallets = vec![(main, 0)];
    for other in (0..spec.currencies.len()).filter(|c| *c != main) {
        if rng.gen_range(0..100) < SECOND_WALLET_PERCENT {
            wallets.push((other, 0));
        }
    }
    let salary_cents = amounts::SALARY.draw(rng);
    let salary = (rng.gen_range(0..100) < SALARIED_PERCENT).then(|| (salary_cents, draw_pay_day(rng)));
    let landlord = landlords.get(rng.gen_range(0..landlords.len().max(1))).copied().filter(|l| *l != index);
    let rent = (rng.gen_range(0..100) < TENANT_PERCENT).then_some(()).and(landlord).map(|landlord| {
        // Rent takes 25–45% of a salary (of a median one for those without).
        let share = i64::from(rng.gen_range(25..=45_u32));
        let day = if rng.gen_range(0..100) < 70 { 1 } else { 5 };
        (salary_cents * share / 100, day, landlord)
    });
    let utilities_day = (rng.gen_range(0..100) < UTILITIES_PERCENT).then(|| rng.gen_range(10..=20));
    let card_tenths_per_day = u32::try_from(CARD_TENTHS.draw(rng)).unwrap_or(10);
    let spending_percent = (salary_cents * 100 / amounts::SALARY.at(500_000)).clamp(40, 250);
    Profile { main, wallets, salary, rent, utilities_day, card_tenths_per_day, spending_percent }
}

fn draw_pay_day(rng: &mut StdRng) -> PayDay {
    match rng.gen_range(0..100) {
        0..40 => PayDay::Day(25),
        40..70 => PayDay::LastDay,
        70..85 => PayDay::Day(1),
        _ => PayDay::Day(15),
    }
}

fn draw_hour(rng: &mut StdRng) -> u32 {
    let total: u32 = CARD_HOURS.iter().map(|(_, weight)| weight).sum();
    let mut pick = rng.gen_range(0..total);
    for (hour, weight) in CARD_HOURS {
        if pick < weight {
            return hour;
        }
        pick -= weight;
    }
    CARD_HOURS[CARD_HOURS.len() - 1].0
}

/// A version-4 UUID from the generator's bytes.
fn random_id(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid()
}

fn command(rng: &mut StdRng, movement: Movement, description: &str) -> Command {
    Command { transaction_id: random_id(rng), movement, description: Some(description.to_owned()), effective_at: None }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(users: u32, seed: u64) -> Spec {
        Spec {
            users,
            seed,
            currencies: vec![Currency::USD, Currency::EUR, Currency::JPY],
            history_days: 30,
            // Days 2029-12-03 to 2030-01-01: every day of the month the plan uses comes once.
            until: "2030-01-02T00:00:00Z".parse().expect("instant"),
        }
    }

    /// Every step of a whole plan, the openings first.
    fn whole(spec: Spec) -> (Population, Vec<Step>) {
        let mut population = Population::new(spec);
        let mut steps = vec![population.openings()];
        for day in 0..population.spec().history_days {
            steps.extend(population.day(day));
        }
        (population, steps)
    }

    #[test]
    fn the_same_spec_gives_the_same_plan_and_another_seed_another() {
        let (first, first_steps) = whole(spec(200, 42));
        let (second, second_steps) = whole(spec(200, 42));
        assert_eq!(first.users(), second.users());
        assert_eq!(first_steps, second_steps);
        let (other, other_steps) = whole(spec(200, 43));
        assert_ne!(first.users()[0].id, other.users()[0].id);
        assert_ne!(first_steps, other_steps);
    }

    #[test]
    fn the_timeline_covers_whole_days_before_the_end_and_steps_move_forward() {
        let (_, steps) = whole(spec(100, 1));
        let start: DateTime<Utc> = "2029-12-03T00:00:00Z".parse().expect("instant");
        assert_eq!(steps[0].at, start);
        assert!(steps.windows(2).all(|pair| pair[0].at < pair[1].at), "one step per instant, in order");
        let until: DateTime<Utc> = "2030-01-02T00:00:00Z".parse().expect("instant");
        assert!(steps.iter().all(|step| step.at < until));
        let late = Spec { until: "2030-01-02T17:45:00Z".parse().expect("instant"), ..spec(1, 1) };
        assert_eq!(late.start(), start, "the history is whole days, whatever the hour of --until");
    }

    #[test]
    fn no_wallet_ever_goes_negative_and_money_is_accounted_for() {
        let (population, steps) = whole(spec(300, 7));
        let mut balances: std::collections::HashMap<(Uuid, Currency), i64> = Default::default();
        for command in steps.iter().flat_map(|step| &step.commands) {
            let mut post = |user: Uuid, amount: Money| {
                let balance = balances.entry((user, amount.currency())).or_default();
                *balance += amount.amount_minor();
                assert!(*balance >= 0, "{command:?} overdraws");
            };
            match command.movement {
                Movement::Credit { user_id, amount } => post(user_id, amount),
                Movement::Debit { user_id, amount } => {
                    post(user_id, Money::new(-amount.amount_minor(), amount.currency()))
                }
                Movement::Transfer { from_user_id, to_user_id, amount } => {
                    post(from_user_id, Money::new(-amount.amount_minor(), amount.currency()));
                    post(to_user_id, amount);
                }
                ref other => panic!("unexpected movement {other:?}"),
            }
        }
        for (user, currency, balance) in population.balances() {
            assert_eq!(balances.get(&(user, currency)).copied().unwrap_or(0), balance, "{user} {currency}");
        }
    }

    #[test]
    fn a_month_holds_salaries_rents_bills_card_payments_and_transfers_in_realistic_numbers() {
        let (_, steps) = whole(spec(1_000, 3));
        let count = |what: &str| {
            steps.iter().flat_map(|s| &s.commands).filter(|c| c.description.as_deref() == Some(what)).count()
        };
        // About 88% are paid once in 30 days; 65% are tenants and 80% pay a bill, less those whose wallet is empty
        // by then (bills fall due mid-month, before most paydays).
        assert!((800..=900).contains(&count("salary")), "{}", count("salary"));
        assert!((450..=700).contains(&count("rent")), "{}", count("rent"));
        assert!((650..=850).contains(&count("utilities")), "{}", count("utilities"));
        assert!((10_000..=40_000).contains(&count("card payment")), "{}", count("card payment"));
        assert!((900..=1_500).contains(&count("transfer to a friend")), "{}", count("transfer to a friend"));
        assert!(count("opening balance") >= 1_000);
    }

    #[test]
    fn ids_are_unique_and_names_are_valid_and_unique() {
        let (population, steps) = whole(spec(500, 9));
        let mut ids = HashSet::new();
        for user in population.users() {
            assert!(ids.insert(user.id));
            assert_eq!(banksim_core::user::parse_username(&user.username).as_deref(), Ok(user.username.as_str()));
            assert_eq!(banksim_core::user::parse_email(&user.email).as_deref(), Ok(user.email.as_str()));
        }
        for command in steps.iter().flat_map(|s| &s.commands) {
            assert!(ids.insert(command.transaction_id), "ids never repeat");
            assert_eq!(command.transaction_id.get_version_num(), 4);
        }
        let names: HashSet<&str> = population.users().iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names.len(), 500);
    }

    #[test]
    fn yen_amounts_are_whole_and_salaries_whole_units() {
        let (_, steps) = whole(spec(300, 11));
        for command in steps.iter().flat_map(|s| &s.commands) {
            let amount = match command.movement {
                Movement::Credit { amount, .. }
                | Movement::Debit { amount, .. }
                | Movement::Transfer { amount, .. } => amount,
                _ => unreachable!(),
            };
            assert!(amount.amount_minor() > 0);
            if matches!(command.description.as_deref(), Some("salary" | "rent" | "utilities")) {
                assert_eq!(amount.amount_minor() % amount.currency().minor_units_per_major(), 0, "{command:?}");
            }
        }
    }

    #[test]
    fn bad_options_are_refused_with_their_flag() {
        assert_eq!(Spec { users: 0, ..spec(1, 1) }.validate(), Err(SpecError::Users));
        assert_eq!(Spec { history_days: 0, ..spec(1, 1) }.validate(), Err(SpecError::HistoryDays));
        assert_eq!(Spec { currencies: vec![], ..spec(1, 1) }.validate(), Err(SpecError::Currencies));
        let twice = Spec { currencies: vec![Currency::USD, Currency::USD], ..spec(1, 1) };
        assert_eq!(twice.validate(), Err(SpecError::Currencies));
        let unsupported = Spec { currencies: vec![Currency::VND], ..spec(1, 1) };
        assert_eq!(unsupported.validate(), Err(SpecError::Unsupported("VND")));
        assert_eq!(spec(1, 1).validate(), Ok(()));
    }

    #[test]
    fn pay_days_fall_on_their_date_and_on_each_months_last_day() {
        let date = |text: &str| text.parse::<NaiveDate>().expect("date");
        assert!(PayDay::LastDay.falls_on(date("2030-02-28")));
        assert!(!PayDay::LastDay.falls_on(date("2028-02-28")), "2028 is a leap year");
        assert!(PayDay::LastDay.falls_on(date("2029-12-31")));
        assert!(PayDay::Day(25).falls_on(date("2030-01-25")));
    }
}
