//! What a run measured: request counts, latencies in an HDR histogram, answers by status and error code, and
//! the report made of them, as text or as one JSON object.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use banksim_core::currency::Currency;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::conservation::Conservation;
use super::scenario::Operation;

/// Error codes that are normal outcomes of random traffic rather than errors: a payer who ran out of money,
/// or a rollback of something already rolled back.
pub const EXPECTED_REJECTIONS: [&str; 2] = ["insufficient_funds", "already_rolled_back"];

/// Longest latency the histogram records exactly, in microseconds (one hour); longer ones count as one hour.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Highest HTTP status counted by its number.
const STATUS_MAX: usize = 599;

/// Counts of one kind of operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OperationCount {
    /// Requests sent (each retry counts).
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
}

/// The measurements of one connection, merged into one at the end of the run.
#[derive(Debug, Clone)]
pub struct Stats {
    latency_us: Histogram<u64>,
    requests: u64,
    statuses: Vec<u64>,
    error_codes: HashMap<String, u64>,
    transport_errors: u64,
    movements: u64,
    backpressure: u64,
    replayed: u64,
    operations: [OperationCount; Operation::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Self {
        Self {
            // Three significant digits: a latency is known to 0.1 % whatever its size.
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("the histogram bounds are valid"),
            requests: 0,
            statuses: vec![0; STATUS_MAX + 1],
            error_codes: HashMap::new(),
            transport_errors: 0,
            movements: 0,
            backpressure: 0,
            replayed: 0,
            operations: [OperationCount::default(); Operation::ALL.len()],
        }
    }

    /// Records an HTTP answer, with the `error_code` of its body when it is an error.
    pub fn record_answer(&mut self, operation: Operation, status: u16, latency: Duration, error_code: Option<&str>) {
        self.requests += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        if let Some(count) = self.statuses.get_mut(usize::from(status)) {
            *count += 1;
        }
        let counts = &mut self.operations[operation as usize];
        counts.requests += 1;
        if (200..300).contains(&status) {
            counts.ok += 1;
        } else {
            let code = error_code.unwrap_or("none");
            match self.error_codes.get_mut(code) {
                Some(count) => *count += 1,
                None => {
                    self.error_codes.insert(code.to_owned(), 1);
                }
            }
        }
    }

    /// Records a request that got no answer (connection refused or reset, timeout, unreadable body).
    pub fn record_transport_error(&mut self, operation: Operation) {
        self.requests += 1;
        self.transport_errors += 1;
        self.operations[operation as usize].requests += 1;
    }

    /// Records money that moved (a money request answered 201 that was not a replay of an earlier run's): one
    /// movement, or a batch's items.
    pub fn record_movements(&mut self, count: u64) {
        self.movements += count;
    }

    /// Records a 503 answer telling the generator to slow down.
    pub fn record_backpressure(&mut self) {
        self.backpressure += 1;
    }

    /// Records an answer marked `Idempotent-Replayed`.
    pub fn record_replayed(&mut self) {
        self.replayed += 1;
    }

    /// Adds another connection's measurements to these.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms have the same bounds, which is all `add` needs.
        self.latency_us.add(&other.latency_us).expect("histograms with the same bounds add up");
        self.requests += other.requests;
        for (mine, theirs) in self.statuses.iter_mut().zip(&other.statuses) {
            *mine += theirs;
        }
        for (code, count) in &other.error_codes {
            *self.error_codes.entry(code.clone()).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        self.movements += other.movements;
        self.backpressure += other.backpressure;
        self.replayed += other.replayed;
        for (mine, theirs) in self.operations.iter_mut().zip(&other.operations) {
            mine.requests += theirs.requests;
            mine.ok += theirs.ok;
        }
    }

    /// Requests sent, answered or not.
    pub fn requests(&self) -> u64 {
        self.requests
    }
}

/// What describes the run itself, apart from its measurements.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Simulated users.
    pub users: u32,
    /// Concurrent connections.
    pub connections: u32,
    /// Currency of every movement.
    pub currency: Currency,
    /// The seed of the traffic.
    pub seed: u64,
    /// The run id mixed into the idempotency keys.
    pub run_id: u64,
    /// Registration, login and funding.
    pub setup: Duration,
    /// The traffic phase, from the first request to the last answer.
    pub elapsed: Duration,
    /// Whether HTTP error answers are tolerated.
    pub allow_errors: bool,
    /// The share of requests that got random faults (`--faults`), if any.
    pub faults: Option<String>,
}

