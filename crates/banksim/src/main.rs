//! The `banksim` command: serve the API (the default), migrate the database, create an admin, seed demo users,
//! simulate traffic against a running API.

use std::process::ExitCode;

use anyhow::Context;
use banksim_core::SystemClock;
use banksim_server::jobs::projector;
use banksim_server::service::users::{self, Registration};
use banksim_server::{AppState, Config, app, telemetry};
use banksim_store::Projection;
use clap::{Parser, Subcommand};
use secrecy::SecretString;

mod allocator;
mod console_runner;
mod events;
mod population;
mod simulate;

/// A banking simulation API: users, wallets in several currencies, exact money movement.
#[derive(Debug, Parser)]
#[command(name = "banksim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Administer users.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Create sample data: the demo users (--demo), or a reproducible population (--population N --seed S).
    Seed {
        /// Create the demo users sefa, kerem and admin (password `password123`). Refused when ENV=prod.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        population: population::PopulationArgs,
    },
    /// Check every ledger invariant of the configured database; exits non-zero, naming each violation, if one fails.
    Verify,
    /// Print the state hash of the configured database: SHA-256 over a canonical dump of its users, wallets and
    /// transactions (docs/simulation.md), as `GET /api/v1/admin/state-hash` answers it. With --json, the same JSON
    /// object as the route.
    Hash {
        /// Print `{"hash", "users", "wallets", "transactions"}` instead of the hash alone.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild every balance from the event log alone and compare it with the ledger; exits non-zero, naming each
    /// account that differs.
    Replay,
    /// Empty a projection (every one, unless --projection names one) and rebuild it from the whole event log. Safe
    /// while servers run: their projectors and this command never apply an event twice.
    Rebuild {
        /// Only this projection: `daily_statements` or `system_totals`.
        #[arg(long, value_parser = projection_named)]
        projection: Option<Projection>,
    },
    /// Drive a running API with simulated users and report throughput, latency and errors, then check that
    /// money was conserved.
    Simulate(Box<simulate::SimulateArgs>),
    /// Exit 0 when the server at --url is ready (`/readyz` answers `ok` or `degraded`), 1 otherwise: a container's health check
    /// that needs no curl in the image.
    Health {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Longest wait for the answer, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Read the event stream that the outbox relay publishes to NATS JetStream (`NATS_URL`, `NATS_STREAM`).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Copy the configured SQLite database to FILE, consistently, while servers keep running on it. (On
    /// PostgreSQL, use `pg_dump`.)
    Backup {
        /// Where to write the copy; it must not exist yet.
        #[arg(long)]
        to: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print each event of the stream as one JSON line, in order.
    Tail(events::TailArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin user.
    Create {
        /// Email of the new admin.
        #[arg(long)]
        email: String,
        /// Username of the new admin.
        #[arg(long)]
        username: String,
        /// Password of the new admin (8–128 characters). Prefer the BANKSIM_NEW_ADMIN_PASSWORD variable, which
        /// keeps it out of the shell history and the process list.
        #[arg(long, env = "BANKSIM_NEW_ADMIN_PASSWORD", hide_env_values = true)]
        password: SecretString,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A server's resident memory matters for as long as it runs; a command's only until it exits, and handing freed
    // memory back costs it page faults when it allocates again: 1.8 GB of them, 1.7 s of system time, in a
    // 100,000-user seeding.
    if matches!(cli.command, None | Some(Command::Serve)) {
        if let Err(err) = allocator::purge_freed_memory_periodically() {
            eprintln!("banksim: cannot start the allocator's purge thread: {err}");
            return ExitCode::FAILURE;
        }
        builder.on_thread_park(allocator::purge_now_and_then).thread_keep_alive(allocator::SPARE_THREAD_KEEP_ALIVE);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("banksim: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter runs its exports on this runtime.
    let telemetry = match runtime.block_on(async { telemetry::init(cli.config.log_format) }) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("banksim: configuration error: {err:#}");
            return ExitCode::from(2);
        }
    };
    // The simulator and the health check only talk HTTP: the server's settings are not their business.
    let needs_config = !matches!(cli.command, Some(Command::Simulate(_) | Command::Health { .. }));
    if needs_config && let Err(err) = cli.config.validate() {
        eprintln!("banksim: configuration error: {err}");
        return ExitCode::from(2);
    }
    let result = runtime.block_on(run(cli));
    // The spans still queued go out now, while the runtime that exports them is still there.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("banksim: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Health { url, timeout_secs } => health(&url, std::time::Duration::from_secs(timeout_secs)).await,
        Command::Backup { to } => backup(&cli.config, &to).await,
        Command::Events { command: EventsCommand::Tail(args) } => events::tail(&cli.config, &args).await,
        Command::Migrate => {
            let store = app::open_store(&cli.config).await?;
            println!("migrations applied ({})", store.backend().name());
            store.close().await;
            Ok(())
        }
        Command::Admin { command: AdminCommand::Create { email, username, password } } => {
            let state = tool_state(cli.config).await?;
            let registration = Registration::parse(
                Some(&username),
                Some(&email),
                Some(secrecy::ExposeSecret::expose_secret(&password)),
                Some("admin"),
            )
            .map_err(|e| anyhow::anyhow!("invalid admin: {}", users::describe(&e)))?;
            let operator = banksim_store::AuditContext {
                request_id: Some("banksim-admin-create".to_owned()),
                ..Default::default()
            };
            let admin = users::create(&state, registration, &operator)
                .await
                .map_err(|e| anyhow::anyhow!("creating the admin: {}", e.code().as_str()))?;
            println!("admin created: {} ({})", admin.id, admin.email);
            state.store.close().await;
            Ok(())
        }
        Command::Seed { demo: false, population: args } => {
            let users = args.population.context("nothing to seed: pass --demo or --population N")?;
            let state = tool_state(cli.config).await?;
            let seeded = population::seed(&state, &args, users).await;
            state.store.close().await;
            let seeded = seeded?;
            let instant = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            println!(
                "population ready: {} users, {} transactions from {} to {} (virtual clock at {}); users in {:.1} s, \
                 history in {:.1} s",
                seeded.users,
                seeded.transactions,
                instant(seeded.start),
                instant(seeded.until),
                instant(seeded.until),
                seeded.users_elapsed.as_secs_f64(),
                seeded.history_elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::Seed { demo: true, .. } => {
            let state = tool_state(cli.config).await?;
            let created = users::seed_demo(&state).await?;
            println!("demo users ready ({created} created): sefa, kerem, admin — password {}", users::DEMO_PASSWORD);
            state.store.close().await;
            Ok(())
        }
        Command::Verify => verify(cli.config).await,
        Command::Hash { json } => hash(cli.config, json).await,
        Command::Replay => replay(cli.config).await,
        Command::Rebuild { projection } => rebuild(cli.config, projection).await,
        Command::Simulate(args) => simulate::run(*args).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let address = std::net::SocketAddr::new(config.host, config.port);
    let state = app::build(config).await?;
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("PORT: cannot listen on {address}"))?;
    // Simulation mode's console runs `simulate` scenarios against this server, through the address it listens on.
    let state = if state.config.simulation_mode {
        let runner = console_runner::ConsoleRunner::new(listener.local_addr()?);
        state.with_scenario_runner(std::sync::Arc::new(runner))
    } else {
        state
    };
    app::serve(state, listener, app::shutdown_signal()).await
}

/// Checks the ledger and prints the report; an unsound ledger is an error (exit code 1).
async fn verify(config: Config) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    let report = store.verify_ledger().await?;
    store.close().await;
    println!(
        "checked {} accounts, {} transactions, {} postings ({})",
        report.accounts,
        report.transactions,
        report.postings,
        store.backend().name()
    );
    if report.is_sound() {
        println!("ledger ok: every invariant holds");
        return Ok(());
    }
    for violation in &report.violations {
        println!("VIOLATION {violation}");
    }
    anyhow::bail!("{} ledger invariant violation(s)", report.violations.len())
}

/// Prints the state hash of the configured database (the hash alone, or the route's JSON object with --json).
async fn hash(config: Config, json: bool) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    let hashed = banksim_store::state_hash(store.as_ref()).await;
    store.close().await;
    let hashed = hashed?;
    if json {
        let object = serde_json::json!({
            "hash": hashed.hash,
            "users": hashed.users,
            "wallets": hashed.wallets,
            "transactions": hashed.transactions,
        });
        println!("{object}");
    } else {
        println!("{}", hashed.hash);
    }
    Ok(())
}

/// Events read per page when replaying.
const REPLAY_PAGE: u32 = 1_000;

/// Rebuilds balances from the events into memory (the scratch area) and compares them with the accounts.
async fn replay(config: Config) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(after, REPLAY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        events.extend(page);
    }
    let replayed =
        banksim_store::replay_balances(&events).map_err(|e| anyhow::anyhow!("the event log is unreadable: {e}"))?;
    let stored = store.account_balances().await?;
    store.close().await;
    let mut differences = Vec::new();
    for (account, balance) in &stored {
        let rebuilt = replayed.get(account).copied().unwrap_or(0);
        if rebuilt != *balance {
            differences.push(format!("account {account}: ledger {balance}, events {rebuilt}"));
        }
    }
    for account in replayed.keys().filter(|id| !stored.iter().any(|(a, _)| a == *id)) {
        differences.push(format!("account {account}: in the events, not in the ledger"));
    }
    println!("replayed {} events onto {} accounts", events.len(), replayed.len());
    if differences.is_empty() {
        println!("replay ok: the event log rebuilds every balance");
        return Ok(());
    }
    for difference in &differences {
        println!("DIFFERENCE {difference}");
    }
    anyhow::bail!("{} balance(s) differ from the event log", differences.len())
}

fn projection_named(name: &str) -> Result<Projection, String> {
    let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
    Projection::from_name(name).ok_or_else(|| format!("expected one of: {}", names.join(", ")))
}

/// Resets each projection and applies the log up to its head as it was then (servers' projectors may help).
async fn rebuild(config: Config, only: Option<Projection>) -> anyhow::Result<()> {
    let state = tool_state(config).await?;
    for projection in only.map_or(Projection::ALL.to_vec(), |p| vec![p]) {
        state.store.reset_projection(projection, state.clock.now()).await?;
        let target = state.store.projection_status(projection).await?.head;
        let mut applied = 0;
        while state.store.projection_status(projection).await?.checkpoint < target {
            let delivery = projector::step(&state, &[projection]).await?;
            applied += delivery.applied;
            if delivery.applied == 0 {
                // A server's projector holds it: let it go on.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        println!("{projection}: rebuilt from the event log up to event {target} ({applied} events applied here)");
    }
    state.store.close().await;
    Ok(())
}

/// The state for one-shot commands: the migrated store, without starting the server.
async fn tool_state(config: Config) -> anyhow::Result<AppState> {
    let store = app::open_store(&config).await?;
    AppState::new(config, store, std::sync::Arc::new(SystemClock))
}

/// Asks `/readyz` of the server at `url`; ready means 200 with `"status": "ok"` or `"degraded"` (an optional
/// dependency, the replica, is down or lagging: the instance serves all the same).
async fn health(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let answer = client.get(format!("{}/readyz", url.trim_end_matches('/'))).send().await.context("asking /readyz")?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    // `degraded` (an optional dependency such as Redis or the replica is down) still serves every request.
    let ready = status.is_success() && (body["status"] == "ok" || body["status"] == "degraded");
    anyhow::ensure!(ready, "not ready: {status} {body}");
    println!("ready");
    Ok(())
}

/// Copies the configured SQLite database to `to` with `VACUUM INTO`: one read transaction, so the copy is the
/// database as it was at one instant, while writers go on. The copy holds password hashes: it is made `0600`.
async fn backup(config: &Config, to: &std::path::Path) -> anyhow::Result<()> {
    let url = config.database_url();
    anyhow::ensure!(
        url.starts_with("sqlite:"),
        "backup copies the embedded SQLite database; for PostgreSQL use pg_dump (e.g. pg_dump --format=custom \
         --file=banksim.dump \"$DATABASE_URL\") and pg_restore to bring it back"
    );
    let store = banksim_store::sqlite::SqliteStore::connect(&url, banksim_store::ConnectOptions::default()).await?;
    store.backup_to(to).await.with_context(|| format!("backing up to {}", to.display()))?;
    banksim_store::Store::close(&store).await;
    println!("backed up to {}", to.display());
    Ok(())
}
