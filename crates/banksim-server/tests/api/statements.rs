//! `/api/v1/balances/statements` and the projections behind it: daily statements that stay exact whatever the
//! projectors go through (restarts mid-stream, duplicate deliveries, several instances), and the system totals
//! and projector lag of `/metrics/basic`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use banksim_core::{ManualClock, SystemClock};
use banksim_server::jobs::projector::Projector;
use banksim_store::Projection;
use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::helpers::{TestApp, TestUser, backends, raw_number};

/// A statement row with its amounts as the server wrote them (`"700.00"`).
type Row = (String, String, String, String, String, String);

#[derive(Deserialize)]
struct Statements {
    statements: Vec<Statement>,
}

#[derive(Deserialize)]
struct Statement {
    date: String,
    currency: String,
    opening: Box<RawValue>,
    credits: Box<RawValue>,
    debits: Box<RawValue>,
    closing: Box<RawValue>,
}

fn row(date: &str, currency: &str, opening: &str, credits: &str, debits: &str, closing: &str) -> Row {
    let owned = |s: &str| s.to_owned();
    (owned(date), owned(currency), owned(opening), owned(credits), owned(debits), owned(closing))
}

async fn statements(app: &TestApp, user: &TestUser, query: &str) -> Vec<Row> {
    let response = app.get(&format!("/api/v1/balances/statements{query}"), Some(&user.token)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let parsed: Statements = serde_json::from_str(&response.text).expect("statements");
    parsed
        .statements
        .into_iter()
        .map(|s| {
            (
                s.date,
                s.currency,
                s.opening.get().into(),
                s.credits.get().into(),
                s.debits.get().into(),
                s.closing.get().into(),
            )
        })
        .collect()
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, day, hour, 0, 0).single().expect("instant")
}

#[tokio::test]
async fn statements_show_every_day_with_quiet_days_carrying_the_balance() {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = TestApp::spawn_on_clock(backend, |_| {}, clock.clone()).await;
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        clock.set(at(1, 9));
        app.credit(&alice, "1000", "USD").await;
        clock.set(at(1, 23));
        let transfer = json!({"to_user_id": bob.id, "amount": "300", "currency": "USD"});
        app.money("/api/v1/transactions/transfer", &alice, None, &transfer).await;
        clock.set(at(2, 8));
        let debit =
            app.money("/api/v1/transactions/debit", &bob, None, &json!({"amount": "100", "currency": "USD"})).await;
        clock.set(at(4, 12));
        let rollback = format!("/api/v1/transactions/{}/rollback", debit.body["id"].as_str().expect("id"));
        assert_eq!(app.money(&rollback, &bob, None, &serde_json::Value::Null).await.status, StatusCode::CREATED);
        let exchange = json!({"from_currency": "USD", "to_currency": "EUR", "amount": "101"});
        let exchanged = app.money("/api/v1/transactions/exchange", &alice, None, &exchange).await;
        assert_eq!(exchanged.status, StatusCode::CREATED, "{}", exchanged.text);
        let eur = raw_number(&exchanged.text, "to_amount");
        clock.set(at(5, 10));

        let alice_days = statements(&app, &alice, "?from=2030-02-28&to=2030-03-05").await;
        assert_eq!(
            alice_days,
            vec![
                row("2030-03-01", "USD", "0.00", "1000.00", "300.00", "700.00"),
                row("2030-03-02", "USD", "700.00", "0.00", "0.00", "700.00"),
                row("2030-03-03", "USD", "700.00", "0.00", "0.00", "700.00"),
                row("2030-03-04", "EUR", "0.00", &eur, "0.00", &eur),
                row("2030-03-04", "USD", "700.00", "0.00", "101.00", "599.00"),
                row("2030-03-05", "EUR", &eur, "0.00", "0.00", &eur),
                row("2030-03-05", "USD", "599.00", "0.00", "0.00", "599.00"),
            ],
            "no statement before the first movement; quiet days repeat the closing balance"
        );
        let only_eur = statements(&app, &alice, "?from=2030-03-04&to=2030-03-04&currency=EUR").await;
        assert_eq!(only_eur, vec![row("2030-03-04", "EUR", "0.00", &eur, "0.00", &eur)]);

        // Without dates: the last 30 days up to today (on the server's clock).
        let bob_days = statements(&app, &bob, "").await;
        assert_eq!(
            bob_days,
            vec![
                row("2030-03-01", "USD", "0.00", "300.00", "0.00", "300.00"),
                row("2030-03-02", "USD", "300.00", "0.00", "100.00", "200.00"),
                row("2030-03-03", "USD", "200.00", "0.00", "0.00", "200.00"),
                row("2030-03-04", "USD", "200.00", "100.00", "0.00", "300.00"),
                row("2030-03-05", "USD", "300.00", "0.00", "0.00", "300.00"),
            ]
        );
        let future = app.get("/api/v1/balances/statements?from=2030-03-05&to=2031-01-01", Some(&bob.token)).await;
        assert_eq!(
            (future.body["from"].as_str(), future.body["to"].as_str()),
            (Some("2030-03-05"), Some("2030-03-05"))
        );

        // The totals follow the log as their projector gets to it.
        wait_until_projected(&app).await;
        let metrics = app.get("/metrics/basic", None).await;
        let usd = &metrics.body["system_totals"]["USD"];
        assert_eq!(usd["user_balances"], json!(899.0), "{usd}");
        assert_eq!((usd["money_in"].clone(), usd["money_out"].clone()), (json!(1100.0), json!(100.0)));
        assert_eq!((usd["fx_holdings"].clone(), usd["transactions"].clone()), (json!(101.0), json!(5)));
        assert_eq!(usd["balanced"], true);
        assert_eq!(metrics.body["system_totals"]["EUR"]["balanced"], true);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_statement_requests_get_clear_errors() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let alice = app.user("alice").await;
        let get = |query: &'static str| {
            let (app, token) = (&app, alice.token.clone());
            async move { app.get(&format!("/api/v1/balances/statements{query}"), Some(&token)).await }
        };
        let both = get("?from=yesterday&to=2026-13-01").await;
        both.assert_error(400, "invalid_parameter");
        assert_eq!(both.error_fields(), ["from", "to"]);
        let backwards = get("?from=2026-03-02&to=2026-03-01").await;
        backwards.assert_error(400, "invalid_parameter");
        assert_eq!(backwards.error_fields(), ["from"]);
        let too_long = get("?from=2024-01-01&to=2026-01-01").await;
        too_long.assert_error(400, "invalid_parameter");
        assert_eq!(too_long.error_fields(), ["to"]);
        // Dates far outside the calendar the server serves are refused, never a 500 or a long walk over days.
        for query in
            ["?from=-262143-01-01", "?to=-262143-01-05", "?from=-100000-01-01&to=-100000-01-05", "?from=1900-01-01"]
        {
            get(query).await.assert_error(400, "invalid_parameter");
        }
        get("?from=2999-01-01").await.assert_error(400, "invalid_parameter");
        get("?from=2020-01-01").await.assert_error(400, "invalid_parameter");
        get("?currency=XYZ").await.assert_error(400, "unsupported_currency");
        get("?page=2").await.assert_error(400, "invalid_parameter");
        app.get("/api/v1/balances/statements", None).await.assert_error(401, "unauthorized");
        // A user with no movement has no statements.
        assert!(statements(&app, &alice, "").await.is_empty());
        app.stop().await;
    }
}

