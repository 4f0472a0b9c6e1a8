//! Simulation mode's console behind a real `banksim serve`: the page is served, and the scenario runner that
//! `serve` installs drives the server through its own address — a run ends by itself with a passing report, and a
//! long run stops on `DELETE` with the report of what it sent.

mod common;

use std::time::{Duration, Instant};

use common::{Server, banksim};
use serde_json::{Value, json};

const SCENARIOS: &str = "/api/v1/admin/scenarios";
const ADMIN_EMAIL: &str = "console.admin@example.com";
const ADMIN_PASSWORD: &str = "console-admin-password";

fn simulating(data_dir: &std::path::Path) -> Server {
    let mut command = banksim(data_dir);
    command
        .env("SIMULATION_MODE", "true")
        .env("BANKSIM_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("BANKSIM_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("HOST", "127.0.0.1")
        // The default auth limit: the runner's users, all logging in from the server's own address, pass it.
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "5");
    Server::start(command)
}

async fn admin_token(client: &reqwest::Client, address: &str) -> String {
    let login: Value = client
        .post(format!("{address}/api/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login answers")
        .json()
        .await
        .expect("login JSON");
    login["access_token"].as_str().expect("an access token").to_owned()
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("an answer");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Polls the runner until its run is finished.
async fn finished(client: &reqwest::Client, address: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(client, reqwest::Method::GET, format!("{address}{SCENARIOS}"), token, None).await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == "finished" {
            return body;
        }
        assert!(Instant::now() < deadline, "the run never finished: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_console_runs_a_scenario_to_its_end_and_stops_a_long_one() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = simulating(data.path());
    let client = reqwest::Client::new();
    let address = &server.address;
    let token = admin_token(&client, address).await;

    let page = client.get(format!("{address}/console")).send().await.expect("the page");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().is_ok_and(|csp| csp.contains("default-src 'none'")));

    // Twelve users register and log in: 24 auth requests from one address, far past the limit of 5 a minute.
    let short = json!({"scenario": "transfer", "users": 12, "connections": 2, "requests": 30, "seed": 5});
    let (status, started) =
        call(&client, reqwest::Method::POST, format!("{address}{SCENARIOS}"), &token, Some(short)).await;
    assert_eq!(status, 202, "{started}");
    let done = finished(&client, address, &token).await;
    assert_eq!(done["error"], Value::Null, "{done}");
    assert_eq!(done["report"]["passed"], true, "{done}");
    assert_eq!(done["report"]["requests"], 30, "{done}");
    assert_eq!(done["report"]["conservation"]["ok"], true, "{done}");
    assert_eq!(done["stop_requested"], false);

    let long = json!({"scenario": "mixed", "users": 3, "connections": 2, "duration": "10m", "seed": 5});
    let (status, started) =
        call(&client, reqwest::Method::POST, format!("{address}{SCENARIOS}"), &token, Some(long)).await;
    assert_eq!(status, 202, "{started}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, stopped) = call(&client, reqwest::Method::DELETE, format!("{address}{SCENARIOS}"), &token, None).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "finished", "a stop waits for the report: {stopped}");
    assert_eq!(stopped["stop_requested"], true);
    assert_eq!(stopped["report"]["conservation"]["ok"], true, "{stopped}");
    assert!(stopped["report"]["duration_secs"].as_f64().is_some_and(|secs| secs < 60.0), "{stopped}");

    // Anyone else on that address is held to the limit, a wrong pass changing nothing.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let login = client
            .post(format!("{address}/api/v1/auth/login"))
            .header("x-banksim-runner-pass", "0".repeat(64))
            .json(&json!({"email": ADMIN_EMAIL, "password": "wrong-password"}))
            .send()
            .await
            .expect("an answer");
        statuses.push(login.status().as_u16());
    }
    assert!(statuses.contains(&429), "the limit still holds for other clients: {statuses:?}");
}
