//! The money write path: a small pool of writer tasks that commit many movements per database transaction
//! (group commit), fed by a bounded queue.
//!
//! A request hands its movement to the queue and waits for its own outcome, which arrives only after the batch
//! holding it has committed, so a 2xx always means durable. When the queue is full the request is refused at
//! once with 503 and `Retry-After` (back-pressure) instead of piling up. Each writer takes whatever is waiting,
//! up to `WRITE_BATCH_MAX` movements, and posts them in one commit; a movement that breaks a rule fails alone.
//!
//! Traces: a batch belongs to as many traces as it carries requests, and a span has one parent, so the writer makes
//! no span of its own. Each request instead records a `ledger.batch.commit` span, a child of its own span, around
//! its wait (queue and commit), and the writer sends the batch's size and commit duration back with the outcome, to
//! be set on that span. Every trace thus shows where its request's time went, in its own tree, at no cost to the
//! batch (span links from one batch span to each request would need a trace per commit, which no one reads).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use banksim_core::Clock;
use banksim_core::ledger::{Command, Movement, Settlement};
use banksim_store::{LedgerOutcome, LedgerRequest, LedgerWork, ResponseRenderer, Store, StoreError};
use futures::FutureExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use tracing::field::Empty;

use crate::cache::BalanceCache;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{Metrics, WriterMetrics};

/// A movement waiting for a writer, and where to send its outcome.
struct Job {
    request: LedgerRequest,
    reply: oneshot::Sender<(Result<LedgerOutcome, ApiError>, BatchReport)>,
}

/// What the batch that carried a movement was, told to its request with the outcome (for its trace).
#[derive(Debug, Clone, Copy)]
struct BatchReport {
    /// Movements in the commit.
    size: usize,
    /// How long the commit took.
    commit: Duration,
}

impl BatchReport {
    fn since(size: usize, started: Instant) -> Self {
        Self { size, commit: started.elapsed() }
    }
}

/// The handle requests use to post movements.
#[derive(Clone)]
pub struct LedgerWriter {
    queue: mpsc::Sender<Job>,
    capacity: usize,
    metrics: Metrics,
}

impl LedgerWriter {
    /// Starts `workers` writer tasks over `store`, with a queue of `capacity` movements and batches of at most
    /// `batch_max`, counting into `metrics`. The tasks stop when every handle is dropped and the queue is drained.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        render: Arc<dyn ResponseRenderer>,
        metrics: Metrics,
        balances: Arc<BalanceCache>,
        shape: WriterShape,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(shape.capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..shape.workers.max(1) {
            let worker = Worker {
                receiver: receiver.clone(),
                store: store.clone(),
                clock: clock.clone(),
                render: render.clone(),
                batch_max: shape.batch_max.max(1),
                metrics: metrics.clone(),
                balances: balances.clone(),
            };
            tokio::spawn(worker.run());
        }
        Self { queue, capacity: shape.capacity, metrics }
    }

    /// Posts one movement and waits for its committed outcome, in a `ledger.batch.commit` span that tells the
    /// batch's size and commit duration.
    pub async fn submit(&self, request: LedgerRequest) -> Result<LedgerOutcome, ApiError> {
        let span = tracing::debug_span!("ledger.batch.commit", batch.size = Empty, batch.commit_ms = Empty);
        let waiting = async {
            let (reply, outcome) = oneshot::channel();
            self.queue.try_send(Job { request, reply }).map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => {
                    self.metrics.writer().rejected_queue_full.inc();
                    ApiError::new(ErrorCode::WriteQueueFull)
                }
                mpsc::error::TrySendError::Closed(_) => ApiError::new(ErrorCode::ServiceUnavailable),
            })?;
            outcome.await.map_err(|_| ApiError::internal("writer dropped a movement without an answer"))
        };
        let (outcome, batch) = waiting.instrument(span.clone()).await?;
        span.record("batch.size", batch.size);
        span.record("batch.commit_ms", batch.commit.as_secs_f64() * 1000.0);
        outcome
    }

    /// Movements waiting for a writer.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// The write path's counters.
    pub fn stats(&self) -> &WriterMetrics {
        self.metrics.writer()
    }
}

