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
    /// When a deactivation ends the user's sessions: tokens issued at or before it stop working. Access tokens are
    /// issued on the wall clock, so the server passes the wall clock's instant here, which may differ from `now`
    /// (the row's `updated_at`) while a simulation's virtual clock runs. `None`: `now`.
    pub sessions_end_at: Option<DateTime<Utc>>,
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
    /// The token had been spent before: its whole family is now revoked, and the owner's access tokens with it.
    Reused {
        /// The token's owner.
        user_id: Uuid,
    },
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
        Self { sessions_end_at: None, ..self.clone() } == Self::default()
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

/// An audit entry written on its own, outside a ledger batch: an attempt refused (a failed login, say) or an
/// admin action that is no row of its own (a move of the virtual clock).
#[derive(Debug, Clone)]
pub struct AuditedAction {
    /// What was done or attempted (`auth.login`, `simulation.clock`).
    pub action: String,
    /// On what kind of entity.
    pub entity_type: &'static str,
    /// On which entity, if known.
    pub entity_id: Option<String>,
    /// `success`, or why it was refused (`invalid_credentials`).
    pub outcome: String,
    /// Details, without secrets.
    pub details: serde_json::Value,
    /// Who asked, from where.
    pub context: crate::AuditContext,
}

impl AuditedAction {
    /// An action that was carried out (`outcome: success`) on an entity without an id of its own.
    pub fn succeeded(
        action: &str,
        entity_type: &'static str,
        details: serde_json::Value,
        context: crate::AuditContext,
    ) -> Self {
        Self {
            action: action.to_owned(),
            entity_type,
            entity_id: None,
            outcome: "success".to_owned(),
            details,
            context,
        }
    }
}

/// A user as events and audit details show it (never the password hash).
pub(crate) fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "id": user.id, "username": user.username, "email": user.email, "role": user.role.as_str(),
        "is_active": user.is_active,
    })
}

/// The audit entry of a change to a user.
pub(crate) fn user_audit_row(
    user_id: Uuid,
    action: &str,
    details: serde_json::Value,
    audit: &crate::AuditContext,
) -> crate::ledger::AuditRow {
    crate::ledger::AuditRow {
        entry_id: Uuid::now_v7(),
        actor_id: audit.actor_id,
        action: action.to_owned(),
        entity_type: "user",
        entity_id: Some(user_id.to_string()),
        outcome: "success".to_owned(),
        details: details.to_string(),
        ip: audit.ip.clone(),
        user_agent: audit.user_agent.clone(),
        request_id: audit.request_id.clone(),
        trace_id: audit.trace_id.clone(),
    }
}

impl NewUser {
    /// The user as the row will read back: active, created and updated at `now`, no session ended yet.
    pub(crate) fn as_user(&self) -> User {
        User {
            id: self.id,
            username: self.username.clone(),
            email: self.email.clone(),
            role: self.role,
            is_active: true,
            created_at: self.now,
            updated_at: self.now,
            sessions_revoked_at: None,
        }
    }
}

/// The audit entry of each user of a bulk registration, in the users' order: the same entries that
/// [`crate::Store::create_user`] writes one at a time. A user's `UserRegistered` event carries its entry's details.
pub(crate) fn registration_audits(users: &[NewUser], audit: &crate::AuditContext) -> Vec<crate::ledger::AuditRow> {
    users
        .iter()
        .map(|user| {
            let details = serde_json::json!({"before": null, "after": user_json(&user.as_user())});
            user_audit_row(user.id, "user.register", details, audit)
        })
        .collect()
}

/// The event type and audit action of an update: a deactivation is told apart from other changes.
pub(crate) fn user_change_names(changes: &UserChanges) -> (&'static str, &'static str) {
    if changes.is_active == Some(false) {
        ("UserDeactivated", "user.deactivate")
    } else {
        ("UserUpdated", "user.update")
    }
}
