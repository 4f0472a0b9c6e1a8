//! The admin's side of a simulation: the routes of simulation mode that `--faults` and `--replay` use (the
//! random faults, the virtual clock, the state hash), over one admin session.

use anyhow::{Context, ensure};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

/// An admin's credentials (`--admin-email`, `--admin-password`).
#[derive(Debug, Clone)]
pub struct AdminLogin {
    /// The admin's email.
    pub email: String,
    /// The admin's password.
    pub password: String,
}

/// The fields of a login answer that a simulation reads.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    /// The new access token.
    pub access_token: String,
    /// The new refresh token.
    pub refresh_token: String,
}

/// Logs in with a login body (`{"email", "password"}`, as JSON text).
pub async fn log_in(http: &reqwest::Client, base: &str, body: String) -> anyhow::Result<Tokens> {
    let answer = http
        .post(format!("{base}/api/v1/auth/login"))
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    ensure!(answer.status().is_success(), "the login answered {}", answer.status());
    Ok(answer.json().await?)
}

/// `Bearer <token>`, kept out of debug output.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).context("an access token")?;
    value.set_sensitive(true);
    Ok(value)
}

/// An admin's session on one server.
#[derive(Debug, Clone)]
pub struct AdminSession {
    http: reqwest::Client,
    base: String,
    authorization: HeaderValue,
}

impl AdminSession {
    /// Logs the admin in on the server at `base`.
    pub async fn open(http: &reqwest::Client, base: &str, admin: &AdminLogin) -> anyhow::Result<Self> {
        let body = serde_json::json!({ "email": admin.email, "password": admin.password }).to_string();
        let tokens = log_in(http, base, body).await.with_context(|| format!("logging the admin {} in", admin.email))?;
        Ok(Self { http: http.clone(), base: base.to_owned(), authorization: bearer(&tokens.access_token)? })
    }

    /// The server's clock (`now` of `GET /api/v1/admin/clock`), as it writes it.
    pub async fn clock(&self) -> anyhow::Result<String> {
        let clock: serde_json::Value = self.call(reqwest::Method::GET, "/api/v1/admin/clock", None).await?;
        clock["now"].as_str().map(str::to_owned).context("the clock's answer has no `now`")
    }

    /// Sets the virtual clock to `at` (`POST /api/v1/admin/clock {"set": at}`).
    pub async fn set_clock(&self, at: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({ "set": at });
        self.call::<serde::de::IgnoredAny>(reqwest::Method::POST, "/api/v1/admin/clock", Some(body)).await?;
        Ok(())
    }

    /// The state hash (`GET /api/v1/admin/state-hash`).
    pub async fn state_hash(&self) -> anyhow::Result<String> {
        let hash: serde_json::Value = self.call(reqwest::Method::GET, "/api/v1/admin/state-hash", None).await?;
        hash["hash"].as_str().map(str::to_owned).context("the state hash's answer has no `hash`")
    }

    /// Injects random faults of every kind into a share `rate` (a decimal, `0.1`) of the server's requests,
    /// drawn from `seed` (`PUT /api/v1/admin/faults`).
    pub async fn start_faults(&self, rate: &str, seed: u64) -> anyhow::Result<()> {
        let kinds = ["latency", "error_500", "error_503", "timeout_after_commit", "drop_after_commit"];
        let body = serde_json::json!({ "rate": rate, "kinds": kinds, "seed": seed });
        self.call::<serde::de::IgnoredAny>(reqwest::Method::PUT, "/api/v1/admin/faults", Some(body)).await?;
        Ok(())
    }

    /// Stops the random faults (`DELETE /api/v1/admin/faults`).
    pub async fn stop_faults(&self) -> anyhow::Result<()> {
        self.call::<serde::de::IgnoredAny>(reqwest::Method::DELETE, "/api/v1/admin/faults", None).await?;
        Ok(())
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        request = request.header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = answer.status();
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            anyhow::bail!("{method} {path} answered {status}: {text}");
        }
        let body = answer.bytes().await.with_context(|| format!("{method} {path}: reading the answer"))?;
        let json: &[u8] = if body.is_empty() { b"null" } else { &body };
        serde_json::from_slice(json).with_context(|| format!("{method} {path}: the answer"))
    }
}
