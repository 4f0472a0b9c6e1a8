//! Automatic failover: a pg_auto_failover formation of the test's own (`scripts/pg-ha.sh`: monitor, primary,
//! secondary), banksim on its multi-host URL, the primary lost as a crash would lose it under a transfer load. The
//! secondary is promoted, banksim follows it and writes again; every movement a client was told about is there,
//! none twice, and the ledger and the event log agree. Runs where PostgreSQL is under test (`TEST_DATABASE_URL`
//! set, as in CI), and then needs Debian's pg-auto-failover-cli and postgresql-15-auto-failover.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-ha.sh");

/// A formation of `scripts/pg-ha.sh`, brought down on drop.
struct Formation {
    dir: String,
    base_port: u16,
    url: String,
}

impl Formation {
    async fn up() -> Self {
        let dir = format!("/tmp/banksim-ha-{}", Uuid::new_v4().simple());
        // The monitor on the base port, the nodes on the two after it.
        let base_port = banksim_store::testing::free_ports(3);
        let mut formation = Self { dir, base_port, url: String::new() };
        let output = formation.script("up").await;
        assert!(output.status.success(), "pg-ha.sh up: {}", String::from_utf8_lossy(&output.stderr));
        formation.url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        formation
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new(SCRIPT);
        command
            .arg(action)
            .env("HA_DIR", &self.dir)
            .env("HA_BASE_PORT", self.base_port.to_string())
            .env("HA_DATABASE", "banksim");
        command
    }

    async fn script(&self, action: &str) -> std::process::Output {
        let mut command = self.command(action);
        tokio::task::spawn_blocking(move || command.output().expect("pg-ha.sh runs")).await.expect("joined")
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        let _ = self.command("down").output();
    }
}

/// One attempt of a client: when it was sent, and whether it was answered 201.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    sent: Instant,
    answered: Instant,
    posted: bool,
}

#[tokio::test]
async fn losing_the_primary_under_load_promotes_the_secondary_and_loses_nothing_acknowledged() {
    if !std::env::var(banksim_store::testing::TEST_DATABASE_URL).is_ok_and(|url| !url.is_empty()) {
        return;
    }
    let formation = Formation::up().await;
    let app = Arc::new(
        TestApp::spawn_on_url(&formation.url, |config| {
            config.breaker_failure_threshold = 2;
            config.breaker_reset_timeout_ms = 500;
        })
        .await,
    );
    let mut users: Vec<TestUser> = Vec::new();
    for n in 0..4 {
        let user = app.user_named(n).await;
        app.credit(&user, "1000.00", "USD").await;
        users.push(user);
    }
    let users = Arc::new(users);
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..users.len())
        .map(|me| {
            let (app, users, attempts, stop) = (app.clone(), users.clone(), attempts.clone(), stop.clone());
            tokio::spawn(async move {
                let to = (me + 1) % users.len();
                let body = json!({"to_user_id": users[to].id, "amount": "0.01", "currency": "USD"});
                let mut settled = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    // Until the answer is definite: a 503 (primary lost, outcome unknown) is retried with the key.
                    let key = Uuid::new_v4().to_string();
                    loop {
                        let sent = Instant::now();
                        let answer = app.money("/api/v1/transactions/transfer", &users[me], Some(&key), &body).await;
                        let status = answer.status.as_u16();
                        assert!(status == 201 || status == 503, "{status}: {}", answer.text);
                        let posted = status == 201;
                        attempts.lock().expect("attempts").push(Attempt { sent, answered: Instant::now(), posted });
                        if posted {
                            settled.push((to, answer.body["id"].as_str().expect("id").to_owned()));
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                (me, settled)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let lost = formation.script("lose-primary").await;
    let lost_at = Instant::now();
    assert!(lost.status.success(), "pg-ha.sh lose-primary: {}", String::from_utf8_lossy(&lost.stderr));
    // Writes resume on the new primary: wait for the first posted attempt sent after the primary was lost.
    let resumed = loop {
        let first = attempts
            .lock()
            .expect("attempts")
            .iter()
            .filter(|a| a.posted && a.sent > lost_at)
            .map(|a| a.answered)
            .min();
        if let Some(at) = first {
            break at;
        }
        assert!(lost_at.elapsed() < Duration::from_secs(90), "writes never resumed after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut expected: HashMap<usize, i64> = (0..users.len()).map(|n| (n, 100_000)).collect();
    let mut ids = std::collections::HashSet::new();
    for client in clients {
        let (me, settled) = client.await.expect("client");
        for (to, id) in settled {
            assert!(ids.insert(id.clone()), "{id} answered to two keys");
            *expected.get_mut(&me).expect("payer") -= 1;
            *expected.get_mut(&to).expect("payee") += 1;
        }
    }
    for (n, user) in users.iter().enumerate() {
        assert_eq!(app.balance_via_store(user).await, expected[&n], "user{n}: every answer, nothing else");
    }
    app.assert_ledger_sound().await;
    let refused = attempts.lock().expect("attempts").iter().filter(|a| !a.posted).count();
    let outage = resumed.duration_since(lost_at);
    println!(
        "failover: node{} lost; writes resumed {} ms later on the promoted node; {refused} attempts answered 503; {} \
         transfers",
        String::from_utf8_lossy(&lost.stdout).trim(),
        outage.as_millis(),
        ids.len()
    );
    assert!(refused > 0, "the loss of the primary was felt");
    Arc::try_unwrap(app).ok().expect("one owner").stop().await;
}
