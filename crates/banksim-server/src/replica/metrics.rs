//! The replica's series in `/metrics`: where reads went and why, how long reads waited for the replica, and
//! its lag (read from the monitor's view at each scrape).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::routing::{Reason, Source};

/// Labels of `banksim_replica_reads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    served_by: &'static str,
    reason: &'static str,
}

/// Counters and histograms of the replica's reads.
#[derive(Debug)]
pub struct ReplicaMetrics {
    registry: Registry,
    reads: Family<ReadLabels, Counter>,
    /// How long reads waited for the replica to replay their caller's last write.
    pub wait_seconds: Histogram,
}

impl Default for ReplicaMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reads = Family::<ReadLabels, Counter>::default();
        for reason in Reason::ALL {
            drop(reads.get_or_create(&ReadLabels { served_by: reason.served_by().as_str(), reason: reason.as_str() }));
        }
        registry.register(
            "banksim_replica_reads",
            "Reads that may lag, by the database that served them and why it was chosen",
            reads.clone(),
        );
        let wait_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 10));
        registry.register(
            "banksim_replica_wait_seconds",
            "Time reads waited for the replica to replay their caller's last write (then served by either)",
            wait_seconds.clone(),
        );
        Self { registry, reads, wait_seconds }
    }
}

impl ReplicaMetrics {
    /// Counts a read served for `reason`.
    pub fn count(&self, reason: Reason) {
        self.reads.get_or_create(&ReadLabels { served_by: reason.served_by().as_str(), reason: reason.as_str() }).inc();
    }

    /// Reads served by `source` so far.
    pub fn served_by(&self, source: Source) -> u64 {
        Reason::ALL
            .into_iter()
            .filter(|reason| reason.served_by() == source)
            .map(|reason| {
                self.reads.get_or_create(&ReadLabels { served_by: source.as_str(), reason: reason.as_str() }).get()
            })
            .sum()
    }

    /// Writes the series in the text format, with the lag as last seen (absent when unknown).
    pub fn encode(&self, text: &mut String, lag_bytes: Option<u64>, lag_seconds: Option<f64>) {
        let _ = prometheus_client::encoding::text::encode_registry(text, &self.registry);
        let mut now = Registry::default();
        if let Some(bytes) = lag_bytes {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            now.register("banksim_replica_lag_bytes", "Bytes of the primary's log the replica has not replayed", gauge);
        }
        if let Some(seconds) = lag_seconds {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(seconds);
            now.register(
                "banksim_replica_lag_seconds",
                "How old the oldest commit the replica had not replayed was at the last poll (0 when caught up)",
                gauge,
            );
        }
        let _ = prometheus_client::encoding::text::encode_registry(text, &now);
    }
}
