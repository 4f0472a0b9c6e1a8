//! Simulation mode: the shared virtual clock (`/api/v1/admin/clock`) and the state hash (`/api/v1/admin/state-hash`).

use std::str::FromStr;

use banksim_core::currency::Currency;
use banksim_core::ledger::{Command, Movement};
use banksim_core::money::{Money, Rate};
use banksim_core::user::Role;
use banksim_store::{AuditContext, Backend, ConnectOptions, LedgerRequest, LedgerWork, NewUser};
use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, backends};

const CLOCK: &str = "/api/v1/admin/clock";
const STATE_HASH: &str = "/api/v1/admin/state-hash";

fn instant(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("instant")
}

fn text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parsed(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("an instant: {value}")))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn simulating(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| config.simulation_mode = true, axum::Router::new()).await
}

#[tokio::test]
async fn advancing_90_days_runs_a_monthly_schedule_three_times_at_its_dates_with_two_instances() {
    for backend in backends() {
        let app = simulating(backend).await;
        let other = app.spawn_beside(|config| config.simulation_mode = true).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        app.credit(&sefa, "100", "USD").await;

        let start = app.post(CLOCK, Some(&admin.token), &json!({"set": text(instant(2030, 1, 1, 0))})).await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.text);
        assert_eq!(
            (parsed(&start.body["now"]), start.body["mode"].as_str()),
            (instant(2030, 1, 1, 0), Some("virtual"))
        );
        let schedule = json!({"transaction_type": "transfer", "to_user_id": kerem.id, "amount": "1.50", "currency": "USD",
                              "schedule_type": "recurring", "execute_at": text(instant(2030, 1, 31, 9)),
                              "recurrence_pattern": "monthly", "description": "rent"});
        let created = app.money("/api/v1/scheduled-transactions", &sefa, None, &schedule).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let id = created.body["id"].as_str().expect("id").to_owned();
        // A hold of an hour, made on the virtual clock: it expires on the way, once.
        let hold =
            json!({"to_user_id": kerem.id, "amount": "10", "currency": "USD", "pending": true, "timeout_secs": 3600});
        let held = app.money("/api/v1/transactions/transfer", &sefa, None, &hold).await;
        assert_eq!(held.status, StatusCode::CREATED, "{}", held.text);
        assert_eq!(parsed(&held.body["expires_at"]), instant(2030, 1, 1, 1));

        // The other instance walks the clock; both run schedulers on the same database.
        let advanced = other.post(CLOCK, Some(&admin.token), &json!({"advance": "90d"})).await;
        assert_eq!(advanced.status, StatusCode::OK, "{}", advanced.text);
        assert_eq!(parsed(&advanced.body["now"]), instant(2030, 4, 1, 0));
        for instance in [&app, &other] {
            let clock = instance.get(CLOCK, Some(&admin.token)).await;
            assert_eq!(parsed(&clock.body["now"]), instant(2030, 4, 1, 0), "every instance reads the shared clock");
            assert_eq!(clock.body["mode"], "virtual");
        }

        let runs = app.get(&format!("/api/v1/scheduled-transactions/{id}/executions"), Some(&sefa.token)).await;
        let runs = runs.body["executions"].as_array().expect("executions").clone();
        assert_eq!(runs.len(), 3, "exactly three occurrences in 90 days: {runs:?}");
        let mut dates = Vec::new();
        for (n, run) in runs.iter().enumerate() {
            assert_eq!((run["status"].as_str(), run["occurrence"].as_u64()), (Some("success"), Some(n as u64 + 1)));
            let tx = app
                .get(
                    &format!("/api/v1/transactions/{}", run["transaction_id"].as_str().expect("tx")),
                    Some(&sefa.token),
                )
                .await;
            assert_eq!(parsed(&run["executed_at"]), parsed(&tx.body["created_at"]), "{run}");
            dates.push(parsed(&tx.body["created_at"]));
        }
        // Each occurrence ran at its own instant on the virtual clock, month ends clamped.
        assert_eq!(dates, [instant(2030, 1, 31, 9), instant(2030, 2, 28, 9), instant(2030, 3, 31, 9)]);
        let schedule = app.get(&format!("/api/v1/scheduled-transactions/{id}"), Some(&sefa.token)).await;
        assert_eq!(parsed(&schedule.body["next_execution_at"]), instant(2030, 4, 30, 9));
        assert_eq!(app.balance(&kerem, "USD").await, "4.50");

        let settled = app
            .get(&format!("/api/v1/transactions/{}", held.body["id"].as_str().expect("id")), Some(&sefa.token))
            .await;
        assert_eq!(settled.body["status"], "expired");
        let events = app.state.store.list_events(0, 1_000).await.expect("events");
        assert_eq!(events.iter().filter(|e| e.event_type == "TransferExpired").count(), 1, "the hold expired once");
        // Balances at an instant and statements follow the virtual clock.
        let at_time =
            app.get("/api/v1/balances/at-time?timestamp=2030-02-15T00:00:00Z&currency=USD", Some(&kerem.token)).await;
        assert_eq!(crate::helpers::raw_number(&at_time.text, "amount"), "1.50", "{}", at_time.text);

        // Access tokens live on the wall clock: 90 virtual days later, the tokens of before still work, and logging
        // in and refreshing work too.
        assert_eq!(app.get("/api/v1/me", Some(&sefa.token)).await.status, StatusCode::OK);
        assert_eq!(other.get(CLOCK, Some(&admin.token)).await.status, StatusCode::OK);
        let again = app.login(&admin.email).await;
        assert_eq!(other.get(STATE_HASH, Some(&again.token)).await.status, StatusCode::OK);
        let refreshed = app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": sefa.refresh_token})).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
        let token = refreshed.body["access_token"].as_str().expect("token");
        assert_eq!(app.get("/api/v1/me", Some(token)).await.status, StatusCode::OK);
        // Sessions end on the wall clock too: after a deactivation or a logout, the next login works at once instead
        // of waiting for real time to catch up with the virtual clock.
        let kerem_path = format!("/api/v1/users/{}", kerem.id);
        assert_eq!(app.put(&kerem_path, Some(&admin.token), &json!({"is_active": false})).await.status, StatusCode::OK);
        assert_eq!(app.get("/api/v1/me", Some(&kerem.token)).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(app.put(&kerem_path, Some(&admin.token), &json!({"is_active": true})).await.status, StatusCode::OK);
        let kerem_again = app.login(&kerem.email).await;
        assert_eq!(app.get("/api/v1/me", Some(&kerem_again.token)).await.status, StatusCode::OK);
        let logout_body = json!({"refresh_token": refreshed.body["refresh_token"]});
        let logout = app.post("/api/v1/auth/logout", Some(token), &logout_body).await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.text);
        let sefa_again = app.login(&sefa.email).await;
        assert_eq!(app.get("/api/v1/me", Some(&sefa_again.token)).await.status, StatusCode::OK);

        app.assert_ledger_sound().await;
        other.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn the_clock_never_goes_backwards_and_explains_a_malformed_change() {
    for backend in backends() {
        let app = simulating(backend).await;
        let admin = app.admin("boss").await;
        let system = app.get(CLOCK, Some(&admin.token)).await;
        assert_eq!(system.body["mode"], "system", "{}", system.text);
        let wall = parsed(&system.body["now"]);
        assert!((Utc::now() - wall).num_seconds().abs() < 60, "the wall clock: {wall}");

        let set = app.post(CLOCK, Some(&admin.token), &json!({"set": "2030-01-31T10:00:00+01:00"})).await;
        assert_eq!((parsed(&set.body["now"]), set.body["mode"].as_str()), (instant(2030, 1, 31, 9), Some("virtual")));
        let back = app.post(CLOCK, Some(&admin.token), &json!({"set": "2030-01-31T08:59:59Z"})).await;
        back.assert_error(400, "clock_backwards");
        let same = app.post(CLOCK, Some(&admin.token), &json!({"set": "2030-01-31T09:00:00Z"})).await;
        assert_eq!(parsed(&same.body["now"]), instant(2030, 1, 31, 9), "setting where it stands changes nothing");
        let advanced = app.post(CLOCK, Some(&admin.token), &json!({"advance": "1d12h"})).await;
        assert_eq!(parsed(&advanced.body["now"]), instant(2030, 2, 1, 21));
        // Each move is in the audit trail, with its admin, from where to where; the refused one is not.
        let moves = app.get("/api/v1/audit-logs?action=simulation.clock", Some(&admin.token)).await;
        let entries = moves.body["audit_logs"].as_array().unwrap_or_else(|| panic!("entries: {}", moves.text));
        assert_eq!(entries.len(), 3, "set, set where it stands, advance: {}", moves.text);
        let newest = &entries[0];
        assert_eq!(
            (newest["actor_id"].as_str(), newest["outcome"].as_str()),
            (Some(admin.id.as_str()), Some("success"))
        );
        assert_eq!(newest["request_id"], advanced.headers["x-request-id"].to_str().expect("ascii"));
        assert_eq!(parsed(&newest["details"]["from"]), instant(2030, 1, 31, 9), "{newest}");
        assert_eq!(parsed(&newest["details"]["to"]), instant(2030, 2, 1, 21), "{newest}");
        assert_eq!(newest["details"]["change"], json!({"advance_secs": 129_600}), "{newest}");

        for (body, field) in [
            (json!({"advance": "30"}), "advance"),
            (json!({"advance": "30x"}), "advance"),
            (json!({"advance": "0d"}), "advance"),
            (json!({"advance": "-1d"}), "advance"),
            (json!({"advance": ""}), "advance"),
            (json!({"advance": "36526d"}), "advance"),
            (json!({"set": "tomorrow"}), "set"),
            (json!({"set": "2030-02-30T00:00:00Z"}), "set"),
            (json!({"advance": "1d", "set": "2031-01-01T00:00:00Z"}), "advance"),
            (json!({}), "body"),
            (json!({"advance": 30}), "advance"),
            (json!({"jump": "1d"}), ""),
        ] {
            let refused = app.post(CLOCK, Some(&admin.token), &body).await;
            refused.assert_error(400, "invalid_request");
            let fields = refused.error_fields();
            assert!(
                fields.iter().any(|f| f == field) || (field.is_empty() && !fields.is_empty()),
                "{body}: {}",
                refused.text
            );
        }
        let past_9999 = app.post(CLOCK, Some(&admin.token), &json!({"set": "9999-12-31T00:00:00Z"})).await;
        assert_eq!(past_9999.status, StatusCode::OK, "{}", past_9999.text);
        app.post(CLOCK, Some(&admin.token), &json!({"advance": "2d"})).await.assert_error(400, "invalid_request");
        let still = app.get(CLOCK, Some(&admin.token)).await;
        assert_eq!(parsed(&still.body["now"]), Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).single().expect("instant"));
        app.stop().await;
    }
}

