//! Writes a planned population through the store: the users in bulk, then every step of the history as atomic
//! ledger batches (`LedgerWork::Batch`, as `POST /transactions/batch` posts), each at the step's instant, and last the
//! virtual clock to the end of the timeline.
//!
//! The history goes through `Store::bulk_post` (on PostgreSQL: the same rows, written with `COPY` in one
//! transaction), or with `--via-batches` through `Store::post_batch`, one commit a batch, on a clock this command
//! steps: the reference the bulk path is compared with.
//!
//! Everything that can refuse is checked before the first write, so a refusal leaves the database untouched.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use banksim_core::user::Role;
use banksim_core::{Clock, ClockChange, ManualClock};
use banksim_server::AppState;
use banksim_server::config::Environment;
use banksim_store::{
    AuditContext, BulkBatch, BulkOutcome, LedgerOutcome, LedgerRequest, LedgerWork, NewUser, ResponseRenderer, Store,
    UserListQuery,
};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use secrecy::ExposeSecret as _;

use super::plan::{Population, Spec, Step};
use super::{DEFAULT_UNTIL, PopulationArgs};

/// Users registered per store call: one transaction each, and a tick of the progress bar.
const USERS_PER_CALL: usize = 5_000;

/// Movements posted per store call (one database transaction): large enough that a commit's cost is shared by
/// thousands of movements, small enough that the arrays of one statement stay a few megabytes.
const MOVEMENTS_PER_BATCH: usize = 4_000;

/// How long the clock's lease is asked for while the clock is moved to the end of the timeline.
const CLOCK_LEASE: Duration = Duration::from_secs(30);

/// What a population seeding wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Users registered.
    pub users: usize,
    /// Transactions posted.
    pub transactions: usize,
    /// When the history starts (the users' registration).
    pub start: DateTime<Utc>,
    /// Where the timeline (and the virtual clock) ends.
    pub until: DateTime<Utc>,
    /// How long registering the users took.
    pub users_elapsed: Duration,
    /// How long posting the history took.
    pub history_elapsed: Duration,
}

/// Seeds the population `args` describes into the store of `state`; see `docs/simulation.md`, "A population".
pub async fn seed(state: &AppState, args: &PopulationArgs, users: u32) -> anyhow::Result<Seeded> {
    anyhow::ensure!(
        state.config.environment != Environment::Prod,
        "ENV=prod: a population (with a published password) is never seeded in production"
    );
    let store = state.store.as_ref();
    let until = timeline_end(store, args.until).await?;
    let spec =
        Spec { users, seed: args.seed, currencies: args.currencies.clone(), history_days: args.history_days, until };
    spec.validate()?;
    let password = banksim_core::user::parse_password(args.password.expose_secret())
        .map_err(|e| anyhow::anyhow!("--password {e}"))?;
    refuse_unless_empty(store).await?;
    let mut population = Population::new(spec);
    refuse_clashes_with_admins(store, &population).await?;
    // One Argon2 hash for every user: seeding 100,000 users must not cost 100,000 hashes. Each user still logs
    // in with the password as usual (the PHC string carries its salt and parameters).
    let password_hash =
        state.passwords.hash(password).await.map_err(|e| anyhow::anyhow!("hashing the password: {e:?}"))?;
    let clock = ManualClock::new(population.spec().start());
    let started = Instant::now();
    register_users(store, &population, &password_hash, &clock).await?;
    let users_elapsed = started.elapsed();
    let transactions = if args.via_batches {
        post_history(store, &mut population, &clock).await?
    } else {
        bulk_post_history(store, &mut population).await?
    };
    let history_elapsed = started.elapsed() - users_elapsed;
    move_clock_to(store, until).await?;
    let start = population.spec().start();
    Ok(Seeded { users: population.users().len(), transactions, start, until, users_elapsed, history_elapsed })
}

/// The end of the timeline: `--until`, else the virtual clock's instant, else [`DEFAULT_UNTIL`]. Never before the
/// virtual clock (which never goes back).
async fn timeline_end(store: &dyn Store, until: Option<DateTime<Utc>>) -> anyhow::Result<DateTime<Utc>> {
    let virtual_now = store.virtual_now().await?;
    let default = || DEFAULT_UNTIL.parse::<DateTime<Utc>>().context("the default end of the timeline");
    let until = match (until, virtual_now) {
        (Some(until), _) => until,
        (None, Some(now)) => now,
        (None, None) => default()?,
    };
    if let Some(now) = virtual_now {
        anyhow::ensure!(
            until >= now,
            "--until {until} is before the virtual clock ({now}), which never goes back: give a later instant"
        );
    }
    Ok(until)
}

