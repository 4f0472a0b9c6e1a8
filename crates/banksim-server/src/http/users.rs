//! `/api/v1/me` and the admin's `/api/v1/users`.

use axum::Json;
use axum::extract::State;
use banksim_core::Validation;
use banksim_core::user::{self, User};
use banksim_store::{AuditContext, UserChanges, UserCursor, UserListQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, AuthUser};
use crate::error::{ApiError, ErrorBody};
use crate::http::client::ClientContext;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::pagination::{decode_cursor, encode_cursor, page_limit, page_offset};
use crate::replica::MinLsn;
use crate::service::users as user_service;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me)).routes(routes!(list_users)).routes(routes!(
        get_user,
        update_user,
        delete_user
    ))
}

/// A user, as every route shows one.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// Id.
    id: Uuid,
    /// Username.
    #[schema(example = "sefa")]
    username: String,
    /// Lower-case email.
    #[schema(example = "sefa@example.com")]
    email: String,
    /// `user` or `admin`.
    #[schema(example = "user")]
    role: String,
    /// False once deactivated.
    is_active: bool,
    /// Registration instant (RFC 3339, UTC).
    created_at: DateTime<Utc>,
    /// Last change (RFC 3339, UTC).
    updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            username: user.username,
            email: user.email,
            role: user.role.to_string(),
            is_active: user.is_active,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// The caller's own user.
#[utoipa::path(get, path = "/me", tag = "users", security(("bearer" = [])), responses(
    (status = 200, body = UserResponse),
    (status = 401, description = "No valid access token", body = ErrorBody),
))]
pub async fn me(AuthUser(user): AuthUser) -> Json<UserResponse> {
    Json(user.into())
}

/// Paging of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
    /// Users to skip (ignored with `cursor`).
    offset: Option<u64>,
    /// `next_cursor` of the previous page: constant-time paging through any length.
    #[param(min_length = 1)]
    cursor: Option<String>,
    /// Include deactivated users (default false).
    include_inactive: Option<bool>,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// The users, in registration order.
    users: Vec<UserResponse>,
    /// The page size used.
    limit: u32,
    /// The offset used (0 with a cursor).
    offset: u64,
    /// How many users match in all.
    total: u64,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Lists users (admin).
#[utoipa::path(get, path = "/users", tag = "users", params(ListUsersQuery, MinLsn), security(("bearer" = [])), responses(
    (status = 200, body = UserList),
    (status = 400, description = "`invalid_parameter`", body = ErrorBody),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`: not an admin", body = ErrorBody),
))]
pub async fn list_users(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    min_lsn: MinLsn,
    ApiQuery(query): ApiQuery<ListUsersQuery>,
) -> Result<Json<UserList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after =
        query.cursor.as_deref().map(decode_cursor).transpose()?.map(|(created_at, id)| UserCursor { created_at, id });
    let offset = if after.is_some() { 0 } else { page_offset(query.offset)? };
    let include_inactive = query.include_inactive.unwrap_or(false);
    let query = UserListQuery { limit, offset, after, include_inactive };
    let page = state.lagging_reads(&admin, min_lsn).list_users(query).await?;
    Ok(Json(UserList {
        users: page.users.into_iter().map(Into::into).collect(),
        limit,
        offset,
        total: page.total,
        next_cursor: page.next.map(|c| encode_cursor(c.created_at, c.id)),
    }))
}

/// One user (admin).
#[utoipa::path(get, path = "/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 400, description = "`invalid_parameter`: not a UUID", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
    ))]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserResponse>, ApiError> {
    Ok(Json(user_service::get(&state, id).await?.into()))
}

/// Changes to a user; at least one field. A field given as `null` is refused (422), not read as absent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// New username: 3–50 characters of `[A-Za-z0-9_]`.
    #[schema(nullable = false, min_length = 3, max_length = 50, pattern = "^[A-Za-z0-9_]+$", example = "sefa_2")]
    #[serde(default, deserialize_with = "present")]
    username: Option<String>,
    /// New email.
    #[schema(nullable = false, schema_with = crate::http::auth::email_schema)]
    #[serde(default, deserialize_with = "present")]
    email: Option<String>,
    /// `user` or `admin`.
    #[schema(nullable = false, pattern = "^(user|admin)$", example = "user")]
    #[serde(default, deserialize_with = "present")]
    role: Option<String>,
    /// `false` deactivates, `true` reactivates.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "present")]
    is_active: Option<bool>,
}

/// A field that may be absent but, when present, is not `null`: the spec declares every update field non-nullable,
/// and the server keeps to it rather than reading `null` as "no change".
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl UpdateUserRequest {
    fn changes(self) -> Result<UserChanges, ApiError> {
        let mut v = Validation::new();
        let changes = UserChanges {
            username: self.username.and_then(|name| v.check("username", user::parse_username(&name))),
            email: self.email.and_then(|email| v.check("email", user::parse_email(&email))),
            role: self.role.and_then(|role| v.check("role", role.parse())),
            is_active: self.is_active,
            sessions_end_at: None,
        };
        if changes.is_empty() && v.is_ok() {
            v.add("body", "at least one of username, email, role, is_active is required");
        }
        v.finish()?;
        Ok(changes)
    }
}

/// Updates a user (admin); can reactivate. The last active admin cannot be demoted or deactivated.
#[utoipa::path(put, path = "/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 400, description = "`invalid_parameter` or `malformed_json`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 409, description = "`email_taken`, `username_taken` or `last_admin`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientContext,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let changes = body.changes()?;
    let audit = AuditContext { actor_id: Some(admin.id), ..client.into() };
    Ok(Json(user_service::update(&state, id, changes, &audit).await?.into()))
}

/// `{"message": "User is deleted"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Always `User is deleted`.
    #[schema(example = "User is deleted")]
    message: &'static str,
}

/// Deletes (deactivates) a user (admin): their tokens stop working; their money and history stay.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Deleted),
        (status = 400, description = "`invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 409, description = "`last_admin`", body = ErrorBody),
    ))]
pub async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientContext,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Deleted>, ApiError> {
    let audit = AuditContext { actor_id: Some(admin.id), ..client.into() };
    user_service::deactivate(&state, id, &audit).await?;
    Ok(Json(Deleted { message: "User is deleted" }))
}