#[tokio::test]
async fn simulation_routes_are_404_without_the_mode_and_for_admins_only_with_it() {
    for backend in backends() {
        let plain = TestApp::spawn(backend).await;
        let admin = plain.admin("boss").await;
        for token in [Some(admin.token.as_str()), None] {
            plain.get(CLOCK, token).await.assert_error(404, "not_found");
            plain.post(CLOCK, token, &json!({"advance": "1d"})).await.assert_error(404, "not_found");
            plain.get(STATE_HASH, token).await.assert_error(404, "not_found");
        }
        let served = plain.get("/openapi.json", None).await.body;
        for path in [CLOCK, STATE_HASH] {
            assert!(served["paths"].get(path).is_none(), "a server without the mode does not offer {path}");
        }
        plain.stop().await;

        let app = simulating(backend).await;
        let user = app.user("sefa").await;
        app.get(CLOCK, Some(&user.token)).await.assert_error(403, "insufficient_permissions");
        app.post(CLOCK, Some(&user.token), &json!({"advance": "1d"}))
            .await
            .assert_error(403, "insufficient_permissions");
        app.get(STATE_HASH, Some(&user.token)).await.assert_error(403, "insufficient_permissions");
        app.get(CLOCK, None).await.assert_error(401, "unauthorized");
        app.get(STATE_HASH, None).await.assert_error(401, "unauthorized");
        let admin = app.admin("boss").await;
        assert_eq!(app.get(CLOCK, Some(&admin.token)).await.body["mode"], "system", "nobody moved the clock");
        let served = app.get("/openapi.json", None).await.body;
        assert!(served["paths"][CLOCK]["post"].is_object() && served["paths"][STATE_HASH]["get"].is_object());
        app.stop().await;
    }
}

