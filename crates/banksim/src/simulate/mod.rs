//! `banksim simulate`: a traffic generator for simulations and benchmarks. It only talks HTTP to a running
//! banksim, so it needs neither the database nor the server's configuration.
//!
//! A run has three phases:
//!
//! 1. **Setup**: register the users named from the seed (or log in those an earlier run registered), read their
//!    balances, and fund each with one credit.
//! 2. **Traffic**: `--connections` tasks send the scenario's requests, one at a time each, until `--duration`
//!    has passed or `--requests` have been sent. Each task draws its choices from its own generator seeded with
//!    seed + its index, so the same seed sends the same traffic.
//! 3. **Check**: read every user's balance again and check that money was conserved (see [`conservation`]),
//!    then print the report (see [`stats`]) and fail on a mismatch, a transport error, or an HTTP error answer
//!    (unless `--allow-errors`).
//!
//! The generator is meant to stay lighter than the server on the same small machine: one shared keep-alive
//! client, URLs and headers built once, small request structs instead of JSON trees, and only the fields it
//! uses parsed from answers.

mod admin;
mod amount;
mod args;
mod client;
mod conservation;
mod drive;
mod record;
mod replay;
mod scenario;
mod stats;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banksim_core::money;
use futures::{StreamExt, TryStreamExt, stream};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

pub use args::{Scenario, SimulateArgs};
use client::{Api, SimUser};
use conservation::{Conservation, Tally};
use drive::Shared;
use scenario::Planner;
pub use stats::Report;
use stats::{RunInfo, Stats};

/// Most setup requests in flight at once. Registration and login hash passwords, which is deliberately slow;
/// more in flight would only queue on the server's cores.
const SETUP_CONCURRENCY_MAX: usize = 8;

/// The key stream of the funding credits (connections use their index).
const FUNDING_KEY_STREAM: u64 = u64::MAX;

/// Runs a simulation (or replays a recording) and prints its report. Fails (after printing the report) if the
/// run did not pass.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.replay {
        return replay_recording(&args, file).await;
    }
    // The command line stops a run with Ctrl-C, which ends the process: it needs no stop signal.
    let (_never, stop) = watch::channel(false);
    let report = run_with(&args, stop).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report).context("writing the report")?);
    } else {
        println!("{report}");
    }
    if !report.passed {
        bail!("simulation failed: {}", report.failures.join("; "));
    }
    Ok(())
}

/// Runs a simulation until its length is reached or `stop` turns true, and returns its report (whether it passed
/// or not). A stop ends the setup or the traffic early; the balances are still read back and checked. Fails only
/// when the run could not be made (the server unreachable, a user that cannot register, …).
pub async fn run_with(args: &SimulateArgs, mut stop: watch::Receiver<bool>) -> anyhow::Result<Report> {
    let currency = args.currency;
    let fund_minor = money::parse_amount(&args.fund, currency, money::DEFAULT_AMOUNT_MAX_MAJOR)
        .map_err(|err| anyhow::anyhow!("--fund {:?}: {err}", args.fund))?;
    // 53 bits, so that the id survives JSON parsers that read numbers as doubles.
    let run_id = args.run_id.unwrap_or_else(|| rand::random::<u64>() >> 11);
    let recorder = match &args.record {
        Some(path) => Some(Arc::new(record::Recorder::create(path, &args.url)?)),
        None => None,
    };
    let observer = recorder.clone().map(|recorder| recorder as Arc<dyn banksim_client::Observer>);
    let api = Api::new(&args.url, args.connections, &args.headers, observer)?;
    let setup_concurrency = SETUP_CONCURRENCY_MAX.min(args.connections as usize);
    api.check_reachable().await?;

    let setup_started = Instant::now();
    let users = stream::iter(0..args.users)
        .map(|index| {
            let (username, email) = client::user_identity(args.seed, index);
            api.register_or_login(username, email, &args.password)
        })
        .buffered(setup_concurrency)
        .try_collect::<Vec<SimUser>>();
    let users = unless_stopped(&mut stop, users).await?;
    tracing::info!(users = users.len(), url = %args.url, "simulated users registered and logged in");
    let before = sum_balances(&api, &users, currency, setup_concurrency).await.context("before the run")?;
    let mut tally = Tally::default();
    let mut funding_keys = StdRng::seed_from_u64(drive::key_seed(args.seed, run_id, FUNDING_KEY_STREAM));
    let keys: Vec<uuid::Uuid> = users.iter().map(|_| drive::next_key(&mut funding_keys)).collect();
    let fund_text = amount::format(fund_minor, currency);
    let funded = stream::iter(users.iter().zip(keys))
        .map(|(user, key)| api.fund(user, &fund_text, currency, key))
        .buffered(setup_concurrency)
        .try_collect::<Vec<bool>>();
    let funded = unless_stopped(&mut stop, funded).await?;
    tally.funded = i128::from(fund_minor) * funded.iter().filter(|moved| **moved).count() as i128;
    let setup = setup_started.elapsed();
    tracing::info!(amount = %fund_text, currency = %currency, setup_ms = setup.as_millis() as u64, "users funded");

    let drill = start_faults(args).await?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        api,
        users,
        planner: Planner::new(args.scenario, args.users, currency, args.batch_size),
        currency,
        deadline: args.duration.map(|duration| started + duration),
        seed: args.seed,
        run_id,
        transport_errors_logged: AtomicU32::new(0),
        money_attempts_max: if drill.is_some() {
            drive::MONEY_ATTEMPTS_UNDER_FAULTS
        } else {
            drive::MONEY_ATTEMPTS_MAX
        },
        stop,
        password: args.password.clone(),
    });
    let refresher = tokio::spawn(keep_sessions_fresh(Arc::clone(&shared)));
    let connections: Vec<_> = (0..args.connections)
        .map(|index| {
            let quota = args.requests.map(|total| share(total, args.connections, index));
            tokio::spawn(drive::connection(Arc::clone(&shared), index, quota))
        })
        .collect();
    let mut stats = Stats::new();
    for connection in connections {
        let outcome = connection.await.context("a connection task failed")?;
        stats.merge(&outcome.stats);
        tally.merge(&outcome.tally);
    }
    let elapsed = started.elapsed();
    tracing::info!(requests = stats.requests(), elapsed_ms = elapsed.as_millis() as u64, "traffic done");

    if let Some(admin) = &drill {
        admin.stop_faults().await.context("stopping the faults")?;
    }
    let after = sum_balances(&shared.api, &shared.users, currency, setup_concurrency).await.context("after the run");
    refresher.abort();
    let after = after?;
    let conservation = Conservation::check(before, after, &tally);
    let info = RunInfo {
        scenario: args.scenario.as_str(),
        users: args.users,
        connections: args.connections,
        currency,
        seed: args.seed,
        run_id,
        setup,
        elapsed,
        allow_errors: args.allow_errors,
        faults: args.faults.clone(),
    };
    if let (Some(recorder), Some(path)) = (&recorder, &args.record) {
        let lines = recorder.finish()?;
        tracing::info!(requests = lines, file = %path.display(), "run recorded");
    }
    Ok(Report::new(&info, &stats, &conservation))
}

