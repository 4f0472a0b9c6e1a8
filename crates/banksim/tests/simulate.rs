//! `banksim simulate` against a real `banksim serve`, run as a user would: every scenario moves money, gets no
//! server or transport error, and conserves money; reruns with the same seed reuse the same users.

mod common;

use common::{Server, banksim, stderr};

use std::process::Output;

use banksim_store::Backend;
use banksim_store::testing::{TestDatabase, backends};

/// Runs `banksim simulate` with the test's small settings and returns its output.
fn simulate(data_dir: &std::path::Path, address: &str, scenario: &str) -> Output {
    banksim(data_dir)
        .args(["simulate", "--url", address, "--users", "10", "--connections", "4", "--requests", "300"])
        .args(["--scenario", scenario, "--json"])
        .output()
        .expect("banksim simulate runs")
}

#[test]
fn every_scenario_moves_money_without_errors_and_conserves_it() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(banksim(data.path()));
    // The same seed on every run: the second and third runs log in the users the first one registered.
    for scenario in ["transfer", "hot", "mixed"] {
        let output = simulate(data.path(), &server.address, scenario);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{scenario}: {}\n{stdout}", stderr(&output));
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the report is one JSON object");
        assert_eq!(report["scenario"], scenario);
        assert_eq!(report["requests"], 300, "{scenario}: {report}");
        assert!(report["movements"].as_u64().is_some_and(|movements| movements > 0), "{scenario}: {report}");
        assert_eq!(report["errors"]["server"], 0, "{scenario}: {report}");
        assert_eq!(report["errors"]["transport"], 0, "{scenario}: {report}");
        assert_eq!(report["conservation"]["ok"], true, "{scenario}: {report}");
        assert_eq!(report["conservation"]["difference"], "0.00", "{scenario}: {report}");
        assert_eq!(report["passed"], true, "{scenario}: {report}");
        if scenario == "mixed" {
            let operations = report["operations"].as_object().expect("operations");
            for operation in ["credit", "debit", "transfer", "balance", "history"] {
                assert!(operations.contains_key(operation), "mixed sent no {operation}: {report}");
            }
        }
    }
}

#[test]
fn the_batch_scenario_counts_every_transfer_of_its_batches() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(banksim(data.path()));
    let output = banksim(data.path())
        .args(["simulate", "--url", &server.address, "--users", "10", "--connections", "2", "--requests", "40"])
        .args(["--scenario", "batch", "--batch-size", "50", "--json"])
        .output()
        .expect("banksim simulate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the report is one JSON object");
    assert_eq!(report["scenario"], "batch");
    assert_eq!(report["operations"]["batch"]["ok"], 40, "{report}");
    assert_eq!(report["movements"], 40 * 50, "every item of every batch moved money: {report}");
    assert_eq!(report["conservation"]["ok"], true, "{report}");
    assert_eq!(report["passed"], true, "{report}");
}

#[test]
fn the_two_phase_scenario_posts_every_hold_it_makes() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(banksim(data.path()));
    let output = banksim(data.path())
        .args(["simulate", "--url", &server.address, "--users", "10", "--connections", "4", "--requests", "100"])
        .args(["--scenario", "two-phase", "--json"])
        .output()
        .expect("banksim simulate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the report is one JSON object");
    assert_eq!(report["operations"]["hold"]["ok"], 100, "{report}");
    assert_eq!(report["operations"]["post"]["ok"], 100, "{report}");
    assert_eq!(report["movements"], 100, "a pair is one movement: {report}");
    assert_eq!(report["passed"], true, "{report}");
}

#[test]
fn the_login_scenario_only_logs_in_and_every_login_succeeds() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(banksim(data.path()));
    let output = banksim(data.path())
        .args(["simulate", "--url", &server.address, "--users", "10", "--connections", "4", "--requests", "60"])
        .args(["--scenario", "login", "--json"])
        .output()
        .expect("banksim simulate runs");
    let report = report_of(&output);
    let operations = report["operations"].as_object().expect("operations");
    assert_eq!(operations.keys().collect::<Vec<_>>(), ["login"], "{report}");
    assert_eq!(report["operations"]["login"]["ok"], 60, "{report}");
    assert_eq!(report["movements"], 0, "{report}");
    assert_eq!(report["passed"], true, "{report}");
}

