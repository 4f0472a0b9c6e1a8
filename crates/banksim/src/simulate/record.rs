//! `--record FILE`: every request a run sends, one JSON object per line, as [`Recorded`] — in the order their
//! answers came back, with the virtual instant the server answered at (`X-Simulation-Clock`) and the user whose
//! session sent it.
//!
//! Sessions are not recorded as tokens (they would mean nothing to another server): the recorder learns which
//! user each access token belongs to from the logins and refreshes it sees, and writes the user's email instead.
//! Registrations and logins are recorded with their bodies, passwords included — a recording is a test fixture,
//! not something to publish.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use banksim_client::{Exchange, Observer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::admin::Tokens;

/// The first line of a recording: its format and version.
pub const FORMAT: &str = "banksim-recording";
/// The version of the format [`Recorded`] lines follow.
pub const VERSION: u32 = 1;

/// The header that carries the server's clock on simulation-mode answers.
pub const SIMULATION_CLOCK: &str = "x-simulation-clock";

/// The header line of a recording.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format's version ([`VERSION`]).
    pub version: u32,
}

/// One recorded request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    /// The server's clock when it answered (`X-Simulation-Clock`), as it wrote it; absent without simulation mode
    /// or without an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The email of the user whose session sent it; absent for requests without a session.
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path from the server's root, query included (`/api/v1/transactions/transfer`).
    pub path: String,
    /// The headers to send again, by lower-case name: `idempotency-key`, `x-simulate-fault`, … (never
    /// `authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The JSON body, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<RawValue>>,
    /// The status it got; absent when no answer came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// Writes a recording; shown every attempt as the [`Observer`] of the run's client.
#[derive(Debug)]
pub struct Recorder {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    out: BufWriter<File>,
    /// The URL path of the server's root (`""`, or a prefix such as `/bank`), cut from recorded paths.
    base_path: String,
    sessions: Sessions,
    lines: u64,
    /// The first write that failed; reported by [`Recorder::finish`].
    failure: Option<std::io::Error>,
}

impl Recorder {
    /// Creates `path` (it must not exist) for a run against the server at `base`.
    pub fn create(path: &Path, base: &str) -> anyhow::Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("--record {}: creating the recording", path.display()))?;
        let base_path = reqwest::Url::parse(base)
            .with_context(|| format!("{base:?} is not a URL"))?
            .path()
            .trim_end_matches('/')
            .to_owned();
        let mut out = BufWriter::new(file);
        let header = Header { format: FORMAT.to_owned(), version: VERSION };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        let state = State { out, base_path, sessions: Sessions::default(), lines: 0, failure: None };
        Ok(Self { state: Mutex::new(state) })
    }

    /// Flushes the recording; how many requests it holds, or the first write that failed.
    pub fn finish(&self) -> anyhow::Result<u64> {
        let mut state = self.state.lock().map_err(|_| anyhow::anyhow!("the recorder's lock was poisoned"))?;
        if let Some(failure) = state.failure.take() {
            return Err(failure).context("writing the recording");
        }
        state.out.flush().context("writing the recording")?;
        Ok(state.lines)
    }
}

impl Observer for Recorder {
    fn attempted(&self, exchange: &Exchange<'_>) {
        let Ok(mut state) = self.state.lock() else { return };
        let state = &mut *state;
        if state.failure.is_some() {
            return;
        }
        let user = exchange.authorization.and_then(|token| state.sessions.owner(token.as_bytes()));
        let line = recorded(exchange, &state.base_path, user);
        state.sessions.learn(exchange);
        let written = serde_json::to_writer(&mut state.out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| state.out.write_all(b"\n"));
        match written {
            Ok(()) => state.lines += 1,
            Err(failure) => state.failure = Some(failure),
        }
    }
}

/// The line of one attempt.
fn recorded(exchange: &Exchange<'_>, base_path: &str, user: Option<String>) -> Recorded {
    let url = exchange.url;
    let path = url.path().strip_prefix(base_path).unwrap_or(url.path());
    let path = match url.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut headers: BTreeMap<String, String> = exchange
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    if let Some(key) = exchange.idempotency_key {
        headers.insert("idempotency-key".to_owned(), key.to_owned());
    }
    let answer = exchange.answer.as_ref();
    Recorded {
        at: answer
            .and_then(|answer| answer.headers.get(SIMULATION_CLOCK))
            .and_then(|at| at.to_str().ok())
            .map(str::to_owned),
        user,
        method: exchange.method.as_str().to_owned(),
        path,
        headers,
        body: exchange
            .body
            .and_then(|body| std::str::from_utf8(body).ok())
            .and_then(|b| RawValue::from_string(b.to_owned()).ok()),
        status: answer.map(|answer| answer.status.as_u16()),
    }
}

/// Which user each access token (as its `Authorization` value) and refresh token belongs to, learnt from the
/// answers of logins and refreshes.
#[derive(Debug, Default)]
pub struct Sessions {
    by_authorization: HashMap<Vec<u8>, String>,
    by_refresh_token: HashMap<String, String>,
}