/// How many writers, how long a queue, how large a batch.
#[derive(Debug, Clone, Copy)]
pub struct WriterShape {
    /// Writer tasks.
    pub workers: usize,
    /// Movements that may wait.
    pub capacity: usize,
    /// Most movements per database transaction.
    pub batch_max: usize,
}

struct Worker {
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    render: Arc<dyn ResponseRenderer>,
    batch_max: usize,
    metrics: Metrics,
    balances: Arc<BalanceCache>,
}

impl Worker {
    async fn run(self) {
        let mut jobs = Vec::with_capacity(self.batch_max);
        // A job that did not fit in the last commit (a client's batch is heavy): it opens the next one.
        let mut carried: Option<Job> = None;
        loop {
            {
                // One worker at a time takes a batch; the others are committing theirs meanwhile.
                let mut receiver = self.receiver.lock().await;
                match carried.take() {
                    Some(job) => jobs.push(job),
                    None => match receiver.recv().await {
                        Some(job) => jobs.push(job),
                        None => return,
                    },
                }
                // Up to `batch_max` movements per commit, counting each item of a client's batch.
                let mut weight = jobs[0].request.work.len();
                while weight < self.batch_max {
                    let Ok(job) = receiver.try_recv() else { break };
                    let job_weight = job.request.work.len();
                    if weight + job_weight > self.batch_max {
                        carried = Some(job);
                        break;
                    }
                    weight += job_weight;
                    jobs.push(job);
                }
            }
            self.commit(&mut jobs).await;
        }
    }

    async fn commit(&self, jobs: &mut Vec<Job>) {
        let (requests, replies): (Vec<LedgerRequest>, Vec<_>) = jobs.drain(..).map(|j| (j.request, j.reply)).unzip();
        let started = Instant::now();
        let result = self.post(&requests).await;
        let report = BatchReport::since(requests.len(), started);
        let elapsed = report.commit;
        let size: u64 = requests.iter().map(|r| r.work.len() as u64).sum();
        let stats = self.metrics.writer();
        stats.processed.inc_by(size);
        stats.batches.inc();
        stats.batch_size.observe(size as f64);
        stats.commit_seconds.observe(elapsed.as_secs_f64());
        stats.last_batch_size.store(size, Ordering::Relaxed);
        stats.max_batch_size.fetch_max(size, Ordering::Relaxed);
        tracing::debug!(batch.size = size, duration_ms = elapsed.as_secs_f64() * 1000.0, "batch committed");
        match result {
            Ok(outcomes) => {
                for ((request, reply), outcome) in requests.iter().zip(replies).zip(outcomes) {
                    self.count(request, Ok(&outcome));
                    let _ = reply.send((Ok(outcome), report));
                }
            }
            Err(err) if requests.len() > 1 && err.nothing_written() && !database_out(&err) => {
                // Nothing of the batch was posted. One request may be at fault (a bug, or data the database
                // refuses): post each alone, so the others still succeed and only the culprit fails. (Never after
                // a commit whose outcome is unknown: its movements may have been made, and posting them again
                // would refuse what succeeded, or make what has no idempotency key twice.)
                tracing::error!(error = %err, batch.size = size, "ledger batch failed; posting its movements one by one");
                for (request, reply) in requests.iter().zip(replies) {
                    let started = Instant::now();
                    let outcome = self.post(std::slice::from_ref(request)).await;
                    let outcome = outcome.map_err(|e| batch_error(&e)).and_then(|mut outcomes| {
                        outcomes.pop().ok_or_else(|| ApiError::internal("a batch of one gave no outcome"))
                    });
                    self.count(request, outcome.as_ref().map_err(|_| ()));
                    let _ = reply.send((outcome, BatchReport::since(1, started)));
                }
            }
            Err(err) => {
                tracing::error!(error = ?err, batch.size = size, "ledger batch failed; nothing was posted");
                for (request, reply) in requests.iter().zip(replies) {
                    self.count(request, Err(()));
                    let _ = reply.send((Err(batch_error(&err)), report));
                }
            }
        }
    }

