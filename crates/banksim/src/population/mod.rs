//! `banksim seed --population N --seed S`: a reproducible population of users with wallets and a past history,
//! written through the ledger's batch path.
//!
//! - [`plan`] and [`amounts`]: who the users are and every movement of their history, from the seed alone (no I/O).
//! - [`seed`]: the checks on the database, then the writes through the store, on a clock this command steps.

pub mod amounts;
pub mod plan;
pub mod seed;

use banksim_core::currency::Currency;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

/// The shared password of a population's users, unless `--password` gives another: a published one, like the demo
/// users'; a population is test data and is refused with ENV=prod.
pub const DEFAULT_PASSWORD: &str = "population123";

/// Where the timeline ends when neither `--until` nor the database's virtual clock says: a fixed instant, so that
/// a population is the same whenever it is seeded.
pub const DEFAULT_UNTIL: &str = "2030-01-01T00:00:00Z";

/// The options of `banksim seed --population`.
#[derive(Debug, Clone, clap::Args)]
pub struct PopulationArgs {
    /// Create N users with wallets, balances and a history (instead of --demo). Refused with ENV=prod, and on a
    /// database that has users other than active admins, or any transaction.
    #[arg(long, value_name = "N", conflicts_with = "demo")]
    pub population: Option<u32>,
    /// The generator's seed: the same seed and options give the same users, ids, balances and history.
    #[arg(long, default_value_t = 1, requires = "population")]
    pub seed: u64,
    /// Currencies of the wallets, comma-separated; the first is the most common main currency.
    #[arg(long, value_delimiter = ',', value_parser = currency_code, default_value = "USD,EUR,GBP,JPY",
          requires = "population")]
    pub currencies: Vec<Currency>,
    /// Whole days of history before the day of --until.
    #[arg(long, default_value_t = 30, requires = "population")]
    pub history_days: u32,
    /// Where the timeline ends, and where the virtual clock is left (RFC 3339). Default: the database's virtual
    /// clock if a simulation has set it, else 2030-01-01T00:00:00Z.
    #[arg(long, value_parser = banksim_core::clock::parse_instant, requires = "population")]
    pub until: Option<DateTime<Utc>>,
    /// Post the history through the ledger's batch path, one commit per 4,000 movements, instead of the bulk path
    /// (`Store::bulk_post`: `COPY` on PostgreSQL). Much slower; kept to check that both write the same rows.
    #[arg(long, hide = true, requires = "population")]
    pub via_batches: bool,
    /// The password every user of the population logs in with (8–128 characters), hashed once.
    #[arg(long, env = "BANKSIM_POPULATION_PASSWORD", hide_env_values = true, requires = "population",
          default_value = DEFAULT_PASSWORD)]
    pub password: SecretString,
}

fn currency_code(text: &str) -> Result<Currency, String> {
    Currency::parse(text.trim()).map_err(|e| e.to_string())
}

pub use seed::seed;
