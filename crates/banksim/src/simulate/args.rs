//! The command line of `banksim simulate`, and the parsing of the values clap cannot parse alone: run lengths
//! such as `30s` or `2m`, and currency codes.

use std::path::PathBuf;
use std::time::Duration;

use banksim_core::currency::Currency;
use clap::{Args, ValueEnum};

/// Generates traffic against a running banksim API, reports throughput and latency, and checks that money was
/// conserved.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Base URL of the API to drive (plain HTTP).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// How many users to simulate. They are named from the seed, so a rerun with the same seed reuses them.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub users: u32,

    /// Seed of the user names and of every random choice: the same seed sends the same traffic.
    #[arg(long, value_name = "SEED", default_value_t = 42)]
    pub seed: u64,

    /// Concurrent connections (requests in flight at once).
    #[arg(long, value_name = "C", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,

    /// How long to drive traffic: `500ms`, `30s`, `2m`, `1h`, or a sum such as `1m30s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, required_unless_present_any = ["requests", "replay"])]
    pub duration: Option<Duration>,

    /// How many requests to send in all, shared evenly between the connections (a money request whose outcome
    /// was unknown is asked again on top). With `--duration` too, the run stops at whichever comes first.
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..), required_unless_present_any = ["duration", "replay"])]
    pub requests: Option<u64>,

    /// The traffic to send.
    #[arg(long, value_enum, default_value = "transfer")]
    pub scenario: Scenario,

    /// Transfers per request of the `batch` scenario (at most the server's `BATCH_MAX`).
    #[arg(long, value_name = "COUNT", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=8190))]
    pub batch_size: u32,

    /// Amount credited to every user before the run, as a decimal (`10000.00`).
    #[arg(long, value_name = "AMOUNT", default_value = "10000.00")]
    pub fund: String,

    /// Currency of every movement (ISO 4217, upper case).
    #[arg(long, value_name = "CODE", default_value = "USD", value_parser = parse_currency)]
    pub currency: Currency,

    /// Password of the simulated users (set when they are registered, used to log them in on reruns).
    #[arg(long, value_name = "PASSWORD", default_value = "simulate-password")]
    pub password: String,

    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// Do not fail the run for HTTP error answers (5xx, and 4xx other than the expected rejections). Transport
    /// errors and a conservation mismatch still fail it.
    #[arg(long)]
    pub allow_errors: bool,

    /// Identifies this run inside the idempotency keys (default: random). The keys must differ between runs
    /// that reuse the same users, or the server would replay the earlier run's answers instead of moving money;
    /// pass the run id of an earlier report to send exactly its keys again.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<u64>,

    /// A fault drill: the server (in simulation mode) injects random faults of every kind — 1 s latency, 500,
    /// 503, answers lost after the commit (504 or a dropped connection) — into this share of the traffic phase's
    /// requests, a decimal such as `0.1`, drawn from `--seed`. Needs `--admin-email`. Money requests are retried
    /// with their idempotency key until they get a definite answer; lost answers and 5xx do not fail the run,
    /// conservation and a definite answer for every money request do.
    #[arg(long, value_name = "RATE", requires = "admin_email", conflicts_with = "replay")]
    pub faults: Option<String>,

    /// Write every request the run sends to FILE (which must not exist), one JSON object per line, with the user
    /// that sent it and the virtual instant it was answered at, for `--replay` (docs/simulation.md). For a
    /// replay that reaches the same state, record with `--connections 1`.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,

    /// Instead of generating traffic, send the requests recorded in FILE again, one at a time and in order, and
    /// report every answer whose status differs from the recorded one (the run fails if any does).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// An admin of the server: with `--faults`, whose session turns the random faults on and off; with
    /// `--replay`, whose session sets the virtual clock to each request's recorded instant and reads the state
    /// hash at the end.
    #[arg(long, value_name = "EMAIL", requires = "admin_password")]
    pub admin_email: Option<String>,

    /// Headers sent with every request (not on the command line: the console's runner passes its pass).
    #[arg(skip)]
    pub headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,

    /// The password of `--admin-email`.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "BANKSIM_REPLAY_ADMIN_PASSWORD",
        hide_env_values = true,
        requires = "admin_email"
    )]
    pub admin_password: Option<String>,
}

