//! The one source of "now" for the whole program.
//!
//! Schedules, token expiry, statements and row timestamps all ask a [`Clock`], so that tests and simulations can
//! run on a clock they control instead of the wall clock.

use chrono::{DateTime, Datelike, TimeDelta, Utc};

/// Whether both databases store `at` exactly and RFC 3339 can write it: years 1 to 9999 in UTC. (PostgreSQL stops
/// at 4713 BC and 294276 AD; RFC 3339 has four-digit years.) Every instant a client sends is held to this range.
pub fn is_storable(at: DateTime<Utc>) -> bool {
    (1..=9999).contains(&at.year())
}

/// Parses an instant a client sent: RFC 3339 with any offset, in the range [`is_storable`] accepts.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 timestamp such as 2030-01-31T09:00:00Z".to_owned())?;
    if !is_storable(at) {
        return Err("must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z".to_owned());
    }
    Ok(at)
}

/// Tells the current instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock of the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Now, to the microsecond: the precision both databases keep, so an instant reads back exactly as it was
    /// answered.
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
    }
}

/// A clock that stands still until told to move: simulations and tests run schedules, statements and timestamps
/// on it.
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { now: std::sync::Mutex::new(now) }
    }

    /// Moves the clock to `now` (backwards too, for tests of clock steps).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The longest step the virtual clock takes at once (100 years): far beyond any simulation, and small enough that no
/// sum of instants and steps overflows.
pub const CLOCK_STEP_MAX: TimeDelta = TimeDelta::days(36_525);

/// Parses a clock step a client sent: one or more `<whole number><unit>` parts, largest unit first, each unit at most
/// once, with no spaces: `30d`, `90d`, `1d12h`, `2w`, `45m`, `10s`, `1h30m15s`. Units are `w` (7 days), `d` (24
/// hours), `h`, `m` and `s`; a month or a year has no fixed length, so neither is a unit. The step must be greater
/// than zero and at most [`CLOCK_STEP_MAX`]. Errors are sentences for the client.
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    const UNITS: [(char, i64); 5] = [('w', 604_800), ('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let syntax = || format!("{text:?} is not a duration such as 30d, 12h, 1d12h, 45m or 10s (units: w, d, h, m, s)");
    if text.is_empty() {
        return Err("must be a duration such as 30d, 12h, 1d12h, 45m or 10s".to_owned());
    }
    let mut rest = text;
    let mut total_secs: i64 = 0;
    // Units must come largest first, each once: the index of the smallest unit allowed next.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 || digits == rest.len() {
            return Err(syntax());
        }
        let (number, tail) = rest.split_at(digits);
        let unit = tail.chars().next().ok_or_else(syntax)?;
        let position = UNITS.iter().position(|(name, _)| *name == unit).ok_or_else(syntax)?;
        if position < next_unit {
            return Err(format!("{text:?}: give each unit once, largest first (as in 1d12h)"));
        }
        next_unit = position + 1;
        let too_long = || format!("{text:?} is longer than the longest step, {} days", CLOCK_STEP_MAX.num_days());
        let count: i64 = number.parse().map_err(|_| too_long())?;
        let secs = count.checked_mul(UNITS[position].1).ok_or_else(too_long)?;
        total_secs = total_secs.checked_add(secs).ok_or_else(too_long)?;
        if total_secs > CLOCK_STEP_MAX.num_seconds() {
            return Err(too_long());
        }
        rest = &tail[unit.len_utf8()..];
    }
    if total_secs == 0 {
        return Err(format!("{text:?} does not move the clock: the step must be greater than zero"));
    }
    Ok(TimeDelta::seconds(total_secs))
}

/// Whether "now" is the wall clock or the virtual clock of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// The machine's wall clock (no simulation has set the clock yet).
    System,
    /// The virtual clock: it stands still at the instant it was last set or advanced to.
    Virtual,
}

impl ClockMode {
    /// The API name: `system` or `virtual`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Virtual => "virtual",
        }
    }
}

/// A change a client asks of the virtual clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChange {
    /// Move forward by this much (positive).
    Advance(TimeDelta),
    /// Move to this instant (not before now).
    Set(DateTime<Utc>),
}

/// Why a clock change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The change would move the clock back in time.
    #[error("the clock never goes backwards: {target} is before the current {now}")]
    Backwards {
        /// The clock now.
        now: DateTime<Utc>,
        /// Where the change would take it.
        target: DateTime<Utc>,
    },
    /// The change would take the clock past the instants both databases store (year 9999).
    #[error("the clock cannot go past 9999-12-31T23:59:59Z")]
    OutOfRange,
}

impl ClockChange {
    /// The instant this change takes a clock showing `now` to. Setting the clock to `now` itself is allowed (it
    /// changes nothing, and turns a system clock into a virtual one standing at that instant).
    pub fn target(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        let target = match self {
            Self::Advance(step) => now.checked_add_signed(step).ok_or(ClockError::OutOfRange)?,
            Self::Set(at) => at,
        };
        if target < now {
            return Err(ClockError::Backwards { now, target });
        }
        if !is_storable(target) {
            return Err(ClockError::OutOfRange);
        }
        Ok(target)
    }
}

