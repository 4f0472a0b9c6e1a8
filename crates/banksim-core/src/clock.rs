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
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
