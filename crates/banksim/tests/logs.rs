//! What the real `banksim` binary writes in its logs, at the most talkative level an operator would set: no secret
//! (password, access or refresh token) and no personal data (email) ever, and the trace id on the request's lines.

mod common;

use common::{Server, banksim};

use banksim_store::testing::{TestDatabase, backends};
use serde_json::{Value, json};

/// Sends a JSON request and returns the status, the `X-Trace-ID` header and the body.
async fn send(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, String, Value) {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let trace_id = response.headers()["x-trace-id"].to_str().expect("ascii").to_owned();
    (status, trace_id, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn debug_logs_hold_no_secrets_and_no_personal_data() {
    for backend in backends() {
        let db = TestDatabase::create(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let mut command = banksim(data.path());
        command.env("DATABASE_URL", &db.url).env("RUST_LOG", "debug").env("LOG_FORMAT", "json");
        let mut server = Server::start(command);
        let client = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", server.address);

        let mut secrets = Vec::new();
        let mut user = async |name: &str, password: &str| {
            let email = format!("{name}.private@example.com");
            let body = json!({"username": name, "email": email, "password": password});
            let (status, _, registered) = send(&client, url("/api/v1/auth/register"), None, body, &[]).await;
            assert_eq!(status, 201, "{registered}");
            let body = json!({"email": email, "password": password});
            let (status, _, login) = send(&client, url("/api/v1/auth/login"), None, body, &[]).await;
            assert_eq!(status, 200, "{login}");
            let refresh = login["refresh_token"].as_str().expect("refresh token").to_owned();
            let (status, _, refreshed) =
                send(&client, url("/api/v1/auth/refresh"), None, json!({"refresh_token": refresh}), &[]).await;
            assert_eq!(status, 200, "{refreshed}");
            let access = refreshed["access_token"].as_str().expect("access token").to_owned();
            for token in [
                &login["access_token"],
                &login["refresh_token"],
                &refreshed["access_token"],
                &refreshed["refresh_token"],
            ] {
                secrets.push(token.as_str().expect("token").to_owned());
            }
            secrets.extend([email, password.to_owned()]);
            (registered["id"].as_str().expect("id").to_owned(), access)
        };
        let (_, alice) = user("alice", "alice-secret-passphrase").await;
        let (bob_id, _) = user("bob", "bob-secret-passphrase").await;
        // A failed login: its wrong password must not be written either.
        let wrong = json!({"email": "alice.private@example.com", "password": "wrong-secret-guess"});
        assert_eq!(send(&client, url("/api/v1/auth/login"), None, wrong, &[]).await.0, 401);
        secrets.push("wrong-secret-guess".to_owned());

        let credit = json!({"amount": "50.00", "currency": "USD"});
        assert_eq!(send(&client, url("/api/v1/transactions/credit"), Some(&alice), credit, &[]).await.0, 201);
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let transfer = json!({"to_user_id": bob_id, "amount": "20.00", "currency": "USD"});
        let (status, answered_trace_id, body) = send(
            &client,
            url("/api/v1/transactions/transfer"),
            Some(&alice),
            transfer,
            &[("traceparent", &traceparent)],
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(answered_trace_id, trace_id);
        assert!(server.terminate().success());

        let log = server.log.lock().expect("log").join("\n");
        assert!(log.contains("\"level\":\"DEBUG\""), "the debug level is on: {log}");
        for secret in &secrets {
            let at = log.find(secret.as_str());
            assert!(
                at.is_none(),
                "{backend:?}: the log holds {secret:?}: …{}…",
                &log[at.unwrap_or(0).saturating_sub(300)..]
            );
        }
        // The transfer's log lines carry its trace id.
        let lines: Vec<Value> = log.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        let transfer_lines: Vec<&Value> =
            lines.iter().filter(|line| line["span"]["http.route"] == "/api/v1/transactions/transfer").collect();
        assert!(!transfer_lines.is_empty(), "{log}");
        assert!(transfer_lines.iter().all(|line| line["span"]["trace_id"] == trace_id), "{transfer_lines:#?}");
        db.remove().await;
    }
}
