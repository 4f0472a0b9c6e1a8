//! `--replay FILE`: sends a recording's requests again, one at a time, in the order they were recorded, and
//! reports every answer whose status differs from the recorded one.
//!
//! - **Sessions** are the replay's own. A recorded login is sent as it was, and its answer's access token is used
//!   for the requests the recording attributes to that user; recorded refreshes are skipped (the replay's sessions
//!   are younger), and a request refused with 401 logs its user in again (with the recorded login) and is sent once
//!   more.
//! - **The clock.** Before a request recorded at a later virtual instant than the server's clock shows (the
//!   `X-Simulation-Clock` of its last answer), the replay sets the clock to that instant through
//!   `POST /api/v1/admin/clock` as the admin of `--admin-email`/`--admin-password`. Requests to the clock route
//!   itself are sent as recorded.
//! - With admin credentials it ends by printing the server's state hash (`GET /api/v1/admin/state-hash`).
//!
//! On a fresh database started alike (the same population, `SIMULATION_START`), a recording of a run that sent
//! one request at a time replays to the same state hash: the server derives the ids of new users, movements and
//! schedules from the requests in simulation mode (docs/simulation.md).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;

use super::admin::{self, AdminLogin, AdminSession, Tokens};
use super::record::{self, AuthRoute, Header, Recorded};

/// Longest wait for one answer (above the server's own request timeout, as in the traffic phase).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The route that moves the virtual clock.
const CLOCK_PATH: &str = "/api/v1/admin/clock";

/// How many differing answers the report lists (all are counted).
const MISMATCHES_LISTED_MAX: usize = 20;

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Requests sent (a resend after a 401 counts once).
    pub replayed: u64,
    /// Recorded refreshes skipped.
    pub skipped_refreshes: u64,
    /// Times the replay set the clock before a request.
    pub clock_moves: u64,
    /// Answers whose status differs from the recorded one.
    pub mismatches: u64,
    /// The first of them: line number, method, path, recorded and replayed status.
    pub first_mismatches: Vec<String>,
    /// The server's clock after the last answer, if it is in simulation mode.
    pub clock: Option<String>,
    /// The server's state hash at the end, when admin credentials were given.
    pub state_hash: Option<String>,
}

/// Replays `file` against the server at `base`.
pub async fn replay(base: &str, file: &Path, admin: Option<AdminLogin>) -> anyhow::Result<ReplayReport> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("--replay {}: opening the recording", file.display()))?,
    );
    let mut lines = reader.lines();
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line?).context("the recording's first line")?,
        None => bail!("--replay {}: the recording is empty", file.display()),
    };
    ensure!(
        header.format == record::FORMAT && header.version == record::VERSION,
        "--replay {}: not a {} v{} file (found {} v{})",
        file.display(),
        record::FORMAT,
        record::VERSION,
        header.format,
        header.version
    );
    let mut replayer = Replayer::new(base, admin)?;
    for (index, line) in lines.enumerate() {
        let line = line.context("reading the recording")?;
        if line.trim().is_empty() {
            continue;
        }
        // Line 1 is the header.
        let number = index + 2;
        let recorded: Recorded =
            serde_json::from_str(&line).with_context(|| format!("line {number} of the recording"))?;
        replayer.send(number, &recorded).await?;
    }
    replayer.finish().await
}

struct Replayer {
    http: reqwest::Client,
    base: String,
    admin: Option<AdminLogin>,
    admin_session: Option<AdminSession>,
    /// Each user's current `Authorization`, by email.
    sessions: HashMap<String, HeaderValue>,
    /// Each user's last recorded login body, to log them in again.
    logins: HashMap<String, String>,
    /// The server's clock as its last answer showed it.
    clock: Option<String>,
    report: ReplayReport,
}

/// One answer, as the replay reads it.
struct Answer {
    /// `None`: the request was recorded without an answer and got none again.
    status: Option<StatusCode>,
    clock: Option<String>,
    body: bytes::Bytes,
}

