//! The one source of "now" for the whole program.
//!
//! Schedules, token expiry, statements and row timestamps all ask a [`Clock`], so that tests and simulations can
//! run on a clock they control instead of the wall clock.

use chrono::{DateTime, Datelike, Utc};

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

#[cfg(test)]
mod tests {
    use super::*;

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
