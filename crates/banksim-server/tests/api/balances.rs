//! `/api/v1/balances`: now, every wallet, the running history and the balance at an instant.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, backends, raw_number};

fn at(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn a_wallet_that_never_existed_reads_as_zero() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let current = app.get("/api/v1/balances/current", Some(&sefa.token)).await;
        assert_eq!(current.status, StatusCode::OK);
        assert_eq!(raw_number(&current.text, "amount"), "0.00");
        assert_eq!(current.body["currency"], "USD", "USD is the default");
        assert_eq!(current.body["user_id"], sefa.id.as_str());
        assert_eq!(current.body["last_updated_at"], Value::Null);
        let yen = app.get("/api/v1/balances/current?currency=JPY", Some(&sefa.token)).await;
        assert_eq!(raw_number(&yen.text, "amount"), "0");
        app.get("/api/v1/balances/current?currency=XYZ", Some(&sefa.token))
            .await
            .assert_error(400, "unsupported_currency");
        app.get("/api/v1/balances/current", None).await.assert_error(401, "unauthorized");
        let all = app.get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!(all.body, json!({"balances": []}));
        app.stop().await;
    }
}

#[tokio::test]
async fn every_wallet_is_listed_by_currency() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "12.30", "USD").await;
        app.credit(&sefa, "700", "JPY").await;
        app.credit(&sefa, "1", "EUR").await;
        let all = app.get("/api/v1/balances", Some(&sefa.token)).await;
        assert_eq!(all.status, StatusCode::OK);
        let balances = all.body["balances"].as_array().expect("list");
        let currencies: Vec<&str> = balances.iter().filter_map(|b| b["currency"].as_str()).collect();
        assert_eq!(currencies, ["EUR", "JPY", "USD"]);
        assert!(all.text.contains(r#""amount":12.30"#), "{}", all.text);
        assert!(all.text.contains(r#""amount":700"#), "{}", all.text);
        assert!(balances.iter().all(|b| b["last_updated_at"].is_string()));
        app.stop().await;
    }
}

#[tokio::test]
async fn the_history_shows_running_balances_changes_and_reasons() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100", "USD").await;
        app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "10", "currency": "USD"})).await;
        let sent = app
            .money(
                "/api/v1/transactions/transfer",
                &sefa,
                None,
                &json!({"to_user_id": kerem.id, "amount": "30", "currency": "USD"}),
            )
            .await;
        app.money(
            &format!("/api/v1/transactions/{}/rollback", sent.body["id"].as_str().expect("id")),
            &sefa,
            None,
            &Value::Null,
        )
        .await;
        app.money(
            "/api/v1/transactions/exchange",
            &sefa,
            None,
            &json!({"from_currency": "USD", "to_currency": "EUR", "amount": "10"}),
        )
        .await;
        app.money(
            "/api/v1/transactions/transfer",
            &kerem,
            None,
            &json!({"to_user_id": sefa.id, "amount": "0", "currency": "USD"}),
        )
        .await;

        let history = app.get("/api/v1/balances/historical?currency=USD", Some(&sefa.token)).await;
        assert_eq!(history.status, StatusCode::OK, "{}", history.text);
        let entries = history.body["history"].as_array().expect("history");
        let seen: Vec<(&str, f64, f64)> = entries
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().expect("reason"),
                    e["change"].as_f64().expect("change"),
                    e["amount"].as_f64().expect("amount"),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("exchange", -10.0, 80.0),
                ("rollback", 30.0, 90.0),
                ("transfer_sent", -30.0, 60.0),
                ("debit", -10.0, 90.0),
                ("credit", 100.0, 100.0)
            ]
        );
        assert!(entries.iter().all(|e| e["user_id"] == sefa.id.as_str() && e["currency"] == "USD"));
        assert!(history.text.contains(r#""change":-10.00"#), "{}", history.text);

        let kerem_history = app.get("/api/v1/balances/historical", Some(&kerem.token)).await;
        let reasons: Vec<&str> = kerem_history.body["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert_eq!(reasons, ["rollback", "transfer_received"]);

        let limited = app.get("/api/v1/balances/historical?limit=2", Some(&sefa.token)).await;
        assert_eq!(limited.body["history"].as_array().map(Vec::len), Some(2));
        assert_eq!(limited.body["limit"], 2);
        app.get("/api/v1/balances/historical?limit=0", Some(&sefa.token)).await.assert_error(400, "invalid_parameter");
        app.get("/api/v1/balances/historical?since=nope", Some(&sefa.token))
            .await
            .assert_error(400, "invalid_timestamp");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_balance_at_a_time_needs_a_valid_timestamp() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        for query in ["", "?timestamp=", "?timestamp=yesterday", "?timestamp=2024-13-01T00:00:00Z", "?currency=USD"] {
            app.get(&format!("/api/v1/balances/at-time{query}"), Some(&sefa.token))
                .await
                .assert_error(400, "invalid_timestamp");
        }
        let offset = app.get("/api/v1/balances/at-time?timestamp=2024-01-31T12:00:00%2B02:00", Some(&sefa.token)).await;
        assert_eq!(offset.status, StatusCode::OK, "{}", offset.text);
        assert_eq!(offset.body["timestamp"], "2024-01-31T10:00:00Z", "any offset, answered in UTC");
        assert_eq!(raw_number(&offset.text, "amount"), "0.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn history_and_balance_at_time_agree_with_a_replay_of_the_postings() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let start = Utc::now();
        app.credit(&sefa, "50", "USD").await;
        for _ in 0..30 {
            let cents = rng.gen_range(1..3_000);
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let body = json!({"to_user_id": kerem.id, "amount": amount, "currency": "USD"});
            match rng.gen_range(0..3) {
                0 => app.credit(&sefa, &amount, "USD").await,
                1 => {
                    app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": amount, "currency": "USD"}))
                        .await
                        .body
                }
                _ => app.money("/api/v1/transactions/transfer", &sefa, None, &body).await.body,
            };
        }
        let end = Utc::now();
        let history = app.get("/api/v1/balances/historical?limit=100", Some(&sefa.token)).await;
        let mut entries: Vec<(DateTime<Utc>, i64, i64)> = exact_history(&history.text)
            .into_iter()
            .map(|e| (e.timestamp.parse().expect("rfc3339"), cents(e.change.get()), cents(e.amount.get())))
            .collect();
        entries.reverse();
        let mut running = 0;
        for (_, change, after) in &entries {
            running += change;
            assert_eq!(running, *after, "each entry's balance is the sum of the changes up to it: {}", history.text);
        }
        assert_eq!(format!("{:.2}", running as f64 / 100.0), app.balance(&sefa, "USD").await);

        let span = (end - start).num_microseconds().expect("span");
        let mut instants: Vec<DateTime<Utc>> =
            (0..15).map(|_| start + chrono::Duration::microseconds(rng.gen_range(0..=span))).collect();
        instants.extend(entries.iter().map(|(t, _, _)| *t));
        for instant in instants {
            let expected: i64 = entries.iter().filter(|(t, _, _)| *t <= instant).map(|(_, change, _)| change).sum();
            let response =
                app.get(&format!("/api/v1/balances/at-time?timestamp={}", at(instant)), Some(&sefa.token)).await;
            assert_eq!(response.status, StatusCode::OK, "{}", response.text);
            assert_eq!(cents(&crate::helpers::raw_number(&response.text, "amount")), expected, "at {instant}");
        }
        app.stop().await;
    }
}

/// A history entry with its amounts as the exact text the server wrote.
#[derive(serde::Deserialize)]
struct ExactEntry {
    timestamp: String,
    change: Box<serde_json::value::RawValue>,
    amount: Box<serde_json::value::RawValue>,
}

fn exact_history(text: &str) -> Vec<ExactEntry> {
    #[derive(serde::Deserialize)]
    struct Page {
        history: Vec<ExactEntry>,
    }
    serde_json::from_str::<Page>(text).expect("history").history
}

/// A two-decimal number's text as integer cents, exactly.
fn cents(text: &str) -> i64 {
    let (units, fraction) = text.split_once('.').expect("two decimals");
    assert_eq!(fraction.len(), 2, "{text}");
    let magnitude =
        units.trim_start_matches('-').parse::<i64>().expect("units") * 100 + fraction.parse::<i64>().expect("cents");
    if units.starts_with('-') { -magnitude } else { magnitude }
}
