//! Where a read that may lag goes: the routing decision, pure, so that every case is a unit test.

use std::time::Duration;

use banksim_store::Lsn;
use tokio::time::Instant;

/// What a read must see of the primary's past: the caller's own writes (and what the client says it saw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Floor {
    /// Every commit up to this position of the primary's log.
    pub lsn: Option<Lsn>,
    /// A write whose position could not be read (the primary stopped answering right after it): the replica may
    /// serve only from this instant on, once such a write is older than the lag the replica is allowed.
    pub until: Option<Instant>,
}

impl Floor {
    /// Everything up to `lsn`.
    pub fn at(lsn: Lsn) -> Self {
        Self { lsn: Some(lsn), until: None }
    }

    /// What both floors ask for.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self { lsn: self.lsn.max(other.lsn), until: self.until.max(other.until) }
    }

    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.lsn.is_none() && self.until.is_none()
    }

    /// Whether a replica that has replayed up to `replayed` shows everything this floor asks for at `now`.
    pub fn is_met(&self, replayed: Option<Lsn>, now: Instant) -> bool {
        let lsn = match self.lsn {
            None => true,
            Some(floor) => replayed.is_some_and(|replayed| replayed >= floor),
        };
        lsn && self.until.is_none_or(|until| now >= until)
    }
}

/// What the replica's monitor last saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Whether the replica answers as a standby.
    pub health: Health,
    /// How far it had replayed the primary's log.
    pub replayed: Option<Lsn>,
    /// How stale its data was when seen: how long ago the oldest commit it had not replayed happened (zero when
    /// caught up); none when unknown.
    pub lag: Option<Duration>,
    /// Bytes of the primary's log it had not replayed; none when unknown.
    pub lag_bytes: Option<u64>,
    /// When it was seen.
    pub seen_at: Instant,
}

impl View {
    /// Nothing seen yet.
    pub fn unknown(now: Instant) -> Self {
        Self { health: Health::Unknown, replayed: None, lag: None, lag_bytes: None, seen_at: now }
    }

    /// The replica's staleness at `now`, as far as is known: what was seen, plus the time since (it may have
    /// fallen further behind meanwhile).
    pub fn lag_at(&self, now: Instant) -> Option<Duration> {
        self.lag.map(|lag| lag + now.saturating_duration_since(self.seen_at))
    }
}

/// The replica as its monitor knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not asked yet.
    Unknown,
    /// It answers, as a standby.
    Standby,
    /// It does not answer (down, unreachable, or its breaker is open).
    Unavailable,
    /// It answers but replays nothing: a primary (after a promotion, or a misconfigured URL). Reading from it
    /// could show another history than the primary's.
    NotStandby,
}

/// Why a read went where it went (the `reason` label of `banksim_replica_reads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Replica: it had replayed everything the read needs.
    CaughtUp,
    /// Replica: it replayed the caller's last write while the read waited.
    Waited,
    /// Replica: the primary is unavailable (its breaker open, or the call failed), and the replica shows the
    /// caller's writes.
    PrimaryUnavailable,
    /// Primary: the replica is down, unreachable, not a standby, or its breaker is open.
    ReplicaUnavailable,
    /// Primary: the replica is further behind than `REPLICA_MAX_LAG_MS`.
    ReplicaLagging,
    /// Primary: the replica did not replay the caller's last write within `REPLICA_WAIT_MS`.
    ReadYourWrites,
    /// Primary: the replica failed the read.
    ReplicaFailed,
}

impl Reason {
    /// Every reason, for the series created at zero.
    pub const ALL: [Self; 7] = [
        Self::CaughtUp,
        Self::Waited,
        Self::PrimaryUnavailable,
        Self::ReplicaUnavailable,
        Self::ReplicaLagging,
        Self::ReadYourWrites,
        Self::ReplicaFailed,
    ];

