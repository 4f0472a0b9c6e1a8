//! `banksim simulate` against a real `banksim serve`, run as a user would: every scenario moves money, gets no
//! server or transport error, and conserves money; reruns with the same seed reuse the same users.

mod common;

use common::{Server, banksim, stderr};

use std::process::Output;

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
