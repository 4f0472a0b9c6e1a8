//! The server's one error type, [`ApiError`], and the catalogue of stable error codes, [`ErrorCode`].
//!
//! Every error a client sees goes through [`ApiError`]'s `IntoResponse`, which writes the envelope of API.md:
//! `{"error", "code", "error_code", "request_id", "errors"?}`. Internal details (SQL, driver errors) are logged,
//! never sent.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use banksim_core::ledger::LedgerError;
use banksim_core::{CoreError, FieldError};
use banksim_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::context;

/// Every error code a client can receive. The HTTP status of each is fixed here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A body field is invalid (auth, user-update and schedule routes): see `errors`.
    ValidationFailed,
    /// The body is not JSON at all.
    MalformedJson,
    /// A query or path parameter is invalid: see `errors`.
    InvalidParameter,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body exceeds the configured limit.
    PayloadTooLarge,
    /// No or an invalid access token.
    Unauthorized,
    /// The access token has expired: refresh it.
    TokenExpired,
    /// Login failed (unknown email, wrong password or inactive user: the answer is the same).
    InvalidCredentials,
    /// The refresh token is unknown, expired or revoked.
    InvalidRefreshToken,
    /// A spent refresh token was presented again: its whole family is now revoked.
    RefreshTokenReused,
    /// The caller's role does not allow this.
    InsufficientPermissions,
    /// No route at this path.
    NotFound,
    /// No user with this id.
    UserNotFound,
    /// The route exists, but not for this method (see `Allow`).
    MethodNotAllowed,
    /// Another user has this email.
    EmailTaken,
    /// Another user has this username.
    UsernameTaken,
    /// The change would leave no active admin.
    LastAdmin,
    /// The request took longer than the configured timeout.
    RequestTimeout,
    /// The request was handled (a movement committed), but its answer timed out on the way back, as behind a gateway
    /// (simulation mode's `timeout_after_commit` fault). A retry with the same `Idempotency-Key` gets the stored
    /// answer.
    GatewayTimeout,
    /// A dependency (the database) is unavailable: retry later.
    ServiceUnavailable,
    /// The database did not confirm a commit: the change may or may not have been made. A retry with the same
    /// `Idempotency-Key` gets what really happened.
    CommitOutcomeUnknown,
    /// A money request's body is invalid: see `errors`.
    InvalidRequest,
    /// The amount is not positive, has too many decimals, or is above the maximum.
    InvalidAmount,
    /// The currency is not enabled.
    UnsupportedCurrency,
    /// The wallet holds less than the movement takes out.
    InsufficientFunds,
    /// The movement would take a wallet above its maximum balance, or the wallet's balance is outside new limits.
    BalanceLimitExceeded,
    /// A transfer to oneself.
    SelfTransfer,
    /// An exchange into the same currency.
    SameCurrency,
    /// The recipient does not exist or is inactive.
    RecipientNotFound,
    /// No exchange rate for this pair.
    RateNotFound,
    /// A timestamp is missing or not RFC 3339.
    InvalidTimestamp,
    /// A back-dated movement's `effective_at` is unreadable, in the future, older than `EFFECTIVE_AT_MAX_AGE_DAYS`,
    /// or would take an earlier balance of a wallet beyond its limits.
    InvalidEffectiveAt,
    /// The Idempotency-Key header is empty or longer than 255 characters.
    InvalidIdempotencyKey,
    /// A rollback cannot itself be rolled back.
    NotReversible,
    /// No transaction with this id.
    TransactionNotFound,
    /// The transaction was rolled back already.
    AlreadyRolledBack,
    /// The transfer is not a pending hold (any more): posted, voided, expired, or never a hold.
    TransferNotPending,
    /// An item of an atomic batch was refused: nothing of the batch was applied (see `results`).
    BatchFailed,
    /// The Idempotency-Key was used with another request body.
    IdempotencyKeyReused,
    /// Too many money movements are waiting: retry after `Retry-After`.
    WriteQueueFull,
    /// Too many requests from this client: retry after `retry_after` seconds.
    RateLimited,
    /// No schedule of the caller's has this id.
    ScheduleNotFound,
    /// The schedule's status does not allow this change (cancelling a completed schedule, resuming an active one).
    ScheduleStateConflict,
    /// A bug or an unexpected failure; details are in the server's log under the request id.
    InternalError,
    /// The demo route `/api/v1/test/circuit-breaker/failure` failing on purpose.
    SimulatedFailure,
    /// A circuit breaker is open: the service named in `service` is not called until it recovers.
    CircuitOpen,
    /// The virtual clock never goes backwards: the asked instant is before its current one.
    ClockBackwards,
    /// Another advance of the virtual clock is under way (on this or another instance): retry when it is done.
    ClockBusy,
    /// A scenario run is under way on this instance: stop it (or let it end) before starting another.
    ScenarioRunning,
    /// This server has no scenario runner (only `banksim serve` installs one): the scenario routes cannot work here.
    ScenarioRunnerUnavailable,
}

