//! Many clients moving money at once: no lost update, no deadlock, no 5xx, and every cent accounted for.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, TestUser, backends};

const TASKS: u64 = 16;
const MOVES_PER_TASK: u64 = 25;
const START_CENTS: i64 = 10_000;

#[tokio::test]
async fn concurrent_transfers_keep_every_invariant_and_conserve_money() {
    for backend in backends() {
        let app = Arc::new(TestApp::spawn(backend).await);
        let mut users = Vec::new();
        for i in 0..5 {
            let user = app.user(&format!("user{i}")).await;
            app.credit(&user, "100.00", "USD").await;
            users.push(user);
        }
        let users = Arc::new(users);

        let tasks = (0..TASKS).map(|task| {
            let (app, users) = (app.clone(), users.clone());
            tokio::spawn(async move { move_money(&app, &users, task).await })
        });
        let mut seen = Vec::new();
        for outcome in futures::future::join_all(tasks).await {
            seen.extend(outcome.expect("task"));
        }
        let server_errors: Vec<&(u16, String)> = seen.iter().filter(|(status, _)| *status >= 500).collect();
        assert!(server_errors.is_empty(), "no 5xx and no deadlock: {server_errors:?}");
        let unexpected: Vec<&(u16, String)> =
            seen.iter().filter(|(status, code)| *status != 201 && code != "insufficient_funds").collect();
        assert!(unexpected.is_empty(), "{unexpected:?}");
        assert!(seen.iter().filter(|(status, _)| *status == 201).count() > (TASKS * MOVES_PER_TASK / 2) as usize);

        let mut total = 0;
        for user in users.iter() {
            let balance = app.balance(user, "USD").await;
            let cents: i64 = balance.replace('.', "").parse().expect("cents");
            assert!(cents >= 0);
            total += cents;
        }
        assert_eq!(total, START_CENTS * users.len() as i64, "transfers and their retries conserve money to the cent");
        app.assert_ledger_sound().await;
        Arc::into_inner(app).expect("sole owner").stop().await;
    }
}

/// One client: random transfers in both directions, a hot account everybody pays, and retries of the same
/// idempotent request racing each other.
async fn move_money(app: &TestApp, users: &[TestUser], task: u64) -> Vec<(u16, String)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(task);
    let mut seen = Vec::new();
    for step in 0..MOVES_PER_TASK {
        let from = rng.gen_range(0..users.len());
        let to = if rng.gen_bool(0.3) { 0 } else { rng.gen_range(0..users.len()) };
        if from == to {
            continue;
        }
        let cents = rng.gen_range(1..2_000);
        let body = json!({"to_user_id": users[to].id, "amount": format!("{}.{:02}", cents / 100, cents % 100), "currency": "USD"});
        let key = format!("task{task}-step{step}");
        let path = "/api/v1/transactions/transfer";
        let responses = if step % 5 == 0 {
            let (a, b) = tokio::join!(
                app.money(path, &users[from], Some(&key), &body),
                app.money(path, &users[from], Some(&key), &body)
            );
            assert_eq!(a.body["id"], b.body["id"], "racing retries answer with one transaction");
            vec![a, b]
        } else {
            vec![app.money(path, &users[from], Some(&key), &body).await]
        };
        for response in responses {
            let code = response.body["error_code"].as_str().unwrap_or_default().to_owned();
            assert!(response.status == StatusCode::CREATED || !code.is_empty(), "{}", response.text);
            seen.push((response.status.as_u16(), code));
        }
    }
    seen
}