/// Latency percentiles in milliseconds, rounded to 2 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest answer.
    pub max: f64,
}

/// Requests that went wrong, apart from the expected rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// 4xx answers other than the expected rejections: requests the server should have accepted.
    pub client: u64,
    /// 5xx answers (back-pressure 503s included).
    pub server: u64,
    /// Requests without an answer.
    pub transport: u64,
}

/// The conservation part of the report, amounts as exact decimal text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConservationReport {
    /// Whether every minor unit is accounted for.
    pub ok: bool,
    /// Sum of the users' balances before funding.
    pub before: String,
    /// What the sum must be after the run.
    pub expected: String,
    /// What it is.
    pub actual: String,
    /// `expected - before`: funding and credits, less debits, plus rolled-back debits.
    pub moved_in: String,
    /// `actual - expected`.
    pub difference: String,
    /// Money requests whose outcome is unknown.
    pub uncertain: u64,
}

/// The report of a run: what `--json` prints, and what the text report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Simulated users.
    pub users: u32,
    /// Concurrent connections.
    pub connections: u32,
    /// Currency of every movement.
    pub currency: &'static str,
    /// The seed of the traffic.
    pub seed: u64,
    /// The run id mixed into the idempotency keys (pass it to `--run-id` to send the same keys again).
    pub run_id: u64,
    /// Setup time in seconds (registration, login, funding).
    pub setup_secs: f64,
    /// Length of the traffic phase in seconds.
    pub duration_secs: f64,
    /// Requests sent in the traffic phase.
    pub requests: u64,
    /// `requests` per second.
    pub requests_per_sec: f64,
    /// Successful money movements (credits, debits, transfers and rollbacks answered 201).
    pub movements: u64,
    /// `movements` per second.
    pub movements_per_sec: f64,
    /// Latency percentiles in milliseconds.
    pub latency_ms: Latency,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Error answers by their body's `error_code` (`none` when the body had none).
    pub error_codes: BTreeMap<String, u64>,
    /// Answers with one of [`EXPECTED_REJECTIONS`]' codes.
    pub expected_rejections: u64,
    /// Everything else that went wrong.
    pub errors: Errors,
    /// 503 answers that asked the generator to slow down (also counted in `errors.server`).
    pub backpressure: u64,
    /// Answers marked `Idempotent-Replayed`.
    pub replayed: u64,
    /// Requests and 2xx answers per operation.
    pub operations: BTreeMap<&'static str, OperationCount>,
    /// The conservation check.
    pub conservation: ConservationReport,
    /// The share of requests that got random faults (`--faults`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<String>,
    /// The conservation check in words, for the text report.
    #[serde(skip)]
    pub conservation_line: String,
    /// Whether the run passed: conservation holds, no transport error, and no HTTP error unless allowed.
    pub passed: bool,
    /// Why the run failed, if it did.
    pub failures: Vec<String>,
}

