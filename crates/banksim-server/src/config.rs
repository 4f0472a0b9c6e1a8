//! The one configuration struct, read from environment variables (or the matching command-line flags) and
//! validated before anything starts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banksim_core::currency::CurrencySet;
use clap::{Args, ValueEnum};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

/// Shortest JWT secret accepted, in bytes: HS256 needs a key at least as long as its output.
pub const JWT_SECRET_BYTES_MIN: usize = 32;
/// File in the data folder that keeps the development JWT secret across restarts.
const DEV_SECRET_FILE: &str = "jwt-secret";

/// Where banksim runs: development favours convenience, production refuses unsafe settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local development: a JWT secret is generated when missing, demo data may be seeded.
    Dev,
    /// Production: a strong `JWT_SECRET` is required, demo seeding is refused.
    Prod,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// Every setting of banksim. Each is read from the environment variable named in its `env`, or from its flag.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", value_name = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// TCP port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", value_name = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Database URL: `postgres://…` or `sqlite:path`. Default: the embedded SQLite file `<DATA_DIR>/banksim.db`.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Older name of `DATABASE_URL`, read when that one is unset.
    #[arg(long, env = "DB_URL", value_name = "DB_URL", hide = true)]
    pub db_url: Option<SecretString>,

    /// Most database connections per instance.
    #[arg(long, env = "DATABASE_POOL_SIZE", value_name = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: u32,

    /// A streaming replica of the PostgreSQL primary (`postgres://…`) for reads that may lag a little: history,
    /// balance at a time, statements, audit and event listings, the admin's user list. Unset: every read goes to
    /// the primary.
    #[arg(long, env = "DATABASE_REPLICA_URL", value_name = "DATABASE_REPLICA_URL", hide_env_values = true)]
    pub database_replica_url: Option<SecretString>,

    /// How long a read may wait for the replica to replay its caller's last write before it goes to the primary,
    /// in milliseconds (default 50; 0: never wait).
    #[arg(long, env = "REPLICA_WAIT_MS", value_name = "REPLICA_WAIT_MS", default_value_t = 50)]
    pub replica_wait_ms: u64,

    /// How far behind the primary the replica may fall, in milliseconds, before reads skip it until it catches up
    /// (default 1000).
    #[arg(long, env = "REPLICA_MAX_LAG_MS", value_name = "REPLICA_MAX_LAG_MS", default_value_t = 1_000)]
    pub replica_max_lag_ms: u64,

    /// How often the replica's replay position and lag are read when no read is waiting for it, in milliseconds
    /// (default 100; a read that waits asks at once).
    #[arg(long, env = "REPLICA_POLL_INTERVAL_MS", value_name = "REPLICA_POLL_INTERVAL_MS", default_value_t = 100)]
    pub replica_poll_interval_ms: u64,

    /// Folder for the embedded database and the development JWT secret.
    #[arg(long, env = "DATA_DIR", value_name = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `dev` or `prod`.
    #[arg(long = "env", env = "ENV", value_name = "ENV", value_enum, default_value = "dev")]
    pub environment: Environment,

    /// HS256 signing key for access tokens, at least 32 bytes. Required in prod; in dev one is generated once and
    /// kept in the data folder.
    #[arg(long, env = "JWT_SECRET", value_name = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// `iss` claim of access tokens.
    #[arg(long, env = "JWT_ISSUER", value_name = "JWT_ISSUER", default_value = "banksim")]
    pub jwt_issuer: String,

    /// `aud` claim of access tokens.
    #[arg(long, env = "JWT_AUDIENCE", value_name = "JWT_AUDIENCE", default_value = "banksim-api")]
    pub jwt_audience: String,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", value_name = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u32,

    /// Lifetime of a refresh token, in seconds (default 7 days).
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", value_name = "REFRESH_TOKEN_TTL_SECS", default_value_t = 604_800)]
    pub refresh_token_ttl_secs: u32,

    /// Browser origins allowed by CORS, comma-separated (`https://app.example.com,http://localhost:3000`), or
    /// `*` for any. Empty: no cross-origin access.
    #[arg(long, env = "ALLOWED_ORIGINS", value_name = "ALLOWED_ORIGINS", default_value = "", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Email of the first admin, created at start when no active admin exists (with `BANKSIM_ADMIN_PASSWORD`).
    #[arg(long, env = "BANKSIM_ADMIN_EMAIL", value_name = "BANKSIM_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of that first admin.
    #[arg(long, env = "BANKSIM_ADMIN_PASSWORD", value_name = "BANKSIM_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<SecretString>,

    /// Username of that first admin.
    #[arg(long, env = "BANKSIM_ADMIN_USERNAME", value_name = "BANKSIM_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT_BYTES", value_name = "BODY_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub body_limit_bytes: usize,

    /// Longest a request may take before it is answered 503, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", value_name = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u32,

    /// How long a user's active state and role are cached when checking access tokens, in milliseconds. Bounds
    /// how long a deactivated user's token keeps working on other instances.
    #[arg(long, env = "USER_CACHE_TTL_MS", value_name = "USER_CACHE_TTL_MS", default_value_t = 2_000)]
    pub user_cache_ttl_ms: u64,

    /// Argon2id memory cost, in KiB (OWASP: 19456).
    #[arg(long, env = "ARGON2_MEMORY_KIB", value_name = "ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations (OWASP: 2).
    #[arg(long, env = "ARGON2_ITERATIONS", value_name = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Requests per minute that one client IP may make to the auth routes (register, login, refresh, logout,
    /// together). 0 turns the limit off (for load tests only).
    #[arg(long, env = "AUTH_RATE_LIMIT_PER_MINUTE", value_name = "AUTH_RATE_LIMIT_PER_MINUTE", default_value_t = 5)]
    pub auth_rate_limit_per_minute: u32,

    /// Requests per minute that one user may make to the money routes (`POST /api/v1/transactions/…` and
    /// creating a schedule), counted by the user of the access token. 0 (the default) turns the limit off.
    #[arg(long, env = "MONEY_RATE_LIMIT_PER_MINUTE", value_name = "MONEY_RATE_LIMIT_PER_MINUTE", default_value_t = 0)]
    pub money_rate_limit_per_minute: u32,

    /// Requests per minute that one user may make to the reads (`GET /api/v1/…` but the service routes), counted
    /// by the user of the access token. 0 (the default) turns the limit off.
    #[arg(long, env = "READ_RATE_LIMIT_PER_MINUTE", value_name = "READ_RATE_LIMIT_PER_MINUTE", default_value_t = 0)]
    pub read_rate_limit_per_minute: u32,

    /// Redis (`redis://[:password@]host:port[/db]`), optional: with it, the instances share their rate limits and
    /// tell each other of user changes at once. Without it (the default) every instance counts and caches alone.
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// Longest a Redis call may take before the in-process fallback decides instead, in milliseconds (default
    /// 100). Also bounds connecting.
    #[arg(long, env = "REDIS_TIMEOUT_MS", value_name = "REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,

    /// Proxies whose `X-Forwarded-For` header names the real client: comma-separated addresses or CIDR ranges
    /// (`10.0.0.0/8, 127.0.0.1, ::1/128`). Requests from any other peer are identified by the peer's own address.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Currencies users may hold, comma-separated ISO 4217 codes.
    #[arg(
        long,
        env = "ENABLED_CURRENCIES",
        value_name = "ENABLED_CURRENCIES",
        default_value = "USD,EUR,GBP,JPY,CAD,AUD"
    )]
    pub enabled_currencies: CurrencySet,

    /// Largest amount of one transaction, in major units of its currency (inclusive).
    #[arg(long, env = "AMOUNT_MAX", value_name = "AMOUNT_MAX", default_value_t = 1_000_000)]
    pub amount_max: u64,

    /// Money movements waiting for a writer before new ones are refused with 503 (back-pressure).
    #[arg(long, env = "WRITE_QUEUE_CAPACITY", value_name = "WRITE_QUEUE_CAPACITY", default_value_t = 4_096)]
    pub write_queue_capacity: usize,

    /// Writer tasks committing batches of movements (SQLite always uses one). One is fastest on a small machine:
    /// batches grow instead of competing for the same rows (see docs/benchmarks.md).
    #[arg(long, env = "WRITE_WORKERS", value_name = "WRITE_WORKERS", default_value_t = 1)]
    pub write_workers: usize,

    /// Most movements committed in one database transaction.
    #[arg(long, env = "WRITE_BATCH_MAX", value_name = "WRITE_BATCH_MAX", default_value_t = 256)]
    pub write_batch_max: usize,

    /// Most items of one `POST /transactions/batch` (at most 8190).
    #[arg(long, env = "BATCH_MAX", value_name = "BATCH_MAX", default_value_t = 1_000)]
    pub batch_max: usize,

    /// How far back, in days, an admin may date a movement with `effective_at`.
    #[arg(long, env = "EFFECTIVE_AT_MAX_AGE_DAYS", value_name = "EFFECTIVE_AT_MAX_AGE_DAYS", default_value_t = 30)]
    pub effective_at_max_age_days: u32,

    /// Whether this instance runs the scheduler (any number of instances may: they never run an occurrence twice).
    #[arg(long, env = "SCHEDULER_ENABLED", value_name = "SCHEDULER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler_enabled: bool,

    /// How often the scheduler looks for due schedules, in milliseconds.
    #[arg(
        long,
        env = "SCHEDULER_POLL_INTERVAL_MS",
        value_name = "SCHEDULER_POLL_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub scheduler_poll_interval_ms: u64,

    /// How long a claimed schedule stays reserved for the instance that claimed it, in seconds; if that instance
    /// dies, another takes the schedule over after this.
    #[arg(long, env = "SCHEDULER_LEASE_SECS", value_name = "SCHEDULER_LEASE_SECS", default_value_t = 30)]
    pub scheduler_lease_secs: u64,

    /// First retry delay of a refused scheduled occurrence, in milliseconds; each next retry waits twice as long
    /// (capped at 60 times this), up to the attempt limit.
    #[arg(long, env = "SCHEDULER_RETRY_BASE_MS", value_name = "SCHEDULER_RETRY_BASE_MS", default_value_t = 1_000)]
    pub scheduler_retry_base_ms: u64,

    /// Most schedules claimed per poll.
    #[arg(long, env = "SCHEDULER_BATCH_MAX", value_name = "SCHEDULER_BATCH_MAX", default_value_t = 100)]
    pub scheduler_batch_max: u32,

    /// Whether this instance runs the projectors (any number of instances may: one applies at a time, and no
    /// event is applied twice).
    #[arg(long, env = "PROJECTOR_ENABLED", value_name = "PROJECTOR_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub projector_enabled: bool,

    /// How often an idle projector looks for new events, in milliseconds (default 200).
    #[arg(long, env = "PROJECTOR_POLL_INTERVAL_MS", value_name = "PROJECTOR_POLL_INTERVAL_MS", default_value_t = 200)]
    pub projector_poll_interval_ms: u64,

    /// Most events a projector applies in one database transaction (default 500).
    #[arg(long, env = "PROJECTOR_BATCH_MAX", value_name = "PROJECTOR_BATCH_MAX", default_value_t = 500)]
    pub projector_batch_max: u32,

    /// NATS server (`nats://host:4222`), optional: with it, an outbox relay publishes every event of the log, in
    /// sequence order, to the JetStream stream `NATS_STREAM` (one instance at a time; see README, "Events out").
    #[arg(long, env = "NATS_URL", value_name = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<SecretString>,

    /// The JetStream stream the relay publishes to, created if missing (default `BANKSIM_EVENTS`).
    #[arg(long, env = "NATS_STREAM", value_name = "NATS_STREAM", default_value = "BANKSIM_EVENTS")]
    pub nats_stream: String,

    /// Most events the relay publishes before it waits for their acknowledgements and records its position
    /// (default 500).
    #[arg(long, env = "RELAY_BATCH_MAX", value_name = "RELAY_BATCH_MAX", default_value_t = 500)]
    pub relay_batch_max: u32,

    /// How often an idle relay looks for new events, and how long it waits after a failure, in milliseconds
    /// (default 200).
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", value_name = "RELAY_POLL_INTERVAL_MS", default_value_t = 200)]
    pub relay_poll_interval_ms: u64,

    /// How long the instance that publishes keeps the relay after its last round, in milliseconds: another
    /// instance takes over after that if it dies (default 10000).
    #[arg(long, env = "RELAY_LEASE_MS", value_name = "RELAY_LEASE_MS", default_value_t = 10_000)]
    pub relay_lease_ms: u64,

    /// `json` (default) or `text`.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Whether current balances are served from the in-process cache (default true; see README, "Balance cache").
    #[arg(long, env = "BALANCE_CACHE", value_name = "BALANCE_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub balance_cache: bool,

    /// Whether this instance takes the balance read lease when no other instance writes (PostgreSQL; default true;
    /// see README, "Balance cache"): its cached balance reads then skip the change bus's round trip, and another
    /// instance's first write after a quiet spell waits for the lease to run out (at most half a second).
    #[arg(long, env = "BALANCE_LEASE", value_name = "BALANCE_LEASE", default_value_t = true, action = clap::ArgAction::Set)]
    pub balance_lease: bool,

    /// Consecutive failures of a dependency (database, replica, Redis) that open its circuit breaker (default 5).
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", value_name = "BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: u32,

    /// How long an open breaker refuses calls before letting a trial through, in milliseconds (default 2000: a
    /// dependency that is back serves again within about that long, and a trial is one call).
    #[arg(long, env = "BREAKER_RESET_TIMEOUT_MS", value_name = "BREAKER_RESET_TIMEOUT_MS", default_value_t = 2_000)]
    pub breaker_reset_timeout_ms: u64,

    /// Trial calls a half-open breaker lets through at once (default 1).
    #[arg(long, env = "BREAKER_HALF_OPEN_MAX_CALLS", value_name = "BREAKER_HALF_OPEN_MAX_CALLS", default_value_t = 1)]
    pub breaker_half_open_max_calls: u32,

    /// Whether the demo routes `/api/v1/test/circuit-breaker/{success,failure,timeout}` exist (default true).
    #[arg(long, env = "TEST_BREAKER_ROUTES", value_name = "TEST_BREAKER_ROUTES", default_value_t = true, action = clap::ArgAction::Set)]
    pub test_breaker_routes: bool,

    /// Failures that open the demo routes' breaker (default 2).
    #[arg(
        long,
        env = "TEST_BREAKER_FAILURE_THRESHOLD",
        value_name = "TEST_BREAKER_FAILURE_THRESHOLD",
        default_value_t = 2
    )]
    pub test_breaker_failure_threshold: u32,

    /// How long the demo routes' breaker stays open, in milliseconds (default 10000).
    #[arg(
        long,
        env = "TEST_BREAKER_RESET_TIMEOUT_MS",
        value_name = "TEST_BREAKER_RESET_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub test_breaker_reset_timeout_ms: u64,

    /// How long the demo routes' breaker lets a call run before cutting it off with 504, in milliseconds (default
    /// 2000; the `timeout` route's call takes twice as long).
    #[arg(
        long,
        env = "TEST_BREAKER_CALL_TIMEOUT_MS",
        value_name = "TEST_BREAKER_CALL_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub test_breaker_call_timeout_ms: u64,

    /// When set, `/metrics`, `/metrics/basic` and the circuit-breaker report require `Authorization: Bearer
    /// <token>` (401 otherwise). Unset (the default): open, as suits development.
    #[arg(long, env = "METRICS_TOKEN", value_name = "METRICS_TOKEN")]
    pub metrics_token: Option<SecretString>,

    /// When set (`127.0.0.1:9100`, say), the metrics routes are served on this address instead of the public one
    /// (where they answer 404). Unset (the default): on the public listener.
    #[arg(long, env = "METRICS_ADDR", value_name = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Simulation mode (default false): admins may read, set and advance a virtual clock shared by every instance
    /// on the database (`/api/v1/admin/clock`) and read the state hash (`/api/v1/admin/state-hash`). Refused with
    /// `ENV=prod`. Off: those routes answer 404 and the clock is the wall clock.
    #[arg(long, env = "SIMULATION_MODE", value_name = "SIMULATION_MODE", default_value_t = false, action = clap::ArgAction::Set)]
    pub simulation_mode: bool,

    /// In simulation mode, where a database whose clock was never moved starts its virtual clock (an RFC 3339
    /// instant, `2030-01-01T00:00:00Z`), before the first admin is created: every row, the admin's included, is
    /// then stamped on the virtual clock, so two fresh databases started alike hash alike. Ignored once the
    /// database's clock is virtual. Unset (the default): the clock is the wall clock until an admin moves it.
    #[arg(long, env = "SIMULATION_START", value_name = "SIMULATION_START", value_parser = banksim_core::clock::parse_instant)]
    pub simulation_start: Option<chrono::DateTime<chrono::Utc>>,
}

