//! The traffic phase: each connection is one task that plans requests with its own seeded generator, sends them
//! one at a time, and keeps its own measurements and tally, merged when every connection is done.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use banksim_client::{
    AmountRequest, BatchItem, BatchRequest, Call, Error, PostTransferRequest, RetryPolicy, StatusCode, TransferRequest,
};
use banksim_core::currency::Currency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::amount;
use serde::de::IgnoredAny;

use super::client::{self, Answer, Api, BACKPRESSURE_WAIT_DEFAULT, Created, CreatedId, SimUser};
use super::conservation::Tally;
use super::scenario::{Operation, Plan, Planner};
use super::stats::Stats;

/// How many of its recent debits and transfers a connection keeps to roll back; older ones are forgotten.
const RECENT_MAX: usize = 256;

/// How often a money request is sent when its outcome is unknown (no answer, or a 5xx other than 503). Every
/// attempt carries the same idempotency key, so the server applies it at most once and a later answer tells
/// whether the money moved.
pub const MONEY_ATTEMPTS_MAX: u32 = 4;

/// The same under injected faults (`--faults`): enough attempts that every request ends with a definite answer
/// (at a 10 % fault rate, the chance that all of them fail is 10⁻¹²).
pub const MONEY_ATTEMPTS_UNDER_FAULTS: u32 = 12;

/// The page of history the read traffic asks for.
const HISTORY_PAGE: u32 = 20;

/// How many transport errors are logged, so a dead server does not flood the log.
const TRANSPORT_ERRORS_LOGGED_MAX: u32 = 5;

/// What every connection shares: read-only during the run (sessions change only through their own locks).
#[derive(Debug)]
pub struct Shared {
    /// The API.
    pub api: Api,
    /// The simulated users, by index.
    pub users: Vec<SimUser>,
    /// The scenario's traffic.
    pub planner: Planner,
    /// Currency of every movement.
    pub currency: Currency,
    /// When the run stops, if it has a duration.
    pub deadline: Option<Instant>,
    /// The seed of the traffic.
    pub seed: u64,
    /// The run id mixed into the idempotency keys.
    pub run_id: u64,
    /// Transport errors logged so far.
    pub transport_errors_logged: AtomicU32,
    /// How often a money request whose outcome is unknown is sent.
    pub money_attempts_max: u32,
    /// Turns true when the run is asked to stop early (the console's stop).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Every simulated user's password (the `login` scenario logs them in; a refused refresh logs in again).
    pub password: String,
}

/// What a connection measured and saw move.
#[derive(Debug)]
pub struct Outcome {
    /// Its measurements.
    pub stats: Stats,
    /// The money it saw enter and leave.
    pub tally: Tally,
}

/// Runs connection `index` until the deadline or until it has sent `quota` planned requests.
pub async fn connection(shared: Arc<Shared>, index: u32, quota: Option<u64>) -> Outcome {
    let mut connection = Connection {
        rng: StdRng::seed_from_u64(shared.seed.wrapping_add(u64::from(index))),
        keys: StdRng::seed_from_u64(key_seed(shared.seed, shared.run_id, u64::from(index))),
        shared,
        recent: VecDeque::with_capacity(RECENT_MAX),
        stats: Stats::new(),
        tally: Tally::default(),
    };
    let mut sent = 0_u64;
    while quota.is_none_or(|quota| sent < quota) && !connection.past_deadline() {
        let plan = connection.shared.planner.next(&mut connection.rng, !connection.recent.is_empty());
        connection.execute(plan).await;
        sent += 1;
    }
    Outcome { stats: connection.stats, tally: connection.tally }
}

/// The seed of the idempotency keys of one stream (a connection, or the setup): a mix of the traffic seed, the
/// run id and the stream, so that keys differ between runs even when the traffic is the same.
pub fn key_seed(seed: u64, run_id: u64, stream: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(run_id)) ^ stream)
}

