//! Authentication: password hashing, access tokens, refresh tokens, and the extractors that let handlers ask
//! "who is calling?".

mod extract;
mod password;
mod tokens;

pub(crate) use extract::bearer;
pub use extract::{AdminUser, AuthUser, CallerSlot, MaybeAuthUser};
pub use password::PasswordHasher;
pub use tokens::{AccessClaims, RefreshToken, TokenIssuer, TokenKind};

/// The instant on which every session is timed: access tokens' `iat`/`nbf`/`exp` (which the JWT library checks
/// against the machine's clock anyway), refresh tokens' issue and expiry, and the instant a logout or a deactivation
/// ends a user's sessions.
///
/// It is the wall clock, never the server's clock, on purpose: a token's lifetime is a security property measured in
/// real time. In simulation mode an admin moves the server's clock forward by months in one request; were tokens
/// timed on it, that request would expire every session (the admin driving the clock first of all), and a token
/// issued on a clock set ahead would carry an `nbf` that the verifier, on real time, refuses. So a token of 15
/// minutes lasts 15 real minutes, however far the simulation moves.
pub fn wall_now() -> chrono::DateTime<chrono::Utc> {
    banksim_core::Clock::now(&banksim_core::SystemClock)
}
