//! `/api/v1/scheduled-transactions`: the caller's one-time and recurring transactions.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use banksim_core::schedule::ScheduleStatus;
use banksim_store::{ExecutionRecord, IdempotencyClaim, ScheduleQuery, ScheduleRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::client::ClientContext;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::money::{amount_json, amount_text};
use crate::http::pagination::{page_limit, page_offset};
use crate::http::transactions::replayed;
use crate::service::ledger::fingerprint;
use crate::service::schedules::{self as schedule_service, Created, ScheduleRequest};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, cancel_schedule))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
        .routes(routes!(list_executions))
}

/// A schedule, as every route shows one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleResponse {
    /// Id.
    id: Uuid,
    /// The owner.
    user_id: Uuid,
    /// `credit`, `debit` or `transfer`.
    transaction_type: &'static str,
    /// Exact amount of each occurrence.
    #[schema(value_type = f64, example = 25.00)]
    amount: Box<RawValue>,
    /// ISO 4217 code.
    currency: String,
    /// Free text, at most 500 characters.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// The recipient of a transfer.
    to_user_id: Option<Uuid>,
    /// `once` or `recurring`.
    schedule_type: &'static str,
    /// The first execution.
    execute_at: DateTime<Utc>,
    /// `daily`, `weekly`, `monthly` or `yearly`.
    recurrence_pattern: Option<&'static str>,
    /// Last instant an occurrence may run at.
    recurrence_end_date: Option<DateTime<Utc>>,
    /// Most occurrences.
    max_occurrences: Option<u32>,
    /// Occurrences run so far (succeeded or recorded as failed).
    current_occurrence: u32,
    /// When the next occurrence runs; null once the schedule is finished or cancelled.
    next_execution_at: Option<DateTime<Utc>>,
    /// When the last occurrence ran.
    last_executed_at: Option<DateTime<Utc>>,
    /// `active`, `paused`, `cancelled`, `completed` or `failed`.
    status: &'static str,
    /// `status == active`.
    is_active: bool,
    /// Creation.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

impl From<&ScheduleRecord> for ScheduleResponse {
    fn from(s: &ScheduleRecord) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            transaction_type: s.transaction_type.as_str(),
            amount: amount_json(s.amount),
            currency: s.amount.currency().to_string(),
            description: s.description.clone(),
            to_user_id: s.to_user_id,
            schedule_type: s.calendar.kind().as_str(),
            execute_at: s.calendar.execute_at,
            recurrence_pattern: s.calendar.recurrence.map(|r| r.as_str()),
            recurrence_end_date: s.calendar.recurrence_end_date,
            max_occurrences: s.calendar.max_occurrences,
            current_occurrence: s.current_occurrence,
            next_execution_at: s.next_execution_at,
            last_executed_at: s.last_executed_at,
            status: s.status.as_str(),
            is_active: s.status == ScheduleStatus::Active,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A new schedule. Every invalid field is reported at once (422).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScheduleRequest {
    /// `credit`, `debit` or `transfer`.
    #[schema(required = true, nullable = false, pattern = "^(credit|debit|transfer)$", example = "transfer")]
    transaction_type: Option<String>,
    /// Exact amount (number or string).
    #[schema(required = true, schema_with = crate::http::money::amount_schema)]
    amount: Option<Box<RawValue>>,
    /// Enabled ISO 4217 code.
    #[schema(required = true, nullable = false, pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// Free text, at most 500 characters.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// Transfers only: the recipient.
    to_user_id: Option<Uuid>,
    /// `once` (or `one-time`) or `recurring`.
    #[schema(required = true, nullable = false, pattern = "^(once|one-time|recurring)$", example = "recurring")]
    schedule_type: Option<String>,
    /// First execution, RFC 3339, in the future.
    #[schema(required = true, nullable = false, format = DateTime, example = "2030-01-31T09:00:00Z")]
    execute_at: Option<String>,
    /// Recurring only: `daily`, `weekly`, `monthly` (anchored to the first day, clamped to the month's end) or
    /// `yearly`.
    #[schema(pattern = "^(daily|weekly|monthly|yearly)$", example = "monthly")]
    recurrence_pattern: Option<String>,
    /// Recurring only: no occurrence after this instant (inclusive).
    #[schema(format = DateTime, example = "2031-01-31T09:00:00Z")]
    recurrence_end_date: Option<String>,
    /// Recurring only: most occurrences (≥ 1).
    #[schema(minimum = 1, example = 12)]
    #[serde(default, deserialize_with = "whole_number")]
    max_occurrences: Option<i64>,
}

/// A count as JSON may write it: `12` or `12.0` (JSON Schema's `integer` admits both, and so do clients that hold
/// every number as a double). A fraction or a value beyond `i64` is refused like any other wrong type.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(whole) = number.as_i64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        // Exactly representable integers only: below 2^53 every whole double is one.
        Some(value) if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 => Ok(Some(value as i64)),
        _ => Err(D::Error::custom("must be a whole number")),
    }
}