    /// Counts a request's movements by kind and outcome (`Err`: no outcome, the batch failed).
    fn count(&self, request: &LedgerRequest, outcome: Result<&LedgerOutcome, ()>) {
        let record = |command: &Command, outcome: &'static str, refusal: Option<&'static str>| {
            self.metrics.record_movement(movement_kind(&command.movement), outcome, refusal);
        };
        match (&request.work, outcome) {
            (LedgerWork::Batch { items, .. }, Ok(LedgerOutcome::Batch(batch))) => {
                for (item, result) in items.iter().zip(&batch.items) {
                    let Ok(command) = item else { continue };
                    match result {
                        Ok(_) if batch.applied => record(command, "posted", None),
                        Ok(_) => record(command, "refused", Some("batch_failed")),
                        Err(refusal) => record(command, "refused", Some(refusal.code())),
                    }
                }
            }
            (work, outcome) => {
                let (outcome, refusal) = match outcome {
                    Ok(LedgerOutcome::Posted(_)) => ("posted", None),
                    Ok(LedgerOutcome::Refused(refusal)) => ("refused", Some(refusal.code())),
                    Ok(LedgerOutcome::Replayed(_) | LedgerOutcome::Batch(_)) => ("replayed", None),
                    Err(()) => ("failed", None),
                };
                work.commands().for_each(|command| record(command, outcome, refusal));
            }
        }
    }

    /// Posts a batch; a panic inside (a broken invariant) fails the batch instead of killing the writer.
    /// The wallets a committed batch changed go into the balance cache before any of its requests is answered.
    async fn post(&self, requests: &[LedgerRequest]) -> Result<Vec<LedgerOutcome>, StoreError> {
        let generation = self.balances.generation();
        let posting = self.store.post_batch(requests, self.render.as_ref(), self.clock.now());
        match std::panic::AssertUnwindSafe(posting).catch_unwind().await {
            Ok(result) => result
                .map(|posted| {
                    self.balances.apply(&posted.wallets, generation);
                    posted.outcomes
                })
                .inspect_err(|err| {
                    if !err.nothing_written() {
                        self.balances.empty();
                    }
                }),
            Err(_) => {
                tracing::error!(batch.size = requests.len(), "ledger batch panicked; nothing was posted");
                Err(StoreError::Panicked)
            }
        }
    }
}

/// A movement's kind, as the metrics label it.
fn movement_kind(movement: &Movement) -> &'static str {
    match movement {
        Movement::Credit { .. } => "credit",
        Movement::Debit { .. } => "debit",
        Movement::Transfer { .. } => "transfer",
        Movement::Exchange { .. } => "exchange",
        Movement::Rollback { .. } => "rollback",
        Movement::Hold { .. } => "hold",
        Movement::Settle { settlement, .. } => match settlement {
            Settlement::Post(_) => "post",
            Settlement::Void => "void",
            Settlement::Expire => "expire",
        },
    }
}

/// Whether a batch failed because the database is out (unreachable, or its breaker open), not because of what
/// the batch holds: posting its movements one by one would only fail each the same way.
fn database_out(err: &StoreError) -> bool {
    matches!(err, StoreError::Unavailable(_) | StoreError::CircuitOpen { .. })
}

/// The answer for every movement of a batch that could not be committed: 503 when the database is unavailable or
/// its breaker refused the batch (nothing was written; with `Retry-After`) or did not confirm the commit (the
/// outcome is unknown; a retry with the same idempotency key learns it), 500 for anything else (a bug: nothing was
/// written).
fn batch_error(err: &StoreError) -> ApiError {
    match err {
        StoreError::Unavailable(_) => ApiError::new(ErrorCode::ServiceUnavailable),
        &StoreError::CircuitOpen { breaker, retry_after } => {
            ApiError::from(StoreError::CircuitOpen { breaker, retry_after })
        }
        StoreError::CommitFailed(_) => ApiError::new(ErrorCode::CommitOutcomeUnknown),
        other => ApiError::internal(other),
    }
}
