//! Three instances on one PostgreSQL behind HAProxy (`scripts/cluster.sh`), one of them killed with SIGKILL under
//! a steady load: the others carry on, every client's retries (same `Idempotency-Key`) settle on one outcome,
//! no movement happens twice or goes missing, the schedules run exactly once, and `verify` and `replay` are clean.
//! PostgreSQL only (`TEST_DATABASE_URL`); needs `haproxy` on PATH.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use banksim_store::Backend;
use banksim_store::testing::{TestDatabase, backends, free_ports};
use common::{run, stderr};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cluster.sh");
const PASSWORD: &str = "cluster-password";

/// Attempts that got no definite answer (a dropped connection, a 502 from the balancer, a 503) and were retried.
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A cluster of `scripts/cluster.sh`, brought down on drop.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    database_url: String,
}

impl Cluster {
    fn up(database_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("cluster dir");
        let ports = free_ports(4);
        let output = run(Self::script(dir.path(), database_url)
            .arg("up")
            .env("INSTANCES", "3")
            // The load balancer on the block's first port, instance i on the i-th after it.
            .env("LB_PORT", ports.to_string())
            .env("BASE_PORT", ports.to_string())
            .env("BANKSIM_BIN", env!("CARGO_BIN_EXE_banksim"))
            .env("ARGON2_MEMORY_KIB", "64")
            .env("ARGON2_ITERATIONS", "1")
            .env("AUTH_RATE_LIMIT_PER_MINUTE", "0")
            .env("LOG_FORMAT", "text")
            // A killed instance's claims come back quickly.
            .env("SCHEDULER_LEASE_SECS", "2")
            .env("SCHEDULER_POLL_INTERVAL_MS", "100"));
        assert!(output.status.success(), "cluster up: {}", stderr(&output));
        let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Self { dir, url, database_url: database_url.to_owned() }
    }

    fn script(dir: &Path, database_url: &str) -> Command {
        let mut command = Command::new(SCRIPT);
        command.env("CLUSTER_DIR", dir.join("cluster")).env("DATABASE_URL", database_url);
        command
    }

    fn command(&self, args: &[&str]) {
        let output = run(Self::script(self.dir.path(), &self.database_url).args(args));
        assert!(output.status.success(), "cluster {args:?}: {}", stderr(&output));
    }