#[test]
fn a_simulation_needs_a_length_and_a_reachable_server() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = banksim(data.path()).args(["simulate", "--url", "http://127.0.0.1:9"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(2), "a usage error: {}", stderr(&output));
    assert!(stderr(&output).contains("--duration") && stderr(&output).contains("--requests"), "{}", stderr(&output));

    // Port 9 (discard) has no listener here: the run stops at once, saying where it could not connect.
    let output = banksim(data.path())
        .args(["simulate", "--url", "http://127.0.0.1:9", "--requests", "10"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("127.0.0.1:9"), "{}", stderr(&output));
}

/// The admin of the simulation servers below.
const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "root-password";

/// `banksim serve` in simulation mode on `database_url`, its clock started at 2030-01-01 before the admin is made,
/// so that two fresh databases started alike hold the same rows.
fn simulation_server(data_dir: &std::path::Path, database_url: &str) -> Server {
    let mut command = banksim(data_dir);
    command
        .env("DATABASE_URL", database_url)
        .env("SIMULATION_MODE", "true")
        .env("SIMULATION_START", "2030-01-01T00:00:00Z")
        .env("BANKSIM_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("BANKSIM_ADMIN_PASSWORD", ADMIN_PASSWORD);
    Server::start(command)
}

/// The JSON report a `banksim simulate` run printed, after checking that it succeeded.
fn report_of(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", stderr(output));
    serde_json::from_str(stdout.trim()).expect("the report is one JSON object")
}

/// A small population (`banksim seed --population`) on the fresh database at `database_url`; it leaves the virtual
/// clock at 2030-01-01, where the servers above go on.
fn seed_population(data_dir: &std::path::Path, database_url: &str) {
    let output = banksim(data_dir)
        .env("DATABASE_URL", database_url)
        .args(["seed", "--population", "20", "--seed", "3", "--history-days", "3"])
        .output()
        .expect("banksim seed");
    assert!(output.status.success(), "{}", stderr(&output));
}

fn state_hash(data_dir: &std::path::Path, database_url: &str) -> String {
    let output = banksim(data_dir).env("DATABASE_URL", database_url).arg("hash").output().expect("banksim hash");
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_recorded_run_replays_to_the_same_state_hash_on_every_backend() {
    let data = tempfile::tempdir().expect("tempdir");
    let recording = data.path().join("run.jsonl");
    // Population seed + recorded scenario + virtual clock, on a fresh database each time.
    let original = TestDatabase::create(Backend::Sqlite).await;
    seed_population(data.path(), &original.url);
    let mut server = simulation_server(data.path(), &original.url);
    let recorded = banksim(data.path())
        .args(["simulate", "--url", &server.address, "--users", "6", "--connections", "1", "--requests", "150"])
        .args(["--scenario", "mixed", "--run-id", "1", "--json", "--record"])
        .arg(&recording)
        .output()
        .expect("banksim simulate runs");
    let report = report_of(&recorded);
    assert!(report["movements"].as_u64().is_some_and(|movements| movements > 50), "{report}");
    assert!(server.terminate().success());
    let original_hash = state_hash(data.path(), &original.url);
    let text = std::fs::read_to_string(&recording).expect("the recording");
    assert!(text.lines().count() > 150, "setup and traffic are recorded");
    assert!(text.contains(r#""at":"2030-01-01T00:00:00.000000Z""#), "each request with its virtual instant");
    assert!(!text.contains("access_token"), "sessions are the replay's own");

    for backend in backends() {
        let db = TestDatabase::create(backend).await;
        seed_population(data.path(), &db.url);
        let mut server = simulation_server(data.path(), &db.url);
        let replayed = banksim(data.path())
            .args(["simulate", "--url", &server.address, "--replay"])
            .arg(&recording)
            .args(["--admin-email", ADMIN_EMAIL, "--admin-password", ADMIN_PASSWORD, "--json"])
            .output()
            .expect("banksim simulate --replay runs");
        let report = report_of(&replayed);
        assert_eq!(report["mismatches"], 0, "{backend:?}: {report}");
        assert_eq!(report["state_hash"], original_hash.as_str(), "{backend:?}: {report}");
        assert!(server.terminate().success());
        assert_eq!(state_hash(data.path(), &db.url), original_hash, "{backend:?}");
        db.remove().await;
    }

    // Another run (other keys, other amounts) on a fresh database ends elsewhere.
    let other = TestDatabase::create(Backend::Sqlite).await;
    let mut server = simulation_server(data.path(), &other.url);
    let output = banksim(data.path())
        .args(["simulate", "--url", &server.address, "--users", "6", "--connections", "1", "--requests", "150"])
        .args(["--scenario", "mixed", "--run-id", "2", "--seed", "43", "--json"])
        .output()
        .expect("banksim simulate runs");
    report_of(&output);
    assert!(server.terminate().success());
    assert_ne!(state_hash(data.path(), &other.url), original_hash);
}

#[tokio::test]
async fn a_fault_drill_at_ten_percent_moves_every_movement_exactly_once() {
    for backend in backends() {
        let db = TestDatabase::create(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let mut server = simulation_server(data.path(), &db.url);
        let output = banksim(data.path())
            .args(["simulate", "--url", &server.address, "--users", "10", "--connections", "4", "--requests", "400"])
            .args(["--scenario", "mixed", "--faults", "0.1", "--seed", "7", "--json"])
            .args(["--admin-email", ADMIN_EMAIL, "--admin-password", ADMIN_PASSWORD])
            .output()
            .expect("banksim simulate runs");
        let report = report_of(&output);
        assert_eq!(report["faults"], "0.1", "{backend:?}: {report}");
        assert_eq!(report["passed"], true, "{backend:?}: {report}");
        assert_eq!(report["conservation"]["ok"], true, "{backend:?}: {report}");
        assert_eq!(report["conservation"]["uncertain"], 0, "{backend:?}: {report}");
        // Answers lost after their commit were asked again with the same key and replayed, not moved twice.
        assert!(report["replayed"].as_u64().is_some_and(|replayed| replayed > 0), "{backend:?}: {report}");
        let server_errors = report["errors"]["server"].as_u64().unwrap_or_default();
        let lost = report["errors"]["transport"].as_u64().unwrap_or_default();
        assert!(server_errors > 0 && lost > 0, "the drill met 5xx and lost answers: {report}");
        let metrics = reqwest::get(format!("{}/metrics", server.address)).await.expect("metrics");
        let metrics = metrics.text().await.expect("metrics text");
        for kind in ["latency", "error_500", "error_503", "timeout_after_commit", "drop_after_commit"] {
            let line = metrics
                .lines()
                .find(|line| line.starts_with(&format!("banksim_simulated_faults_total{{kind=\"{kind}\"}}")))
                .unwrap_or_else(|| panic!("no {kind} series"));
            let count: f64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a count");
            assert!(count > 0.0, "{backend:?}: no {kind} fault was injected: {line}");
        }
        assert!(server.terminate().success());
        for check in ["verify", "replay"] {
            let output = banksim(data.path()).env("DATABASE_URL", &db.url).arg(check).output().expect("runs");
            assert!(output.status.success(), "{backend:?} {check}: {}", stderr(&output));
        }
        db.remove().await;
    }
}