/// The next idempotency key from a key generator.
pub fn next_key(keys: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(keys.r#gen()).into_uuid()
}

/// A well-mixed 64-bit hash step (Steele, Lea and Flood's SplitMix64 finalizer).
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A debit or transfer this connection made, kept to be rolled back by its payer.
#[derive(Debug, Clone, Copy)]
struct Recent {
    payer: u32,
    id: Uuid,
    /// The amount, for a debit: rolling it back brings that money back in.
    debit: Option<i64>,
}

struct Connection {
    shared: Arc<Shared>,
    rng: StdRng,
    keys: StdRng,
    recent: VecDeque<Recent>,
    stats: Stats,
    tally: Tally,
}

impl Connection {
    fn past_deadline(&self) -> bool {
        *self.shared.stop.borrow() || self.shared.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    async fn execute(&mut self, plan: Plan) {
        let shared = Arc::clone(&self.shared);
        match plan {
            Plan::Credit { user, amount } => {
                if let Some((_, true)) = self.move_money(Operation::Credit, user, None, amount).await {
                    self.tally.credited += i128::from(amount);
                }
            }
            Plan::Debit { user, amount } => {
                if let Some((answer, true)) = self.move_money(Operation::Debit, user, None, amount).await {
                    self.tally.debited += i128::from(amount);
                    self.remember(user, answer.id, Some(amount));
                }
            }
            Plan::Transfer { from, to, amount } => {
                let moved = self.move_money(Operation::Transfer, from, Some(to), amount).await;
                if let Some((answer, true)) = moved {
                    self.remember(from, answer.id, None);
                }
            }
            Plan::Rollback { pick } => {
                let index = pick as usize % self.recent.len().max(1);
                let Some(recent) = self.recent.swap_remove_back(index) else { return };
                let key = next_key(&mut self.keys);
                let client = shared.users[recent.payer as usize].client();
                let call = client.rollback(recent.id).parse_as::<CreatedId>();
                if let Some((_, true)) = self.post_money(Operation::Rollback, call, key, 1).await
                    && let Some(amount) = recent.debit
                {
                    self.tally.debits_rolled_back += i128::from(amount);
                }
            }
            Plan::Balance { user } => {
                let client = shared.users[user as usize].client();
                self.read(Operation::Balance, client.current_balance(shared.currency).parse_as()).await;
            }
            Plan::History { user } => {
                let client = shared.users[user as usize].client();
                let query = banksim_client::HistoryQuery { limit: Some(HISTORY_PAGE), ..Default::default() };
                self.read(Operation::History, client.history(&query).parse_as()).await;
            }
            Plan::Login { user } => {
                let user = &shared.users[user as usize];
                let client = user.client();
                self.read(Operation::Login, client.login(&user.email, &shared.password).parse_as()).await;
            }
            Plan::HoldPost { from, to, amount } => {
                let amount = amount::format(amount, shared.currency);
                let client = shared.users[from as usize].client();
                let request = TransferRequest::new(shared.users[to as usize].id, amount, shared.currency).pending(None);
                let key = next_key(&mut self.keys);
                // The hold moves nothing between users yet: the post is the movement.
                let call = client.transfer(&request).parse_as::<CreatedId>();
                let held = self.post_money(Operation::Hold, call, key, 0).await;
                if let Some((Answer { id: Some(id), .. }, true)) = held {
                    let key = next_key(&mut self.keys);
                    let call = client.post_transfer(id, &PostTransferRequest::default()).parse_as::<CreatedId>();
                    self.post_money(Operation::Post, call, key, 1).await;
                }
            }
            Plan::Batch { from, seed } => {
                let items = shared.planner.batch_items(from, seed);
                let transactions = items
                    .iter()
                    .map(|&(to, amount)| {
                        let amount = amount::format(amount, shared.currency);
                        BatchItem::transfer(shared.users[to as usize].id, amount, shared.currency)
                    })
                    .collect();
                let key = next_key(&mut self.keys);
                let client = shared.users[from as usize].client();
                let call = client.batch(&BatchRequest { atomic: true, transactions }).parse_as::<IgnoredAny>();
                self.post_money(Operation::Batch, call, key, items.len() as u64).await;
            }
        }
    }

    fn remember(&mut self, payer: u32, id: Option<Uuid>, debit: Option<i64>) {
        let Some(id) = id else { return };
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent { payer, id, debit });
    }

    /// A credit, debit or transfer by `user` (to `to` for a transfer). Returns the final answer and whether
    /// money moved, or nothing if there was no usable answer.
    async fn move_money(
        &mut self,
        operation: Operation,
        user: u32,
        to: Option<u32>,
        amount_minor: i64,
    ) -> Option<(Answer, bool)> {
        let shared = Arc::clone(&self.shared);
        let amount = amount::format(amount_minor, shared.currency);
        let key = next_key(&mut self.keys);
        let client = shared.users[user as usize].client();
        // The body is serialized once, here, and shared by every attempt.
        let call = match to {
            Some(to) => {
                let request = TransferRequest::new(shared.users[to as usize].id, amount, shared.currency);
                client.transfer(&request)
            }
            None => {
                let request = AmountRequest::new(amount, shared.currency);
                if operation == Operation::Credit { client.credit(&request) } else { client.debit(&request) }
            }
        };
        self.post_money(operation, call.parse_as::<CreatedId>(), key, 1).await
    }

    /// Sends a money POST, one measured attempt at a time, repeating it (with the same idempotency key) while
    /// its outcome is unknown; a 201 that moved money now counts `movements` (a batch's items).
    async fn post_money<T: Created>(
        &mut self,
        operation: Operation,
        call: Call<'_, T>,
        key: Uuid,
        movements: u64,
    ) -> Option<(Answer, bool)> {
        let mut call = call.idempotency_key(key).retry(RetryPolicy::none());
        // Whether an earlier attempt may have moved the money without us learning it.
        let mut unknown = false;
        for attempt in 1..=self.shared.money_attempts_max {
            match call.attempt().await {
                Ok(attempt_answer) => {
                    let answer = Answer::of_money(attempt_answer);
                    self.record(operation, &answer);
                    let status = answer.status;
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        self.stats.record_backpressure();
                        self.pause(answer.retry_after.unwrap_or(BACKPRESSURE_WAIT_DEFAULT)).await;
                        if !unknown {
                            // Refused before it was processed: nothing moved, go on with the next request.
                            return None;
                        }
                        continue;
                    }
                    if status.is_server_error() {
                        // A 500 or a 504 may come after the ledger committed: ask again to find out.
                        unknown = true;
                        self.pause(BACKPRESSURE_WAIT_DEFAULT * attempt).await;
                        continue;
                    }
                    // 201 for a new transaction, 200 for a posted hold.
                    let moved = status.is_success() && client::moved_now(answer.replayed, unknown);
                    if moved {
                        self.stats.record_movements(movements);
                    }
                    return Some((answer, moved));
                }
                Err(err) => {
                    self.transport_error(operation, &err);
                    unknown = true;
                    self.pause(BACKPRESSURE_WAIT_DEFAULT * attempt).await;
                }
            }
        }
        // Every attempt failed: the money moved at most once, but whether it did is unknown.
        if unknown {
            self.tally.uncertain += 1;
        }
        None
    }

    /// A request that moves no money (a read, a login), sent once; the body is checked to be JSON and dropped.
    async fn read(&mut self, operation: Operation, call: Call<'_, serde::de::IgnoredAny>) {
        let mut call = call.retry(RetryPolicy::none());
        match call.attempt().await {
            Ok(attempt) => {
                let answer = Answer::of_read(attempt);
                self.record(operation, &answer);
                if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                    self.stats.record_backpressure();
                    self.pause(answer.retry_after.unwrap_or(BACKPRESSURE_WAIT_DEFAULT)).await;
                }
            }
            Err(err) => self.transport_error(operation, &err),
        }
    }

    fn record(&mut self, operation: Operation, answer: &Answer) {
        let error_code = answer.error_code.as_ref().map(banksim_client::ErrorCode::as_str);
        self.stats.record_answer(operation, answer.status.as_u16(), answer.latency, error_code);
        if answer.replayed {
            self.stats.record_replayed();
        }
    }

    fn transport_error(&mut self, operation: Operation, err: &Error) {
        self.stats.record_transport_error(operation);
        if self.shared.transport_errors_logged.fetch_add(1, Ordering::Relaxed) < TRANSPORT_ERRORS_LOGGED_MAX {
            tracing::warn!(operation = operation.as_str(), error = %err, "request got no answer");
        }
    }

    /// Sleeps for `wait`, but not past the deadline.
    async fn pause(&self, wait: Duration) {
        let wait = match self.shared.deadline {
            Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
            None => wait,
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_repeat_for_the_same_run_and_differ_between_runs() {
        let keys = |seed, run_id, stream| {
            let mut rng = StdRng::seed_from_u64(key_seed(seed, run_id, stream));
            (0..100).map(|_| next_key(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(keys(42, 1, 0), keys(42, 1, 0));
        assert_ne!(keys(42, 1, 0), keys(42, 2, 0));
        assert_ne!(keys(42, 1, 0), keys(42, 1, 1));
        assert_ne!(keys(42, 1, 0), keys(43, 1, 0));
        let all: std::collections::HashSet<Uuid> = keys(42, 1, 0).into_iter().collect();
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|key| key.get_version_num() == 4));
    }
}
