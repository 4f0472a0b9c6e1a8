//! The `banksim` command, run as a user would: configuration errors, migrate, admin create, seed, serve.

mod common;

use common::{Server, banksim, run, stderr};

use std::process::Command;

use banksim_store::Backend;
use banksim_store::testing::{TestDatabase, backends};

#[test]
fn a_wrong_setting_stops_the_start_naming_its_variable() {
    let data = tempfile::tempdir().expect("tempdir");
    let strong = "x".repeat(40);
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("PORT", "not-a-port")], "PORT"),
        (&[("ENV", "staging")], "ENV"),
        (&[("ENV", "prod")], "JWT_SECRET"),
        (&[("ENV", "prod"), ("JWT_SECRET", "too-short")], "JWT_SECRET"),
        (&[("DATABASE_URL", "mysql://localhost/bank")], "DATABASE_URL"),
        (&[("ALLOWED_ORIGINS", "example.com")], "ALLOWED_ORIGINS"),
        (&[("ENV", "prod"), ("JWT_SECRET", &strong), ("SIMULATION_MODE", "true")], "SIMULATION_MODE"),
        (&[("SIMULATION_START", "2030-01-01T00:00:00Z")], "SIMULATION_START"),
        (&[("SIMULATION_MODE", "true"), ("SIMULATION_START", "soon")], "SIMULATION_START"),
    ];
    for (vars, named) in cases {
        let output = run(banksim(data.path()).envs(vars.iter().copied()).arg("migrate"));
        assert!(!output.status.success(), "{vars:?} should fail");
        assert!(stderr(&output).contains(named), "{vars:?}: {}", stderr(&output));
    }
}

/// The database URL for `backend`, and the database itself (kept alive by the caller).
async fn database(backend: Backend) -> TestDatabase {
    TestDatabase::create(backend).await
}

#[tokio::test]
async fn migrate_admin_create_and_seed_work_on_every_backend() {
    for backend in backends() {
        let db = database(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let with_db = |command: &mut Command| {
            command.env("DATABASE_URL", &db.url);
        };

        let mut migrate = banksim(data.path());
        with_db(&mut migrate);
        let output = run(migrate.arg("migrate"));
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains(backend.name()));

        let mut create = banksim(data.path());
        with_db(&mut create);
        let output = run(create
            .args(["admin", "create", "--email", "Root@Example.com", "--username", "root"])
            .env("BANKSIM_NEW_ADMIN_PASSWORD", "root-password"));
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("root@example.com"));

        let mut invalid = banksim(data.path());
        with_db(&mut invalid);
        let output = run(invalid.args(["admin", "create", "--email", "bad", "--username", "x", "--password", "short"]));
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(message.contains("email") && message.contains("username") && message.contains("password"), "{message}");

        for round in 0..2 {
            let mut seed = banksim(data.path());
            with_db(&mut seed);
            let output = run(seed.args(["seed", "--demo"]));
            assert!(output.status.success(), "round {round}: {}", stderr(&output));
            let expected = if round == 0 { "3 created" } else { "0 created" };
            assert!(String::from_utf8_lossy(&output.stdout).contains(expected), "round {round}");
        }

        let mut prod = banksim(data.path());
        with_db(&mut prod);
        let output = run(prod.args(["seed", "--demo"]).env("ENV", "prod").env("JWT_SECRET", "x".repeat(40)));
        assert!(!output.status.success());
        assert!(stderr(&output).contains("prod"), "{}", stderr(&output));

        let store = banksim_store::connect(&db.url, Default::default()).await.expect("connect");
        let demo = store
            .find_user("550e8400-e29b-41d4-a716-446655440003".parse().expect("uuid"))
            .await
            .expect("find")
            .expect("the demo admin exists with its fixed id");
        assert_eq!((demo.username.as_str(), demo.email.as_str()), ("admin", "admin@example.com"));
        assert_eq!(demo.role, banksim_core::user::Role::Admin);
        let sefa = store.find_credentials("sefa@example.com").await.expect("find").expect("sefa");
        assert_eq!(sefa.user.id.to_string(), "550e8400-e29b-41d4-a716-446655440001");
        store.close().await;
        db.remove().await;
    }
}

