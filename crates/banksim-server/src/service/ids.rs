//! Ids of the rows that the state hash covers (users, transactions) and of schedules, whose ids name their
//! occurrences' idempotency keys.
//!
//! Normally a new id is a UUIDv7: time-ordered and random. In simulation mode it is a name-based UUIDv5 derived
//! from what identifies the request that creates the row — a user's (lower-case) email; a movement's caller and
//! `Idempotency-Key`; a scheduled occurrence's or a hold expiry's own key — so a recorded scenario replayed on a
//! fresh database writes the same ids and reaches the same state hash. Deriving never makes two rows share an
//! id: a key's second use is answered from its first, and emails are unique. A movement sent without a key has
//! nothing stable to derive from and gets a random id in simulation mode too.

use uuid::Uuid;

/// The namespace of banksim's name-based ids: the UUIDv5 of `https://github.com/banksim/banksim` in the URL
/// namespace.
const NAMESPACE: Uuid = Uuid::from_u128(0x0136_324b_d599_57e6_8e9c_0d14_58aa_d20a);

/// Where new ids come from: random (`derived: false`) or from the request (simulation mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ids {
    derived: bool,
}

impl Ids {
    /// Random ids, or (`derived`) ids derived from each request.
    pub fn new(derived: bool) -> Self {
        Self { derived }
    }

    /// The id of a new user with this (normalised, lower-case) email.
    pub fn user(self, email: &str) -> Uuid {
        self.derive(|name| name.extend_from_slice(email.as_bytes()), "user")
    }

    /// The id of item `item` (0 for a single movement) of a movement that `caller` sent under `key`.
    pub fn movement(self, caller: Uuid, key: Option<&str>, item: usize) -> Uuid {
        let Some(key) = key else { return Uuid::now_v7() };
        self.derive(
            |name| {
                name.extend_from_slice(caller.as_bytes());
                name.extend_from_slice(&(item as u64).to_be_bytes());
                name.extend_from_slice(key.as_bytes());
            },
            "movement",
        )
    }

    /// The id of a movement the server starts itself under `key`, unique to it (a scheduled occurrence's attempt,
    /// a hold's expiry).
    pub fn system_movement(self, key: &str) -> Uuid {
        self.derive(|name| name.extend_from_slice(key.as_bytes()), "system-movement")
    }

    /// The id of a new schedule that `caller` created under `key`.
    pub fn schedule(self, caller: Uuid, key: Option<&str>) -> Uuid {
        let Some(key) = key else { return Uuid::now_v7() };
        self.derive(
            |name| {
                name.extend_from_slice(caller.as_bytes());
                name.extend_from_slice(key.as_bytes());
            },
            "schedule",
        )
    }

    /// A UUIDv5 of `kind`, a NUL, then what `write` appends (the parts are fixed-length or last, so two different
    /// inputs never spell the same name); a UUIDv7 unless ids are derived.
    fn derive(self, write: impl FnOnce(&mut Vec<u8>), kind: &str) -> Uuid {
        if !self.derived {
            return Uuid::now_v7();
        }
        let mut name = Vec::with_capacity(64);
        name.extend_from_slice(kind.as_bytes());
        name.push(0);
        write(&mut name);
        Uuid::new_v5(&NAMESPACE, &name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_documented_name_based_id() {
        assert_eq!(NAMESPACE, Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://github.com/banksim/banksim"));
    }

    #[test]
    fn random_ids_are_time_ordered_and_never_repeat() {
        let ids = Ids::new(false);
        let (a, b) = (ids.user("a@example.com"), ids.user("a@example.com"));
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 7);
    }

    #[test]
    fn derived_ids_follow_the_request_and_nothing_else() {
        let ids = Ids::new(true);
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(ids.user("a@example.com"), ids.user("a@example.com"));
        assert_ne!(ids.user("a@example.com"), ids.user("b@example.com"));
        assert_eq!(ids.user("a@example.com").get_version_num(), 5);
        let paid = ids.movement(alice, Some("k1"), 0);
        assert_eq!(paid, ids.movement(alice, Some("k1"), 0));
        for other in [
            ids.movement(bob, Some("k1"), 0),
            ids.movement(alice, Some("k2"), 0),
            ids.movement(alice, Some("k1"), 1),
            ids.schedule(alice, Some("k1")),
            ids.system_movement("k1"),
        ] {
            assert_ne!(paid, other);
        }
    }

    #[test]
    fn a_movement_without_a_key_gets_a_random_id_even_when_ids_are_derived() {
        let ids = Ids::new(true);
        let alice = Uuid::from_u128(1);
        assert_ne!(ids.movement(alice, None, 0), ids.movement(alice, None, 0));
        assert_ne!(ids.schedule(alice, None), ids.schedule(alice, None));
    }
}