/// Where a clock moving from `now` to `target` stops next: at the earliest instant something falls due
/// (`next_due`: a scheduled occurrence, a hold's expiry), so that it runs at its own instant and in time order, or at
/// `target` when nothing falls due before. Work already overdue runs at `now` (the clock never goes back for it).
pub fn next_stop(now: DateTime<Utc>, target: DateTime<Utc>, next_due: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match next_due {
        Some(due) if due < target => due.max(now),
        _ => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_instant(text).expect("instant")
    }

    #[test]
    fn durations_take_whole_numbers_of_weeks_days_hours_minutes_and_seconds() {
        for (text, secs) in [
            ("30d", 30 * 86_400),
            ("90d", 90 * 86_400),
            ("2w", 14 * 86_400),
            ("12h", 43_200),
            ("45m", 2_700),
            ("10s", 10),
            ("1d12h", 129_600),
            ("1h30m15s", 5_415),
            ("0d1s", 1),
            ("36525d", 36_525 * 86_400),
        ] {
            assert_eq!(parse_duration(text), Ok(TimeDelta::seconds(secs)), "{text}");
        }
    }

    #[test]
    fn malformed_or_empty_or_huge_durations_are_refused_with_a_reason() {
        for bad in ["", "30", "d", "30x", "30 d", "-1d", "1.5d", "1M", "30D", "12h1d", "1d1d", "1d 2h", "P30D", "+3d"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(parse_duration("0d").expect_err("zero").contains("greater than zero"));
        assert!(parse_duration("0s0s").is_err());
        for huge in ["36526d", "99999999999999999999d", "9223372036854775807w", "5218w"] {
            assert!(parse_duration(huge).expect_err(huge).contains("longest step"), "{huge}");
        }
        assert!(parse_duration("12h1d").expect_err("order").contains("largest first"));
    }

    #[test]
    fn the_clock_moves_forward_or_stays_but_never_goes_back() {
        let now = at("2030-01-31T09:00:00Z");
        assert_eq!(ClockChange::Advance(TimeDelta::days(30)).target(now), Ok(at("2030-03-02T09:00:00Z")));
        assert_eq!(ClockChange::Set(at("2030-02-01T00:00:00Z")).target(now), Ok(at("2030-02-01T00:00:00Z")));
        assert_eq!(ClockChange::Set(now).target(now), Ok(now), "setting the same instant changes nothing");
        let back = at("2030-01-31T08:59:59.999999Z");
        assert_eq!(ClockChange::Set(back).target(now), Err(ClockError::Backwards { now, target: back }));
        let late = at("9999-12-01T00:00:00Z");
        assert_eq!(ClockChange::Advance(TimeDelta::days(31)).target(late), Err(ClockError::OutOfRange));
        assert_eq!(ClockChange::Advance(CLOCK_STEP_MAX).target(DateTime::<Utc>::MAX_UTC), Err(ClockError::OutOfRange));
    }

    #[test]
    fn an_advance_stops_at_each_due_instant_in_time_order() {
        let now = at("2030-01-01T00:00:00Z");
        let target = at("2030-04-01T00:00:00Z");
        assert_eq!(next_stop(now, target, None), target, "nothing due: straight to the target");
        let due = at("2030-01-31T09:00:00Z");
        assert_eq!(next_stop(now, target, Some(due)), due);
        assert_eq!(next_stop(now, target, Some(target)), target);
        assert_eq!(next_stop(now, target, Some(at("2031-01-01T00:00:00Z"))), target, "due after the target");
        assert_eq!(next_stop(now, target, Some(at("2029-12-31T00:00:00Z"))), now, "overdue work runs now");
        // Walking a month-end schedule: each stop is a due instant, and the walk ends at the target.
        let dues = [at("2030-01-31T09:00:00Z"), at("2030-02-28T09:00:00Z"), at("2030-03-31T09:00:00Z")];
        let mut stops = Vec::new();
        let mut clock = now;
        let mut pending = dues.iter().copied();
        let mut next = pending.next();
        while clock < target {
            clock = next_stop(clock, target, next);
            stops.push(clock);
            if Some(clock) == next {
                next = pending.next();
            }
        }
        assert_eq!(stops, [dues[0], dues[1], dues[2], target]);
    }

    #[test]
    fn instants_outside_years_1_to_9999_are_refused() {
        for good in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2030-01-31T09:00:00+02:00"] {
            assert!(parse_instant(good).is_ok(), "{good}");
        }
        for bad in ["0000-12-31T23:59:59Z", "9999-12-31T23:00:00-05:00", "+262143-01-01T00:00:00Z", "yesterday", ""] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manual_clock_shows_what_it_was_set_to() {
        let start = DateTime::from_timestamp(1_900_000_000, 0).expect("instant");
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.set(start + chrono::Duration::days(31));
        assert_eq!(clock.now(), start + chrono::Duration::days(31));
    }
}
