//! The console's scenario runner: the `simulate` engine behind `/api/v1/admin/scenarios`, driving this very
//! server through its own listening address, exactly as `banksim simulate --url` would from outside (its users
//! register and log in over HTTP; only the per-address auth limit lets them by, since they all come from the
//! server's own address: their requests carry the process's secret `RunnerPass`).
//!
//! The server crate only knows the [`ScenarioRunner`] trait; `banksim serve` installs this implementation in
//! simulation mode, so the server never depends on this binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use async_trait::async_trait;
use banksim_server::service::scenarios::{RUNNER_PASS_HEADER, RunnerPass, ScenarioRun, ScenarioRunner, StopSignal};
use clap::{Parser, ValueEnum};
use reqwest::header::{HeaderName, HeaderValue};

use crate::simulate::{self, Scenario, SimulateArgs};

/// Runs `simulate` scenarios against the server listening on one address.
#[derive(Debug, Clone)]
pub struct ConsoleRunner {
    url: String,
}

impl ConsoleRunner {
    /// A runner for the server listening on `listening` (an unspecified address is reached on loopback).
    pub fn new(listening: SocketAddr) -> Self {
        let ip = match listening.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self { url: format!("http://{}", SocketAddr::new(ip, listening.port())) }
    }

    /// The command line `banksim simulate` would take for `run`, parsed as it parses it: the defaults of every
    /// other option (the fund, the currency, the users' password, …) stay those of the command.
    fn arguments(&self, run: &ScenarioRun) -> Result<SimulateArgs, String> {
        let mut line = vec![
            "simulate".to_owned(),
            format!("--url={}", self.url),
            format!("--scenario={}", run.scenario),
            format!("--users={}", run.users),
            format!("--connections={}", run.connections),
            format!("--seed={}", run.seed),
        ];
        if let Some(duration) = run.duration {
            line.push(format!("--duration={}ms", duration.as_millis()));
        }
        if let Some(requests) = run.requests {
            line.push(format!("--requests={requests}"));
        }
        SimulateCommand::try_parse_from(line).map(|command| command.args).map_err(|err| err.to_string())
    }
}

/// `banksim simulate`'s options alone, to parse a run's command line.
#[derive(Debug, Parser)]
struct SimulateCommand {
    #[command(flatten)]
    args: SimulateArgs,
}

#[async_trait]
impl ScenarioRunner for ConsoleRunner {
    fn scenarios(&self) -> Vec<&'static str> {
        Scenario::value_variants().iter().map(|scenario| scenario.as_str()).collect()
    }

    async fn run(&self, run: ScenarioRun, stop: StopSignal, pass: RunnerPass) -> Result<serde_json::Value, String> {
        let mut args = self.arguments(&run)?;
        // Its users all log in from this server's own address: the pass lets them by the per-address auth limit.
        let pass = HeaderValue::from_str(pass.as_str()).map_err(|err| format!("the runner's pass: {err}"))?;
        args.headers.push((HeaderName::from_static(RUNNER_PASS_HEADER), pass));
        let (done, outcome) = tokio::sync::oneshot::channel();
        // The generator runs on a thread and runtime of its own: its future is not `Send` (its request streams
        // borrow the run's users), and the server's runtime keeps its workers for the server.
        std::thread::Builder::new()
            .name("scenario-runner".to_owned())
            .spawn(move || {
                let _ = done.send(run_on_own_runtime(&args, stop));
            })
            .map_err(|err| format!("starting the scenario runner's thread: {err}"))?;
        outcome.await.map_err(|_| "the scenario runner's thread ended without a report".to_owned())?
    }
}

/// Runs `args` to its report on a single-threaded runtime made for it.
fn run_on_own_runtime(args: &SimulateArgs, stop: StopSignal) -> Result<serde_json::Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the scenario runner's runtime: {err}"))?;
    let report = runtime.block_on(simulate::run_with(args, stop)).map_err(|err| format!("{err:#}"))?;
    serde_json::to_value(&report).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_run_becomes_the_command_line_of_simulate_against_this_server() {
        let runner = ConsoleRunner::new("0.0.0.0:8080".parse().expect("an address"));
        let run = ScenarioRun {
            scenario: "two-phase".to_owned(),
            users: 5,
            connections: 2,
            duration: Some(Duration::from_secs(30)),
            requests: Some(100),
            seed: 7,
        };
        let args = runner.arguments(&run).expect("valid arguments");
        assert_eq!(args.url, "http://127.0.0.1:8080");
        assert_eq!((args.scenario, args.users, args.connections, args.seed), (Scenario::TwoPhase, 5, 2, 7));
        assert_eq!((args.duration, args.requests), (Some(Duration::from_secs(30)), Some(100)));
        assert_eq!(ConsoleRunner::new("[::]:9000".parse().expect("an address")).url, "http://[::1]:9000");
    }

    #[test]
    fn every_scenario_of_the_command_line_is_offered() {
        let runner = ConsoleRunner::new("127.0.0.1:1".parse().expect("an address"));
        assert_eq!(
            runner.scenarios(),
            ["transfer", "hot", "mixed", "balance", "history", "two-phase", "batch", "login"]
        );
    }
}