/// Refuses a database with users other than active admins, or with any transaction: a population is seeded into an
/// empty bank, so that its ids, names and balances are the seed's alone, and the same on every run.
async fn refuse_unless_empty(store: &dyn Store) -> anyhow::Result<()> {
    let everyone = UserListQuery { limit: 1, offset: 0, after: None, include_inactive: true };
    let users = store.list_users(everyone).await?.total;
    let admins = store.count_active_admins().await?;
    let has_transactions = !store.dump_transactions(None, 1).await?.is_empty();
    anyhow::ensure!(
        users == admins && !has_transactions,
        "the database already has {} user(s) besides active admins{}: a population is seeded into an empty \
         database (run `banksim migrate` with a new DATABASE_URL); nothing was written",
        users - admins.min(users),
        if has_transactions { " and transactions" } else { "" }
    );
    Ok(())
}

/// Refuses a population whose names clash with an admin's (only admins may be there): checked before any write.
async fn refuse_clashes_with_admins(store: &dyn Store, population: &Population) -> anyhow::Result<()> {
    let admins = UserListQuery { limit: 1_000, offset: 0, after: None, include_inactive: true };
    for admin in store.list_users(admins).await?.users {
        let clash = population
            .users()
            .iter()
            .find(|user| user.email == admin.email || user.username.eq_ignore_ascii_case(&admin.username));
        if let Some(user) = clash {
            anyhow::bail!("admin {} has the name of population user {}; nothing was written", admin.id, user.username);
        }
    }
    Ok(())
}

