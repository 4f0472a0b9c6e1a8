//! Keeping working when a dependency fails: circuit breakers around the primary database, the replica and Redis
//! (and the demo routes' simulated service), all listed in one registry for the report and the metrics.

pub mod breaker;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use breaker::{BreakerReport, BreakerSettings, BreakerState, CircuitBreaker, Guarded, Open};

/// Every circuit breaker of this instance, by name.
#[derive(Debug, Default)]
pub struct Breakers {
    all: RwLock<Vec<Arc<CircuitBreaker>>>,
}

impl Breakers {
    /// Adds a breaker (a later one of the same name replaces it) and returns it.
    pub fn register(&self, breaker: CircuitBreaker) -> Arc<CircuitBreaker> {
        let breaker = Arc::new(breaker);
        let mut all = self.all.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|b| b.name() != breaker.name());
        all.push(breaker.clone());
        breaker
    }

    /// The breaker named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Arc<CircuitBreaker>> {
        let all = self.all.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().find(|b| b.name() == name).cloned()
    }

    /// Every breaker's figures, by name.
    pub fn reports(&self) -> BTreeMap<&'static str, BreakerReport> {
        let all = self.all.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().map(|b| (b.name(), b.report())).collect()
    }
}
