//! The shapes that go in and out of a [`Store`](crate::Store).

use banksim_core::user::{Role, User};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user to insert. Fields are already validated and normalised (email lower-case).
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The id to use (fixed ids let `seed --demo` recreate the demo users).
    pub id: Uuid,
    /// Display name.
    pub username: String,
    /// Lower-case email.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// Creation instant.
    pub now: DateTime<Utc>,
}

/// A user with their password hash, for login only.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user.
    pub user: User,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    /// New username.
    pub username: Option<String>,
    /// New lower-case email.
    pub email: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// Deactivate (`false`) or reactivate (`true`).
    pub is_active: Option<bool>,
}

/// Where a page of users starts: just after this user in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    /// Registration instant of the last user of the previous page.
    pub created_at: DateTime<Utc>,
    /// Id of the last user of the previous page.
    pub id: Uuid,
}

/// Which users to list.
#[derive(Debug, Clone, Copy)]
pub struct UserListQuery {
    /// Page size.
    pub limit: u32,
    /// Rows to skip (ignored when `after` is set).
    pub offset: u64,
    /// Keyset position: the page starts after it.
    pub after: Option<UserCursor>,
    /// Include deactivated users.
    pub include_inactive: bool,
}

/// A page of users.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// The users, in registration order.
    pub users: Vec<User>,
    /// How many users match the filter in all.
    pub total: u64,
    /// Where the next page starts, when there may be one.
    pub next: Option<UserCursor>,
}

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    /// Row id.
    pub id: Uuid,
    /// Family (one per login).
    pub family_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Issue instant.
    pub issued_at: DateTime<Utc>,
    /// Expiry instant.
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was spent and its successor stored; the owner is returned.
    Rotated {
        /// The token's owner.
        user_id: Uuid,
    },
    /// The token had been spent before: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked token, or an inactive owner.
    Invalid,
}

impl UserChanges {
    /// Whether these changes could leave the bank without an active admin (a demotion or a deactivation).
    pub fn may_remove_an_admin(&self) -> bool {
        self.role == Some(Role::User) || self.is_active == Some(false)
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl UserPage {
    /// A page of `users` out of `total`; a full page may have a successor, starting after its last user.
    pub(crate) fn new(users: Vec<User>, total: i64, limit: u32) -> Self {
        let next = (users.len() == limit as usize)
            .then(|| users.last().map(|u| UserCursor { created_at: u.created_at, id: u.id }))
            .flatten();
        Self { users, total: total.unsigned_abs(), next }
    }
}

/// Reads a stored role name; anything else means a broken row.
pub(crate) fn parse_role(raw: &str) -> Result<Role, sqlx::Error> {
    raw.parse().map_err(|message: String| sqlx::Error::Decode(format!("role {raw:?}: {message}").into()))
}

/// Offsets beyond `i64::MAX` cannot exist in a table; clamp rather than fail.
pub(crate) fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}
