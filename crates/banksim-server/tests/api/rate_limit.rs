//! The auth routes' rate limit per client IP.

use axum::Router;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, backends};

const LOGIN: &str = "/api/v1/auth/login";

#[tokio::test]
async fn the_auth_routes_share_a_budget_per_client() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |config| config.auth_rate_limit_per_minute = 3, Router::new()).await;
        let body = json!({"username": "sefa", "email": "sefa@example.com", "password": PASSWORD});
        let registered = app.post("/api/v1/auth/register", None, &body).await;
        assert_eq!(registered.status, StatusCode::CREATED);
        assert_eq!(registered.headers["ratelimit-limit"], "3");
        assert_eq!(registered.headers["ratelimit-remaining"], "2");
        let login = json!({"email": "sefa@example.com", "password": PASSWORD});
        let ok = app.post(LOGIN, None, &login).await;
        assert_eq!(ok.status, StatusCode::OK);
        let wrong = app.post(LOGIN, None, &json!({"email": "sefa@example.com", "password": "wrong-password"})).await;
        wrong.assert_error(401, "invalid_credentials");
        assert_eq!(wrong.headers["ratelimit-remaining"], "0");

        let limited = app.post(LOGIN, None, &login).await;
        limited.assert_error(429, "rate_limited");
        let retry_after: u64 = limited.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(limited.body["retry_after"], retry_after);
        app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": "x"})).await.assert_error(429, "rate_limited");

        let spoofed = app
            .raw(
                Method::POST,
                LOGIN,
                &[("content-type", "application/json"), ("x-forwarded-for", "203.0.113.9")],
                login.to_string().into_bytes(),
            )
            .await;
        spoofed.assert_error(429, "rate_limited");
        assert_eq!(app.get("/api/v1/ping", None).await.status, StatusCode::OK, "other routes are not limited");
        app.stop().await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    for backend in backends() {
        let app = TestApp::spawn_with(
            backend,
            |config| {
                config.auth_rate_limit_per_minute = 1;
                config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("range")];
            },
            Router::new(),
        )
        .await;
        let login = json!({"email": "nobody@example.com", "password": PASSWORD}).to_string().into_bytes();
        let server = &app;
        let from = |client: &'static str| {
            let body = login.clone();
            async move {
                let headers = [("content-type", "application/json"), ("x-forwarded-for", client)];
                server.raw(Method::POST, LOGIN, &headers, body).await
            }
        };
        from("198.51.100.1").await.assert_error(401, "invalid_credentials");
        from("198.51.100.1").await.assert_error(429, "rate_limited");
        from("198.51.100.2").await.assert_error(401, "invalid_credentials");
        from("10.9.9.9, 198.51.100.2").await.assert_error(429, "rate_limited");
        app.stop().await;
    }
}
