//! `/api/v1/auth`: register, login, refresh, logout.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use banksim_core::user::Role;
use banksim_store::AuditContext;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{AuthUser, MaybeAuthUser};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::extract::ApiJson;
use crate::http::users::UserResponse;
use crate::service::auth::{self as auth_service, Session};
use crate::service::users::{self as user_service, Registration, required};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// The OpenAPI schema of an email address exactly as `banksim_core::user::parse_email` accepts it: a local part of
/// dot-atoms (any number of them) of at most 64 characters, `@`, DNS labels of 1–63 characters and an alphabetic
/// top-level label, at most 254 characters in all. The local part's length is a look-ahead (`(?=[^@]{1,64}@)`),
/// which ECMA-262 patterns (what JSON Schema uses) and Python's `re` (what schemathesis generates from) both have:
/// without one, a pattern could bound the local part only by bounding its atoms, and would refuse addresses that the
/// server takes (`a.b.c.d.e@example.com`).
pub fn email_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let atom = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
    let label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(254))
        .pattern(Some(format!(r"^(?=[^@]{{1,64}}@){atom}(\.{atom})*@({label}\.)+[A-Za-z]{{1,63}}$")))
        .description(Some("An email address (stored lower-case)"))
        .examples([serde_json::json!("sefa@example.com")])
        .build()
}

/// A registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–50 characters of `[A-Za-z0-9_]`, unique (case-insensitively).
    #[schema(
        required = true,
        nullable = false,
        min_length = 3,
        max_length = 50,
        pattern = "^[A-Za-z0-9_]+$",
        example = "sefa"
    )]
    username: Option<String>,
    /// A valid email, unique (case-insensitively); stored lower-case.
    #[schema(required = true, nullable = false, schema_with = crate::http::auth::email_schema)]
    email: Option<String>,
    /// 8–128 characters.
    #[schema(required = true, nullable = false, min_length = 8, max_length = 128, example = "password123")]
    password: Option<String>,
    /// `user` (default) or `admin`; `admin` only with an admin's access token.
    #[schema(pattern = "^(user|admin)$", example = "user")]
    role: Option<String>,
}

/// Registers a user.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = UserResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "A bad access token was sent", body = ErrorBody),
        (status = 403, description = "`role: admin` without an admin's token", body = ErrorBody),
        (status = 409, description = "`email_taken` or `username_taken`", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "`validation_failed`: every invalid field", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    MaybeAuthUser(caller): MaybeAuthUser,
    client: ClientContext,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let registration = Registration::parse(
        body.username.as_deref(),
        body.email.as_deref(),
        body.password.as_deref(),
        body.role.as_deref(),
    )?;
    if registration.role == Role::Admin && caller.as_ref().is_none_or(|c| c.role != Role::Admin) {
        return Err(ApiError::new(ErrorCode::InsufficientPermissions).with_message("only an admin can create admins"));
    }
    let audit = AuditContext { actor_id: caller.map(|c| c.id), ..client.into() };
    let user = user_service::create(&state, registration, &audit).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email (any case).
    #[schema(required = true, nullable = false, example = "sefa@example.com")]
    email: Option<String>,
    /// The account's password.
    #[schema(required = true, nullable = false, example = "password123")]
    password: Option<String>,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The logged-in user.
    user: UserResponse,
    #[serde(flatten)]
    tokens: TokenResponse,
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// JWT for `Authorization: Bearer`.
    access_token: String,
    /// Opaque token for `/auth/refresh`; works once.
    refresh_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    expires_in: i64,
}

impl From<Session> for TokenResponse {
    fn from(session: Session) -> Self {
        Self {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            token_type: "Bearer",
            expires_in: session.expires_in,
        }
    }
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, description = "Logged in", body = LoginResponse),
    (status = 400, description = "Malformed JSON", body = ErrorBody),
    (status = 401, description = "`invalid_credentials`: unknown email, wrong password or inactive user", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "`validation_failed`", body = ErrorBody),
))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let mut v = banksim_core::Validation::new();
    let email = v.check("email", required(body.email.as_deref()));
    let password = v.check("password", required(body.password.as_deref()));
    v.finish()?;
    let (Some(email), Some(password)) = (email, password) else { return Err(ErrorCode::ValidationFailed.into()) };
    let session = auth_service::login(&state, email, password.to_owned(), client.into()).await?;
    Ok(Json(LoginResponse { user: session.user.clone().into(), tokens: session.into() }))
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the last refresh.
    #[schema(required = true, nullable = false, min_length = 1)]
    refresh_token: Option<String>,
}

impl RefreshRequest {
    fn token(&self) -> Result<&str, ApiError> {
        let mut v = banksim_core::Validation::new();
        let token = v.check("refresh_token", required(self.refresh_token.as_deref()));
        v.finish()?;
        token.ok_or_else(|| ErrorCode::ValidationFailed.into())
    }
}

/// Trades a refresh token for a new pair. Each refresh token works once; a reused one revokes its session.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, description = "New tokens", body = TokenResponse),
    (status = 401, description = "`invalid_refresh_token` or `refresh_token_reused`", body = ErrorBody),
    (status = 422, description = "`validation_failed`", body = ErrorBody),
))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let session = auth_service::refresh(&state, body.token()?).await?;
    Ok(Json(session.into()))
}

/// Ends the session of a refresh token (its whole family).
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No valid access token, or `invalid_refresh_token`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    auth_service::logout(&state, &user, body.token()?).await?;
    Ok(StatusCode::NO_CONTENT)
}
