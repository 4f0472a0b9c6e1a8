//! Simulation mode's console: the scenario runner's routes (`/api/v1/admin/scenarios`) with a stand-in runner,
//! an admin's view of any user's balances (`/api/v1/users/{id}/balances`), and the `/console` page itself. The real
//! runner (the `simulate` engine) is tested with `banksim serve` in the banksim crate.

use std::sync::Arc;

use async_trait::async_trait;
use banksim_server::service::scenarios::{RunnerPass, ScenarioRun, ScenarioRunner, StopSignal};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, backends};

const SCENARIOS: &str = "/api/v1/admin/scenarios";

/// Sends no traffic: runs until it is stopped, then reports what it was asked to run.
struct UntilStopped;

#[async_trait]
impl ScenarioRunner for UntilStopped {
    fn scenarios(&self) -> Vec<&'static str> {
        vec!["transfer", "hot"]
    }

    async fn run(&self, run: ScenarioRun, mut stop: StopSignal, _pass: RunnerPass) -> Result<Value, String> {
        if run.scenario == "hot" {
            return Err("the server is unreachable".to_owned());
        }
        let _ = stop.wait_for(|stopped| *stopped).await;
        Ok(json!({"scenario": run.scenario, "users": run.users, "passed": true}))
    }
}

#[tokio::test]
async fn a_run_starts_once_is_followed_and_stops_with_its_report() {
    for backend in backends() {
        let app = TestApp::spawn_with_runner(backend, Arc::new(UntilStopped)).await;
        let admin = app.admin("boss").await;
        let idle = app.get(SCENARIOS, Some(&admin.token)).await;
        assert_eq!(idle.status, StatusCode::OK, "{}", idle.text);
        assert_eq!((idle.body["state"].as_str(), &idle.body["run"]), (Some("idle"), &Value::Null));
        assert_eq!(idle.body["scenarios"], json!(["transfer", "hot"]));

        let run = json!({"scenario": "transfer", "users": 5, "connections": 2, "duration": "1m30s", "seed": 9});
        let started = app.post(SCENARIOS, Some(&admin.token), &run).await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
        assert_eq!(started.body["state"], "running");
        assert_eq!(
            started.body["run"],
            json!({"scenario": "transfer", "users": 5, "connections": 2, "duration_secs": 90, "requests": null, "seed": 9})
        );
        app.post(SCENARIOS, Some(&admin.token), &run).await.assert_error(409, "scenario_running");
        assert_eq!(app.get(SCENARIOS, Some(&admin.token)).await.body["state"], "running");

        let stopped = app.delete(SCENARIOS, Some(&admin.token)).await;
        assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.text);
        assert_eq!(stopped.body["state"], "finished");
        assert_eq!(stopped.body["stop_requested"], true);
        assert_eq!(stopped.body["report"], json!({"scenario": "transfer", "users": 5, "passed": true}));
        let again = app.delete(SCENARIOS, Some(&admin.token)).await;
        assert_eq!((again.status, &again.body["state"]), (StatusCode::OK, &json!("finished")), "nothing to stop");
        // The start and the stop that stopped something are in the audit trail, with their admin and run.
        let trail = app.get("/api/v1/audit-logs?entity_type=scenario", Some(&admin.token)).await;
        let entries = trail.body["audit_logs"].as_array().unwrap_or_else(|| panic!("entries: {}", trail.text));
        let actions: Vec<&str> = entries.iter().filter_map(|entry| entry["action"].as_str()).collect();
        assert_eq!(actions, ["simulation.scenario.stop", "simulation.scenario.start"], "newest first: {}", trail.text);
        assert!(entries.iter().all(|entry| entry["actor_id"] == admin.id.as_str()), "{}", trail.text);
        assert_eq!(entries[1]["details"]["run"], started.body["run"], "{}", trail.text);
        assert_eq!(entries[0]["details"]["state"], "finished", "{}", trail.text);

        // A run that cannot be made finishes with its reason instead of a report.
        let failing = app.post(SCENARIOS, Some(&admin.token), &json!({"scenario": "hot", "requests": 10})).await;
        assert_eq!(failing.status, StatusCode::ACCEPTED, "{}", failing.text);
        let mut status = app.get(SCENARIOS, Some(&admin.token)).await;
        for _ in 0..50 {
            if status.body["state"] == "finished" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            status = app.get(SCENARIOS, Some(&admin.token)).await;
        }
        assert_eq!(status.body["error"], "the server is unreachable", "{}", status.text);
        assert_eq!(status.body["report"], Value::Null);
        assert_eq!(status.body["run"]["users"], 10, "the default user count");
    }
}

