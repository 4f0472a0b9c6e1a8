//! Simulation mode's faults for client developers: the `X-Simulate-Fault` header and the random faults of
//! `/api/v1/admin/faults`. (`faults.rs` is about the store failing under the server, not about these.)

use std::time::{Duration, Instant};

use banksim_store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, TestUser, backends};

const FAULTS: &str = "/api/v1/admin/faults";
const CREDIT: &str = "/api/v1/transactions/credit";
const TRANSFER: &str = "/api/v1/transactions/transfer";
const PING: &str = "/api/v1/ping";

async fn simulating(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| config.simulation_mode = true, axum::Router::new()).await
}

/// A money POST of `user` with an idempotency key and a fault asked for.
async fn money_with_fault(
    app: &TestApp,
    path: &str,
    user: &TestUser,
    key: &str,
    fault: &str,
    body: &Value,
) -> Result<TestResponse, reqwest::Error> {
    let headers = [("idempotency-key", key), ("x-simulate-fault", fault)];
    app.send(Method::POST, path, Some(&user.token), &headers, Some(body)).await
}

/// `GET /api/v1/ping` with a fault asked for.
async fn ping_with_fault(app: &TestApp, fault: &str) -> TestResponse {
    app.send(Method::GET, PING, None, &[("x-simulate-fault", fault)], None).await.expect("an answer")
}

/// What a client saw of one `GET /api/v1/ping`: its status, or 0 when the connection closed with no answer.
async fn ping_outcome(app: &TestApp) -> u16 {
    app.send(Method::GET, PING, None, &[], None).await.map_or(0, |response| response.status.as_u16())
}

/// The value of `banksim_simulated_faults_total{kind}` in `/metrics`.
async fn faults_counted(app: &TestApp, kind: &str) -> u64 {
    let text = app.get("/metrics", None).await.text;
    let series = format!("banksim_simulated_faults_total{{kind=\"{kind}\"}} ");
    let line = text.lines().find(|line| line.starts_with(&series)).unwrap_or_else(|| panic!("no {series} in {text}"));
    line[series.len()..].trim().parse().expect("a count")
}

