//! How stale a replica is, in bytes and in time.
//!
//! Bytes are simple: the primary's flushed position minus the replica's replay position. Time is not:
//! `now() - pg_last_xact_replay_timestamp()` on the replica is the age of the last transaction it replayed, which
//! keeps growing on an idle primary although the replica lacks nothing, and jumps to the length of the idle spell
//! at the first write after it. What matters to a reader is how old the oldest commit the replica has *not*
//! replayed is. So the monitor keeps a short history of the primary's flushed position (each position with the
//! last instant it was seen still current) and finds the latest instant at which the primary had nothing the
//! replica now lacks: the replica is at most `now - that instant` stale. The replay timestamp is a second upper
//! bound (commits replay in order), used when the history does not reach back far enough; the smaller wins.

use std::collections::VecDeque;
use std::time::Duration;

use banksim_store::Lsn;
use tokio::time::Instant;

/// Positions of the primary kept; at one per poll that changed, minutes of history at the default interval.
const SAMPLES_MAX: usize = 4_096;

/// The primary's recent positions, and the replica's lag computed against them.
#[derive(Debug, Default)]
pub struct LagEstimator {
    /// `(last seen current, flushed position)`, oldest first, positions strictly increasing.
    samples: VecDeque<(Instant, Lsn)>,
}

/// A replica's lag behind the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Bytes of the primary's log not replayed.
    pub bytes: u64,
    /// How old the oldest commit not replayed is (zero when nothing is missing); none when nothing bounds it.
    pub staleness: Option<Duration>,
    /// The instant the staleness is true of: a replica that had everything the primary had when last asked
    /// lacks at most what was committed since.
    pub as_of: Instant,
}

impl LagEstimator {
    /// Records that the primary's log was flushed up to `flushed` when asked at `at` (every commit that had
    /// returned by then is at or before it).
    pub fn primary_seen(&mut self, at: Instant, flushed: Lsn) {
        match self.samples.back_mut() {
            Some((seen, last)) if *last >= flushed => *seen = (*seen).max(at),
            _ => self.samples.push_back((at, flushed)),
        }
        if self.samples.len() > SAMPLES_MAX {
            self.samples.pop_front();
        }
    }

    /// The lag at `now` of a replica that has replayed up to `replayed`, whose last replayed commit is
    /// `replay_age` old (if it replayed any). None while the primary has not been seen.
    pub fn lag(&mut self, now: Instant, replayed: Lsn, replay_age: Option<Duration>) -> Option<Lag> {
        let &(primary_seen, primary) = self.samples.back()?;
        if replayed >= primary {
            // Nothing is missing: only the newest sample is still of use.
            let keep = self.samples.len() - 1;
            self.samples.drain(..keep);
            return Some(Lag { bytes: 0, staleness: Some(Duration::ZERO), as_of: primary_seen });
        }
        // The latest instant the primary had nothing beyond what the replica has now replayed.
        let covered = self.samples.iter().rposition(|&(_, position)| position <= replayed);
        let by_history = covered.map(|index| {
            // Older samples can never be needed again: the replica only moves forward.
            self.samples.drain(..index);
            now.saturating_duration_since(self.samples[0].0)
        });
        let staleness = match (by_history, replay_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Lag { bytes: primary.bytes_since(replayed), staleness, as_of: now })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_caught_up_replica_has_no_lag_even_after_a_long_idle_spell() {
        let start = Instant::now();
        let mut lag = LagEstimator::default();
        lag.primary_seen(start, Lsn(100));
        // An hour without writes: the last replayed commit is an hour old, and nothing is missing.
        lag.primary_seen(start + ms(3_600_000), Lsn(100));
        let now = start + ms(3_600_010);
        let seen = lag.lag(now, Lsn(100), Some(ms(3_600_010))).expect("lag");
        assert_eq!(seen, Lag { bytes: 0, staleness: Some(ms(0)), as_of: start + ms(3_600_000) });
    }

    #[test]
    fn the_first_write_after_an_idle_spell_is_not_an_hour_of_lag() {
        let start = Instant::now();
        let mut lag = LagEstimator::default();
        lag.primary_seen(start, Lsn(100));
        lag.primary_seen(start + ms(3_600_000), Lsn(100));
        lag.primary_seen(start + ms(3_600_100), Lsn(180));
        // The replica has not replayed the new write yet; it lacks nothing older than the last sample at 100.
        let now = start + ms(3_600_105);
        let seen = lag.lag(now, Lsn(100), Some(ms(3_600_105))).expect("lag");
        assert_eq!(seen, Lag { bytes: 80, staleness: Some(ms(105)), as_of: now });
    }

    #[test]
    fn a_paused_replica_falls_further_behind_with_time() {
        let start = Instant::now();
        let mut lag = LagEstimator::default();
        for step in 0..=10 {
            lag.primary_seen(start + ms(step * 100), Lsn(100 + step * 10));
        }
        // Replay stopped at 130 (seen current at 300 ms); now is 1 s in.
        let seen = lag.lag(start + ms(1_000), Lsn(130), None).expect("lag");
        assert_eq!((seen.bytes, seen.staleness), (70, Some(ms(700))));
        let later = lag.lag(start + ms(2_000), Lsn(130), None).expect("lag");
        assert_eq!(later.staleness, Some(ms(1_700)));
    }

    #[test]
    fn the_replay_timestamp_bounds_the_lag_when_the_history_does_not_reach_back() {
        let start = Instant::now();
        let mut lag = LagEstimator::default();
        lag.primary_seen(start, Lsn(500));
        let seen = lag.lag(start + ms(10), Lsn(100), Some(ms(2_000))).expect("lag");
        assert_eq!((seen.bytes, seen.staleness), (400, Some(ms(2_000))));
        let unbounded = lag.lag(start + ms(10), Lsn(100), None).expect("lag");
        assert_eq!(unbounded.staleness, None, "nothing bounds it");
    }

    #[test]
    fn the_smaller_bound_wins() {
        let start = Instant::now();
        let mut lag = LagEstimator::default();
        lag.primary_seen(start, Lsn(100));
        lag.primary_seen(start + ms(50), Lsn(200));
        let seen = lag.lag(start + ms(1_000), Lsn(100), Some(ms(30))).expect("lag");
        assert_eq!(seen.staleness, Some(ms(30)));
    }

    #[test]
    fn nothing_is_known_before_the_primary_is_seen_and_the_history_stays_bounded() {
        let start = Instant::now();
        let mut lag = LagEstimator::default();
        assert_eq!(lag.lag(start, Lsn(1), None), None);
        for step in 0..(SAMPLES_MAX as u64 + 10) {
            lag.primary_seen(start + ms(step), Lsn(step + 1));
        }
        assert_eq!(lag.samples.len(), SAMPLES_MAX);
        // A position seen again (or an older answer arriving late) moves no position backwards.
        lag.primary_seen(start + ms(100_000), Lsn(5));
        assert_eq!(lag.samples.back().map(|s| s.1), Some(Lsn(SAMPLES_MAX as u64 + 10)));
    }
}
