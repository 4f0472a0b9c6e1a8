//! The scenario runner of simulation mode: one run of a `banksim simulate` scenario at a time, started, watched and
//! stopped through `/api/v1/admin/scenarios` (the console's "scenarios" panel).
//!
//! **Why a trait.** The traffic generator lives in the `banksim` binary (it drives a server over HTTP with
//! `banksim-client`), and this crate must not depend on the binary. So the server only keeps the run's slot — one
//! run at a time, its status, its stop signal, its last report — and asks a [`ScenarioRunner`] to do the work. The
//! `banksim serve` command installs one that drives this very server through its own address; a server built
//! without one (the tests' `TestApp`, an embedding) answers the scenario routes 503 `scenario_runner_unavailable`.
//!
//! **The slot.** [`Scenarios`] holds the current or last run. A start while one is under way is refused
//! (`scenario_running`), a stop raises the run's stop signal and waits a bounded time for it to end: the
//! generator stops sending, reads every balance again, checks that money was conserved and reports, which takes a
//! moment. The report is kept until the next start. Runs are per instance, like the random faults.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

/// The stop signal of a run: it becomes `true` when the run is asked to stop.
pub type StopSignal = watch::Receiver<bool>;

/// Longest a stop waits for the run to end before answering (the run still ends afterwards).
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// One run asked for, as validated by the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRun {
    /// The scenario's name, one of [`ScenarioRunner::scenarios`].
    pub scenario: String,
    /// Simulated users.
    pub users: u32,
    /// Concurrent connections.
    pub connections: u32,
    /// How long to send traffic (with `requests`, whichever comes first).
    pub duration: Option<Duration>,
    /// How many requests to send in all.
    pub requests: Option<u64>,
    /// The seed of the user names and the traffic.
    pub seed: u64,
}

/// The header by which the runner's requests pass the per-address auth rate limit: its simulated users all
/// register and log in from the server's own address, where the limit (5 a minute by default) would stop the
/// third of them. Its value is [`RunnerPass`], a secret of this process that only the runner is given.
pub const RUNNER_PASS_HEADER: &str = "x-banksim-runner-pass";

/// A random secret of this process (256 bits, hex), handed to the scenario runner to send as
/// [`RUNNER_PASS_HEADER`]. Never logged or shown.
#[derive(Clone)]
pub struct RunnerPass(Arc<str>);

impl RunnerPass {
    fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>().into())
    }

    /// The secret, to send.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `sent` is the secret, compared in time that does not depend on where they differ.
    pub fn admits(&self, sent: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        sent.len() == expected.len() && sent.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for RunnerPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunnerPass(..)")
    }
}

/// Runs scenarios against this server. Implemented by the `banksim` binary with its traffic generator.
#[async_trait]
pub trait ScenarioRunner: Send + Sync {
    /// The names of the scenarios it knows, as `banksim simulate --scenario` takes them.
    fn scenarios(&self) -> Vec<&'static str>;

    /// Runs `run` to its end, or until `stop` turns true, and returns its report (the JSON object that
    /// `banksim simulate --json` prints), or why the run could not be made at all. Its requests send `pass` as
    /// [`RUNNER_PASS_HEADER`].
    async fn run(&self, run: ScenarioRun, stop: StopSignal, pass: RunnerPass) -> Result<serde_json::Value, String>;
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No run since the server started.
    Idle,
    /// Sending traffic (or setting up its users).
    Running,
    /// Asked to stop: checking and reporting.
    Stopping,
    /// Ended by itself, or after a stop; `report` or `error` tell how.
    Finished,
}

/// The current or last run, as the routes show it.
#[derive(Debug, Clone)]
pub struct RunStatus {
    /// Where it stands.
    pub state: RunState,
    /// What was asked for (none while idle).
    pub run: Option<ScenarioRun>,
    /// Whether a stop was asked for.
    pub stop_requested: bool,
    /// Time since the run started, or how long it lasted once finished.
    pub elapsed: Duration,
    /// The report of a finished run.
    pub report: Option<serde_json::Value>,
    /// Why a finished run could not be made (the server unreachable, users that could not log in, …).
    pub error: Option<String>,
}

/// Why a start or a stop was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioRefusal {
    /// Another run is under way.
    Running,
}

/// The slot of this instance's run, and the runner that makes runs.
pub struct Scenarios {
    runner: Arc<dyn ScenarioRunner>,
    pass: RunnerPass,
    slot: Arc<Mutex<Slot>>,
}

impl std::fmt::Debug for Scenarios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenarios").field("scenarios", &self.runner.scenarios()).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Slot {
    state: RunState,
    run: Option<ScenarioRun>,
    started: Option<Instant>,
    finished: Option<Instant>,
    stop: Option<watch::Sender<bool>>,
    report: Option<serde_json::Value>,
    error: Option<String>,
    /// Tells waiting stops that the run has ended.
    ended: watch::Sender<u64>,
}

impl Scenarios {
    /// An empty slot for `runner`'s runs.
    pub fn new(runner: Arc<dyn ScenarioRunner>) -> Self {
        let slot = Slot {
            state: RunState::Idle,
            run: None,
            started: None,
            finished: None,
            stop: None,
            report: None,
            error: None,
            ended: watch::channel(0).0,
        };
        Self { runner, pass: RunnerPass::random(), slot: Arc::new(Mutex::new(slot)) }
    }

