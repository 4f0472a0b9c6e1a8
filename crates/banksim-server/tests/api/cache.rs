//! The balance cache: served from memory, never older than a write the reader could know of — on the instance that
//! wrote, and on another instance on the same database (the PostgreSQL change bus; SQLite's data version).

use std::sync::Arc;
use std::time::Duration;

use banksim_store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, backends};
use crate::metrics::{sample, scrape};

/// The backends with a balance read lease (PostgreSQL).
fn leasing_backends() -> impl Iterator<Item = Backend> {
    backends().into_iter().filter(|backend| *backend == Backend::Postgres)
}

/// Whether `app` comes to hold the balance read lease (`held`) or to let it go, within 5 s.
async fn lease_held_within_5s(app: &TestApp, held: bool) -> bool {
    let wanted = if held { 1.0 } else { 0.0 };
    for _ in 0..100 {
        if sample(&scrape(app).await, "banksim_balance_lease_held", &[]) == Some(wanted) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits (bounded) until `app` holds the balance read lease.
async fn wait_for_lease(app: &TestApp) {
    assert!(lease_held_within_5s(app, true).await, "no balance read lease within 5 s");
}

/// Markers `app` has sent round the change bus.
async fn markers(app: &TestApp) -> f64 {
    sample(&scrape(app).await, "banksim_cache_markers_total", &[]).expect("the markers counter")
}

#[tokio::test]
async fn repeated_reads_are_answered_from_the_cache_and_writes_show_at_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "10.00", "USD").await;
        for _ in 0..5 {
            assert_eq!(app.balance(&sefa, "USD").await, "10.00");
        }
        app.credit(&sefa, "2.50", "USD").await;
        assert_eq!(app.balance(&sefa, "USD").await, "12.50", "the writer updated the cache");
        let basic = app.get("/metrics/basic", None).await.body;
        assert!(basic["cache"]["hits"].as_u64() >= Some(4), "{basic}");
        assert!(basic["cache"]["backend"].as_str().is_some_and(|b| b.contains("in-process")), "{basic}");
        app.stop().await;
    }
}

#[tokio::test]
async fn after_a_write_on_one_instance_a_read_on_another_is_never_older() {
    for backend in backends() {
        let first = Arc::new(TestApp::spawn(backend).await);
        let second = Arc::new(first.spawn_beside(|_| {}).await);
        let sefa = first.user("sefa").await;
        let kerem = first.user("kerem").await;
        first.credit(&sefa, "1000.00", "USD").await;
        // Both parties' balances are cached on the second instance before the writes begin.
        assert_eq!(second.balance(&sefa, "USD").await, "1000.00");
        assert_eq!(second.balance(&kerem, "USD").await, "0.00");
        for step in 1..=40_u32 {
            let transfer = json!({"to_user_id": kerem.id, "amount": "1.00", "currency": "USD"});
            let sent = first.money("/api/v1/transactions/transfer", &sefa, None, &transfer).await;
            assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
            // Right after the 2xx, on the other instance: the payee and the payer see the transfer.
            assert_eq!(second.balance(&kerem, "USD").await, format!("{step}.00"), "payee, step {step}");
            assert_eq!(second.balance(&sefa, "USD").await, format!("{}.00", 1000 - step), "payer, step {step}");
        }
        Arc::into_inner(second).expect("sole owner").stop().await;
        Arc::into_inner(first).expect("sole owner").stop().await;
    }
}