/// Schedules a one-time or recurring credit, debit or transfer.
#[utoipa::path(post, path = "/scheduled-transactions", tag = "scheduled-transactions",
    request_body = CreateScheduleRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes retries safe (1–255 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Scheduled", body = ScheduleResponse),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: every invalid field", body = ErrorBody),
    ))]
pub async fn create_schedule(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateScheduleRequest>,
) -> Result<Response, ApiError> {
    let print = fingerprint("schedule", &body);
    let key = match headers.get("idempotency-key").map(|v| v.to_str().unwrap_or_default().to_owned()) {
        Some(key) if crate::service::ledger::is_client_key(&key) => Some(key),
        Some(_) => return Err(ErrorCode::InvalidIdempotencyKey.into()),
        None => None,
    };
    // A retry is answered from what the first request stored, before any check that may no longer pass (its
    // execution time has gone by, its recipient has left).
    if let Some(key) = &key
        && let Some(stored) = state.store.find_idempotent(caller.id, key).await?
    {
        if stored.request_hash != print {
            return Err(ErrorCode::IdempotencyKeyReused.into());
        }
        return Ok(replayed(stored));
    }
    let amount = body.amount.as_deref().map(amount_text).transpose().map_err(|_| {
        ApiError::validation(vec![banksim_core::FieldError::new("amount", "must be a number or a string")])
    })?;
    let request = ScheduleRequest {
        transaction_type: body.transaction_type,
        amount,
        currency: body.currency,
        description: body.description,
        to_user_id: body.to_user_id,
        schedule_type: body.schedule_type,
        execute_at: body.execute_at,
        recurrence_pattern: body.recurrence_pattern,
        recurrence_end_date: body.recurrence_end_date,
        max_occurrences: body.max_occurrences,
    };
    let schedule = schedule_service::build(&state, &caller, key.as_deref(), request).await?;
    let claim = match key {
        Some(key) => {
            let body = serde_json::to_string(&ScheduleResponse::from(&schedule)).map_err(ApiError::internal)?;
            Some((IdempotencyClaim { user_id: caller.id, key, request_hash: print }, body))
        }
        None => None,
    };
    let audit = banksim_store::AuditContext { actor_id: Some(caller.id), ..client.into() };
    match schedule_service::create(&state, schedule, claim, audit).await? {
        Created::New(schedule) => Ok((StatusCode::CREATED, Json(ScheduleResponse::from(&schedule))).into_response()),
        Created::Replayed(stored) => Ok(replayed(stored)),
    }
}

/// Filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
    /// Rows to skip.
    offset: Option<u64>,
    /// `active`, `paused`, `cancelled`, `completed` or `failed`.
    #[param(pattern = "^(active|paused|cancelled|completed|failed)$", example = "active")]
    status: Option<String>,
    /// Only active (true) or only not active (false).
    is_active: Option<bool>,
}

/// A page of schedules.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Newest first.
    scheduled_transactions: Vec<ScheduleResponse>,
    /// Page size used.
    limit: u32,
    /// Offset used.
    offset: u64,
}

/// The caller's schedules, newest first.
#[utoipa::path(get, path = "/scheduled-transactions", tag = "scheduled-transactions", params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ScheduleList),
        (status = 400, description = "`invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No valid access token", body = ErrorBody),
    ))]