/// A trusted proxy: a CIDR range, or one address (a range of one).
fn parse_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range such as 10.0.0.0/8"))
}

/// Shortest accepted `METRICS_TOKEN`.
pub const METRICS_TOKEN_CHARS_MIN: usize = 16;

/// Most items `BATCH_MAX` may allow (as many as a TigerBeetle request carries): one batch is one commit, and its
/// body and its commit stay bounded.
pub const BATCH_MAX_LIMIT: usize = 8_190;

/// A setting that stops the start, naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self { variable, message: message.into() }
    }
}

impl Config {
    /// The defaults, as if no variable were set: the base of tests and tools.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        // Parsing an empty command line can only fail on a broken default, which the unit tests catch.
        let parsed = <Defaults as clap::Parser>::try_parse_from(["banksim"]);
        parsed.map(|d| d.config).unwrap_or_else(|e| panic!("built-in configuration defaults are invalid: {e}"))
    }

    /// The database to use: `DATABASE_URL`, else `DB_URL`, else the embedded SQLite file in the data folder.
    pub fn database_url(&self) -> String {
        [&self.database_url, &self.db_url]
            .into_iter()
            .flatten()
            .map(|url| url.expose_secret().to_owned())
            .find(|url| !url.is_empty())
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("banksim.db").display()))
    }

    /// The replica to read from, if one is configured (`DATABASE_REPLICA_URL`, when not empty).
    pub fn database_replica_url(&self) -> Option<String> {
        self.database_replica_url.as_ref().map(|url| url.expose_secret().to_owned()).filter(|url| !url.is_empty())
    }

    /// Lifetime of an access token.
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs.into())
    }

    /// Lifetime of a refresh token.
    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs.into())
    }

    /// Longest a request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.into())
    }

    /// Checks the settings that clap cannot check alone. Run before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database_url();
        if !["postgres://", "postgresql://", "sqlite:"].iter().any(|scheme| url.starts_with(scheme)) {
            let variable = if self.database_url.is_some() { "DATABASE_URL" } else { "DB_URL" };
            return Err(ConfigError::new(variable, "must start with postgres://, postgresql:// or sqlite:"));
        }
        if let Some(replica) = self.database_replica_url() {
            let postgres = |url: &str| ["postgres://", "postgresql://"].iter().any(|scheme| url.starts_with(scheme));
            if !postgres(&replica) {
                return Err(ConfigError::new("DATABASE_REPLICA_URL", "must start with postgres:// or postgresql://"));
            }
            if !postgres(&url) {
                return Err(ConfigError::new(
                    "DATABASE_REPLICA_URL",
                    "needs a PostgreSQL primary (DATABASE_URL=postgres://…): SQLite has no replicas",
                ));
            }
        }
        if self.environment == Environment::Prod && self.simulation_mode {
            return Err(ConfigError::new(
                "SIMULATION_MODE",
                "must not be true when ENV=prod: simulation mode lets admins move the clock of every instance \
                 (schedules run, holds expire, timestamps jump); unset it, or run with ENV=dev",
            ));
        }
        if self.simulation_start.is_some() && !self.simulation_mode {
            return Err(ConfigError::new(
                "SIMULATION_START",
                "needs SIMULATION_MODE=true: only a simulation has a virtual clock to start",
            ));
        }
        if self.environment == Environment::Prod {
            let secret = self.jwt_secret.as_ref().map(|s| s.expose_secret().len()).unwrap_or(0);
            if secret < JWT_SECRET_BYTES_MIN {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    format!("must be set to at least {JWT_SECRET_BYTES_MIN} bytes when ENV=prod"),
                ));
            }
        } else if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().len() < JWT_SECRET_BYTES_MIN
        {
            return Err(ConfigError::new("JWT_SECRET", format!("must be at least {JWT_SECRET_BYTES_MIN} bytes")));
        }
        for origin in self.allowed_origins.iter().filter(|o| !o.is_empty() && *o != "*") {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(ConfigError::new(
                    "ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        let positive = [
            ("ACCESS_TOKEN_TTL_SECS", u64::from(self.access_token_ttl_secs)),
            ("REFRESH_TOKEN_TTL_SECS", u64::from(self.refresh_token_ttl_secs)),
            ("REQUEST_TIMEOUT_SECS", u64::from(self.request_timeout_secs)),
            ("DATABASE_POOL_SIZE", u64::from(self.database_pool_size)),
            ("BODY_LIMIT_BYTES", self.body_limit_bytes as u64),
            ("AMOUNT_MAX", self.amount_max),
            ("WRITE_QUEUE_CAPACITY", self.write_queue_capacity as u64),
            ("WRITE_WORKERS", self.write_workers as u64),
            ("WRITE_BATCH_MAX", self.write_batch_max as u64),
            ("BATCH_MAX", self.batch_max as u64),
            ("EFFECTIVE_AT_MAX_AGE_DAYS", u64::from(self.effective_at_max_age_days)),
            ("SCHEDULER_POLL_INTERVAL_MS", self.scheduler_poll_interval_ms),
            ("SCHEDULER_LEASE_SECS", self.scheduler_lease_secs),
            ("SCHEDULER_BATCH_MAX", u64::from(self.scheduler_batch_max)),
            ("PROJECTOR_POLL_INTERVAL_MS", self.projector_poll_interval_ms),
            ("PROJECTOR_BATCH_MAX", u64::from(self.projector_batch_max)),
            ("RELAY_BATCH_MAX", u64::from(self.relay_batch_max)),
            ("RELAY_POLL_INTERVAL_MS", self.relay_poll_interval_ms),
            ("RELAY_LEASE_MS", self.relay_lease_ms),
            ("BREAKER_FAILURE_THRESHOLD", u64::from(self.breaker_failure_threshold)),
            ("BREAKER_RESET_TIMEOUT_MS", self.breaker_reset_timeout_ms),
            ("BREAKER_HALF_OPEN_MAX_CALLS", u64::from(self.breaker_half_open_max_calls)),
            ("TEST_BREAKER_FAILURE_THRESHOLD", u64::from(self.test_breaker_failure_threshold)),
            ("TEST_BREAKER_CALL_TIMEOUT_MS", self.test_breaker_call_timeout_ms),
            ("REDIS_TIMEOUT_MS", self.redis_timeout_ms),
            ("REPLICA_MAX_LAG_MS", self.replica_max_lag_ms),
            ("REPLICA_POLL_INTERVAL_MS", self.replica_poll_interval_ms),
        ];
        if let Some((variable, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::new(variable, "must be greater than 0"));
        }
        if self.batch_max > BATCH_MAX_LIMIT {
            return Err(ConfigError::new("BATCH_MAX", format!("must be at most {BATCH_MAX_LIMIT}")));
        }
        if let Some(url) = self.redis_url() {
            // The error's detail names what is wrong with the URL, never the URL itself (it may hold a password).
            ::redis::Client::open(url).map_err(|e| {
                let reason = e.detail().unwrap_or(e.category()).to_owned();
                ConfigError::new("REDIS_URL", format!("{reason} (expected redis://[:password@]host:port[/db])"))
            })?;
        }
        if let Some(url) = self.nats_url() {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|_| ConfigError::new("NATS_URL", "expected nats://host:port (or host:port)"))?;
        }
        let stream_name_ok =
            |name: &str| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !stream_name_ok(&self.nats_stream) {
            return Err(ConfigError::new("NATS_STREAM", "letters, digits, '_' and '-' only"));
        }
        if argon2::Params::new(self.argon2_memory_kib, self.argon2_iterations, 1, None).is_err() {
            return Err(ConfigError::new("ARGON2_MEMORY_KIB", "Argon2 parameters out of range (memory ≥ 8 KiB)"));
        }
        if let Some(token) = &self.metrics_token
            && token.expose_secret().len() < METRICS_TOKEN_CHARS_MIN
        {
            return Err(ConfigError::new(
                "METRICS_TOKEN",
                format!(
                    "must be at least {METRICS_TOKEN_CHARS_MIN} characters (a random string; unset it to leave metrics open)"
                ),
            ));
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) => Err(ConfigError::new("BANKSIM_ADMIN_PASSWORD", "must be set with BANKSIM_ADMIN_EMAIL")),
            (None, Some(_)) => Err(ConfigError::new("BANKSIM_ADMIN_EMAIL", "must be set with BANKSIM_ADMIN_PASSWORD")),
            _ => Ok(()),
        }
    }

    /// The NATS URL, when one is set (an empty `NATS_URL` counts as unset).
    pub fn nats_url(&self) -> Option<&str> {
        self.nats_url.as_ref().map(|url| url.expose_secret()).filter(|url| !url.is_empty())
    }

    /// The Redis URL, when one is set (an empty `REDIS_URL` counts as unset).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_ref().map(|url| url.expose_secret()).filter(|url| !url.is_empty())
    }

    /// Longest a Redis call may take.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// How the breakers of the real dependencies trip and recover.
    pub fn breaker_settings(&self) -> crate::resilience::BreakerSettings {
        crate::resilience::BreakerSettings {
            failure_threshold: self.breaker_failure_threshold,
            reset_timeout: std::time::Duration::from_millis(self.breaker_reset_timeout_ms),
            half_open_max_calls: self.breaker_half_open_max_calls,
        }
    }

    /// The JWT signing key: `JWT_SECRET`, or in dev the secret kept in the data folder (generated on first use).
    pub fn jwt_secret_bytes(&self) -> Result<Vec<u8>, ConfigError> {
        if let Some(secret) = &self.jwt_secret {
            return Ok(secret.expose_secret().as_bytes().to_vec());
        }
        if self.environment == Environment::Prod {
            return Err(ConfigError::new("JWT_SECRET", "must be set when ENV=prod"));
        }
        dev_secret(&self.data_dir)
            .map_err(|e| ConfigError::new("DATA_DIR", format!("cannot keep the dev JWT secret there: {e}")))
    }
}