impl Report {
    /// Builds the report of a run.
    pub fn new(info: &RunInfo, stats: &Stats, conservation: &Conservation) -> Self {
        let seconds = info.elapsed.as_secs_f64();
        let per_second = |count: u64| if seconds > 0.0 { round2(count as f64 / seconds) } else { 0.0 };
        let milliseconds = |micros: u64| round2(micros as f64 / 1000.0);
        let histogram = &stats.latency_us;
        let latency_ms = if histogram.is_empty() {
            Latency { p50: 0.0, p90: 0.0, p99: 0.0, max: 0.0 }
        } else {
            Latency {
                p50: milliseconds(histogram.value_at_quantile(0.50)),
                p90: milliseconds(histogram.value_at_quantile(0.90)),
                p99: milliseconds(histogram.value_at_quantile(0.99)),
                max: milliseconds(histogram.max()),
            }
        };
        let statuses: BTreeMap<u16, u64> = (0..=STATUS_MAX)
            .filter(|&status| stats.statuses[status] > 0)
            .map(|status| (status as u16, stats.statuses[status]))
            .collect();
        let error_codes: BTreeMap<String, u64> = stats.error_codes.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let expected_rejections =
            error_codes.iter().filter(|(code, _)| EXPECTED_REJECTIONS.contains(&code.as_str())).map(|(_, n)| n).sum();
        let four_xx: u64 = statuses.range(400..500).map(|(_, n)| n).sum();
        let errors = Errors {
            client: four_xx.saturating_sub(expected_rejections),
            server: statuses.range(500..).map(|(_, n)| n).sum(),
            transport: stats.transport_errors,
        };
        let sum = |value: i128| super::amount::format_sum(value, info.currency);
        let conservation_report = ConservationReport {
            ok: conservation.is_ok(),
            before: sum(conservation.before),
            expected: sum(conservation.expected),
            actual: sum(conservation.after),
            moved_in: sum(conservation.expected - conservation.before),
            difference: sum(conservation.difference()),
            uncertain: conservation.uncertain,
        };
        let mut failures = Vec::new();
        if !conservation.is_ok() {
            let difference = super::amount::format_sum(conservation.difference(), info.currency);
            failures.push(format!("money is not conserved (difference {difference} {})", info.currency));
        }
        // Under injected faults, lost answers and 5xx are the drill; what counts is that every money request
        // ended with a definite answer and every minor unit is accounted for.
        let drill = info.faults.is_some();
        if drill && conservation.uncertain > 0 {
            failures.push(format!("{} money requests never got a definite answer", conservation.uncertain));
        }
        if !drill && errors.transport > 0 {
            failures.push(format!("{} requests got no answer", errors.transport));
        }
        if !info.allow_errors && !drill && errors.server > 0 {
            failures.push(format!("{} server errors (5xx)", errors.server));
        }
        if !info.allow_errors && errors.client > 0 {
            failures.push(format!("{} unexpected client errors (4xx)", errors.client));
        }
        Self {
            scenario: info.scenario,
            users: info.users,
            connections: info.connections,
            currency: info.currency.code(),
            seed: info.seed,
            run_id: info.run_id,
            setup_secs: round2(info.setup.as_secs_f64()),
            duration_secs: round2(seconds),
            requests: stats.requests,
            requests_per_sec: per_second(stats.requests),
            movements: stats.movements,
            movements_per_sec: per_second(stats.movements),
            latency_ms,
            statuses,
            error_codes,
            expected_rejections,
            errors,
            backpressure: stats.backpressure,
            replayed: stats.replayed,
            operations: Operation::ALL
                .iter()
                .filter(|operation| stats.operations[**operation as usize].requests > 0)
                .map(|operation| (operation.as_str(), stats.operations[*operation as usize]))
                .collect(),
            conservation: conservation_report,
            faults: info.faults.clone(),
            conservation_line: conservation.describe(info.currency),
            passed: failures.is_empty(),
            failures,
        }
    }
}