#[tokio::test]
async fn a_run_that_is_not_understood_is_refused_naming_each_field() {
    for backend in backends() {
        let app = TestApp::spawn_with_runner(backend, Arc::new(UntilStopped)).await;
        let admin = app.admin("boss").await;
        let cases = [
            (json!({"scenario": "nope", "requests": 10}), vec!["scenario"]),
            (json!({"scenario": "transfer"}), vec!["duration"]),
            (json!({"scenario": "transfer", "duration": "2d"}), vec!["duration"]),
            (json!({"scenario": "transfer", "duration": "2h"}), vec!["duration"]),
            (
                json!({"scenario": "transfer", "requests": 0, "users": 1, "connections": 0}),
                vec!["users", "connections", "requests"],
            ),
            (json!({"scenario": "transfer", "requests": 5, "seed": 9_007_199_254_740_992_u64}), vec!["seed"]),
        ];
        for (body, fields) in cases {
            let refused = app.post(SCENARIOS, Some(&admin.token), &body).await;
            refused.assert_error(400, "invalid_request");
            assert_eq!(refused.error_fields(), fields, "{body}: {}", refused.text);
        }
        let unknown = app.post(SCENARIOS, Some(&admin.token), &json!({"scenario": "transfer", "speed": 1})).await;
        unknown.assert_error(400, "invalid_request");
        assert_eq!(app.get(SCENARIOS, Some(&admin.token)).await.body["state"], "idle", "nothing started");
    }
}

#[tokio::test]
async fn the_scenario_routes_are_for_admins_in_simulation_mode_with_a_runner() {
    for backend in backends() {
        let app = TestApp::spawn_with_runner(backend, Arc::new(UntilStopped)).await;
        let user = app.user("sefa").await;
        app.get(SCENARIOS, None).await.assert_error(401, "unauthorized");
        app.get(SCENARIOS, Some(&user.token)).await.assert_error(403, "insufficient_permissions");
        app.delete(SCENARIOS, Some(&user.token)).await.assert_error(403, "insufficient_permissions");
        let run = json!({"scenario": "transfer", "requests": 5});
        app.post(SCENARIOS, Some(&user.token), &run).await.assert_error(403, "insufficient_permissions");

        let without_runner = TestApp::spawn_with(backend, |c| c.simulation_mode = true, axum::Router::new()).await;
        let admin = without_runner.admin("boss").await;
        for answer in [
            without_runner.get(SCENARIOS, Some(&admin.token)).await,
            without_runner.post(SCENARIOS, Some(&admin.token), &run).await,
            without_runner.delete(SCENARIOS, Some(&admin.token)).await,
        ] {
            answer.assert_error(503, "scenario_runner_unavailable");
        }

        let plain = TestApp::spawn(backend).await;
        let admin = plain.admin("boss").await;
        plain.get(SCENARIOS, Some(&admin.token)).await.assert_error(404, "not_found");
        plain.post(SCENARIOS, Some(&admin.token), &run).await.assert_error(404, "not_found");
        let spec = plain.get("/openapi.json", None).await;
        assert!(spec.body["paths"].get(SCENARIOS).is_none(), "a server without simulation mode does not offer it");
    }
}

#[tokio::test]
async fn an_admin_reads_any_users_balances() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "12.50", "USD").await;
        app.credit(&sefa, "3", "EUR").await;
        let path = format!("/api/v1/users/{}/balances", sefa.id);
        let seen = app.get(&path, Some(&admin.token)).await;
        assert_eq!(seen.status, StatusCode::OK, "{}", seen.text);
        assert_eq!(seen.body, app.get("/api/v1/balances", Some(&sefa.token)).await.body, "what the user sees");
        let currencies: Vec<&str> =
            seen.body["balances"].as_array().expect("balances").iter().filter_map(|b| b["currency"].as_str()).collect();
        assert_eq!(currencies, ["EUR", "USD"]);

        app.get(&path, Some(&sefa.token)).await.assert_error(403, "insufficient_permissions");
        app.get(&path, None).await.assert_error(401, "unauthorized");
        let nobody = format!("/api/v1/users/{}/balances", uuid::Uuid::new_v4());
        app.get(&nobody, Some(&admin.token)).await.assert_error(404, "user_not_found");
        app.get("/api/v1/users/nope/balances", Some(&admin.token)).await.assert_error(400, "invalid_parameter");
    }
}

#[tokio::test]
async fn the_console_is_served_in_simulation_mode_only_under_a_strict_policy() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, |c| c.simulation_mode = true, axum::Router::new()).await;
        for (path, content_type) in [
            ("/console", "text/html; charset=utf-8"),
            ("/console/console.js", "text/javascript; charset=utf-8"),
            ("/console/console.css", "text/css; charset=utf-8"),
            ("/console/favicon.svg", "image/svg+xml"),
        ] {
            let answer = app.raw(reqwest::Method::GET, path, &[], Vec::new()).await;
            assert_eq!(answer.status, StatusCode::OK, "{path}");
            assert_eq!(answer.headers["content-type"], content_type, "{path}");
            let policy = answer.headers["content-security-policy"].to_str().expect("a policy");
            assert!(policy.starts_with("default-src 'none'; script-src 'self'"), "{path}: {policy}");
            assert!(!policy.contains("unsafe"), "{path}: {policy}");
        }
        let page = app.raw(reqwest::Method::GET, "/console", &[], Vec::new()).await;
        assert!(page.text.contains("<script type=\"module\" src=\"/console/console.js\">"), "{}", page.text);
        app.raw(reqwest::Method::GET, "/console/secrets.txt", &[], Vec::new()).await.assert_error(404, "not_found");

        let plain = TestApp::spawn(backend).await;
        for path in ["/console", "/console/console.js"] {
            plain.raw(reqwest::Method::GET, path, &[], Vec::new()).await.assert_error(404, "not_found");
        }
    }
}
