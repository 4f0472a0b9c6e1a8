//! Who is calling: extractors that check the bearer token and the user's current state.

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use banksim_core::user::{Role, User};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// An authenticated, active user. Rejects a request without a valid access token with 401.
///
/// The token's signature and claims are checked first; then the user's current state (active? which role?) is read
/// through a short-lived cache, so a deactivated user is refused within seconds and a demoted admin loses their
/// rights as quickly, whatever their token still says.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

/// An authenticated active admin: 401 without a valid token, 403 `insufficient_permissions` for other roles.
#[derive(Debug, Clone)]
pub struct AdminUser(pub User);

/// An optional caller: `None` without an `Authorization` header, but a *bad* token is still rejected.
#[derive(Debug, Clone)]
pub struct MaybeAuthUser(pub Option<User>);

/// Where the auth extractors leave the id of the user they authenticated, for a layer that needs to know the
/// caller after the handler has answered (the audit of refused permissions). The handler consumes the request, so
/// such a layer inserts an empty slot into the request's extensions before it runs and keeps a clone to read.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<Uuid>>);

impl CallerSlot {
    /// The slot of this request: the one an outer layer already put into `extensions`, or a new one put there
    /// now (several layers may want the caller; they share one slot, which the extractor fills once).
    pub fn install(extensions: &mut axum::http::Extensions) -> Self {
        extensions.get_or_insert_default::<Self>().clone()
    }

    /// The id of the caller an extractor authenticated, if one did.
    pub fn get(&self) -> Option<Uuid> {
        self.0.get().copied()
    }

    /// Records `user` in the request's slot, if a layer put one there. The first authentication of a request
    /// wins; every extractor of one request reads the same token anyway.
    fn fill(parts: &Parts, user: &User) {
        if let Some(slot) = parts.extensions.get::<Self>() {
            let _ = slot.0.set(user.id);
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?.ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized).with_message("missing access token (Authorization: Bearer …)")
        })?;
        let user = authenticate(state, token).await?;
        CallerSlot::fill(parts, &user);
        Ok(Self(user))
    }
}

impl OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        let Some(token) = bearer_token(parts)? else { return Ok(None) };
        let user = authenticate(state, token).await?;
        CallerSlot::fill(parts, &user);
        Ok(Some(Self(user)))
    }
}

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = <AuthUser as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        Ok(Self(user.map(|AuthUser(user)| user)))
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(user) = <AuthUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ErrorCode::InsufficientPermissions.into());
        }
        Ok(Self(user))
    }
}

/// The bearer token of the `Authorization` header, if there is such a header; a header of another scheme is an
/// error, not an anonymous request.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    bearer(&parts.headers)
}

/// The bearer token of these headers (see [`bearer_token`]), for a layer that runs before the extractors (the
/// rate limits per user).
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let invalid = || ApiError::new(ErrorCode::Unauthorized).with_message("expected Authorization: Bearer <token>");
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(invalid());
    }
    Ok(Some(token.trim()))
}

async fn authenticate(state: &AppState, token: &str) -> Result<User, ApiError> {
    let claims = state.tokens.verify_access(token)?;
    match state.users.find_cached(claims.user_id).await? {
        Some(user) if !user.is_active => {
            Err(ApiError::new(ErrorCode::Unauthorized).with_message("account is deactivated"))
        }
        Some(user) if user.sessions_revoked_at.is_some_and(|revoked| claims.issued_by(revoked)) => {
            Err(ApiError::new(ErrorCode::Unauthorized)
                .with_message("the session of this token has ended; log in again"))
        }
        Some(user) => {
            tracing::Span::current().record("user.id", tracing::field::display(user.id));
            Ok(user)
        }
        None => Err(ApiError::new(ErrorCode::Unauthorized).with_message("account is deactivated")),
    }
}