#[tokio::test]
async fn serve_is_the_default_creates_the_first_admin_and_stops_on_sigterm() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut command = banksim(data.path());
    command.env("BANKSIM_ADMIN_EMAIL", "first@example.com").env("BANKSIM_ADMIN_PASSWORD", "first-password");
    let mut server = Server::start(command);

    let client = reqwest::Client::new();
    let health = client.get(format!("{}/healthz", server.address)).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let login = client
        .post(format!("{}/api/v1/auth/login", server.address))
        .json(&serde_json::json!({"email": "first@example.com", "password": "first-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let body: serde_json::Value = login.json().await.expect("json");
    assert_eq!(body["user"]["role"], "admin");

    assert!(data.path().join("banksim.db").exists(), "the embedded database lives in DATA_DIR");
    assert!(data.path().join("jwt-secret").exists(), "the dev secret is kept in DATA_DIR");
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[tokio::test]
async fn verify_and_replay_pass_a_sound_ledger_and_name_a_tampered_one() {
    for backend in backends() {
        let db = database(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let (store, _) = alice_with_500_usd(&db.url).await;
        store.close().await;

        let verify = || {
            let mut command = banksim(data.path());
            command.env("DATABASE_URL", &db.url).arg("verify");
            run(&mut command)
        };
        let sound = verify();
        assert!(sound.status.success(), "{}", stderr(&sound));
        assert!(String::from_utf8_lossy(&sound.stdout).contains("ledger ok"));
        let replay = || {
            let mut command = banksim(data.path());
            command.env("DATABASE_URL", &db.url).arg("replay");
            run(&mut command)
        };
        let replayed = replay();
        assert!(replayed.status.success(), "{}", stderr(&replayed));
        assert!(String::from_utf8_lossy(&replayed.stdout).contains("replay ok"));

        db.execute("UPDATE accounts SET balance_minor = balance_minor + 7 WHERE kind = 'user'").await;
        let tampered = verify();
        assert!(!tampered.status.success(), "a tampered ledger fails verify");
        let report = String::from_utf8_lossy(&tampered.stdout);
        assert!(report.contains("differs from the sum of its postings"), "{report}");
        assert!(report.contains("do not sum to zero"), "{report}");
        let diverged = replay();
        assert!(!diverged.status.success(), "replay reports a balance the events do not explain");
        let report = String::from_utf8_lossy(&diverged.stdout);
        assert!(report.contains("DIFFERENCE") && report.contains("ledger 507, events 500"), "{report}");
        db.remove().await;
    }
}

#[tokio::test]
async fn rebuild_restores_projections_from_the_event_log() {
    for backend in backends() {
        let db = database(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let (store, user) = alice_with_500_usd(&db.url).await;
        // Projections that went wrong behind the projectors' backs.
        db.execute("INSERT INTO system_totals VALUES ('USD', 1, 0, 0, 0, 1)").await;
        let events = store.list_events(0, 100).await.expect("events");
        let last = events.last().expect("events").sequence;
        db.execute(&format!("UPDATE projection_checkpoints SET position = {last}")).await;

        let mut command = banksim(data.path());
        command.env("DATABASE_URL", &db.url).arg("rebuild");
        let rebuilt = run(&mut command);
        assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
        let report = String::from_utf8_lossy(&rebuilt.stdout);
        assert!(report.contains("daily_statements: rebuilt") && report.contains("system_totals: rebuilt"), "{report}");
        let totals = store.system_totals().await.expect("totals");
        assert_eq!((totals.len(), totals[0].user_balances_minor, totals[0].money_in_minor), (1, 500, 500));
        let today = chrono::Utc::now().date_naive();
        let (from, to) = (today - chrono::Days::new(1), today + chrono::Days::new(1));
        let query = banksim_store::StatementQuery { user_id: user.id, currency: None, from, to };
        let statements = store.statements(&query).await.expect("statements");
        assert_eq!(statements[0].days[0].closing_minor, 500);

        let mut command = banksim(data.path());
        command.env("DATABASE_URL", &db.url).args(["rebuild", "--projection", "nothing"]);
        let refused = run(&mut command);
        assert!(!refused.status.success());
        assert!(stderr(&refused).contains("daily_statements, system_totals"), "{}", stderr(&refused));
        store.close().await;
        db.remove().await;
    }
}

/// A migrated store whose one user, alice, was credited 5.00 USD.
async fn alice_with_500_usd(url: &str) -> (std::sync::Arc<dyn banksim_store::Store>, banksim_core::user::User) {
    let store = banksim_store::connect(url, Default::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let user = store
        .create_user(
            banksim_store::NewUser {
                id: uuid::Uuid::new_v4(),
                username: "alice".into(),
                email: "alice@example.com".into(),
                password_hash: "x".into(),
                role: banksim_core::user::Role::User,
                now: chrono::Utc::now(),
            },
            &Default::default(),
        )
        .await
        .expect("user");
    let credit = banksim_store::LedgerRequest {
        work: banksim_store::LedgerWork::One(banksim_core::ledger::Command {
            transaction_id: uuid::Uuid::now_v7(),
            movement: banksim_core::ledger::Movement::Credit {
                user_id: user.id,
                amount: banksim_core::money::Money::new(500, banksim_core::currency::Currency::USD),
            },
            description: None,
            effective_at: None,
        }),
        idempotency: None,
        audit: Default::default(),
    };
    store.post_batch(&[credit], &NoAnswers, chrono::Utc::now()).await.expect("credit");
    (store, user)
}

/// Stores no answers: the test posts without idempotency keys.
struct NoAnswers;

impl banksim_store::ResponseRenderer for NoAnswers {
    fn render(&self, _: &banksim_store::LedgerRequest, _: &banksim_store::LedgerOutcome) -> (u16, String) {
        (201, String::new())
    }
}

#[tokio::test]
async fn health_says_whether_a_server_is_ready() {
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::start(banksim(data.path()));
    let ready = run(banksim(data.path()).args(["health", "--url", &server.address]));
    assert!(ready.status.success(), "{}", stderr(&ready));
    drop(server);
    let gone = run(banksim(data.path()).args(["health", "--url", "http://127.0.0.1:9", "--timeout-secs", "2"]));
    assert_eq!(gone.status.code(), Some(1), "{}", stderr(&gone));
}

#[tokio::test]
async fn backup_copies_a_running_sqlite_database_and_refers_postgres_to_pg_dump() {
    let data = tempfile::tempdir().expect("data dir");
    let db = database(Backend::Sqlite).await;
    let mut command = banksim(data.path());
    command.env("DATABASE_URL", &db.url);
    let server = Server::start(command);
    let (_, alice) = alice_with_500_usd(&db.url).await;
    let copy = data.path().join("copy.db");
    let backup = run(banksim(data.path()).env("DATABASE_URL", &db.url).args(["backup", "--to"]).arg(&copy));
    assert!(backup.status.success(), "{}", stderr(&backup));
    drop(server);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).expect("copy").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy holds password hashes");
    }
    let copy_url = format!("sqlite:{}", copy.display());
    let verified = run(banksim(data.path()).env("DATABASE_URL", &copy_url).arg("verify"));
    assert!(verified.status.success(), "{}", stderr(&verified));
    let store = banksim_store::connect(&copy_url, banksim_store::ConnectOptions::default()).await.expect("open copy");
    let wallets = store.wallets(alice.id, None).await.expect("wallets");
    assert_eq!(wallets.iter().map(|w| w.balance_minor).collect::<Vec<_>>(), [500], "alice's money is in the copy");
    let again = run(banksim(data.path()).env("DATABASE_URL", &db.url).args(["backup", "--to"]).arg(&copy));
    assert!(!again.status.success(), "an existing file is never overwritten");

    if backends().contains(&Backend::Postgres) {
        let pg = database(Backend::Postgres).await;
        let refused = run(banksim(data.path())
            .env("DATABASE_URL", &pg.url)
            .args(["backup", "--to"])
            .arg(data.path().join("pg.db")));
        assert!(!refused.status.success());
        assert!(stderr(&refused).contains("pg_dump"), "{}", stderr(&refused));
    }
}

#[test]
fn production_with_open_metrics_starts_with_a_warning() {
    let data = tempfile::tempdir().expect("data dir");
    let secret = "a-production-secret-of-at-least-32-bytes";
    let mut open = banksim(data.path());
    open.env("ENV", "prod").env("JWT_SECRET", secret);
    let server = Server::start(open);
    let warned = |server: &Server| server.log().iter().any(|line| line.contains("METRICS_TOKEN"));
    assert!(warned(&server), "{:?}", server.log());
    drop(server);
    let mut guarded = banksim(data.path());
    guarded.env("ENV", "prod").env("JWT_SECRET", secret).env("METRICS_TOKEN", "a-metrics-token-of-some-length");
    let server = Server::start(guarded);
    assert!(!warned(&server), "{:?}", server.log());
}

#[tokio::test]
async fn events_tail_prints_the_relayed_event_stream_in_order() {
    let nats = banksim_store::testing::NatsServer::start().await;
    let data = tempfile::tempdir().expect("data dir");
    let mut command = banksim(data.path());
    command.env("NATS_URL", nats.url()).env("RELAY_POLL_INTERVAL_MS", "20");
    let server = Server::start(command);
    let seeded = run(banksim(data.path()).args(["seed", "--demo"]));
    assert!(seeded.status.success(), "{}", stderr(&seeded));

    // The demo users and their opening credits are events; the relay publishes them within moments.
    let mut lines = Vec::new();
    for _ in 0..100 {
        let tail = run(banksim(data.path()).env("NATS_URL", nats.url()).args(["events", "tail", "--limit", "3"]));
        if tail.status.success() {
            lines = String::from_utf8_lossy(&tail.stdout).lines().map(str::to_owned).collect();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(server);
    assert_eq!(lines.len(), 3, "three events printed");
    for (line, sequence) in lines.iter().zip(1..) {
        let event: serde_json::Value = serde_json::from_str(line).expect("one JSON event per line");
        assert_eq!(event["sequence"], sequence, "{line}");
        assert!(event["event_type"].is_string() && event["aggregate_type"].is_string(), "{line}");
    }
    let unset = run(banksim(data.path()).args(["events", "tail"]));
    assert!(!unset.status.success());
    assert!(stderr(&unset).contains("NATS_URL"), "{}", stderr(&unset));
}

#[tokio::test]
async fn banksim_hash_prints_what_the_state_hash_route_answers() {
    for backend in backends() {
        let db = database(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let mut command = banksim(data.path());
        command
            .env("DATABASE_URL", &db.url)
            .env("SIMULATION_MODE", "true")
            .env("BANKSIM_ADMIN_EMAIL", "root@example.com")
            .env("BANKSIM_ADMIN_PASSWORD", "root-password");
        let mut server = Server::start(command);
        let client = reqwest::Client::new();
        let login: serde_json::Value = client
            .post(format!("{}/api/v1/auth/login", server.address))
            .json(&serde_json::json!({"email": "root@example.com", "password": "root-password"}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let token = login["access_token"].as_str().expect("token").to_owned();
        let credit = client
            .post(format!("{}/api/v1/transactions/credit", server.address))
            .bearer_auth(&token)
            .json(&serde_json::json!({"amount": "12.34", "currency": "EUR", "description": "café \"latte\""}))
            .send()
            .await
            .expect("credit");
        assert_eq!(credit.status(), 201);
        let route: serde_json::Value = client
            .get(format!("{}/api/v1/admin/state-hash", server.address))
            .bearer_auth(&token)
            .send()
            .await
            .expect("state hash")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (route["users"].as_u64(), route["wallets"].as_u64(), route["transactions"].as_u64()),
            (Some(1), Some(1), Some(1))
        );
        assert!(server.terminate().success());

        let printed = run(banksim(data.path()).env("DATABASE_URL", &db.url).arg("hash"));
        assert!(printed.status.success(), "{}", stderr(&printed));
        assert_eq!(
            String::from_utf8_lossy(&printed.stdout).trim(),
            route["hash"].as_str().expect("hash"),
            "{backend:?}"
        );
        let json = run(banksim(data.path()).env("DATABASE_URL", &db.url).args(["hash", "--json"]));
        assert!(json.status.success(), "{}", stderr(&json));
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
        assert_eq!(json, route, "{backend:?}");
        db.remove().await;
    }
}