impl ErrorCode {
    /// Every code, for the catalogue in the OpenAPI spec and for tests.
    pub const ALL: [Self; 50] = [
        Self::ValidationFailed,
        Self::MalformedJson,
        Self::InvalidParameter,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::Unauthorized,
        Self::TokenExpired,
        Self::InvalidCredentials,
        Self::InvalidRefreshToken,
        Self::RefreshTokenReused,
        Self::InsufficientPermissions,
        Self::NotFound,
        Self::UserNotFound,
        Self::MethodNotAllowed,
        Self::EmailTaken,
        Self::UsernameTaken,
        Self::LastAdmin,
        Self::RequestTimeout,
        Self::GatewayTimeout,
        Self::ServiceUnavailable,
        Self::CommitOutcomeUnknown,
        Self::InvalidRequest,
        Self::InvalidAmount,
        Self::UnsupportedCurrency,
        Self::InsufficientFunds,
        Self::BalanceLimitExceeded,
        Self::SelfTransfer,
        Self::SameCurrency,
        Self::RecipientNotFound,
        Self::RateNotFound,
        Self::InvalidTimestamp,
        Self::InvalidEffectiveAt,
        Self::InvalidIdempotencyKey,
        Self::NotReversible,
        Self::TransactionNotFound,
        Self::AlreadyRolledBack,
        Self::TransferNotPending,
        Self::BatchFailed,
        Self::IdempotencyKeyReused,
        Self::WriteQueueFull,
        Self::RateLimited,
        Self::ScheduleNotFound,
        Self::ScheduleStateConflict,
        Self::InternalError,
        Self::SimulatedFailure,
        Self::CircuitOpen,
        Self::ClockBackwards,
        Self::ClockBusy,
        Self::ScenarioRunning,
        Self::ScenarioRunnerUnavailable,
    ];

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedJson | Self::InvalidParameter => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized
            | Self::TokenExpired
            | Self::InvalidCredentials
            | Self::InvalidRefreshToken
            | Self::RefreshTokenReused => StatusCode::UNAUTHORIZED,
            Self::InsufficientPermissions => StatusCode::FORBIDDEN,
            Self::NotFound | Self::UserNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken | Self::UsernameTaken | Self::LastAdmin => StatusCode::CONFLICT,
            Self::RequestTimeout | Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ServiceUnavailable | Self::CommitOutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidRequest
            | Self::InvalidAmount
            | Self::UnsupportedCurrency
            | Self::InsufficientFunds
            | Self::BalanceLimitExceeded
            | Self::SelfTransfer
            | Self::SameCurrency
            | Self::RecipientNotFound
            | Self::BatchFailed
            | Self::RateNotFound
            | Self::InvalidTimestamp
            | Self::InvalidEffectiveAt
            | Self::InvalidIdempotencyKey
            | Self::NotReversible => StatusCode::BAD_REQUEST,
            Self::TransactionNotFound => StatusCode::NOT_FOUND,
            Self::AlreadyRolledBack | Self::TransferNotPending | Self::IdempotencyKeyReused => StatusCode::CONFLICT,
            Self::WriteQueueFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::ScheduleNotFound => StatusCode::NOT_FOUND,
            Self::ScheduleStateConflict => StatusCode::CONFLICT,
            Self::InternalError | Self::SimulatedFailure => StatusCode::INTERNAL_SERVER_ERROR,
            Self::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            Self::ClockBackwards => StatusCode::BAD_REQUEST,
            Self::ClockBusy | Self::ScenarioRunning => StatusCode::CONFLICT,
            Self::ScenarioRunnerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable snake_case id clients match on.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "validation_failed",
            Self::MalformedJson => "malformed_json",
            Self::InvalidParameter => "invalid_parameter",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InsufficientPermissions => "insufficient_permissions",
            Self::NotFound => "not_found",
            Self::UserNotFound => "user_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::EmailTaken => "email_taken",
            Self::UsernameTaken => "username_taken",
            Self::LastAdmin => "last_admin",
            Self::RequestTimeout => "request_timeout",
            Self::GatewayTimeout => "gateway_timeout",
            Self::ServiceUnavailable => "service_unavailable",
            Self::CommitOutcomeUnknown => "commit_outcome_unknown",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidAmount => "invalid_amount",
            Self::UnsupportedCurrency => "unsupported_currency",
            Self::InsufficientFunds => "insufficient_funds",
            Self::BalanceLimitExceeded => "balance_limit_exceeded",
            Self::SelfTransfer => "self_transfer",
            Self::SameCurrency => "same_currency",
            Self::RecipientNotFound => "recipient_not_found",
            Self::RateNotFound => "rate_not_found",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvalidEffectiveAt => "invalid_effective_at",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::NotReversible => "not_reversible",
            Self::TransactionNotFound => "transaction_not_found",
            Self::AlreadyRolledBack => "already_rolled_back",
            Self::TransferNotPending => "transfer_not_pending",
            Self::BatchFailed => "batch_failed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::WriteQueueFull => "write_queue_full",
            Self::RateLimited => "rate_limited",
            Self::ScheduleNotFound => "schedule_not_found",
            Self::ScheduleStateConflict => "schedule_state_conflict",
            Self::InternalError => "internal_error",
            Self::SimulatedFailure => "simulated_failure",
            Self::CircuitOpen => "circuit_open",
            Self::ClockBackwards => "clock_backwards",
            Self::ClockBusy => "clock_busy",
            Self::ScenarioRunning => "scenario_running",
            Self::ScenarioRunnerUnavailable => "scenario_runner_unavailable",
        }
    }

    /// A default human message, used when the error site has nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::ValidationFailed => "request validation failed",
            Self::MalformedJson => "request body is not valid JSON",
            Self::InvalidParameter => "invalid request parameter",
            Self::UnsupportedMediaType => "expected a JSON body with Content-Type: application/json",
            Self::PayloadTooLarge => "request body is too large",
            Self::Unauthorized => "missing or invalid access token",
            Self::TokenExpired => "access token has expired",
            Self::InvalidCredentials => "invalid email or password",
            Self::InvalidRefreshToken => "invalid or expired refresh token",
            Self::RefreshTokenReused => "refresh token was already used; its session has been revoked",
            Self::InsufficientPermissions => "insufficient permissions",
            Self::NotFound => "resource not found",
            Self::UserNotFound => "user not found",
            Self::MethodNotAllowed => "method not allowed",
            Self::EmailTaken => "email is already registered",
            Self::UsernameTaken => "username is already taken",
            Self::LastAdmin => "the last active admin cannot be demoted, deactivated or deleted",
            Self::RequestTimeout => "request timed out",
            Self::GatewayTimeout => {
                "the request was handled, but its answer timed out on the way back (simulated fault); retry with the \
                 same Idempotency-Key to get it"
            }
            Self::ServiceUnavailable => "service temporarily unavailable",
            Self::CommitOutcomeUnknown => {
                "the database did not confirm the commit: the change may have been made; retry with the same \
                 Idempotency-Key to learn its outcome"
            }
            Self::InvalidRequest => "invalid request",
            Self::InvalidAmount => "invalid amount",
            Self::UnsupportedCurrency => "unsupported currency",
            Self::InsufficientFunds => "insufficient funds",
            Self::BalanceLimitExceeded => "the wallet's balance limit would be exceeded",
            Self::SelfTransfer => "cannot transfer to yourself",
            Self::SameCurrency => "cannot exchange a currency into itself",
            Self::RecipientNotFound => "recipient not found",
            Self::RateNotFound => "no exchange rate for this currency pair",
            Self::InvalidTimestamp => "timestamp must be RFC 3339, e.g. 2024-01-31T12:00:00Z",
            Self::InvalidEffectiveAt => "invalid effective_at",
            Self::InvalidIdempotencyKey => "Idempotency-Key must be 1 to 255 characters",
            Self::NotReversible => "a rollback cannot be rolled back",
            Self::TransactionNotFound => "transaction not found",
            Self::AlreadyRolledBack => "transaction was already rolled back",
            Self::TransferNotPending => "the transfer is not pending",
            Self::BatchFailed => "an item of the atomic batch was refused; nothing was applied",
            Self::IdempotencyKeyReused => "this Idempotency-Key was used with a different request",
            Self::WriteQueueFull => "too many pending transactions; retry shortly",
            Self::RateLimited => "too many requests; retry later",
            Self::ScheduleNotFound => "scheduled transaction not found",
            Self::ScheduleStateConflict => "the scheduled transaction cannot change to that status",
            Self::InternalError => "internal server error",
            Self::SimulatedFailure => "Circuit breaker test - simulated failure",
            Self::CircuitOpen => "Service temporarily unavailable",
            Self::ClockBackwards => "the clock never goes backwards",
            Self::ClockBusy => "another advance of the clock is under way; retry when it is done",
            Self::ScenarioRunning => "a scenario run is under way; stop it before starting another",
            Self::ScenarioRunnerUnavailable => {
                "this server has no scenario runner; start it with `banksim serve` to run scenarios"
            }
        }
    }

    /// The code whose status is `status`, for error answers made outside our handlers (the framework's 405,
    /// a timeout layer's 503, …). Unlisted statuses map to the generic code of their class.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::InsufficientPermissions,
            StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => Self::RequestTimeout,
            status if status.is_client_error() => Self::InvalidParameter,
            _ => Self::InternalError,
        }
    }
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 1;

