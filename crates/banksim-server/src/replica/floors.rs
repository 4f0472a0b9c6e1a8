//! Each caller's floor: how far the replica must have replayed before it may serve them (the position of the
//! primary's log after their last write), kept in memory, bounded.
//!
//! A caller's entry is useless once the replica has replayed past it, and is dropped then. When more callers
//! than the bound wrote recently, their entries are folded into one floor for everyone instead of being dropped:
//! every read then waits for the newest of them, which costs some reads a moment and never loses a write.

use std::collections::HashMap;
use std::sync::Mutex;

use banksim_store::Lsn;
use tokio::time::Instant;
use uuid::Uuid;

use super::routing::Floor;

/// Callers whose floor is kept apart.
pub const CALLERS_MAX: usize = 65_536;

/// Every caller's floor.
#[derive(Debug)]
pub struct Floors {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    by_caller: HashMap<Uuid, Floor>,
    /// What every read must see (entries folded in when the map was full).
    everyone: Floor,
    /// How far the replica had replayed when last seen.
    replayed: Option<Lsn>,
}

impl Default for Floors {
    fn default() -> Self {
        Self::with_capacity(CALLERS_MAX)
    }
}

impl Floors {
    /// At most `capacity` callers kept apart.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { inner: Mutex::default(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Raises `caller`'s floor to `floor` (a floor never goes down) and returns it.
    pub fn raise(&self, caller: Uuid, floor: Floor) -> Floor {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.by_caller.len() >= self.capacity && !inner.by_caller.contains_key(&caller) {
            inner.forget_passed(now);
            if inner.by_caller.len() >= self.capacity {
                let folded = inner.by_caller.drain().fold(Floor::default(), |all, (_, floor)| all.max(floor));
                inner.everyone = inner.everyone.max(folded);
            }
        }
        let raised = inner.by_caller.get(&caller).copied().unwrap_or_default().max(floor);
        inner.by_caller.insert(caller, raised);
        raised.max(inner.everyone)
    }

    /// What a read of `caller` must see.
    pub fn of(&self, caller: Uuid) -> Floor {
        let inner = self.lock();
        inner.by_caller.get(&caller).copied().unwrap_or_default().max(inner.everyone)
    }

    /// Tells how far the replica has replayed: floors it has passed are dropped.
    pub fn replica_replayed(&self, replayed: Lsn) {
        let mut inner = self.lock();
        if inner.replayed.is_some_and(|before| before >= replayed) {
            return;
        }
        inner.replayed = Some(replayed);
        inner.forget_passed(Instant::now());
    }

    /// Callers kept apart now.
    pub fn len(&self) -> usize {
        self.lock().by_caller.len()
    }

    /// Whether no caller is kept apart.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn forget_passed(&mut self, now: Instant) {
        let replayed = self.replayed;
        self.by_caller.retain(|_, floor| !floor.is_met(replayed, now));
        if self.everyone.is_met(replayed, now) {
            self.everyone = Floor::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_only_rises() {
        let floors = Floors::default();
        let caller = Uuid::new_v4();
        assert_eq!(floors.of(caller), Floor::default());
        assert_eq!(floors.raise(caller, Floor::at(Lsn(10))), Floor::at(Lsn(10)));
        assert_eq!(floors.raise(caller, Floor::at(Lsn(5))), Floor::at(Lsn(10)));
        assert_eq!(floors.of(caller), Floor::at(Lsn(10)));
        assert_eq!(floors.of(Uuid::new_v4()), Floor::default(), "others are not held back");
    }

    #[test]
    fn floors_the_replica_has_passed_are_forgotten() {
        let floors = Floors::default();
        let (early, late) = (Uuid::new_v4(), Uuid::new_v4());
        floors.raise(early, Floor::at(Lsn(10)));
        floors.raise(late, Floor::at(Lsn(20)));
        floors.replica_replayed(Lsn(15));
        assert_eq!(floors.len(), 1);
        assert_eq!(floors.of(early), Floor::default());
        assert_eq!(floors.of(late), Floor::at(Lsn(20)));
    }

    #[test]
    fn a_full_map_folds_its_floors_into_everyones_instead_of_losing_one() {
        let floors = Floors::with_capacity(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        floors.raise(a, Floor::at(Lsn(10)));
        floors.raise(b, Floor::at(Lsn(30)));
        assert_eq!(floors.raise(c, Floor::at(Lsn(20))), Floor::at(Lsn(30)));
        assert_eq!(floors.len(), 1);
        // a's write is still waited for, through everyone's floor.
        assert_eq!(floors.of(a), Floor::at(Lsn(30)));
        floors.replica_replayed(Lsn(30));
        assert_eq!(floors.of(a), Floor::default());
        assert!(floors.is_empty());
    }

    #[test]
    fn a_full_map_first_drops_what_the_replica_passed() {
        let floors = Floors::with_capacity(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        floors.raise(a, Floor::at(Lsn(10)));
        floors.raise(b, Floor::at(Lsn(30)));
        floors.replica_replayed(Lsn(5));
        {
            // The replica moved on without a poll telling the map yet: make the map know it.
            let mut inner = floors.lock();
            inner.replayed = Some(Lsn(12));
        }
        assert_eq!(floors.raise(c, Floor::at(Lsn(40))), Floor::at(Lsn(40)));
        assert_eq!(floors.of(b), Floor::at(Lsn(30)), "b was kept apart, not folded");
        assert_eq!(floors.of(a), Floor::default());
    }
}
