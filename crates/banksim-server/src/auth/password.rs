//! Argon2id password hashing, off the async runtime.

use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Password hashes computed at once per CPU core; more would only queue for the CPU while holding their memory.
const HASHES_PER_CORE: usize = 2;

/// Hashes and verifies passwords with Argon2id. Hashing is CPU- and memory-heavy by design (19 MiB each with
/// the default cost), so it runs on the blocking pool, at most a few at a time: a burst of logins queues instead of
/// allocating gigabytes.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    slots: Arc<Semaphore>,
    /// A hash of a random password: verifying against it when an email is unknown makes a failed login take as
    /// long as a wrong password, so timing does not reveal which emails are registered.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", self.argon2.params()).finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with the given cost. Fails on parameters Argon2 does not accept.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, argon2::Error> {
        let params = Params::new(memory_kib, iterations, 1, None)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash =
            hash_with(&argon2, &uuid::Uuid::new_v4().to_string()).map_err(|_| argon2::Error::OutputTooShort)?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Self { argon2, dummy_hash, slots: Arc::new(Semaphore::new(cores * HASHES_PER_CORE)) })
    }

    /// The PHC string (`$argon2id$v=19$m=…`) of `password`, with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _slot = self.slots.acquire().await.map_err(ApiError::internal)?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon2, &password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it still spends the same time, then says no.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let Ok(_slot) = self.slots.acquire().await else { return false };
        let argon2 = self.argon2.clone();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        known && matches
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher as _;
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2.hash_password(password.as_bytes(), &salt)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(1024, 1).expect("params")
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = hasher();
        let hash = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!hasher.verify("wrong horse".into(), Some(hash)).await);
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let hasher = hasher();
        assert_ne!(hasher.hash("pw123456".into()).await.ok(), hasher.hash("pw123456".into()).await.ok());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        assert!(!hasher().verify("anything".into(), None).await);
        assert!(!hasher().verify("anything".into(), Some("not a phc string".into())).await);
    }
}
