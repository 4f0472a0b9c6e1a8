//! The one source of "now" for the whole program.
//!
//! Schedules, token expiry, statements and row timestamps all ask a [`Clock`], so that tests and simulations can
//! run on a clock they control instead of the wall clock.

use chrono::{DateTime, Utc};

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
    fn a_manual_clock_shows_what_it_was_set_to() {
        let start = DateTime::from_timestamp(1_900_000_000, 0).expect("instant");
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.set(start + chrono::Duration::days(31));
        assert_eq!(clock.now(), start + chrono::Duration::days(31));
    }
}