#[tokio::test]
async fn latency_and_error_faults_answer_as_asked_and_touch_nothing() {
    let app = simulating(Backend::Sqlite).await;
    let sefa = app.user("sefa").await;

    let started = Instant::now();
    let slow = ping_with_fault(&app, "latency=300ms").await;
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.text);
    assert!(started.elapsed() >= Duration::from_millis(300), "answered after {:?}", started.elapsed());

    let failed = ping_with_fault(&app, "error=500").await;
    failed.assert_error(500, "internal_error");
    let unavailable = ping_with_fault(&app, "error=503").await;
    unavailable.assert_error(503, "service_unavailable");
    assert_eq!(unavailable.headers["retry-after"], "1");

    // An error fault answers before the handler: nothing moves, and the key stays unused.
    let body = json!({"amount": "10", "currency": "USD"});
    for fault in ["error=500", "error=503"] {
        let refused = money_with_fault(&app, CREDIT, &sefa, "k-1", fault, &body).await.expect("an answer");
        assert!(refused.status.is_server_error(), "{}", refused.text);
    }
    assert_eq!(app.balance(&sefa, "USD").await, "0.00");
    let first = app.money(CREDIT, &sefa, Some("k-1"), &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none(), "the key was never used");
    assert_eq!(app.balance(&sefa, "USD").await, "10.00");

    assert_eq!(faults_counted(&app, "latency").await, 1);
    assert_eq!(faults_counted(&app, "error_500").await, 2);
    assert_eq!(faults_counted(&app, "error_503").await, 2);
    assert_eq!(faults_counted(&app, "timeout_after_commit").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_gets_the_stored_one_and_moves_money_once() {
    for backend in backends() {
        let app = simulating(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100", "USD").await;
        let transfer = json!({"to_user_id": kerem.id, "amount": "30", "currency": "USD"});

        // timeout_after_commit: the transfer commits, the client gets a 504 gateway_timeout.
        let lost = money_with_fault(&app, TRANSFER, &sefa, "t-1", "timeout_after_commit", &transfer).await;
        lost.expect("an answer").assert_error(504, "gateway_timeout");
        assert_eq!(app.balance(&sefa, "USD").await, "70.00", "the transfer committed");
        let retry = app.money(TRANSFER, &sefa, Some("t-1"), &transfer).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        assert_eq!(retry.body["amount"], json!(30.0));

        // drop_after_commit: the transfer commits, the connection closes with no answer at all.
        let dropped = money_with_fault(&app, TRANSFER, &sefa, "t-2", "drop_after_commit", &transfer).await;
        let error = dropped.expect_err("no answer");
        assert!(error.status().is_none(), "no status reached the client: {error:?}");
        assert_eq!(app.balance(&sefa, "USD").await, "40.00", "the transfer committed");
        let retry = app.money(TRANSFER, &sefa, Some("t-2"), &transfer).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        // A retry that asks for the fault again still moves nothing.
        let again = money_with_fault(&app, TRANSFER, &sefa, "t-2", "timeout_after_commit", &transfer).await;
        again.expect("an answer").assert_error(504, "gateway_timeout");

        assert_eq!(app.balance(&sefa, "USD").await, "40.00");
        assert_eq!(app.balance(&kerem, "USD").await, "60.00");
        let history = app.get("/api/v1/transactions/history?limit=100", Some(&sefa.token)).await;
        let transfers = history.body["transactions"]
            .as_array()
            .map_or(0, |all| all.iter().filter(|tx| tx["type"] == "transfer").count());
        assert_eq!(transfers, 2, "{}", history.text);
        assert_eq!(faults_counted(&app, "timeout_after_commit").await, 2);
        assert_eq!(faults_counted(&app, "drop_after_commit").await, 1);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_bad_fault_header_is_refused_with_400_naming_it() {
    let app = simulating(Backend::Sqlite).await;
    for bad in ["latency=31s", "latency=250", "error=404", "timeout", "drop_after_commit=1"] {
        let refused = ping_with_fault(&app, bad).await;
        refused.assert_error(400, "invalid_request");
        assert_eq!(refused.error_fields(), ["X-Simulate-Fault"], "{}", refused.text);
        assert!(refused.body["error"].as_str().is_some_and(|e| e.contains("X-Simulate-Fault")), "{}", refused.text);
    }
    app.stop().await;
}

#[tokio::test]
async fn without_simulation_mode_the_header_is_ignored_and_the_routes_are_unknown() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin("boss").await;
    for fault in ["error=500", "drop_after_commit", "not-a-fault"] {
        let answered = ping_with_fault(&app, fault).await;
        assert_eq!(answered.status, StatusCode::OK, "{fault}: {}", answered.text);
    }
    app.get(FAULTS, Some(&admin.token)).await.assert_error(404, "not_found");
    let setting = json!({"rate": 1, "kinds": ["error_500"], "seed": 1});
    app.put(FAULTS, Some(&admin.token), &setting).await.assert_error(404, "not_found");
    app.delete(FAULTS, Some(&admin.token)).await.assert_error(404, "not_found");
    assert_eq!(ping_outcome(&app).await, 200);
    let spec = app.get("/openapi.json", None).await;
    assert!(spec.body["paths"].get(FAULTS).is_none(), "the served document hides the route");
    app.stop().await;
}

#[tokio::test]
async fn admins_set_show_and_stop_random_faults_and_bad_settings_are_refused() {
    let app = simulating(Backend::Sqlite).await;
    let admin = app.admin("boss").await;
    let sefa = app.user("sefa").await;
    let setting = json!({"rate": "0.25", "kinds": ["latency", "error_503"], "seed": 42});

    app.get(FAULTS, None).await.assert_error(401, "unauthorized");
    app.get(FAULTS, Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");
    app.put(FAULTS, Some(&sefa.token), &setting).await.assert_error(403, "insufficient_permissions");
    app.delete(FAULTS, Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");

    let off = app.get(FAULTS, Some(&admin.token)).await;
    assert_eq!(off.body, json!({"enabled": false, "rate": 0, "kinds": [], "seed": null}), "{}", off.text);

    for bad in [
        json!({"rate": 0, "kinds": ["latency"], "seed": 1}),
        json!({"rate": 1.5, "kinds": ["latency"], "seed": 1}),
        json!({"rate": "0.0000001", "kinds": ["latency"], "seed": 1}),
        json!({"rate": "often", "kinds": ["latency"], "seed": 1}),
        json!({"kinds": ["latency"], "seed": 1}),
        json!({"rate": 0.5, "kinds": [], "seed": 1}),
        json!({"rate": 0.5, "kinds": ["latency", "latency"], "seed": 1}),
        json!({"rate": 0.5, "kinds": ["error_404"], "seed": 1}),
        json!({"rate": 0.5, "kinds": ["latency"], "seed": 9_007_199_254_740_992_u64}),
        json!({"rate": 0.5, "kinds": ["latency"], "seed": -1}),
        json!({"rate": 0.5, "kinds": ["latency"], "sede": 1}),
    ] {
        let refused = app.put(FAULTS, Some(&admin.token), &bad).await;
        refused.assert_error(400, "invalid_request");
    }

    let on = app.put(FAULTS, Some(&admin.token), &setting).await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.text);
    let expected = json!({"enabled": true, "rate": 0.25, "kinds": ["latency", "error_503"], "seed": 42});
    assert_eq!(on.body, expected);
    assert_eq!(app.get(FAULTS, Some(&admin.token)).await.body, expected);
    let random_seed = app.put(FAULTS, Some(&admin.token), &json!({"rate": 1, "kinds": ["error_500"]})).await;
    assert!(random_seed.body["seed"].is_u64(), "{}", random_seed.text);
    assert_eq!(random_seed.body["rate"], 1);

    // At rate 1 every other request fails, but the simulation routes never do: the admin can always stop it.
    assert_eq!(ping_outcome(&app).await, 500);
    let stopped = app.delete(FAULTS, Some(&admin.token)).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.text);
    assert_eq!(stopped.body["enabled"], false);
    assert_eq!(ping_outcome(&app).await, 200);
    assert_eq!(app.get(FAULTS, Some(&admin.token)).await.body["enabled"], false);
    app.stop().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults_to_the_same_requests() {
    let app = simulating(Backend::Sqlite).await;
    let admin = app.admin("boss").await;
    let kinds = ["error_500", "error_503", "timeout_after_commit", "drop_after_commit"];
    let run = |seed: u64| {
        let app = &app;
        let admin = &admin;
        async move {
            let setting = json!({"rate": 1.0, "kinds": kinds, "seed": seed});
            let set = app.put(FAULTS, Some(&admin.token), &setting).await;
            assert_eq!(set.status, StatusCode::OK, "{}", set.text);
            let mut outcomes = Vec::new();
            for _ in 0..24 {
                outcomes.push(ping_outcome(app).await);
            }
            outcomes
        }
    };
    let first = run(7).await;
    assert_eq!(run(7).await, first, "the same seed, the same faults");
    for status in [500, 503, 504, 0] {
        assert!(first.contains(&status), "{status} never came in {first:?}");
    }
    assert!(!first.contains(&200), "at rate 1 every request gets a fault: {first:?}");
    assert_ne!(run(8).await, first, "another seed, other faults");
    let counted: u64 = {
        let mut total = 0;
        for kind in kinds {
            total += faults_counted(&app, kind).await;
        }
        total
    };
    assert_eq!(counted, 3 * 24);
    app.stop().await;
}