/// Registers every user at the clock's instant (the start of the history), in bulk.
async fn register_users(
    store: &dyn Store,
    population: &Population,
    password_hash: &str,
    clock: &ManualClock,
) -> anyhow::Result<()> {
    let bar = progress(population.users().len() as u64, "users");
    for chunk in population.users().chunks(USERS_PER_CALL) {
        let users: Vec<NewUser> = chunk
            .iter()
            .map(|user| NewUser {
                id: user.id,
                username: user.username.clone(),
                email: user.email.clone(),
                password_hash: password_hash.to_owned(),
                role: Role::User,
                now: clock.now(),
            })
            .collect();
        store.create_users(&users, &audit()).await.context("registering the population's users")?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(())
}

/// Posts the openings, then each day's steps, in time order, in one bulk posting; returns how many transactions
/// were posted. The batches are those [`post_history`] posts, planned as the store takes them.
async fn bulk_post_history(store: &dyn Store, population: &mut Population) -> anyhow::Result<usize> {
    let days = population.spec().history_days;
    let bar = progress(u64::from(days) + 1, "days");
    let openings = population.openings();
    let ticks = bar.clone();
    let days = (0..days).flat_map(|day| {
        ticks.inc(1);
        population.day(day)
    });
    let mut batches = std::iter::once(openings).chain(days).flat_map(step_batches);
    let outcome = store.bulk_post(&mut batches).await?;
    drop(batches);
    bar.finish();
    match outcome {
        BulkOutcome::Posted { transactions, .. } => Ok(transactions),
        BulkOutcome::Refused { batch, outcomes } => {
            let refusal = outcomes
                .iter()
                .find_map(|outcome| match outcome {
                    LedgerOutcome::Batch(outcome) => outcome.items.iter().find_map(|item| item.as_ref().err()),
                    LedgerOutcome::Refused(refusal) => Some(refusal),
                    _ => None,
                })
                .map_or("unknown", |refusal| refusal.code());
            anyhow::bail!(
                "the ledger refused a movement of batch {batch} ({refusal}): on PostgreSQL nothing of the history                  was written, on SQLite the batches before it were; seed a fresh database"
            )
        }
    }
}

/// One step's movements as atomic batches of [`MOVEMENTS_PER_BATCH`], at its instant.
fn step_batches(step: Step) -> Vec<BulkBatch> {
    let at = step.at;
    let mut commands = step.commands.into_iter().peekable();
    let mut batches = Vec::new();
    while commands.peek().is_some() {
        let items: Vec<_> = commands.by_ref().take(MOVEMENTS_PER_BATCH).map(Ok).collect();
        let request =
            LedgerRequest { work: LedgerWork::Batch { items, atomic: true }, idempotency: None, audit: audit() };
        batches.push(BulkBatch { requests: vec![request], now: at });
    }
    batches
}

/// Posts the openings, then each day's steps, in time order; returns how many transactions were posted.
async fn post_history(store: &dyn Store, population: &mut Population, clock: &ManualClock) -> anyhow::Result<usize> {
    let days = population.spec().history_days;
    let bar = progress(u64::from(days) + 1, "days");
    let mut posted = post_step(store, population.openings(), clock).await?;
    bar.inc(1);
    for day in 0..days {
        for step in population.day(day) {
            posted += post_step(store, step, clock).await?;
        }
        bar.set_message(format!("{posted} transactions"));
        bar.inc(1);
    }
    bar.finish();
    Ok(posted)
}

/// Posts one step's movements at its instant, in atomic batches: the plan never overdraws, so a refusal is a bug
/// of the plan (or a database changed underneath) and stops the seeding.
async fn post_step(store: &dyn Store, step: Step, clock: &ManualClock) -> anyhow::Result<usize> {
    clock.set(step.at);
    let mut posted = 0;
    let mut commands = step.commands.into_iter().peekable();
    while commands.peek().is_some() {
        let items: Vec<_> = commands.by_ref().take(MOVEMENTS_PER_BATCH).map(Ok).collect();
        let count = items.len();
        let request =
            LedgerRequest { work: LedgerWork::Batch { items, atomic: true }, idempotency: None, audit: audit() };
        let batch = store.post_batch(std::slice::from_ref(&request), &NoAnswers, clock.now()).await?;
        match batch.outcomes.first() {
            Some(LedgerOutcome::Batch(outcome)) if outcome.applied => posted += count,
            Some(LedgerOutcome::Batch(outcome)) => {
                let (index, refusal) = outcome
                    .items
                    .iter()
                    .enumerate()
                    .find_map(|(i, item)| item.as_ref().err().map(|e| (i, e.code())))
                    .unwrap_or((0, "unknown"));
                anyhow::bail!(
                    "the ledger refused movement {index} at {} ({refusal}); the steps before it are committed: \
                     seed a fresh database",
                    step.at
                );
            }
            other => anyhow::bail!("unexpected ledger outcome {other:?}"),
        }
    }
    Ok(posted)
}

/// Leaves the database's virtual clock at `until`, so that a server in simulation mode continues from there, and
/// audits the move (`simulation.clock`) as the server audits its own.
async fn move_clock_to(store: &dyn Store, until: DateTime<Utc>) -> anyhow::Result<()> {
    let from = store.virtual_now().await?;
    if from == Some(until) {
        return Ok(());
    }
    // The lease is on the wall clock (it guards against two walkers, a real-time matter), like the server's.
    let holder = uuid::Uuid::new_v4();
    let wall_now = banksim_core::SystemClock.now();
    let lease_end = wall_now + CLOCK_LEASE;
    anyhow::ensure!(
        store.claim_clock(holder, wall_now, lease_end).await?,
        "the virtual clock is being advanced by a server: the population is written, but the clock was not moved \
         to {until}"
    );
    let moved = store.move_clock(holder, until, wall_now).await;
    store.release_clock(holder).await?;
    anyhow::ensure!(moved?, "the virtual clock moved past {until} meanwhile");
    let entry = banksim_server::service::simulation::clock_move_entry(from, until, ClockChange::Set(until), audit());
    store.record_action(&entry, until).await?;
    Ok(())
}

/// The audit context of the seeding's writes.
fn audit() -> AuditContext {
    AuditContext { request_id: Some("banksim-seed-population".to_owned()), ..Default::default() }
}

/// A progress bar on stderr, hidden when stderr is not a terminal (logs, CI, tests).
fn progress(length: u64, unit: &'static str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(length), target);
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// The seeding sends no idempotency key, so no answer is ever stored: the renderer is never asked.
struct NoAnswers;

impl ResponseRenderer for NoAnswers {
    fn render(&self, _request: &LedgerRequest, _outcome: &LedgerOutcome) -> (u16, String) {
        (500, String::new())
    }
}