#[tokio::test]
async fn under_concurrent_writes_on_two_instances_every_cache_ends_equal_to_the_ledger() {
    for backend in backends() {
        let first = Arc::new(TestApp::spawn(backend).await);
        let second = Arc::new(first.spawn_beside(|_| {}).await);
        let mut users = Vec::new();
        for n in 0..4 {
            let user = first.user_named(n).await;
            first.credit(&user, "100.00", "USD").await;
            users.push(user);
        }
        let users = Arc::new(users);
        let mut tasks = Vec::new();
        for worker in 0..8_usize {
            let app = if worker % 2 == 0 { first.clone() } else { second.clone() };
            let users = users.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..15_usize {
                    let from = &users[(worker + round) % 4];
                    let to = &users[(worker + round + 1) % 4];
                    let body = json!({"to_user_id": to.id, "amount": "0.25", "currency": "USD"});
                    let _ = app.money("/api/v1/transactions/transfer", from, None, &body).await;
                    let _ = app.get("/api/v1/balances/current?currency=USD", Some(&to.token)).await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("worker");
        }
        // The ledger as a fresh connection reads it (not a pool that may hold an old snapshot).
        let fresh =
            banksim_store::connect(&first.state.config.database_url(), banksim_store::ConnectOptions::default())
                .await
                .expect("connect");
        for user in users.iter() {
            let id = user.id.parse().expect("uuid");
            let wallets = fresh.wallets(id, Some(banksim_core::currency::Currency::USD)).await.expect("wallets");
            let ledger = wallets.first().map_or(0, |w| w.balance_minor);
            assert_eq!(ledger, first.balance_via_store(user).await, "the pools read what a fresh connection reads");
            let expected = format!("{}.{:02}", ledger / 100, ledger % 100);
            assert_eq!(first.balance(user, "USD").await, expected, "first, {}", first.backend.name());
            assert_eq!(second.balance(user, "USD").await, expected, "second, {}", first.backend.name());
        }
        first.assert_ledger_sound().await;
        Arc::into_inner(second).expect("sole owner").stop().await;
        Arc::into_inner(first).expect("sole owner").stop().await;
    }
}

#[tokio::test]
async fn a_read_on_one_instance_never_lets_another_keep_a_stale_balance() {
    for backend in backends() {
        let first = TestApp::spawn(backend).await;
        let second = first.spawn_beside(|_| {}).await;
        let sefa = first.user("sefa").await;
        first.credit(&sefa, "50.00", "USD").await;
        // The first instance reads before the second caches the wallet: its check for other instances must not
        // make the second believe it is alone on the database.
        assert_eq!(first.balance(&sefa, "USD").await, "50.00");
        assert_eq!(second.balance(&sefa, "USD").await, "50.00");
        first.credit(&sefa, "1.00", "USD").await;
        assert_eq!(second.balance(&sefa, "USD").await, "51.00");
        second.stop().await;
        first.stop().await;
    }
}

#[tokio::test]
async fn alone_on_its_database_an_instance_answers_cached_balances_without_a_marker() {
    for backend in leasing_backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "10.00", "USD").await;
        assert_eq!(app.balance(&sefa, "USD").await, "10.00");
        wait_for_lease(&app).await;
        // A round of reads and a write with no marker: the lease holds (a slow machine may let one renewal run
        // late and a read send a marker; a few rounds are allowed).
        let mut quiet_round = false;
        for round in 0..5 {
            let before = markers(&app).await;
            for _ in 0..20 {
                assert_eq!(app.balance(&sefa, "USD").await, format!("{}.00", 10 + round));
            }
            app.credit(&sefa, "1.00", "USD").await;
            assert_eq!(app.balance(&sefa, "USD").await, format!("{}.00", 11 + round), "its own write, at once");
            if markers(&app).await == before {
                quiet_round = true;
                break;
            }
        }
        assert!(quiet_round, "every round of reads sent markers although the instance holds the lease");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_write_on_another_instance_waits_for_the_lease_so_the_holder_never_serves_an_older_balance() {
    for backend in leasing_backends() {
        let holder = TestApp::spawn(backend).await;
        let writer = holder.spawn_beside(|config| config.balance_lease = false).await;
        let sefa = holder.user("sefa").await;
        let kerem = holder.user("kerem").await;
        holder.credit(&sefa, "100.00", "USD").await;
        assert_eq!(holder.balance(&sefa, "USD").await, "100.00");
        assert_eq!(holder.balance(&kerem, "USD").await, "0.00");
        wait_for_lease(&holder).await;
        for step in 1..=5_u32 {
            let transfer = json!({"to_user_id": kerem.id, "amount": "1.00", "currency": "USD"});
            let sent = writer.money("/api/v1/transactions/transfer", &sefa, None, &transfer).await;
            assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
            // The first transfer committed only once the holder's lease had run out; from then on the lease is
            // closed and the holder waits for markers again.
            assert_eq!(holder.balance(&kerem, "USD").await, format!("{step}.00"), "payee, step {step}");
            assert_eq!(holder.balance(&sefa, "USD").await, format!("{}.00", 100 - step), "payer, step {step}");
        }
        // Closed while another instance writes: the holder lets it go.
        assert!(
            lease_held_within_5s(&holder, false).await,
            "the holder still trusts a lease that another instance's writes closed"
        );
        writer.stop().await;
        holder.stop().await;
    }
}