    /// The metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CaughtUp => "caught_up",
            Self::Waited => "waited",
            Self::PrimaryUnavailable => "primary_unavailable",
            Self::ReplicaUnavailable => "replica_unavailable",
            Self::ReplicaLagging => "replica_lagging",
            Self::ReadYourWrites => "read_your_writes",
            Self::ReplicaFailed => "replica_failed",
        }
    }

    /// Which database serves a read routed for this reason.
    pub fn served_by(self) -> Source {
        match self {
            Self::CaughtUp | Self::Waited | Self::PrimaryUnavailable => Source::Replica,
            Self::ReplicaUnavailable | Self::ReplicaLagging | Self::ReadYourWrites | Self::ReplicaFailed => {
                Source::Primary
            }
        }
    }
}

/// A database that serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The primary.
    Primary,
    /// The replica.
    Replica,
}

impl Source {
    /// The `served_by` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// Where a read goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the database its reason names.
    Go(Reason),
    /// Not yet: the replica is usable but has not replayed the caller's last write; wait for it (up to
    /// `REPLICA_WAIT_MS`), then go to the primary.
    Wait,
}

/// What the decision depends on besides the replica's view and the read's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// The replica's breaker refuses calls.
    pub replica_open: bool,
    /// The primary's breaker refuses calls.
    pub primary_open: bool,
    /// The most staleness allowed (`REPLICA_MAX_LAG_MS`).
    pub max_lag: Duration,
}