impl Replayer {
    fn new(base: &str, admin: Option<AdminLogin>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            admin,
            admin_session: None,
            sessions: HashMap::new(),
            logins: HashMap::new(),
            clock: None,
            report: ReplayReport::default(),
        })
    }

    async fn send(&mut self, number: usize, recorded: &Recorded) -> anyhow::Result<()> {
        let route = record::auth_route(&recorded.path);
        if route == Some(AuthRoute::Refresh) {
            self.report.skipped_refreshes += 1;
            return Ok(());
        }
        if let Some(at) = &recorded.at
            && !recorded.path.starts_with(CLOCK_PATH)
        {
            self.catch_up_clock(at).await.with_context(|| format!("line {number}: moving the clock to {at}"))?;
        }
        let mut answer = self.exchange(recorded).await.with_context(|| format!("line {number}"))?;
        if answer.status == Some(StatusCode::UNAUTHORIZED)
            && recorded.status != Some(401)
            && let Some(user) = &recorded.user
        {
            self.log_in_again(user).await.with_context(|| format!("line {number}: logging {user} in again"))?;
            answer = self.exchange(recorded).await.with_context(|| format!("line {number}"))?;
        }
        self.report.replayed += 1;
        if route == Some(AuthRoute::Login) && answer.status.is_some_and(|status| status.is_success()) {
            self.learn_login(recorded, &answer.body)?;
        }
        if answer.clock.is_some() {
            self.clock = answer.clock;
        }
        let replayed_status = answer.status.map(|status| status.as_u16());
        if recorded.status != replayed_status {
            self.report.mismatches += 1;
            if self.report.first_mismatches.len() < MISMATCHES_LISTED_MAX {
                self.report.first_mismatches.push(format!(
                    "line {number}: {} {} recorded {}, replayed {}",
                    recorded.method,
                    recorded.path,
                    shown(recorded.status),
                    shown(replayed_status)
                ));
            }
        }
        Ok(())
    }

    /// Sends one recorded request with its user's current session; a request without an answer is an error
    /// (the replay cannot know what it did).
    async fn exchange(&self, recorded: &Recorded) -> anyhow::Result<Answer> {
        let method = Method::from_bytes(recorded.method.as_bytes()).context("the recorded method")?;
        let mut request = self.http.request(method, format!("{}{}", self.base, recorded.path));
        if let Some(user) = &recorded.user {
            let session = self
                .sessions
                .get(user)
                .with_context(|| format!("the recording uses a session of {user} before any login of {user}"))?;
            request = request.header(AUTHORIZATION, session.clone());
        }
        for (name, value) in &recorded.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).context("a recorded header name")?;
            request = request.header(name, HeaderValue::from_str(value).context("a recorded header value")?);
        }
        if let Some(body) = &recorded.body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.get().to_owned());
        }
        let dropped_on_purpose = recorded.status.is_none();
        let response = match request.send().await {
            Ok(response) => response,
            // A request recorded without an answer (`drop_after_commit`, say) may lose its answer again.
            Err(_) if dropped_on_purpose => return Ok(Answer::none()),
            Err(err) => return Err(err).context(format!("{} {}", recorded.method, recorded.path)),
        };
        let status = response.status();
        let clock = response.headers().get(record::SIMULATION_CLOCK).and_then(|at| at.to_str().ok()).map(str::to_owned);
        match response.bytes().await {
            Ok(body) => Ok(Answer { status: Some(status), clock, body }),
            Err(_) if dropped_on_purpose => Ok(Answer::none()),
            Err(err) => Err(err).context(format!("{} {}: reading the answer", recorded.method, recorded.path)),
        }
    }

    /// Keeps the session a replayed login opened, and the login itself to open another.
    fn learn_login(&mut self, recorded: &Recorded, answer: &[u8]) -> anyhow::Result<()> {
        let body = recorded.body.as_ref().map(|body| body.get()).unwrap_or_default();
        let email = record::login_email(body.as_bytes()).context("a recorded login without an email")?;
        let tokens: Tokens = serde_json::from_slice(answer).context("the answer of a login")?;
        self.sessions.insert(email.clone(), admin::bearer(&tokens.access_token)?);
        self.logins.insert(email, body.to_owned());
        Ok(())
    }

    async fn log_in_again(&mut self, user: &str) -> anyhow::Result<()> {
        let body = self.logins.get(user).context("no recorded login to repeat")?.clone();
        let tokens = admin::log_in(&self.http, &self.base, body).await?;
        self.sessions.insert(user.to_owned(), admin::bearer(&tokens.access_token)?);
        Ok(())
    }

    /// Sets the server's clock to `at` if it shows an earlier instant (the admin's session is opened once).
    async fn catch_up_clock(&mut self, at: &str) -> anyhow::Result<()> {
        let target = banksim_core::clock::parse_instant(at).map_err(|e| anyhow::anyhow!("{at:?}: {e}"))?;
        let behind = match self.clock.as_deref().map(banksim_core::clock::parse_instant) {
            Some(Ok(now)) => now < target,
            // Nothing seen yet: ask the clock route (it needs the admin too).
            _ => true,
        };
        if !behind {
            return Ok(());
        }
        let Some(session) = self.admin_session().await? else {
            if self.clock.is_none() {
                // Without an admin, the first answer tells where the clock stands; it must match by itself.
                return Ok(());
            }
            bail!(
                "the recording moves on to {at}: pass --admin-email and --admin-password so the replay can set the clock"
            );
        };
        let now = session.clock().await?;
        if banksim_core::clock::parse_instant(&now).is_ok_and(|now| now >= target) {
            self.clock = Some(now);
            return Ok(());
        }
        session.set_clock(at).await?;
        self.report.clock_moves += 1;
        self.clock = Some(at.to_owned());
        Ok(())
    }

    /// The admin's session, opened the first time; `None` without admin credentials.
    async fn admin_session(&mut self) -> anyhow::Result<Option<AdminSession>> {
        if self.admin_session.is_none()
            && let Some(admin) = &self.admin
        {
            self.admin_session = Some(AdminSession::open(&self.http, &self.base, admin).await?);
        }
        Ok(self.admin_session.clone())
    }

    async fn finish(mut self) -> anyhow::Result<ReplayReport> {
        if let Some(session) = self.admin_session().await? {
            self.report.state_hash = Some(session.state_hash().await?);
        }
        self.report.clock = self.clock.take();
        Ok(self.report)
    }
}

impl Answer {
    /// A request that got no answer, as it was recorded.
    fn none() -> Self {
        Self { status: None, clock: None, body: bytes::Bytes::new() }
    }
}

fn shown(status: Option<u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |status| status.to_string())
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "replayed {} requests ({} refreshes skipped, clock set {} times)",
            self.replayed, self.skipped_refreshes, self.clock_moves
        )?;
        writeln!(f, "answers that differ from the recording: {}", self.mismatches)?;
        for mismatch in &self.first_mismatches {
            writeln!(f, "  {mismatch}")?;
        }
        if let Some(clock) = &self.clock {
            writeln!(f, "clock: {clock}")?;
        }
        if let Some(hash) = &self.state_hash {
            writeln!(f, "state hash: {hash}")?;
        }
        Ok(())
    }
}