/// Rounds to 2 decimals, for numbers meant to be read.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Writes `a: 1  b: 2`, or `none`.
fn counts<K: fmt::Display>(items: impl IntoIterator<Item = (K, u64)>) -> String {
    let parts: Vec<String> = items.into_iter().map(|(key, count)| format!("{key}: {count}")).collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join("  ") }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let latency = &self.latency_ms;
        writeln!(
            f,
            "scenario      {} ({} users, {}, seed {}, run {})",
            self.scenario, self.users, self.currency, self.seed, self.run_id
        )?;
        writeln!(f, "connections   {}", self.connections)?;
        if let Some(rate) = &self.faults {
            writeln!(f, "faults        random, rate {rate} (a drill: 5xx and lost answers expected)")?;
        }
        writeln!(f, "duration      {:.2} s (setup {:.2} s)", self.duration_secs, self.setup_secs)?;
        writeln!(f, "requests      {} ({:.2} req/s)", self.requests, self.requests_per_sec)?;
        write!(f, "movements     {} ({:.2} /s)", self.movements, self.movements_per_sec)?;
        if self.replayed > 0 {
            write!(f, ", {} answers replayed by idempotency key", self.replayed)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "latency       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            latency.p50, latency.p90, latency.p99, latency.max
        )?;
        writeln!(f, "statuses      {}", counts(self.statuses.iter().map(|(status, n)| (status, *n))))?;
        let expected = self.error_codes.iter().filter(|(code, _)| EXPECTED_REJECTIONS.contains(&code.as_str()));
        writeln!(
            f,
            "rejections    {} expected ({})",
            self.expected_rejections,
            counts(expected.map(|(c, n)| (c, *n)))
        )?;
        let unexpected = self.error_codes.iter().filter(|(code, _)| !EXPECTED_REJECTIONS.contains(&code.as_str()));
        let errors = &self.errors;
        writeln!(
            f,
            "errors        client {}  server {}  transport {}  (codes: {}; back-pressure 503s: {})",
            errors.client,
            errors.server,
            errors.transport,
            counts(unexpected.map(|(c, n)| (c, *n))),
            self.backpressure
        )?;
        let operations = self.operations.iter().map(|(name, count)| format!("{name} {}/{}", count.ok, count.requests));
        writeln!(f, "operations    {} (2xx/sent)", operations.collect::<Vec<_>>().join("  "))?;
        writeln!(f, "conservation  {}", self.conservation_line)?;
        if self.passed {
            write!(f, "result        passed")
        } else {
            write!(f, "result        FAILED: {}", self.failures.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(allow_errors: bool) -> RunInfo {
        RunInfo {
            scenario: "mixed",
            users: 10,
            connections: 4,
            currency: Currency::USD,
            seed: 42,
            run_id: 7,
            setup: Duration::from_millis(1_500),
            elapsed: Duration::from_secs(2),
            allow_errors,
            faults: None,
        }
    }

    fn conserved() -> Conservation {
        Conservation { before: 0, after: 1_000_000, expected: 1_000_000, uncertain: 0 }
    }

    /// 1000 transfers taking 1 ms to 1000 ms, split over two connections' stats and merged.
    fn stats() -> Stats {
        let (mut first, mut second) = (Stats::new(), Stats::new());
        for millis in 1..=1000_u64 {
            let stats = if millis % 2 == 0 { &mut first } else { &mut second };
            stats.record_answer(Operation::Transfer, 201, Duration::from_millis(millis), None);
            stats.record_movements(1);
        }
        first.merge(&second);
        first
    }

    #[test]
    fn percentiles_come_from_the_merged_histogram_in_milliseconds() {
        let report = Report::new(&info(false), &stats(), &conserved());
        assert_eq!(report.requests, 1000);
        assert_eq!((report.requests_per_sec, report.movements, report.movements_per_sec), (500.0, 1000, 500.0));
        // Three significant digits: each percentile is within 0.1 % of the exact value.
        let latency = report.latency_ms;
        for (measured, exact) in
            [(latency.p50, 500.0), (latency.p90, 900.0), (latency.p99, 990.0), (latency.max, 1000.0)]
        {
            assert!((measured - exact).abs() <= exact / 1000.0, "{measured} for {exact}");
        }
        assert_eq!(report.statuses, BTreeMap::from([(201, 1000)]));
        assert!(report.passed, "{:?}", report.failures);
    }

    #[test]
    fn expected_rejections_are_not_errors_but_other_answers_are() {
        let mut stats = stats();
        let millisecond = Duration::from_millis(1);
        for _ in 0..3 {
            stats.record_answer(Operation::Transfer, 400, millisecond, Some("insufficient_funds"));
        }
        stats.record_answer(Operation::Rollback, 409, millisecond, Some("already_rolled_back"));
        stats.record_answer(Operation::Debit, 400, millisecond, Some("invalid_amount"));
        stats.record_answer(Operation::Balance, 500, millisecond, Some("internal_error"));
        stats.record_answer(Operation::Credit, 503, millisecond, None);
        stats.record_backpressure();
        stats.record_transport_error(Operation::History);

        let report = Report::new(&info(false), &stats, &conserved());
        assert_eq!(report.requests, 1008);
        assert_eq!(report.expected_rejections, 4);
        assert_eq!(report.errors, Errors { client: 1, server: 2, transport: 1 });
        assert_eq!(report.backpressure, 1);
        assert_eq!(report.error_codes["none"], 1);
        assert_eq!(report.operations["transfer"], OperationCount { requests: 1003, ok: 1000 });
        assert_eq!(report.operations["history"], OperationCount { requests: 1, ok: 0 });
        assert!(!report.passed);
        assert_eq!(
            report.failures,
            ["1 requests got no answer", "2 server errors (5xx)", "1 unexpected client errors (4xx)"]
        );

        let tolerant = Report::new(&info(true), &stats, &conserved());
        assert_eq!(tolerant.failures, ["1 requests got no answer"]);
    }

    #[test]
    fn a_conservation_mismatch_fails_the_run() {
        let lost = Conservation { before: 0, after: 999_999, expected: 1_000_000, uncertain: 0 };
        let report = Report::new(&info(true), &stats(), &lost);
        assert!(!report.passed && !report.conservation.ok);
        assert_eq!(report.failures, ["money is not conserved (difference -0.01 USD)"]);
        assert_eq!(report.conservation.difference, "-0.01");
    }

    #[test]
    fn the_json_report_is_one_object_with_exact_amounts() {
        let report = Report::new(&info(false), &stats(), &conserved());
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("parse");
        assert_eq!(json["scenario"], "mixed");
        assert_eq!(json["movements"], 1000);
        assert_eq!(json["statuses"]["201"], 1000);
        assert_eq!(json["errors"], serde_json::json!({"client": 0, "server": 0, "transport": 0}));
        assert_eq!(json["conservation"]["ok"], true);
        assert_eq!(json["conservation"]["actual"], "10000.00");
        assert_eq!(json["conservation"]["difference"], "0.00");
        assert_eq!(json["passed"], true);
        assert!(json.get("conservation_line").is_none());
        assert!(json["latency_ms"]["p99"].is_f64());
    }

    #[test]
    fn the_text_report_has_one_labelled_line_per_measure() {
        let text = Report::new(&info(false), &stats(), &conserved()).to_string();
        let labels: Vec<&str> = text.lines().map(|line| line.split_whitespace().next().unwrap_or("")).collect();
        assert_eq!(
            labels,
            [
                "scenario",
                "connections",
                "duration",
                "requests",
                "movements",
                "latency",
                "statuses",
                "rejections",
                "errors",
                "operations",
                "conservation",
                "result"
            ]
        );
        assert!(text.contains("requests      1000 (500.00 req/s)"), "{text}");
        assert!(text.contains("conservation  ok (sum 10000.00 USD = 0.00 before + 10000.00 moved in)"), "{text}");
        assert!(text.ends_with("result        passed"), "{text}");
    }
}