/// Daily statements rebuilt from a wallet's balance history (newest first): only the days with movements.
async fn statements_from_history(app: &TestApp, user: &TestUser) -> Vec<Row> {
    #[derive(Deserialize)]
    struct History {
        history: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        amount: Box<RawValue>,
        change: Box<RawValue>,
        timestamp: DateTime<Utc>,
    }
    let response = app.get("/api/v1/balances/historical?currency=USD&limit=100", Some(&user.token)).await;
    let history: History = serde_json::from_str(&response.text).expect("history");
    assert!(history.history.len() < 100, "the oracle reads one page");
    let cents = |raw: &RawValue| raw.get().replace('.', "").parse::<i64>().expect("cents");
    let mut days: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for entry in history.history.iter().rev() {
        let (credits, debits, closing) = days.entry(entry.timestamp.date_naive().to_string()).or_default();
        let change = cents(&entry.change);
        if change > 0 {
            *credits += change
        } else {
            *debits -= change
        }
        *closing = cents(&entry.amount);
    }
    let text = |c: i64| format!("{}.{:02}", c / 100, c % 100);
    days.into_iter()
        .map(|(day, (credits, debits, closing))| {
            row(&day, "USD", &text(closing - credits + debits), &text(credits), &text(debits), &text(closing))
        })
        .collect()
}

/// The statements of a wallet's days with movements.
async fn active_days(app: &TestApp, user: &TestUser) -> Vec<Row> {
    let all = statements(app, user, "?currency=USD").await;
    all.into_iter().filter(|(_, _, _, credits, debits, _)| credits != "0.00" || debits != "0.00").collect()
}

