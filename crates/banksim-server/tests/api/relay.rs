//! The outbox relay to NATS JetStream, on a `nats-server` of the test's own: every event of the log reaches the
//! stream exactly once and in order, through a NATS crash under load; one instance publishes at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::header;
use banksim_server::config::Config;
use banksim_server::jobs::relay::RELAY;
use banksim_store::testing::NatsServer;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, backends};

fn on_nats(nats: &NatsServer) -> impl Fn(&mut Config) {
    let url = nats.url();
    move |config| {
        config.nats_url = Some(url.clone().into());
        config.relay_poll_interval_ms = 50;
        config.relay_batch_max = 64;
        config.relay_lease_ms = 1_000;
    }
}

/// Clients moving money until stopped; returns the ids of the movements answered 201.
fn load(app: &Arc<TestApp>, users: &[TestUser], stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..users.len())
        .map(|me| {
            let (app, users, stop) = (app.clone(), users.to_vec(), stop.clone());
            tokio::spawn(async move {
                let peer = &users[(me + 1) % users.len()];
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let transfer = json!({"to_user_id": peer.id, "amount": "0.01", "currency": "USD"});
                    let key = Uuid::new_v4().to_string();
                    let answer = app.money("/api/v1/transactions/transfer", &users[me], Some(&key), &transfer).await;
                    assert!(answer.status.as_u16() < 500, "{} {}", answer.status, answer.body);
                    if answer.status.as_u16() == 201 {
                        acknowledged.push(answer.body["id"].as_str().expect("id").to_owned());
                    }
                }
                acknowledged
            })
        })
        .collect()
}

/// Waits until the relay has recorded the log's head.
async fn caught_up(app: &TestApp) -> i64 {
    for _ in 0..600 {
        let status = app.state.store.relay_status(RELAY).await.expect("relay status");
        if status.head > 0 && status.position >= status.head {
            return status.head;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = app.state.store.relay_status(RELAY).await.expect("relay status");
    panic!("the relay did not catch up: {status:?}");
}

/// Every message of the stream, in stream order: (subject, Nats-Msg-Id, body).
async fn stream_messages(nats: &NatsServer, stream: &str) -> Vec<(String, i64, Value)> {
    let client = async_nats::connect(nats.url()).await.expect("connect to nats");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(stream).await.expect("the stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let id = message.headers.get(header::NATS_MESSAGE_ID).expect("a message id").as_str().parse().expect("number");
        let body = serde_json::from_slice(&message.payload).expect("json body");
        messages.push((message.subject.to_string(), id, body));
    }
    messages
}

#[tokio::test]
async fn every_event_reaches_the_stream_once_and_in_order_through_a_nats_crash_under_load() {
    for backend in backends() {
        let mut nats = NatsServer::start().await;
        let app = Arc::new(TestApp::spawn_with(backend, on_nats(&nats), axum::Router::new()).await);
        let mut users = Vec::new();
        for n in 0..4 {
            let user = app.user_named(n).await;
            app.credit(&user, "1000.00", "USD").await;
            users.push(user);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&app, &users, &stop);
        tokio::time::sleep(Duration::from_millis(800)).await;
        nats.kill().await;
        // Longer than the relay's wait for an acknowledgement (5 s): its round fails, and it must find where the
        // stream ends again once NATS is back.
        tokio::time::sleep(Duration::from_millis(6_000)).await;
        let during = app.state.store.relay_status(RELAY).await.expect("relay status");
        assert!(during.lag_events() > 0, "events wait while NATS is down: {during:?}");
        nats.restart().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop.store(true, Ordering::SeqCst);
        let mut acknowledged = Vec::new();
        for client in clients {
            acknowledged.extend(client.await.expect("client"));
        }
        assert!(!acknowledged.is_empty(), "the load moved no money");

        let head = caught_up(&app).await;
        let messages = stream_messages(&nats, &app.state.config.nats_stream).await;
        let ids: Vec<i64> = messages.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(ids, (1..=head).collect::<Vec<_>>(), "{backend:?}: every event once, in order, no gap");
        let log = app.state.store.list_events(0, u32::try_from(head).expect("small")).await.expect("events");
        for ((subject, id, body), event) in messages.iter().zip(&log) {
            assert_eq!(*id, event.sequence);
            assert_eq!(subject, &format!("banksim.events.{}", event.aggregate_type));
            assert_eq!(body["sequence"], json!(event.sequence));
            assert_eq!(body["event_type"], json!(event.event_type));
            assert_eq!(body["data"], event.data);
        }
        let published: HashSet<String> = messages
            .iter()
            .filter(|(subject, _, _)| subject == "banksim.events.transaction")
            .map(|(_, _, body)| body["aggregate_id"].as_str().expect("aggregate id").to_owned())
            .collect();
        for id in &acknowledged {
            assert!(published.contains(id), "{backend:?}: acknowledged movement {id} never reached the stream");
        }
        let metrics = app.get("/metrics", None).await;
        assert!(metrics.text.contains("banksim_relay_lag_events 0"), "{}", metrics.text);
        let failures = app.state.metrics.relay().failures.get();
        assert!(failures > 0, "the outage shows as failed rounds");
        println!(
            "{backend:?}: {head} events, {} movements acknowledged, {failures} relay rounds failed during the outage",
            acknowledged.len()
        );
        app.assert_ledger_sound().await;
        Arc::try_unwrap(app).ok().expect("one owner").stop().await;
    }
}

#[tokio::test]
async fn one_instance_publishes_at_a_time_and_another_takes_over_when_it_stops() {
    for backend in backends() {
        let nats = NatsServer::start().await;
        let first = TestApp::spawn_with(backend, on_nats(&nats), axum::Router::new()).await;
        let second = first.spawn_beside(on_nats(&nats)).await;
        let user = first.user_named(0).await;
        for _ in 0..5 {
            first.credit(&user, "1.00", "USD").await;
            second.credit(&user, "1.00", "USD").await;
        }
        let head = caught_up(&first).await;
        let relayed = |app: &TestApp| app.state.metrics.relay().published.get();
        let (by_first, by_second) = (relayed(&first), relayed(&second));
        assert!(by_first == 0 || by_second == 0, "both published: {by_first} and {by_second}");
        assert_eq!(by_first + by_second, u64::try_from(head).expect("positive"));

        // The publisher stops; the other takes over once its lease has run out (RELAY_LEASE_MS, shortened here).
        // (The first instance owns the test database: stopping it must keep the database for the other.)
        let (database, other) = if by_first > 0 {
            (Some(first.stop_keeping_database().await), second)
        } else {
            second.stop().await;
            (None, first)
        };
        other.credit(&user, "1.00", "USD").await;
        let head = caught_up(&other).await;
        let ids: Vec<i64> =
            stream_messages(&nats, &other.state.config.nats_stream).await.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(ids, (1..=head).collect::<Vec<_>>());
        other.stop().await;
        if let Some(database) = database {
            database.remove().await;
        }
    }
}
