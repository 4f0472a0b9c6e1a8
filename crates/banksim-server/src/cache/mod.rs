//! In-process caches of what requests read most, kept correct across instances.

pub mod balances;

pub use balances::BalanceCache;