async fn wait_until_projected(app: &TestApp) {
    for _ in 0..500 {
        let metrics = app.get("/metrics/basic", None).await;
        let projections = &metrics.body["projections"];
        if ["daily_statements", "system_totals"].iter().all(|p| projections[p]["lag_events"] == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the projectors did not catch up");
}

/// Random transfers between `users`, half through each server.
async fn transfers(servers: [&TestApp; 2], users: &[TestUser], count: usize, seed: usize) {
    let sends = (0..count).map(|i| {
        let (from, to) = (&users[(i * 7 + seed) % users.len()], &users[(i * 3 + seed + 1) % users.len()]);
        let server = servers[i % 2];
        async move {
            if from.id != to.id {
                let body =
                    json!({"to_user_id": to.id, "amount": format!("{}.{:02}", i % 5, i % 100), "currency": "USD"});
                let sent = server.money("/api/v1/transactions/transfer", from, None, &body).await;
                assert!(sent.status == StatusCode::CREATED || sent.status == StatusCode::BAD_REQUEST, "{}", sent.text);
            }
        }
    });
    futures::future::join_all(sends).await;
}

#[tokio::test]
async fn statements_stay_exact_across_two_instances_and_a_restart_mid_stream() {
    for backend in backends() {
        // Small deliveries, so that the projectors of both instances overlap and a stop lands mid-stream.
        let small = |c: &mut banksim_server::config::Config| c.projector_batch_max = 3;
        let first = TestApp::spawn_with(backend, small, axum::Router::new()).await;
        let second = first.spawn_beside(small).await;
        let mut users = Vec::new();
        for n in 0..6 {
            let user = first.user_named(n).await;
            first.credit(&user, "50", "USD").await;
            users.push(user);
        }
        transfers([&first, &second], &users, 40, 0).await;
        // The second instance stops while money keeps moving; a third takes its place.
        tokio::join!(transfers([&first, &first], &users, 30, 1), second.stop());
        let third = first.spawn_beside(small).await;
        transfers([&first, &third], &users, 40, 2).await;

        wait_until_projected(&third).await;
        wait_until_projected(&first).await;
        for user in &users {
            let expected = statements_from_history(&first, user).await;
            assert!(!expected.is_empty());
            assert_eq!(active_days(&first, user).await, expected, "statements of {}", user.id);
            assert_eq!(active_days(&third, user).await, expected, "the same on every instance");
        }
        let metrics = first.get("/metrics/basic", None).await;
        assert_eq!(metrics.body["system_totals"]["USD"]["user_balances"], json!(300.0), "six users, 50 each");
        first.assert_ledger_sound().await;
        third.stop().await;
        first.stop().await;
    }
}

async fn status(app: &TestApp, projection: Projection) -> banksim_store::ProjectionStatus {
    app.state.store.projection_status(projection).await.expect("status")
}

#[tokio::test]
async fn a_projector_stopped_mid_stream_is_resumed_from_its_checkpoint() {
    for backend in backends() {
        // Money moves while no projector runs.
        let quiet = |c: &mut banksim_server::config::Config| c.projector_enabled = false;
        let writer = TestApp::spawn_with(backend, quiet, axum::Router::new()).await;
        let mut users = Vec::new();
        for n in 0..4 {
            let user = writer.user_named(n).await;
            writer.credit(&user, "80", "USD").await;
            users.push(user);
        }
        transfers([&writer, &writer], &users, 60, 3).await;
        let database = writer.stop_keeping_database().await;

        // A projector applying one event per transaction is stopped as soon as it has begun.
        let one_by_one = |c: &mut banksim_server::config::Config| c.projector_batch_max = 1;
        let first = TestApp::spawn_on(database, one_by_one, Arc::new(SystemClock)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status(&first, Projection::DailyStatements).await.checkpoint == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the projector never began");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let database = first.stop_keeping_database().await;

        let reader = TestApp::spawn_on(database, quiet, Arc::new(SystemClock)).await;
        let stopped = status(&reader, Projection::DailyStatements).await;
        assert!(stopped.checkpoint > 0 && stopped.lag_events() > 0, "stopped mid-stream: {stopped:?}");
        let projector = Projector::start(reader.state.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for projection in Projection::ALL {
            while status(&reader, projection).await.lag_events() > 0 {
                assert!(tokio::time::Instant::now() < deadline, "{projection} did not catch up");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        projector.stop().await;
        for user in &users {
            assert_eq!(active_days(&reader, user).await, statements_from_history(&reader, user).await);
        }
        reader.assert_ledger_sound().await;
        reader.stop().await;
    }
}

#[tokio::test]
async fn a_projection_stuck_on_an_event_holds_neither_the_others_nor_the_statements_route() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let alice = app.user("alice").await;
        app.credit(&alice, "10", "USD").await;
        wait_until_projected(&app).await;
        // A statement row changed behind the projection's back: the next movement of that wallet would take its
        // totals past 64 bits, which the statements projection refuses to apply.
        app.tamper(
            "UPDATE daily_statements SET opening_minor = 9223372036854775807 - credits_minor + debits_minor,
                 closing_minor = 9223372036854775807",
        )
        .await;
        app.credit(&alice, "5", "USD").await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status(&app, Projection::SystemTotals).await.lag_events() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "system totals held back by the statements projection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = app.get("/metrics/basic", None).await;
        assert_eq!(metrics.body["system_totals"]["USD"]["user_balances"], json!(15.0));
        assert!(status(&app, Projection::DailyStatements).await.lag_events() > 0, "the bad event is not skipped");
        let served = app.get("/api/v1/balances/statements", Some(&alice.token)).await;
        assert_eq!(served.status, StatusCode::OK, "served as it stands: {}", served.text);
        app.stop().await;
    }
}