impl Sessions {
    /// The email of the user whose session sends `authorization` (`Bearer …`).
    fn owner(&self, authorization: &[u8]) -> Option<String> {
        self.by_authorization.get(authorization).cloned()
    }

    /// Learns the tokens of a successful login or refresh.
    fn learn(&mut self, exchange: &Exchange<'_>) {
        let Some(answer) = exchange.answer.as_ref().filter(|answer| answer.status.is_success()) else { return };
        let body = exchange.body.unwrap_or_default();
        let owner = match auth_route(exchange.url.path()) {
            Some(AuthRoute::Login) => login_email(body),
            Some(AuthRoute::Refresh) => {
                refresh_token(body).and_then(|token| self.by_refresh_token.get(&token).cloned())
            }
            None => None,
        };
        let (Some(owner), Ok(tokens)) = (owner, serde_json::from_slice::<Tokens>(answer.body)) else { return };
        self.by_authorization.insert(format!("Bearer {}", tokens.access_token).into_bytes(), owner.clone());
        self.by_refresh_token.insert(tokens.refresh_token, owner);
    }
}

/// The session routes a recording treats apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRoute {
    /// `POST /api/v1/auth/login`.
    Login,
    /// `POST /api/v1/auth/refresh`.
    Refresh,
}

/// Which session route `path` (from the server's root, or a whole URL path) is, if any.
pub fn auth_route(path: &str) -> Option<AuthRoute> {
    let path = path.split('?').next().unwrap_or(path);
    if path.ends_with("/api/v1/auth/login") {
        Some(AuthRoute::Login)
    } else if path.ends_with("/api/v1/auth/refresh") {
        Some(AuthRoute::Refresh)
    } else {
        None
    }
}

/// The email of a login body.
pub fn login_email(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Login {
        email: String,
    }
    serde_json::from_slice::<Login>(body).ok().map(|login| login.email.to_lowercase())
}

fn refresh_token(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Refresh {
        refresh_token: String,
    }
    serde_json::from_slice::<Refresh>(body).ok().map(|refresh| refresh.refresh_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banksim_client::ExchangeAnswer;
    use banksim_client::StatusCode;
    use banksim_client::header::{HeaderMap, HeaderName, HeaderValue};
    use reqwest::{Method, Url};

    fn answer<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Option<ExchangeAnswer<'a>> {
        Some(ExchangeAnswer { status: StatusCode::OK, headers, body })
    }

    #[test]
    fn requests_are_recorded_by_user_path_and_clock_without_tokens() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("run.jsonl");
        let recorder = Recorder::create(&file, "http://127.0.0.1:1/bank").expect("recorder");
        let (post, get) = (Method::POST, Method::GET);
        let login_url = Url::parse("http://127.0.0.1:1/bank/api/v1/auth/login").expect("url");
        let mut clock = HeaderMap::new();
        clock
            .insert(HeaderName::from_static(SIMULATION_CLOCK), HeaderValue::from_static("2030-01-01T00:00:00.000000Z"));
        let login_body = br#"{"email":"Ann@Example.com","password":"pw-123456"}"#;
        let tokens = br#"{"access_token":"A1","refresh_token":"R1","expires_in":900}"#;
        recorder.attempted(&Exchange {
            method: &post,
            url: &login_url,
            authorization: None,
            idempotency_key: None,
            headers: &[],
            body: Some(login_body),
            answer: answer(&clock, tokens),
        });
        let bearer = HeaderValue::from_static("Bearer A1");
        let balance_url = Url::parse("http://127.0.0.1:1/bank/api/v1/balances/current?currency=USD").expect("url");
        let fault = [(HeaderName::from_static("x-simulate-fault"), HeaderValue::from_static("error=503"))];
        recorder.attempted(&Exchange {
            method: &get,
            url: &balance_url,
            authorization: Some(&bearer),
            idempotency_key: Some("k-1"),
            headers: &fault,
            body: None,
            answer: None,
        });
        assert_eq!(recorder.finish().expect("finish"), 2);
        let text = std::fs::read_to_string(&file).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"format":"banksim-recording","version":1}"#);
        assert_eq!(
            lines[1],
            r#"{"at":"2030-01-01T00:00:00.000000Z","method":"POST","path":"/api/v1/auth/login","body":{"email":"Ann@Example.com","password":"pw-123456"},"status":200}"#
        );
        assert_eq!(
            lines[2],
            r#"{"as":"ann@example.com","method":"GET","path":"/api/v1/balances/current?currency=USD","headers":{"idempotency-key":"k-1","x-simulate-fault":"error=503"}}"#
        );
        assert!(!text.contains("A1"), "tokens are never recorded");
    }

    #[test]
    fn a_recording_is_never_written_over_an_existing_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("run.jsonl");
        std::fs::write(&file, "keep").expect("write");
        assert!(Recorder::create(&file, "http://127.0.0.1:1").is_err());
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep");
    }
}