#[tokio::test]
async fn the_state_hash_is_stable_until_money_moves() {
    for backend in backends() {
        let app = simulating(backend).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.credit(&sefa, "25.00", "USD").await;
        let first = app.get(STATE_HASH, Some(&admin.token)).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert!(
            first.body["hash"]
                .as_str()
                .is_some_and(|h| h.len() == 64 && h.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
        );
        assert_eq!(
            (first.body["users"].as_u64(), first.body["wallets"].as_u64(), first.body["transactions"].as_u64()),
            (Some(2), Some(1), Some(1))
        );
        // Reads, logins and a refused movement change nothing the hash covers.
        app.get("/api/v1/balances", Some(&sefa.token)).await;
        app.login(&sefa.email).await;
        let refused =
            app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "99", "currency": "USD"})).await;
        refused.assert_error(400, "insufficient_funds");
        assert_eq!(app.get(STATE_HASH, Some(&admin.token)).await.body, first.body, "stable while nothing moves");

        app.money("/api/v1/transactions/debit", &sefa, None, &json!({"amount": "0.01", "currency": "USD"})).await;
        let moved = app.get(STATE_HASH, Some(&admin.token)).await;
        assert_ne!(moved.body["hash"], first.body["hash"]);
        assert_eq!(moved.body["transactions"], 2);
        app.stop().await;
    }
}