    /// The secret the runner's requests carry.
    pub fn pass(&self) -> &RunnerPass {
        &self.pass
    }

    /// The names of the scenarios the runner knows.
    pub fn names(&self) -> Vec<&'static str> {
        self.runner.scenarios()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the current or last run stands.
    pub fn status(&self) -> RunStatus {
        self.lock().status()
    }

    /// Starts `run` in a task of its own, unless a run is under way.
    pub fn start(&self, run: ScenarioRun) -> Result<RunStatus, ScenarioRefusal> {
        let (stop, stopped) = watch::channel(false);
        let status = {
            let mut slot = self.lock();
            if matches!(slot.state, RunState::Running | RunState::Stopping) {
                return Err(ScenarioRefusal::Running);
            }
            slot.state = RunState::Running;
            slot.run = Some(run.clone());
            slot.started = Some(Instant::now());
            slot.finished = None;
            slot.stop = Some(stop);
            slot.report = None;
            slot.error = None;
            slot.status()
        };
        let runner = Arc::clone(&self.runner);
        let slot = Arc::clone(&self.slot);
        let pass = self.pass.clone();
        tokio::spawn(async move {
            let outcome = runner.run(run, stopped, pass).await;
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.finish(outcome);
        });
        Ok(status)
    }

    /// Asks the run under way to stop and waits up to [`STOP_WAIT`] for it to end; nothing to do without one.
    pub async fn stop(&self) -> RunStatus {
        let mut ended = {
            let mut slot = self.lock();
            let Some(stop) = slot.stop.as_ref().filter(|_| slot.state == RunState::Running) else {
                return slot.status();
            };
            let _ = stop.send(true);
            slot.state = RunState::Stopping;
            slot.ended.subscribe()
        };
        let _ = tokio::time::timeout(STOP_WAIT, ended.changed()).await;
        self.status()
    }
}

impl Slot {
    fn status(&self) -> RunStatus {
        let elapsed = match (self.started, self.finished) {
            (Some(started), Some(finished)) => finished.duration_since(started),
            (Some(started), None) => started.elapsed(),
            _ => Duration::ZERO,
        };
        RunStatus {
            state: self.state,
            run: self.run.clone(),
            stop_requested: self.stop.as_ref().is_some_and(|stop| *stop.borrow()),
            elapsed,
            report: self.report.clone(),
            error: self.error.clone(),
        }
    }

    fn finish(&mut self, outcome: Result<serde_json::Value, String>) {
        self.state = RunState::Finished;
        self.finished = Some(Instant::now());
        match outcome {
            Ok(report) => self.report = Some(report),
            Err(error) => {
                tracing::warn!(error = %error, "scenario run failed");
                self.error = Some(error);
            }
        }
        self.ended.send_modify(|count| *count += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_admits_only_itself_and_never_shows() {
        let pass = RunnerPass::random();
        assert_eq!(pass.as_str().len(), 64);
        assert!(pass.admits(pass.as_str().as_bytes()));
        assert!(!pass.admits(RunnerPass::random().as_str().as_bytes()), "each process has its own");
        assert!(!pass.admits(&pass.as_str().as_bytes()[..63]));
        assert!(!pass.admits(b""));
        assert_eq!(format!("{pass:?}"), "RunnerPass(..)");
    }

    /// Runs until stopped, then reports whether it was.
    struct UntilStopped;

    #[async_trait]
    impl ScenarioRunner for UntilStopped {
        fn scenarios(&self) -> Vec<&'static str> {
            vec!["transfer"]
        }

        async fn run(
            &self,
            _run: ScenarioRun,
            mut stop: StopSignal,
            _pass: RunnerPass,
        ) -> Result<serde_json::Value, String> {
            let _ = stop.wait_for(|stopped| *stopped).await;
            Ok(serde_json::json!({"stopped": true}))
        }
    }

    fn run() -> ScenarioRun {
        ScenarioRun {
            scenario: "transfer".to_owned(),
            users: 2,
            connections: 1,
            duration: Some(Duration::from_secs(60)),
            requests: None,
            seed: 1,
        }
    }

    #[tokio::test]
    async fn one_run_at_a_time_and_a_stop_waits_for_its_report() {
        let scenarios = Scenarios::new(Arc::new(UntilStopped));
        assert_eq!(scenarios.status().state, RunState::Idle);
        assert_eq!(scenarios.start(run()).map(|status| status.state), Ok(RunState::Running));
        assert_eq!(scenarios.start(run()).map(|status| status.state), Err(ScenarioRefusal::Running));
        let stopped = scenarios.stop().await;
        assert_eq!(stopped.state, RunState::Finished);
        assert!(stopped.stop_requested);
        assert_eq!(stopped.report, Some(serde_json::json!({"stopped": true})));
        assert_eq!(scenarios.stop().await.state, RunState::Finished, "a second stop changes nothing");
        assert_eq!(scenarios.start(run()).map(|status| status.state), Ok(RunState::Running), "a new run may start");
    }
}