/// The traffic a simulation sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Random pairs of distinct users transfer small amounts to each other.
    Transfer,
    /// Every user pays the same account (user 0): contention on one wallet.
    Hot,
    /// A weighted mix of credits, debits, transfers, balance and history reads, and rollbacks.
    Mixed,
    /// Every request reads a random user's current balance (`GET /balances/current`).
    Balance,
    /// Every request reads the newest 20 entries of a random user's history (`GET /transactions/history`).
    History,
    /// Random pairs of distinct users make two-phase transfers: a hold (`pending: true`), then its post.
    TwoPhase,
    /// Every request is an atomic batch of `--batch-size` small transfers from one user to random others
    /// (`POST /transactions/batch`).
    Batch,
    /// Every request logs a random user in (`POST /auth/login`): the cost of a password check and a token pair.
    Login,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Hot => "hot",
            Self::Mixed => "mixed",
            Self::Balance => "balance",
            Self::History => "history",
            Self::TwoPhase => "two-phase",
            Self::Batch => "batch",
            Self::Login => "login",
        }
    }
}

/// Parses a run length: one or more `<integer><unit>` parts, units `ms`, `s`, `m` and `h`, added up (`1m30s`).
/// The total must be positive.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration: write it like 500ms, 30s or 2m".to_owned());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a number before {rest:?}"));
        }
        let value: u64 = rest[..digits].parse().map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(value)),
            "s" => Some(Duration::from_secs(value)),
            "m" => value.checked_mul(60).map(Duration::from_secs),
            "h" => value.checked_mul(3600).map(Duration::from_secs),
            "" => return Err(format!("{text:?}: missing unit after {value} (ms, s, m or h)")),
            unit => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m or h)")),
        };
        total = part.and_then(|part| total.checked_add(part)).ok_or_else(|| format!("{text:?}: too long"))?;
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the duration must be greater than zero"));
    }
    Ok(total)
}

fn parse_currency(text: &str) -> Result<Currency, String> {
    Currency::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_milliseconds_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s250ms"), Ok(Duration::from_millis(1250)));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn durations_without_a_known_unit_or_length_are_refused() {
        for text in ["", "30", "s", "10x", "1.5s", "-1s", "0s", "0ms0s", "10 s", "99999999999999999999s"] {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration(&format!("{}h", u64::MAX)).unwrap_err().contains("too long"));
    }

    #[test]
    fn the_command_line_needs_a_duration_or_a_request_count() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        let parse = |args: &[&str]| <Cli as clap::Parser>::try_parse_from([&["simulate"], args].concat());
        assert!(parse(&[]).is_err());
        let by_count = parse(&["--requests", "300"]).expect("requests alone").args;
        assert_eq!((by_count.requests, by_count.duration), (Some(300), None));
        let both = parse(&["--requests", "300", "--duration", "2m"]).expect("both").args;
        assert_eq!((both.requests, both.duration), (Some(300), Some(Duration::from_secs(120))));
        let defaults = parse(&["--duration", "30s"]).expect("duration alone").args;
        assert_eq!((defaults.users, defaults.seed, defaults.connections), (100, 42, 64));
        assert_eq!(
            (defaults.scenario, defaults.currency, defaults.fund.as_str()),
            (Scenario::Transfer, Currency::USD, "10000.00")
        );
        assert!(parse(&["--duration", "30s", "--currency", "usd"]).is_err());
        assert!(parse(&["--duration", "30s", "--users", "1"]).is_err());
        assert!(parse(&["--requests", "0"]).is_err());
        let replay = parse(&["--replay", "run.jsonl"]).expect("a replay needs no length").args;
        assert_eq!(replay.replay.as_deref(), Some(std::path::Path::new("run.jsonl")));
        assert!(parse(&["--replay", "a", "--record", "b"]).is_err(), "a replay records nothing");
        assert!(parse(&["--requests", "3", "--faults", "0.1"]).is_err(), "faults are set by an admin");
        let drill = parse(&["--requests", "3", "--faults", "0.1", "--admin-email", "a@b.c", "--admin-password", "x"]);
        assert_eq!(drill.expect("a drill").args.faults.as_deref(), Some("0.1"));
        assert!(parse(&["--replay", "a", "--admin-email", "a@b.c"]).is_err(), "the admin needs a password");
    }
}
