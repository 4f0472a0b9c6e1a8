//! banksim's domain: the rules of money, currencies, users and the ledger, in plain Rust.
//!
//! Nothing in this crate performs I/O or is async: storage, HTTP and background jobs depend on it, never the
//! other way round, so every rule here can be tested with plain unit and property tests.

pub mod clock;
pub mod currency;
pub mod effective;
pub mod error;
pub mod fx;
pub mod ledger;
pub mod money;
pub mod schedule;
pub mod statement;
pub mod user;

pub use clock::{Clock, ClockChange, ClockError, ClockMode, ManualClock, SystemClock};
pub use error::{CoreError, FieldError, Validation};