    fn log_of(&self, instance: u32) -> PathBuf {
        self.dir.path().join("cluster").join(format!("instance-{instance}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::script(self.dir.path(), &self.database_url).arg("down").output();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    id: String,
}

impl Client {
    async fn register(http: &reqwest::Client, base: &str, name: &str) -> Self {
        let email = format!("{name}@example.com");
        let body = json!({"username": name, "email": email, "password": PASSWORD});
        let registered = http.post(format!("{base}/api/v1/auth/register")).json(&body).send().await.expect("register");
        assert_eq!(registered.status(), 201);
        let login = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        let login: Value = login.json().await.expect("login json");
        Self {
            http: http.clone(),
            base: base.to_owned(),
            token: login["access_token"].as_str().expect("token").to_owned(),
            id: login["user"]["id"].as_str().expect("id").to_owned(),
        }
    }

    /// Sends a money request with `key` until it has a definite answer (a 2xx or a 4xx): a dropped connection or a
    /// 5xx leaves the outcome open, and the same key makes the retry safe. Returns the status and the body.
    async fn settle(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        for _ in 0..200 {
            let sent = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("idempotency-key", key)
                .json(body)
                .send()
                .await;
            if let Ok(answer) = sent {
                let status = answer.status().as_u16();
                if status < 500 {
                    return (status, answer.json().await.unwrap_or(Value::Null));
                }
            }
            RETRIED.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} with key {key} never settled");
    }

    async fn get(&self, path: &str) -> Value {
        let answer = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("get");
        assert_eq!(answer.status(), 200, "{path}");
        answer.json().await.expect("json")
    }

    /// The USD balance in cents, read from the exact decimal text of the answer.
    async fn cents(&self) -> i64 {
        let text = self
            .http
            .get(format!("{}/api/v1/balances/current?currency=USD", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("balance")
            .text()
            .await
            .expect("text");
        let amount = text.split("\"amount\":").nth(1).expect("amount").split([',', '}']).next().expect("number");
        let (units, cents) = amount.trim().split_once('.').unwrap_or((amount.trim(), "00"));
        units.parse::<i64>().expect("units") * 100 + format!("{cents:0<2}")[..2].parse::<i64>().expect("cents")
    }
}

#[tokio::test]
async fn killing_one_of_three_instances_under_load_loses_nothing_and_doubles_nothing() {
    if !backends().contains(&Backend::Postgres) {
        return; // Many instances share PostgreSQL: this test needs TEST_DATABASE_URL.
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let cluster = Cluster::up(&db.url);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let mut clients = Vec::new();
    for n in 0..6 {
        let client = Client::register(&http, &cluster.url, &format!("member{n}")).await;
        let (status, _) = client
            .settle(
                "/api/v1/transactions/credit",
                &format!("seed-{n}"),
                &json!({"amount": "1000.00", "currency": "USD"}),
            )
            .await;
        assert_eq!(status, 201);
        clients.push(client);
    }
    let clients = Arc::new(clients);
    // Schedules falling due while an instance dies: each must run once, whoever claimed it.
    let due = (chrono::Utc::now() + chrono::Duration::milliseconds(1_500)).to_rfc3339();
    let mut schedules = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        let to = &clients[(n + 1) % clients.len()].id;
        let body = json!({"transaction_type": "transfer", "amount": "1.00", "currency": "USD", "to_user_id": to,
            "schedule_type": "once", "execute_at": due});
        let (status, schedule) = client.settle("/api/v1/scheduled-transactions", &format!("schedule-{n}"), &body).await;
        assert_eq!(status, 201, "{schedule}");
        schedules.push((n, schedule["id"].as_str().expect("schedule id").to_owned()));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients.len())
        .map(|me| {
            let (clients, stop) = (clients.clone(), stop.clone());
            tokio::spawn(async move {
                let mut settled = Vec::new();
                let mut step = 0;
                while !stop.load(Ordering::SeqCst) {
                    step += 1;
                    let to = (me + 1) % clients.len();
                    let body = json!({"to_user_id": clients[to].id, "amount": "0.01", "currency": "USD"});
                    let key = format!("load-{me}-{step}");
                    let (status, answer) = clients[me].settle("/api/v1/transactions/transfer", &key, &body).await;
                    assert_eq!(status, 201, "{answer}");
                    settled.push((to, answer["id"].as_str().expect("id").to_owned()));
                }
                (me, settled)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    cluster.command(&["kill", "2"]);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop.store(true, Ordering::SeqCst);
    let mut expected: HashMap<usize, i64> = (0..clients.len()).map(|n| (n, 100_000)).collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (me, settled) = task.await.expect("client task");
        for (to, id) in settled {
            assert!(ids.insert(id.clone()), "transaction {id} answered twice to different keys");
            *expected.get_mut(&me).expect("payer") -= 1;
            *expected.get_mut(&to).expect("payee") += 1;
        }
    }
    assert!(!ids.is_empty(), "the load moved no money");
    println!("{} transfers settled, {} attempts retried around the kill", ids.len(), RETRIED.load(Ordering::Relaxed));

    // Every schedule runs exactly once, also those the killed instance had claimed (after their lease).
    for (n, id) in &schedules {
        let client = &clients[*n];
        let mut runs = Vec::new();
        for _ in 0..200 {
            runs = client.get(&format!("/api/v1/scheduled-transactions/{id}/executions")).await["executions"]
                .as_array()
                .expect("executions")
                .clone();
            if !runs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(runs.len(), 1, "schedule {id}: {runs:?}");
        assert_eq!(runs[0]["status"], "success", "{runs:?}");
        *expected.get_mut(n).expect("payer") -= 100;
        *expected.get_mut(&((n + 1) % clients.len())).expect("payee") += 100;
    }
    // Nothing lost, nothing doubled: every balance is what the settled answers say.
    for (n, client) in clients.iter().enumerate() {
        assert_eq!(client.cents().await, expected[&n], "member{n}'s balance");
    }
    let killed_log = std::fs::read_to_string(cluster.log_of(2)).unwrap_or_default();
    assert!(!killed_log.is_empty(), "instance 2 ran before it was killed");

    let data = tempfile::tempdir().expect("data dir");
    for check in ["verify", "replay"] {
        let output = run(common::banksim(data.path()).env("DATABASE_URL", &db.url).arg(check));
        assert!(output.status.success(), "banksim {check}: {}", stderr(&output));
    }
    drop(cluster);
    db.remove().await;
}