/// Builds the same users, wallets and transactions, with the same ids and instants, on a fresh database of
/// `backend`, and returns its state hash.
async fn same_state_hash(backend: Backend) -> banksim_store::StateHash {
    let database = banksim_store::testing::TestDatabase::create(backend).await;
    let store = banksim_store::connect(&database.url, ConnectOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let at = |minute: i64| instant(2030, 1, 31, 9) + chrono::Duration::microseconds(minute * 60_000_000 + 123_456);
    let ids: Vec<Uuid> = (1..=3).map(|n| Uuid::from_u128(0x1000 + n)).collect();
    for (n, name) in ["sefa", "Kerem_2", "ayşe"].iter().enumerate() {
        let user = NewUser {
            id: ids[n],
            username: (*name).to_owned(),
            email: format!("{}@example.com", name.to_lowercase()),
            password_hash: format!("not-hashed-{n}-{}", Uuid::new_v4()),
            role: if n == 0 { Role::Admin } else { Role::User },
            now: at(n as i64),
        };
        store.create_user(user, &AuditContext::default()).await.expect("user");
    }
    let usd = |minor: i64| Money::new(minor, Currency::USD);
    let movements = [
        Movement::Credit { user_id: ids[0], amount: usd(100_000) },
        Movement::Credit { user_id: ids[1], amount: Money::new(5_000, Currency::JPY) },
        Movement::Transfer { from_user_id: ids[0], to_user_id: ids[2], amount: usd(1_234) },
        Movement::Exchange {
            user_id: ids[0],
            amount: usd(999),
            to_currency: Currency::EUR,
            rate: Rate::from_str("0.92").expect("rate"),
        },
        Movement::Debit { user_id: ids[2], amount: usd(1) },
    ];
    for (n, movement) in movements.into_iter().enumerate() {
        let request = LedgerRequest {
            work: LedgerWork::One(Command {
                transaction_id: Uuid::from_u128(0x2000 + n as u128),
                movement,
                description: (n % 2 == 0).then(|| format!("line {n}\twith a tab, \"quotes\" and ü")),
                effective_at: None,
            }),
            idempotency: None,
            audit: AuditContext::default(),
        };
        let renderer = banksim_server::http::transactions::TransactionRenderer;
        store.post_batch(&[request], &renderer, at(10 + n as i64)).await.expect("post");
    }
    let hashed = banksim_store::state_hash(store.as_ref()).await.expect("hash");
    store.close().await;
    database.remove().await;
    hashed
}

#[tokio::test]
async fn the_same_data_hashes_the_same_on_sqlite_and_postgresql() {
    let hashes: Vec<(Backend, banksim_store::StateHash)> = {
        let mut hashes = Vec::new();
        for backend in backends() {
            hashes.push((backend, same_state_hash(backend).await));
        }
        hashes
    };
    let (_, sqlite) = &hashes[0];
    assert_eq!((sqlite.users, sqlite.wallets, sqlite.transactions), (3, 4, 5), "{sqlite:?}");
    assert_eq!(same_state_hash(Backend::Sqlite).await, *sqlite, "the same data twice, the same hash");
    for (backend, hashed) in &hashes[1..] {
        assert_eq!(hashed, sqlite, "{backend:?} hashes the same data as SQLite");
    }
}

#[tokio::test]
async fn two_advances_at_once_on_two_instances_take_turns_and_both_count() {
    for backend in backends() {
        let app = simulating(backend).await;
        let other = app.spawn_beside(|config| config.simulation_mode = true).await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.post(CLOCK, Some(&admin.token), &json!({"set": text(instant(2030, 1, 1, 0))})).await;
        let daily = json!({"transaction_type": "credit", "amount": "1", "currency": "USD", "schedule_type": "recurring",
                           "execute_at": text(instant(2030, 1, 1, 12)), "recurrence_pattern": "daily"});
        let created = app.money("/api/v1/scheduled-transactions", &sefa, None, &daily).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let body = json!({"advance": "10d"});
        let (first, second) =
            tokio::join!(app.post(CLOCK, Some(&admin.token), &body), other.post(CLOCK, Some(&admin.token), &body));
        assert_eq!((first.status, second.status), (StatusCode::OK, StatusCode::OK), "{} / {}", first.text, second.text);
        let mut ends = [parsed(&first.body["now"]), parsed(&second.body["now"])];
        ends.sort();
        assert_eq!(ends, [instant(2030, 1, 11, 0), instant(2030, 1, 21, 0)], "one after the other, never interleaved");
        // Twenty days of a daily credit at noon: twenty occurrences, each once.
        assert_eq!(app.balance(&sefa, "USD").await, "20.00");
        let id = created.body["id"].as_str().expect("id");
        let runs = app.get(&format!("/api/v1/scheduled-transactions/{id}/executions"), Some(&sefa.token)).await;
        let occurrences: Vec<u64> =
            runs.body["executions"].as_array().expect("runs").iter().filter_map(|r| r["occurrence"].as_u64()).collect();
        assert_eq!(occurrences, (1..=20).collect::<Vec<u64>>());
        app.assert_ledger_sound().await;
        other.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn an_advance_outlasts_an_instance_that_died_holding_a_claim() {
    for backend in backends() {
        // No background scheduler: the only claims are the walker's and the one this test makes and abandons.
        let app = TestApp::spawn_with(
            backend,
            |config| {
                config.simulation_mode = true;
                config.scheduler_enabled = false;
            },
            axum::Router::new(),
        )
        .await;
        let admin = app.admin("boss").await;
        let sefa = app.user("sefa").await;
        app.post(CLOCK, Some(&admin.token), &json!({"set": text(instant(2030, 1, 1, 0))})).await;
        let once = json!({"transaction_type": "credit", "amount": "7", "currency": "USD", "schedule_type": "once",
                          "execute_at": text(instant(2030, 1, 1, 12))});
        let created = app.money("/api/v1/scheduled-transactions", &sefa, None, &once).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        // An instance claims the occurrence at noon, then dies: its lease (2 s in tests) ends on the virtual clock.
        let lease = std::time::Duration::from_secs(app.state.config.scheduler_lease_secs);
        let claims = app.state.store.claim_due_schedules(instant(2030, 1, 1, 12), lease, 10).await.expect("claim");
        assert_eq!(claims.len(), 1);

        let started = std::time::Instant::now();
        let advanced = app.post(CLOCK, Some(&admin.token), &json!({"advance": "1d"})).await;
        assert_eq!(advanced.status, StatusCode::OK, "{}", advanced.text);
        assert_eq!(parsed(&advanced.body["now"]), instant(2030, 1, 2, 0));
        assert!(started.elapsed() >= lease, "the walker waited one lease of real time for the dead claim");
        let id = created.body["id"].as_str().expect("id");
        let runs = app.get(&format!("/api/v1/scheduled-transactions/{id}/executions"), Some(&sefa.token)).await;
        let runs = runs.body["executions"].as_array().expect("runs").clone();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["status"], "success");
        // Late by one lease, the price of the dead claim, but run, and once.
        assert_eq!(
            parsed(&runs[0]["executed_at"]),
            instant(2030, 1, 1, 12) + chrono::Duration::from_std(lease).expect("lease")
        );
        assert_eq!(app.balance(&sefa, "USD").await, "7.00");
        app.stop().await;
    }
}

#[tokio::test]
async fn in_simulation_mode_ids_derive_from_the_request_and_answers_show_the_clock() {
    let name = |parts: &[&[u8]]| parts.concat();
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://github.com/banksim/banksim");
    for backend in backends() {
        let app = simulating(backend).await;
        let admin = app.admin("boss").await;
        let set = app.post(CLOCK, Some(&admin.token), &json!({"set": "2030-01-01T00:00:00Z"})).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text);
        assert_eq!(set.headers["x-simulation-clock"], "2030-01-01T00:00:00.000000Z");
        let sefa = app.user("sefa").await;
        let kerem = app.user("kerem").await;
        let sefa_id = Uuid::parse_str(&sefa.id).expect("an id");
        assert_eq!(sefa_id, Uuid::new_v5(&namespace, &name(&[b"user\0", b"sefa@example.com"])));
        app.credit(&sefa, "10", "USD").await;

        let paid = app
            .money(
                "/api/v1/transactions/transfer",
                &sefa,
                Some("pay-1"),
                &json!({"to_user_id": kerem.id, "amount": "1", "currency": "USD"}),
            )
            .await;
        assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
        assert_eq!(paid.headers["x-simulation-clock"], "2030-01-01T00:00:00.000000Z");
        let expected =
            Uuid::new_v5(&namespace, &name(&[b"movement\0", sefa_id.as_bytes(), &0u64.to_be_bytes(), b"pay-1"]));
        assert_eq!(paid.body["id"], expected.to_string());

        let batch = json!({"atomic": true, "transactions": [
            {"type": "transfer", "to_user_id": kerem.id, "amount": "1", "currency": "USD"},
            {"type": "transfer", "to_user_id": kerem.id, "amount": "2", "currency": "USD"}]});
        let batched = app.money("/api/v1/transactions/batch", &sefa, Some("pay-2"), &batch).await;
        assert_eq!(batched.status, StatusCode::CREATED, "{}", batched.text);
        let second =
            Uuid::new_v5(&namespace, &name(&[b"movement\0", sefa_id.as_bytes(), &1u64.to_be_bytes(), b"pay-2"]));
        assert_eq!(batched.body["results"][1]["transaction"]["id"], second.to_string(), "{}", batched.text);

        // Without a key there is nothing to derive from: a random id, and two alike requests make two ids.
        let body = json!({"to_user_id": kerem.id, "amount": "1", "currency": "USD"});
        let first = app.money("/api/v1/transactions/transfer", &sefa, None, &body).await;
        let again = app.money("/api/v1/transactions/transfer", &sefa, None, &body).await;
        assert_eq!((first.status, again.status), (StatusCode::CREATED, StatusCode::CREATED));
        assert_ne!(first.body["id"], again.body["id"]);
        app.assert_ledger_sound().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn without_simulation_mode_ids_are_random_and_no_clock_is_shown() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let sefa = app.user("sefa").await;
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://github.com/banksim/banksim");
    let sefa_id = Uuid::parse_str(&sefa.id).expect("an id");
    assert_ne!(sefa_id, Uuid::new_v5(&namespace, b"user\0sefa@example.com"));
    assert_eq!(sefa_id.get_version_num(), 7);
    let balance = app.get("/api/v1/balances", Some(&sefa.token)).await;
    assert!(balance.headers.get("x-simulation-clock").is_none());
    app.assert_ledger_sound().await;
    app.stop().await;
}