/// Where a read with `floor` goes at `now`.
///
/// The replica serves when it answers, is within `max_lag`, and has replayed the floor. A replica that has not
/// replayed the floor yet is waited for, unless it is also too far behind (then waiting is pointless). While the
/// primary's breaker is open, the lag bound is set aside (stale data beats none), but never the floor: a caller
/// never reads a history without their own writes.
pub fn decide(view: &View, floor: &Floor, now: Instant, conditions: Conditions) -> Route {
    if conditions.replica_open || view.health != Health::Standby {
        return Route::Go(Reason::ReplicaUnavailable);
    }
    let lagging = view.lag_at(now).is_none_or(|lag| lag > conditions.max_lag);
    match (floor.is_met(view.replayed, now), lagging, conditions.primary_open) {
        (true, false, _) => Route::Go(Reason::CaughtUp),
        (true, true, true) => Route::Go(Reason::PrimaryUnavailable),
        (_, true, false) => Route::Go(Reason::ReplicaLagging),
        (false, _, _) => Route::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_LAG: Duration = Duration::from_millis(1_000);

    fn conditions() -> Conditions {
        Conditions { replica_open: false, primary_open: false, max_lag: MAX_LAG }
    }

    fn standby(now: Instant, replayed: u64, lag_ms: u64) -> View {
        View {
            health: Health::Standby,
            replayed: Some(Lsn(replayed)),
            lag: Some(Duration::from_millis(lag_ms)),
            lag_bytes: Some(0),
            seen_at: now,
        }
    }

    #[test]
    fn a_caught_up_replica_serves_callers_without_recent_writes_and_those_it_has_passed() {
        let now = Instant::now();
        let view = standby(now, 100, 10);
        assert_eq!(decide(&view, &Floor::default(), now, conditions()), Route::Go(Reason::CaughtUp));
        assert_eq!(decide(&view, &Floor::at(Lsn(100)), now, conditions()), Route::Go(Reason::CaughtUp));
        assert_eq!(decide(&view, &Floor::at(Lsn(99)), now, conditions()), Route::Go(Reason::CaughtUp));
    }

    #[test]
    fn a_caller_whose_write_the_replica_has_not_replayed_waits() {
        let now = Instant::now();
        let view = standby(now, 100, 10);
        assert_eq!(decide(&view, &Floor::at(Lsn(101)), now, conditions()), Route::Wait);
        let nothing_replayed = View { replayed: None, ..view };
        assert_eq!(decide(&nothing_replayed, &Floor::at(Lsn(1)), now, conditions()), Route::Wait);
    }

    #[test]
    fn a_down_or_open_or_unknown_replica_is_skipped() {
        let now = Instant::now();
        for health in [Health::Unknown, Health::Unavailable, Health::NotStandby] {
            let view = View { health, ..standby(now, 100, 0) };
            assert_eq!(decide(&view, &Floor::default(), now, conditions()), Route::Go(Reason::ReplicaUnavailable));
        }
        let open = Conditions { replica_open: true, ..conditions() };
        assert_eq!(decide(&standby(now, 100, 0), &Floor::default(), now, open), Route::Go(Reason::ReplicaUnavailable));
        let both = Conditions { replica_open: true, primary_open: true, ..conditions() };
        assert_eq!(decide(&standby(now, 100, 0), &Floor::default(), now, both), Route::Go(Reason::ReplicaUnavailable));
    }

    #[test]
    fn a_replica_beyond_the_lag_bound_is_skipped_and_not_waited_for() {
        let now = Instant::now();
        let view = standby(now, 100, 1_001);
        assert_eq!(decide(&view, &Floor::default(), now, conditions()), Route::Go(Reason::ReplicaLagging));
        assert_eq!(decide(&view, &Floor::at(Lsn(200)), now, conditions()), Route::Go(Reason::ReplicaLagging));
        let unknown_lag = View { lag: None, ..standby(now, 100, 0) };
        assert_eq!(decide(&unknown_lag, &Floor::default(), now, conditions()), Route::Go(Reason::ReplicaLagging));
        assert_eq!(
            decide(&standby(now, 100, 1_000), &Floor::default(), now, conditions()),
            Route::Go(Reason::CaughtUp)
        );
    }

    #[test]
    fn the_view_ages_a_replica_not_seen_for_a_while_counts_as_further_behind() {
        let seen = Instant::now();
        let view = standby(seen, 100, 600);
        assert_eq!(
            decide(&view, &Floor::default(), seen + Duration::from_millis(400), conditions()),
            Route::Go(Reason::CaughtUp)
        );
        assert_eq!(
            decide(&view, &Floor::default(), seen + Duration::from_millis(401), conditions()),
            Route::Go(Reason::ReplicaLagging)
        );
    }

    #[test]
    fn while_the_primary_is_open_a_lagging_replica_serves_but_never_without_the_callers_writes() {
        let now = Instant::now();
        let primary_open = Conditions { primary_open: true, ..conditions() };
        let lagging = standby(now, 100, 5_000);
        assert_eq!(decide(&lagging, &Floor::default(), now, primary_open), Route::Go(Reason::PrimaryUnavailable));
        assert_eq!(decide(&lagging, &Floor::at(Lsn(100)), now, primary_open), Route::Go(Reason::PrimaryUnavailable));
        assert_eq!(decide(&lagging, &Floor::at(Lsn(101)), now, primary_open), Route::Wait);
        let fresh = standby(now, 100, 0);
        assert_eq!(decide(&fresh, &Floor::default(), now, primary_open), Route::Go(Reason::CaughtUp));
    }

    #[test]
    fn a_write_of_unknown_position_keeps_its_caller_off_the_replica_until_its_instant() {
        let now = Instant::now();
        let floor = Floor { lsn: None, until: Some(now + Duration::from_millis(500)) };
        let view = standby(now, 100, 0);
        assert_eq!(decide(&view, &floor, now, conditions()), Route::Wait);
        assert_eq!(decide(&view, &floor, now + Duration::from_millis(500), conditions()), Route::Go(Reason::CaughtUp));
    }

    #[test]
    fn floors_combine_to_what_both_ask() {
        let now = Instant::now();
        let a = Floor::at(Lsn(5));
        let b = Floor { lsn: Some(Lsn(3)), until: Some(now) };
        assert_eq!(a.max(b), Floor { lsn: Some(Lsn(5)), until: Some(now) });
        assert_eq!(Floor::default().max(a), a);
        assert!(Floor::default().is_empty() && !a.is_empty());
        assert!(a.is_met(Some(Lsn(5)), now) && !a.is_met(Some(Lsn(4)), now) && !a.is_met(None, now));
        assert!(Floor::default().is_met(None, now));
    }

    #[test]
    fn every_reason_names_its_source() {
        for reason in Reason::ALL {
            let replica = matches!(reason, Reason::CaughtUp | Reason::Waited | Reason::PrimaryUnavailable);
            assert_eq!(reason.served_by() == Source::Replica, replica, "{}", reason.as_str());
        }
    }
}