pub async fn list_schedules(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ScheduleList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let offset = page_offset(params.offset)?;
    let status = params
        .status
        .as_deref()
        .map(|s| s.parse::<ScheduleStatus>().map_err(|m| ApiError::parameter("status", m)))
        .transpose()?;
    let query = ScheduleQuery { user_id: caller.id, status, is_active: params.is_active, limit, offset };
    let schedules = schedule_service::list(&state, &query).await?;
    Ok(Json(ScheduleList {
        scheduled_transactions: schedules.iter().map(ScheduleResponse::from).collect(),
        limit,
        offset,
    }))
}

/// One schedule of the caller.
#[utoipa::path(get, path = "/scheduled-transactions/{id}", tag = "scheduled-transactions",
    params(("id" = Uuid, Path, description = "Schedule id")), security(("bearer" = [])),
    responses(
        (status = 200, body = ScheduleResponse),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
    ))]
pub async fn get_schedule(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    Ok(Json(ScheduleResponse::from(&schedule_service::find(&state, &caller, id).await?)))
}

/// `{"message": "Scheduled transaction cancelled successfully"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Always the same text.
    message: &'static str,
}

/// Cancels a schedule (409 when it is completed, failed or cancelled already).
#[utoipa::path(delete, path = "/scheduled-transactions/{id}", tag = "scheduled-transactions",
    params(("id" = Uuid, Path, description = "Schedule id")), security(("bearer" = [])),
    responses(
        (status = 200, body = Cancelled),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
        (status = 409, description = "`schedule_state_conflict`", body = ErrorBody),
    ))]
pub async fn cancel_schedule(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Cancelled>, ApiError> {
    schedule_service::change(&state, &caller, id, ScheduleStatus::Cancelled, client.into()).await?;
    Ok(Json(Cancelled { message: "Scheduled transaction cancelled successfully" }))
}

/// Pauses an active schedule.
#[utoipa::path(post, path = "/scheduled-transactions/{id}/pause", tag = "scheduled-transactions",
    params(("id" = Uuid, Path, description = "Schedule id")), security(("bearer" = [])),
    responses(
        (status = 200, body = ScheduleResponse),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
        (status = 409, description = "`schedule_state_conflict`", body = ErrorBody),
    ))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let schedule = schedule_service::change(&state, &caller, id, ScheduleStatus::Paused, client.into()).await?;
    Ok(Json(ScheduleResponse::from(&schedule)))
}

/// Resumes a paused schedule from its own calendar.
#[utoipa::path(post, path = "/scheduled-transactions/{id}/resume", tag = "scheduled-transactions",
    params(("id" = Uuid, Path, description = "Schedule id")), security(("bearer" = [])),
    responses(
        (status = 200, body = ScheduleResponse),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
        (status = 409, description = "`schedule_state_conflict`", body = ErrorBody),
    ))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    client: ClientContext,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let schedule = schedule_service::change(&state, &caller, id, ScheduleStatus::Active, client.into()).await?;
    Ok(Json(ScheduleResponse::from(&schedule)))
}

/// One run of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResponse {
    /// When it ran.
    executed_at: DateTime<Utc>,
    /// Which occurrence (1, 2, …).
    occurrence: u32,
    /// `success`, `failed` or `skipped`.
    status: &'static str,
    /// The transaction it posted.
    transaction_id: Option<Uuid>,
    /// Why it failed.
    error: Option<String>,
}

impl From<&ExecutionRecord> for ExecutionResponse {
    fn from(e: &ExecutionRecord) -> Self {
        Self {
            executed_at: e.executed_at,
            occurrence: e.occurrence,
            status: e.status.as_str(),
            transaction_id: e.transaction_id,
            error: e.error.clone(),
        }
    }
}

/// Every run of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct Executions {
    /// In order.
    executions: Vec<ExecutionResponse>,
}

/// Every run of a schedule of the caller, in order.
#[utoipa::path(get, path = "/scheduled-transactions/{id}/executions", tag = "scheduled-transactions",
    params(("id" = Uuid, Path, description = "Schedule id")), security(("bearer" = [])),
    responses(
        (status = 200, body = Executions),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
    ))]
pub async fn list_executions(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Executions>, ApiError> {
    let schedule = schedule_service::find(&state, &caller, id).await?;
    let executions = state.store.list_executions(schedule.id).await?;
    Ok(Json(Executions { executions: executions.iter().map(ExecutionResponse::from).collect() }))
}
