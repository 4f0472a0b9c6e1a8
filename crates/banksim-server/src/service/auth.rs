//! Logging in and out, and refreshing tokens.
//!
//! Sessions live on the wall clock ([`wall_now`]), not on the server's clock: see that function.

use banksim_core::user::User;
use banksim_store::{AuditContext, AuditedAction, NewRefreshToken, RefreshOutcome};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{RefreshToken, wall_now};
use crate::error::{ApiError, ErrorCode};

/// The tokens handed to a client at login and refresh.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user the tokens are for.
    pub user: User,
    /// Signed JWT.
    pub access_token: String,
    /// Opaque refresh token.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// Checks an email and password and opens a session. Every failure — unknown email, wrong password, inactive
/// user — is the same `invalid_credentials` answer after the same amount of hashing work.
pub async fn login(state: &AppState, email: &str, password: String, audit: AuditContext) -> Result<Session, ApiError> {
    let credentials = state.store.find_credentials(&email.to_ascii_lowercase()).await?;
    let hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let verified = state.passwords.verify(password, hash).await;
    match credentials {
        Some(credentials) if verified && credentials.user.is_active => {
            state.metrics.record_login(true);
            let session = open_session(state, credentials.user, Uuid::new_v4()).await?;
            tracing::info!(user.id = %session.user.id, "login succeeded");
            Ok(session)
        }
        refused => {
            state.metrics.record_login(false);
            tracing::info!("login refused");
            // The trail names the account when there is one, never the password or the email typed.
            let attempt = AuditedAction {
                action: "auth.login".to_owned(),
                entity_type: "user",
                entity_id: refused.map(|c| c.user.id.to_string()),
                outcome: ErrorCode::InvalidCredentials.as_str().to_owned(),
                details: serde_json::json!({}),
                context: audit,
            };
            state.store.record_action(&attempt, state.clock.now()).await?;
            Err(ErrorCode::InvalidCredentials.into())
        }
    }
}

/// Issues an access token and a refresh token of `family` for `user`.
async fn open_session(state: &AppState, user: User, family_id: Uuid) -> Result<Session, ApiError> {
    let refresh = RefreshToken::generate();
    state.store.insert_refresh_token(new_refresh_token(state, &user, family_id, &refresh)).await?;
    session(state, user, refresh)
}

fn session(state: &AppState, user: User, refresh: RefreshToken) -> Result<Session, ApiError> {
    let access_token = state.tokens.issue_access(&user, wall_now())?;
    Ok(Session { user, access_token, refresh_token: refresh.token, expires_in: state.tokens.access_ttl_secs() })
}

fn new_refresh_token(state: &AppState, user: &User, family_id: Uuid, token: &RefreshToken) -> NewRefreshToken {
    let issued_at = wall_now();
    NewRefreshToken {
        id: Uuid::new_v4(),
        family_id,
        user_id: user.id,
        token_hash: token.hash.clone(),
        issued_at,
        expires_at: refresh_expiry(state, issued_at),
    }
}

fn refresh_expiry(state: &AppState, issued_at: DateTime<Utc>) -> DateTime<Utc> {
    issued_at + chrono::Duration::from_std(state.config.refresh_token_ttl()).unwrap_or(chrono::Duration::days(7))
}

/// Spends a refresh token for a new pair. A token works once; presenting a spent one revokes its family.
pub async fn refresh(state: &AppState, presented: &str) -> Result<Session, ApiError> {
    let next = RefreshToken::generate();
    let now = wall_now();
    let presented = RefreshToken::hash(presented);
    let outcome = state.store.rotate_refresh_token(&presented, &next.hash, now, refresh_expiry(state, now)).await?;
    match outcome {
        RefreshOutcome::Rotated { user_id } => {
            let user = state.store.find_user(user_id).await?.filter(|u| u.is_active);
            let user = user.ok_or_else(|| ApiError::new(ErrorCode::InvalidRefreshToken))?;
            session(state, user, next)
        }
        RefreshOutcome::Reused { user_id } => {
            // Whoever holds the family's tokens, the session is over: this instance refuses its access tokens at
            // once, the others within the user cache's lifetime.
            state.users.forget(user_id);
            state.metrics.record_refresh_reuse();
            tracing::warn!(user.id = %user_id, "refresh token reused; its family is revoked");
            Err(ErrorCode::RefreshTokenReused.into())
        }
        RefreshOutcome::Invalid => Err(ErrorCode::InvalidRefreshToken.into()),
    }
}

/// Ends the session of a refresh token of `user` (its whole family).
pub async fn logout(state: &AppState, user: &User, presented: &str) -> Result<(), ApiError> {
    let found = state.store.revoke_refresh_family(&RefreshToken::hash(presented), user.id, wall_now()).await?;
    // Its access tokens end with it: at once on this instance, within the user cache's lifetime elsewhere.
    state.users.forget(user.id);
    if found { Ok(()) } else { Err(ErrorCode::InvalidRefreshToken.into()) }
}
