//! What the instances of one deployment share through Redis, when `REDIS_URL` is set: their rate limits
//! ([`shared_limit`]) and the news that a user changed ([`user_changes`]). Nothing else goes there: the hot reads
//! (balances, users) stay in each instance's own memory (DESIGN.md, "Cache, rate limits, circuit breakers").
//!
//! Redis is optional and never required: every call goes through [`Redis::call`], which is guarded by the `redis`
//! circuit breaker and cut off after `REDIS_TIMEOUT_MS`, and each caller has an in-process answer for when Redis
//! does not give one (the local rate limiter; the user cache's lifetime).

pub mod connection;
pub mod shared_limit;
pub mod user_changes;

pub use connection::{Redis, Unavailable};
pub use shared_limit::SharedLimiter;
pub use user_changes::{UserChangePublisher, UserChangeSubscriber};