/// An error answer. Built from a code, optionally with a better message, field errors, or (for internal errors)
/// the cause to log.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    fields: Vec<FieldError>,
    cause: Option<String>,
    retry_after_secs: Option<u64>,
    service: Option<&'static str>,
    audited: bool,
}

/// Marks an error answer whose refusal is already in the audit trail (the ledger audits its own refusals in the
/// transaction that decides them), so that the layer auditing refused permissions does not record it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalAudited;

impl ApiError {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.default_message()),
            fields: Vec::new(),
            cause: None,
            retry_after_secs: None,
            service: None,
            audited: false,
        }
    }

    /// Replaces the human message.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }

    /// A 503 `circuit_open`: the breaker of `service` refuses calls for `retry_after`.
    pub fn circuit_open(service: &'static str, retry_after: std::time::Duration) -> Self {
        Self {
            retry_after_secs: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            service: Some(service),
            ..Self::new(ErrorCode::CircuitOpen)
        }
    }

    /// A 429 `rate_limited` error telling the client when to retry.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self { retry_after_secs: Some(retry_after_secs), ..Self::new(ErrorCode::RateLimited) }
    }

    /// A `validation_failed` error listing every invalid field.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        Self { fields, ..Self::new(ErrorCode::ValidationFailed) }
    }

    /// An `invalid_parameter` error about one query or path parameter.
    pub fn parameter(field: &str, message: impl Into<String>) -> Self {
        Self { fields: vec![FieldError::new(field, message)], ..Self::new(ErrorCode::InvalidParameter) }
    }

    /// A 500 whose cause is logged (with the request id) but never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self { cause: Some(cause.to_string()), ..Self::new(ErrorCode::InternalError) }
    }

    /// The same error, marked as already written to the audit trail (its answer carries [`RefusalAudited`]).
    pub fn audited(mut self) -> Self {
        self.audited = true;
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The same error with another code (keeping message and fields): money routes answer a bad body with 400
    /// `invalid_request` where other routes answer 422 `validation_failed`.
    pub fn recode(mut self, from: ErrorCode, to: ErrorCode) -> Self {
        if self.code == from {
            if self.message == from.default_message() {
                self.message = Cow::Borrowed(to.default_message());
            }
            self.code = to;
        }
        self
    }

    /// The error body this error renders, with an explicit request id (for answers stored outside a request).
    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody {
            error: self.message.to_string(),
            code: self.code.status().as_u16(),
            error_code: self.code.as_str(),
            request_id: request_id.to_owned(),
            errors: self.fields.clone(),
            retry_after: self.retry_after_secs,
            service: self.service,
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

impl From<LedgerError> for ApiError {
    /// The ledger names its refusals with API codes (`LedgerError::code`, the one table): find that code here.
    fn from(err: LedgerError) -> Self {
        let code =
            ErrorCode::ALL.into_iter().find(|code| code.as_str() == err.code()).unwrap_or(ErrorCode::InternalError);
        Self::new(code).with_message(err.to_string())
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::Validation(fields) => Self::validation(fields),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::new(ErrorCode::NotFound),
            StoreError::Conflict("email_taken") => Self::new(ErrorCode::EmailTaken),
            StoreError::Conflict("username_taken") => Self::new(ErrorCode::UsernameTaken),
            StoreError::Conflict("last_admin") => Self::new(ErrorCode::LastAdmin),
            StoreError::Conflict("balance_limit_exceeded") => Self::new(ErrorCode::BalanceLimitExceeded)
                .with_message("the wallet's balance is outside the new limits"),
            StoreError::Unavailable(cause) => {
                Self { cause: Some(cause.to_string()), ..Self::new(ErrorCode::ServiceUnavailable) }
            }
            StoreError::CircuitOpen { breaker, retry_after } => Self {
                retry_after_secs: Some(retry_after.as_secs().max(1)),
                ..Self::new(ErrorCode::ServiceUnavailable)
                    .with_message(format!("the {breaker} is unavailable (its circuit is open); retry later"))
            },
            StoreError::CommitFailed(cause) => {
                Self { cause: Some(cause.to_string()), ..Self::new(ErrorCode::CommitOutcomeUnknown) }
            }
            other => Self::internal(error_chain(&other)),
        }
    }
}

/// An error and all its sources, for the log.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The error body of every failed request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    #[schema(example = "insufficient permissions")]
    pub error: String,
    /// The HTTP status, repeated.
    #[schema(example = 403)]
    pub code: u16,
    /// The stable machine-readable code.
    #[schema(example = "insufficient_permissions")]
    pub error_code: &'static str,
    /// The request's id (also in `X-Request-ID`); quote it when reporting a problem.
    pub request_id: String,
    /// Every invalid field, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before retrying, for 429 and 503 answers (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The service whose circuit is open, for `circuit_open` answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
}