/// Turns the server's random faults on for `--faults` (as the admin, whose session turns them off again).
async fn start_faults(args: &SimulateArgs) -> anyhow::Result<Option<admin::AdminSession>> {
    let (Some(rate), Some(login)) = (&args.faults, admin_login(args)) else { return Ok(None) };
    let http = reqwest::Client::builder().no_proxy().build().context("building the HTTP client")?;
    let session = admin::AdminSession::open(&http, args.url.trim_end_matches('/'), &login).await?;
    session.start_faults(rate, args.seed).await.context("--faults: turning the random faults on")?;
    tracing::info!(rate = %rate, seed = args.seed, "random faults on");
    Ok(Some(session))
}

fn admin_login(args: &SimulateArgs) -> Option<admin::AdminLogin> {
    let (email, password) = args.admin_email.clone().zip(args.admin_password.clone())?;
    Some(admin::AdminLogin { email, password })
}

/// Sends a recording again and prints what differed; fails if any answer's status did.
async fn replay_recording(args: &SimulateArgs, file: &std::path::Path) -> anyhow::Result<()> {
    let report = replay::replay(&args.url, file, admin_login(args)).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report).context("writing the report")?);
    } else {
        print!("{report}");
    }
    if report.mismatches > 0 {
        bail!("the replay diverged: {} answers differ from the recording", report.mismatches);
    }
    Ok(())
}

/// `work`, unless `stop` turns true first: then the run ends without traffic (and so without a report).
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        Ok(_) = stop.wait_for(|stopped| *stopped) => bail!("stopped during the setup, before any traffic"),
    }
}

/// Connection `index`'s share of `total` requests: an equal split, the first connections taking one more each
/// when it does not divide evenly. Fixed shares keep the traffic of each connection the same on every run.
fn share(total: u64, connections: u32, index: u32) -> u64 {
    let connections = u64::from(connections);
    total / connections + u64::from(u64::from(index) < total % connections)
}

/// The sum of the users' balances, in minor units.
async fn sum_balances(
    api: &Api,
    users: &[SimUser],
    currency: banksim_core::currency::Currency,
    concurrency: usize,
) -> anyhow::Result<i128> {
    stream::iter(users)
        .map(|user| api.balance(user, currency))
        .buffer_unordered(concurrency.max(1))
        .try_fold(0_i128, |sum, balance| async move { Ok(sum + i128::from(balance)) })
        .await
}

/// Refreshes every session before its access token expires, for as long as the run lasts (it is aborted at the
/// end). Runs shorter than two thirds of a token's life (ten minutes by default) never refresh. One refresh at a
/// time: they come once per token lifetime, and each is a cheap request.
async fn keep_sessions_fresh(shared: Arc<Shared>) {
    loop {
        let Some(due) = shared.users.iter().filter_map(|user| user.refresh_at().ok()).min() else { return };
        tokio::time::sleep_until(due.into()).await;
        // Refresh everything due within the next second in one pass, rather than one wake-up per user.
        let horizon = Instant::now() + Duration::from_secs(1);
        let mut failures = 0_usize;
        for user in &shared.users {
            if user.refresh_at().is_ok_and(|at| at <= horizon)
                && let Err(err) = shared.api.refresh(user, &shared.password).await
            {
                failures += 1;
                tracing::warn!(user = %user.email, error = format!("{err:#}"), "session could not be refreshed");
            }
        }
        if failures > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_shared_evenly_between_connections() {
        let shares: Vec<u64> = (0..4).map(|index| share(10, 4, index)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!((0..64).map(|index| share(300, 64, index)).sum::<u64>(), 300);
        assert_eq!((0..8).map(|index| share(3, 8, index)).collect::<Vec<_>>(), [1, 1, 1, 0, 0, 0, 0, 0]);
    }
}
