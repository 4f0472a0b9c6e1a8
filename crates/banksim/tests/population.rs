//! `banksim seed --population`: reproducible to the byte on every backend, sound for `verify` and `replay`, and
//! usable — its users log in with the shared password, and the virtual clock waits at the end of its timeline.

mod common;

use common::{Server, banksim, run, stderr};

use banksim_store::testing::{TestDatabase, backends};
use banksim_store::{AuditQuery, Backend, ConnectOptions, HistoryQuery, UserListQuery};

/// A small population: the suite stays fast; the 100,000-user figure is a benchmark (docs/benchmarks.md).
const POPULATION: &str = "60";

/// Seeds a population into a fresh database of `backend` with `seed` and `extra` options; returns the database and
/// the command's standard output.
async fn seeded(backend: Backend, seed: &str, extra: &[&str]) -> (TestDatabase, String) {
    let db = TestDatabase::create(backend).await;
    let data = tempfile::tempdir().expect("data dir");
    let output = run(banksim(data.path())
        .env("DATABASE_URL", &db.url)
        .args([
            "seed",
            "--population",
            POPULATION,
            "--seed",
            seed,
            "--currencies",
            "USD,EUR,JPY",
            "--history-days",
            "10",
        ])
        .args(extra));
    assert!(output.status.success(), "{backend:?}: {}", stderr(&output));
    (db, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `banksim <args>` on the database at `url`; asserts success and returns standard output.
fn banksim_on(url: &str, args: &[&str]) -> String {
    let data = tempfile::tempdir().expect("data dir");
    let output = run(banksim(data.path()).env("DATABASE_URL", url).args(args));
    assert!(
        output.status.success(),
        "banksim {args:?}: {}\n{}",
        stderr(&output),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_same_seed_gives_the_same_state_hash_on_every_backend_and_another_seed_another() {
    let mut hashes = Vec::new();
    for backend in backends() {
        let (first, said) = seeded(backend, "42", &[]).await;
        assert!(said.contains("population ready: 60 users"), "{said}");
        let (second, _) = seeded(backend, "42", &[]).await;
        let hash = banksim_on(&first.url, &["hash", "--json"]);
        assert_eq!(hash, banksim_on(&second.url, &["hash", "--json"]), "{backend:?}: two runs, one hash");
        let counts: serde_json::Value = serde_json::from_str(&hash).expect("json");
        assert_eq!(counts["users"], 60);
        assert!(counts["transactions"].as_u64().expect("count") > 300, "{counts}");
        hashes.push((backend, hash));
        // Every invariant of the ledger holds, and the event log rebuilds every balance.
        assert!(banksim_on(&first.url, &["verify"]).contains("ledger ok"));
        assert!(banksim_on(&first.url, &["replay"]).contains("replay ok"));
        first.remove().await;
        second.remove().await;
    }
    assert!(hashes.windows(2).all(|pair| pair[0].1 == pair[1].1), "SQLite and PostgreSQL agree: {hashes:?}");
    let (other, _) = seeded(Backend::Sqlite, "43", &[]).await;
    assert_ne!(banksim_on(&other.url, &["hash", "--json"]), hashes[0].1, "another seed, another population");
}

#[tokio::test]
async fn the_users_log_in_with_the_shared_password_and_the_clock_waits_at_the_end_of_the_timeline() {
    let backend = *backends().last().expect("a backend");
    let (db, _) = seeded(backend, "7", &["--password", "shared-secret-1", "--until", "2031-06-15T12:00:00Z"]).await;
    let store = banksim_store::connect(&db.url, ConnectOptions::default()).await.expect("connect");
    let page = UserListQuery { limit: 3, offset: 0, after: None, include_inactive: false };
    let users = store.list_users(page).await.expect("users").users;
    let first_day: chrono::DateTime<chrono::Utc> = "2031-06-05T00:00:00Z".parse().expect("instant");
    assert!(users.iter().all(|u| u.created_at == first_day), "registered when the history starts");
    let until = "2031-06-15T12:00:00Z".parse().expect("instant");
    assert_eq!(store.virtual_now().await.expect("clock"), Some(until));
    let balances = store.wallets(users[0].id, None).await.expect("wallets");
    store.close().await;

    let data = tempfile::tempdir().expect("data dir");
    let mut command = banksim(data.path());
    command.env("DATABASE_URL", &db.url).env("SIMULATION_MODE", "true");
    let server = Server::start(command);
    let client = reqwest::Client::new();
    let login = |password: &'static str| {
        let body = serde_json::json!({"email": users[0].email, "password": password});
        client.post(format!("{}/api/v1/auth/login", server.address)).json(&body).send()
    };
    assert_eq!(login("wrong-password").await.expect("login").status(), 401);
    let answer = login("shared-secret-1").await.expect("login");
    assert_eq!(answer.status(), 200);
    let token =
        answer.json::<serde_json::Value>().await.expect("json")["access_token"].as_str().expect("token").to_owned();
    let mine: serde_json::Value = client
        .get(format!("{}/api/v1/balances", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("balances")
        .json()
        .await
        .expect("json");
    let shown = mine.to_string();
    for wallet in &balances {
        assert!(shown.contains(wallet.currency.code()), "{shown} lacks {:?}", wallet.currency);
    }
}

#[tokio::test]
async fn a_population_is_refused_in_production_and_on_a_database_with_users() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let data = tempfile::tempdir().expect("data dir");
    let prod = run(banksim(data.path())
        .env("DATABASE_URL", &db.url)
        .env("ENV", "prod")
        .env("JWT_SECRET", "x".repeat(40))
        .args(["seed", "--population", "5"]));
    assert!(!prod.status.success());
    assert!(stderr(&prod).contains("ENV=prod"), "{}", stderr(&prod));

    banksim_on(&db.url, &["seed", "--demo"]);
    let before = banksim_on(&db.url, &["hash"]);
    let refused = run(banksim(data.path()).env("DATABASE_URL", &db.url).args(["seed", "--population", "5"]));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("nothing was written"), "{}", stderr(&refused));
    assert_eq!(banksim_on(&db.url, &["hash"]), before, "nothing was written");

    let nothing = run(banksim(data.path()).env("DATABASE_URL", &db.url).args(["seed"]));
    assert!(stderr(&nothing).contains("--population"), "{}", stderr(&nothing));
    let bad = run(banksim(data.path()).env("DATABASE_URL", &db.url).args([
        "seed",
        "--population",
        "5",
        "--currencies",
        "VND",
    ]));
    assert!(stderr(&bad).contains("VND"), "{}", stderr(&bad));
}

/// Everything of a ledger that both write paths must write alike: the event log whole, the audit trail whole (its
/// entries' ids and hashes aside, which are random and follow from the ids), and every wallet's postings.
async fn ledger_rows(url: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let store = banksim_store::connect(url, ConnectOptions::default()).await.expect("connect");
    let (mut events, mut after) = (Vec::new(), 0);
    loop {
        let page = store.list_events(after, 1_000).await.expect("events");
        let Some(last) = page.last() else { break };
        after = last.sequence;
        events.extend(page.iter().map(|event| format!("{event:?}")));
    }
    let mut audit = Vec::new();
    let mut before_id = None;
    loop {
        let query = AuditQuery { limit: 1_000, before_id, ..AuditQuery::default() };
        let page = store.list_audit(&query).await.expect("audit");
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        audit.extend(page.iter().map(|entry| format!("{entry:?}")));
    }
    let everyone = UserListQuery { limit: 1_000, offset: 0, after: None, include_inactive: true };
    let mut postings = Vec::new();
    for user in store.list_users(everyone).await.expect("users").users {
        for wallet in store.wallets(user.id, None).await.expect("wallets") {
            postings.push(format!("{}: {wallet:?}", user.id));
            let query =
                HistoryQuery { user_id: user.id, currency: wallet.currency, limit: 10_000, since: None, until: None };
            let history = store.balance_history(&query).await.expect("history");
            postings.extend(history.iter().map(|entry| format!("{entry:?}")));
        }
    }
    store.close().await;
    (events, audit, postings)
}

/// A hash of every index and constraint of the database, with the number of them: equal for equal schemas.
async fn schema_fingerprint(db: &TestDatabase) -> (i64, i64) {
    // Each test database is a schema of its own: its name is left out.
    let catalog = "SELECT replace(indexdef, current_schema() || '.', '') AS definition
                   FROM pg_indexes WHERE schemaname = current_schema()
                   UNION ALL
                   SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
                   FROM pg_constraint WHERE connamespace = current_schema()::regnamespace";
    let hash = db
        .query_count(&format!(
            "SELECT hashtext(string_agg(definition, E'\\n' ORDER BY definition))::bigint FROM ({catalog}) AS c"
        ))
        .await;
    let count = db.query_count(&format!("SELECT count(*) FROM ({catalog}) AS c")).await;
    assert!(count > 30, "{count} indexes and constraints");
    (hash, count)
}

/// A hash of every row of `accounts`, every column included, with the number of rows.
async fn accounts_fingerprint(db: &TestDatabase) -> (i64, i64) {
    let hash = db.query_count("SELECT hashtext(string_agg(a::text, E'\\n' ORDER BY id))::bigint FROM accounts a").await;
    let count = db.query_count("SELECT count(*) FROM accounts").await;
    assert!(count > 300, "{count} accounts");
    (hash, count)
}

/// More movements than several of the bulk path's `COPY` groups (20,000 movements each) hold: later groups are
/// encoded into the buffers of earlier ones, which must come back empty, or a `COPY` fails or writes a row twice.
#[tokio::test]
async fn a_population_of_many_copy_groups_is_written_whole_on_postgres() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let said = banksim_on(&db.url, &["seed", "--population", "3000", "--seed", "5", "--history-days", "30"]);
    let reported: i64 = said
        .split_once("users, ")
        .and_then(|(_, rest)| rest.split_once(" transactions"))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in {said:?}"));
    assert!(reported > 80_000, "{reported} movements: fewer than four groups");
    assert_eq!(db.query_count("SELECT count(*) FROM transactions").await, reported);
    assert_eq!(db.query_count("SELECT count(*) FROM events WHERE aggregate_type = 'transaction'").await, reported);
    assert!(banksim_on(&db.url, &["verify"]).contains("ledger ok"));
    db.remove().await;
}

#[tokio::test]
async fn the_bulk_path_writes_what_the_batch_path_writes_on_postgres() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let seed = |extra: &'static [&'static str]| async move {
        let db = TestDatabase::create(Backend::Postgres).await;
        let args = ["seed", "--population", "200", "--seed", "11", "--history-days", "10"];
        let said = banksim_on(&db.url, &[&args[..], extra].concat());
        assert!(said.contains("population ready: 200 users"), "{said}");
        db
    };
    let bulk = seed(&[]).await;
    let batches = seed(&["--via-batches"]).await;
    let hash = banksim_on(&bulk.url, &["hash", "--json"]);
    assert_eq!(hash, banksim_on(&batches.url, &["hash", "--json"]), "one state, whichever the path");
    let counts: serde_json::Value = serde_json::from_str(&hash).expect("json");
    assert!(counts["transactions"].as_u64().expect("count") > 2_000, "{counts}");
    let (events, audit, postings) = ledger_rows(&bulk.url).await;
    let (batch_events, batch_audit, batch_postings) = ledger_rows(&batches.url).await;
    assert!(events.len() > 2_000 && audit.len() > 2_000 && postings.len() > 2_000);
    assert!(events == batch_events, "the event logs differ");
    assert!(audit == batch_audit, "the audit trails differ");
    assert!(postings == batch_postings, "the wallets or their postings differ");
    // The bulk path writes an account once, as it leaves it: every column as the batches left theirs.
    assert_eq!(accounts_fingerprint(&bulk).await, accounts_fingerprint(&batches).await, "the accounts differ");
    // The bulk path set the ledger's indexes and keys aside while it wrote: every one of them is back.
    let (schema, batch_schema) = (schema_fingerprint(&bulk).await, schema_fingerprint(&batches).await);
    assert_eq!(schema, batch_schema, "an index or a key was not put back");
    // Every invariant holds (the audit chain's links included), and the event log rebuilds every balance.
    assert!(banksim_on(&bulk.url, &["verify"]).contains("ledger ok"));
    assert!(banksim_on(&bulk.url, &["replay"]).contains("replay ok"));
    bulk.remove().await;
    batches.remove().await;
}