/// One invalid field.
#[derive(ToSchema)]
#[expect(dead_code, reason = "documents the shape of banksim_core::FieldError in the OpenAPI spec")]
pub struct FieldErrorSchema {
    /// The field's name.
    field: String,
    /// What is wrong with it.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        self.render(status)
    }
}

impl ApiError {
    /// Writes the envelope with `status`: the code's own, or the original status of a framework answer whose
    /// status has no code of its own. The answer's extensions carry the [`ErrorCode`] (and [`RefusalAudited`] when
    /// set), for layers that act on an error after its handler.
    pub(crate) fn render(self, status: StatusCode) -> Response {
        match (&self.cause, status) {
            (Some(cause), StatusCode::INTERNAL_SERVER_ERROR) => {
                tracing::error!(error.code = self.code.as_str(), error.cause = %cause, "request failed")
            }
            (Some(cause), _) => tracing::warn!(error.code = self.code.as_str(), error.cause = %cause, "request failed"),
            (None, _) => {}
        }
        let body = ErrorBody {
            error: self.message.into_owned(),
            code: status.as_u16(),
            error_code: self.code.as_str(),
            request_id: context::current_request_id(),
            errors: self.fields,
            retry_after: self.retry_after_secs,
            service: self.service,
        };
        let retry_after = match status {
            StatusCode::SERVICE_UNAVAILABLE => Some(self.retry_after_secs.unwrap_or(RETRY_AFTER_SECS)),
            _ => self.retry_after_secs,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(self.code);
        if self.audited {
            response.extensions_mut().insert(RefusalAudited);
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_unique_snake_case_id_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let id = code.as_str();
            assert!(seen.insert(id), "{id} is used twice");
            assert!(id.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{id}");
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{id}");
        }
    }

    #[test]
    fn every_ledger_refusal_has_an_api_code() {
        use banksim_core::ledger::LedgerError::*;
        for refusal in [
            InsufficientFunds,
            SelfTransfer,
            SameCurrency,
            ConvertsToZero,
            TransactionNotFound,
            RollbackForbidden,
            AlreadyRolledBack,
            NotReversible,
            BalanceLimitExceeded,
            TransferNotPending,
            PostExceedsHold,
            SettleForbidden,
            Overflow,
            RecipientNotFound,
            InvalidEffectiveAt,
        ] {
            let code = ApiError::from(refusal).code();
            assert_ne!(code, ErrorCode::InternalError, "{refusal:?}");
            assert_eq!(code.as_str(), refusal.code());
        }
    }

    #[test]
    fn store_conflicts_map_to_their_codes() {
        assert_eq!(ApiError::from(StoreError::Conflict("email_taken")).code(), ErrorCode::EmailTaken);
        assert_eq!(ApiError::from(StoreError::Conflict("last_admin")).code(), ErrorCode::LastAdmin);
        assert_eq!(ApiError::from(StoreError::Conflict("unheard_of")).code(), ErrorCode::InternalError);
    }
}
