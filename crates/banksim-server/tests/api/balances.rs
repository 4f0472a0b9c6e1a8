//! `/api/v1/balances`: now, every wallet, the running history and the balance at an instant.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use banksim_client::{AmountRequest, BalanceHistoryQuery, BalanceReason, ErrorCode, ExchangeRequest, TransferRequest};
use banksim_core::currency::Currency;

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
        let all = sefa.api.balances().await.expect("balances");
        let wallets: Vec<(&str, &str)> = all.balances.iter().map(|b| (b.currency.code(), b.amount.as_str())).collect();
        assert_eq!(
            wallets,
            [("EUR", "1.00"), ("JPY", "700"), ("USD", "12.30")],
            "exact, with each currency's decimals"
        );
        assert!(all.balances.iter().all(|b| b.last_updated_at.is_some()));
        app.stop().await;
    }
}

#[tokio::test]
async fn the_history_shows_running_balances_changes_and_reasons() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let usd = |amount: &str| AmountRequest::new(amount, Currency::USD);
        app.credit(&sefa, "100", "USD").await;
        sefa.api.debit(&usd("10")).await.expect("debit");
        let sent = sefa.api.transfer(&TransferRequest::new(kerem.uuid(), "30", Currency::USD)).await.expect("transfer");
        sefa.api.rollback(sent.id).await.expect("rollback");
        let exchange =
            ExchangeRequest { from_currency: Currency::USD, to_currency: Currency::EUR, amount: "10".into() };
        sefa.api.exchange(&exchange).await.expect("exchange");
        let refused = kerem.api.transfer(&TransferRequest::new(sefa.uuid(), "0", Currency::USD)).await;
        assert_eq!(refused.expect_err("a zero amount").error_code(), Some(&ErrorCode::InvalidAmount));

        let query = BalanceHistoryQuery { currency: Some(Currency::USD), ..Default::default() };
        let history = sefa.api.balance_history(&query).await.expect("history").history;
        let seen: Vec<(BalanceReason, &str, &str)> =
            history.iter().map(|e| (e.reason, e.change.as_str(), e.amount.as_str())).collect();
        assert_eq!(
            seen,
            [
                (BalanceReason::Exchange, "-10.00", "80.00"),
                (BalanceReason::Rollback, "30.00", "90.00"),
                (BalanceReason::TransferSent, "-30.00", "60.00"),
                (BalanceReason::Debit, "-10.00", "90.00"),
                (BalanceReason::Credit, "100.00", "100.00"),
            ]
        );
        assert!(history.iter().all(|e| e.user_id == sefa.uuid() && e.currency == Currency::USD));

        let kerem_history = kerem.api.balance_history(&BalanceHistoryQuery::default()).await.expect("history");
        let reasons: Vec<BalanceReason> = kerem_history.history.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, [BalanceReason::Rollback, BalanceReason::TransferReceived]);

        let limited = sefa.api.balance_history(&BalanceHistoryQuery { limit: Some(2), ..Default::default() });
        let limited = limited.await.expect("a page");
        assert_eq!((limited.history.len(), limited.limit), (2, 2));
        // Parameters a typed client cannot get wrong are still checked by the server.
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
            // Debits and transfers may be refused (insufficient funds): the history must follow either way.
            let _refused_or_posted = match rng.gen_range(0..3) {
                0 => sefa.api.credit(&AmountRequest::new(amount.as_str(), Currency::USD)).await,
                1 => sefa.api.debit(&AmountRequest::new(amount.as_str(), Currency::USD)).await,
                _ => sefa.api.transfer(&TransferRequest::new(kerem.uuid(), amount.as_str(), Currency::USD)).await,
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