/// Reads the development secret from the data folder, creating it (readable by the owner only) on first use.
fn dev_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = data_dir.join(DEV_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(hex) if hex.trim().len() >= JWT_SECRET_BYTES_MIN * 2 => return Ok(hex.trim().as_bytes().to_vec()),
        Ok(_) => tracing::warn!(path = %path.display(), "dev JWT secret too short; generating a new one"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The data folder holds this secret and the embedded database: its owner's only.
    let mut folder = std::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
    folder.create(data_dir)?;
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &hex)?;
    Ok(hex.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::defaults()
    }

    #[test]
    fn defaults_are_valid_and_use_the_embedded_database() {
        let config = config();
        config.validate().expect("defaults validate");
        assert_eq!(config.port, 8080);
        assert_eq!(config.database_url(), "sqlite:./data/banksim.db");
    }

    #[test]
    fn db_url_is_read_when_database_url_is_unset() {
        let config = Config { db_url: Some("postgres://db/x".into()), ..config() };
        assert_eq!(config.database_url(), "postgres://db/x");
        let both = Config { database_url: Some("postgres://a/x".into()), ..config };
        assert_eq!(both.database_url(), "postgres://a/x");
    }

    #[test]
    fn prod_needs_a_strong_jwt_secret() {
        let prod = Config { environment: Environment::Prod, ..config() };
        assert_eq!(prod.validate().expect_err("no secret").variable, "JWT_SECRET");
        let weak = Config { jwt_secret: Some("short".into()), ..prod.clone() };
        assert_eq!(weak.validate().expect_err("weak").variable, "JWT_SECRET");
        let strong = Config { jwt_secret: Some("x".repeat(32).into()), ..prod };
        strong.validate().expect("strong secret");
    }

    #[test]
    fn simulation_mode_is_off_by_default_and_refused_in_prod() {
        assert!(!config().simulation_mode);
        Config { simulation_mode: true, ..config() }.validate().expect("simulation mode in dev");
        let prod = Config { environment: Environment::Prod, jwt_secret: Some("x".repeat(32).into()), ..config() };
        prod.validate().expect("prod without simulation mode");
        let refused = Config { simulation_mode: true, ..prod }.validate().expect_err("simulation mode in prod");
        assert_eq!(refused.variable, "SIMULATION_MODE");
        assert!(refused.to_string().contains("ENV=prod"), "{refused}");
        let start = banksim_core::clock::parse_instant("2030-01-01T00:00:00Z").ok();
        Config { simulation_mode: true, simulation_start: start, ..config() }.validate().expect("a start instant");
        let alone = Config { simulation_start: start, ..config() }.validate().expect_err("a start without the mode");
        assert_eq!(alone.variable, "SIMULATION_START");
    }

    #[test]
    fn wrong_values_name_their_variable() {
        let bad_url = Config { database_url: Some("mysql://x".into()), ..config() };
        assert_eq!(bad_url.validate().expect_err("url").variable, "DATABASE_URL");
        let bad_origin = Config { allowed_origins: vec!["example.com".into()], ..config() };
        assert_eq!(bad_origin.validate().expect_err("origin").variable, "ALLOWED_ORIGINS");
        let zero_ttl = Config { access_token_ttl_secs: 0, ..config() };
        assert_eq!(zero_ttl.validate().expect_err("ttl").variable, "ACCESS_TOKEN_TTL_SECS");
        let half_admin = Config { admin_email: Some("a@b.co".into()), ..config() };
        assert_eq!(half_admin.validate().expect_err("admin").variable, "BANKSIM_ADMIN_PASSWORD");
    }

    #[test]
    fn a_replica_must_be_postgresql_beside_a_postgresql_primary() {
        let primary = Config { database_url: Some("postgres://db/bank".into()), ..config() };
        let replica = Config { database_replica_url: Some("postgres://replica/bank".into()), ..primary.clone() };
        replica.validate().expect("a PostgreSQL replica of a PostgreSQL primary");
        assert_eq!(replica.database_replica_url().as_deref(), Some("postgres://replica/bank"));
        let empty = Config { database_replica_url: Some("".into()), ..primary.clone() };
        assert_eq!(empty.database_replica_url(), None, "empty means unset");
        let sqlite_replica = Config { database_replica_url: Some("sqlite:x.db".into()), ..primary };
        assert_eq!(sqlite_replica.validate().expect_err("sqlite replica").variable, "DATABASE_REPLICA_URL");
        let sqlite_primary = Config { database_replica_url: Some("postgres://replica/bank".into()), ..config() };
        assert_eq!(sqlite_primary.validate().expect_err("sqlite primary").variable, "DATABASE_REPLICA_URL");
    }

    #[test]
    fn the_dev_secret_is_generated_once_and_kept() {
        let folder = tempfile::tempdir().expect("tempdir");
        let config = Config { data_dir: folder.path().to_path_buf(), ..config() };
        let first = config.jwt_secret_bytes().expect("secret");
        assert!(first.len() >= JWT_SECRET_BYTES_MIN);
        assert_eq!(config.jwt_secret_bytes().expect("secret"), first);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config {
            jwt_secret: Some("super-secret-value-that-is-long-enough".into()),
            database_url: Some("postgres://app:hunter2@db/bank".into()),
            database_replica_url: Some("postgres://app:hunter3@replica/bank".into()),
            ..config()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret") && !debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
    }

    #[test]
    fn trusted_proxies_take_cidr_ranges_and_addresses() {
        #[derive(clap::Parser)]
        struct Parsed {
            #[command(flatten)]
            config: Config,
        }
        let parse = |value: &str| {
            <Parsed as clap::Parser>::try_parse_from(["banksim", "--trusted-proxies", value]).map(|p| p.config)
        };
        let config = parse("10.0.0.0/8, 127.0.0.1,::1/128").expect("ranges and addresses");
        let ranges: Vec<String> = config.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(ranges, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/8/1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
