//! What can go wrong with a call: the server refused it ([`ApiError`], with its `error_code`), no complete answer
//! came back ([`TransportError`]), or the answer was not what the contract promises (`Error::Decode`).
//!
//! The catalogue of `error_code` values ([`ErrorCode`]) is the closed enum of the spec's `ErrorBody`; a unit test
//! compares it with `docs/openapi.snapshot.json`, so a code added on the server fails this crate's tests until it
//! is added here. A code this build does not know still parses, as [`ErrorCode::Other`].

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status and banksim's error body.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// No complete answer: the connection failed, timed out or closed. See [`TransportError::outcome_unknown`].
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered, but the body is not the shape the contract promises (a bug on one side).
    #[error("the {status} answer is not the expected JSON ({source}): {body}")]
    Decode {
        /// The answer's status.
        status: StatusCode,
        /// What serde found wrong.
        source: serde_json::Error,
        /// The body, cut at [`BODY_IN_ERRORS_MAX`] bytes.
        body: String,
    },
    /// The client was built with a bad base URL, or a request could not be encoded.
    #[error("client setup: {0}")]
    Setup(String),
}

/// How much of an unexpected body an [`Error::Decode`] keeps, so a huge body does not end up in a log line.
pub const BODY_IN_ERRORS_MAX: usize = 2_048;

impl Error {
    /// The API error, if the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(error) => Some(error),
            _ => None,
        }
    }

    /// The `error_code` of an API error.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.api().map(|error| &error.error_code)
    }

    /// The HTTP status of an answer (an API error or an undecodable one); `None` without an answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api(error) => Some(error.status),
            Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether a request that changes state may have taken effect although this error came back: no complete
    /// answer after the request was sent, or a 5xx that may follow a commit (`commit_outcome_unknown`, 500, 502,
    /// 504). Retrying with the same `Idempotency-Key` finds out what happened.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Transport(error) => error.outcome_unknown(),
            Self::Api(error) => error.outcome_unknown(),
            Self::Decode { .. } | Self::Setup(_) => false,
        }
    }
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Self {
        Self::Api(Box::new(error))
    }
}

/// An error answer of banksim: API.md's envelope `{error, code, error_code, request_id, errors?, retry_after?,
/// service?}` with the answer's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error_code}: {message}")]
pub struct ApiError {
    /// The answer's HTTP status.
    pub status: StatusCode,
    /// The stable, machine-readable code (`insufficient_funds`, …).
    pub error_code: ErrorCode,
    /// The human text (`error` in the body).
    pub message: String,
    /// The request id, to find the request in the server's logs (`request_id`, or the `X-Request-ID` header).
    pub request_id: Option<String>,
    /// Every bad field of a validation error.
    pub errors: Vec<FieldError>,
    /// How long the server asked the client to wait (`Retry-After`, or `retry_after` in the body).
    pub retry_after: Option<Duration>,
    /// The dependency whose circuit is open, for `circuit_open`.
    pub service: Option<String>,
    /// Every item's result, for `batch_failed`.
    pub batch_results: Vec<crate::model::BatchItemResult>,
}

impl ApiError {
    /// Whether the request may have taken effect although this error came back (see [`Error::outcome_unknown`]).
    pub fn outcome_unknown(&self) -> bool {
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => self.error_code == ErrorCode::CommitOutcomeUnknown,
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => true,
            _ => false,
        }
    }

    /// The names of the fields listed in `errors`.
    pub fn fields(&self) -> Vec<&str> {
        self.errors.iter().map(|error| error.field.as_str()).collect()
    }

    /// Builds the error from an answer's status, headers and body. A body that is not banksim's envelope (a
    /// proxy's HTML page, say) still gives an error, with the status and as much of the body as is useful.
    pub(crate) fn from_answer(
        status: StatusCode,
        request_id: Option<String>,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => Self {
                status,
                error_code: ErrorCode::parse(&parsed.error_code),
                message: parsed.error,
                request_id: parsed.request_id.or(request_id),
                errors: parsed.errors,
                retry_after: retry_after.or(parsed.retry_after.map(Duration::from_secs)),
                service: parsed.service,
                batch_results: parsed.results.unwrap_or_default(),
            },
            Err(_) => Self {
                status,
                error_code: ErrorCode::Other(String::new()),
                message: truncated(body),
                request_id,
                errors: Vec::new(),
                retry_after,
                service: None,
                batch_results: Vec::new(),
            },
        }
    }
}

/// One bad field of a validation error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    /// The field's name in the request (`amount`, `email`, …).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The error body as the server writes it.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_code: String,
    request_id: Option<String>,
    #[serde(default)]
    errors: Vec<FieldError>,
    retry_after: Option<u64>,
    service: Option<String>,
    results: Option<Vec<crate::model::BatchItemResult>>,
}

/// No complete answer to a request.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", if self.sent { "no complete answer" } else { "the request was not sent" })]
pub struct TransportError {
    /// Whether the request may have reached the server: false only when the connection could not be opened.
    pub sent: bool,
    /// What reqwest reported.
    #[source]
    pub source: reqwest::Error,
}

impl TransportError {
    pub(crate) fn new(source: reqwest::Error) -> Self {
        // A refused or failed connection never carried the request; anything later (a timeout, a reset, a body
        // cut short) may have reached the server.
        let sent = !source.is_connect() && !source.is_builder();
        Self { sent, source }
    }

    /// Whether the request may have taken effect: it may have reached the server and no answer says what
    /// happened.
    pub fn outcome_unknown(&self) -> bool {
        self.sent
    }

    /// Whether it was a timeout.
    pub fn is_timeout(&self) -> bool {
        self.source.is_timeout()
    }
}

/// At most [`BODY_IN_ERRORS_MAX`] bytes of a body, as text.
pub(crate) fn truncated(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_IN_ERRORS_MAX)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Declares [`ErrorCode`] from one table: variant and wire name.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// The closed catalogue of `error_code` values (API.md; the enum of `ErrorBody.error_code` in the spec),
        /// with [`ErrorCode::Other`] for a code this build does not know yet.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code outside the catalogue this client was built with (a newer server), or the empty text when
            /// the error body was not banksim's.
            Other(String),
        }

        impl ErrorCode {
            /// Every code of the catalogue, in the spec's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as the server writes it (`"insufficient_funds"`).
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(code) => code,
                }
            }

            /// The code for `text`, [`ErrorCode::Other`] when it is not in the catalogue.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($name => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    /// A body field is invalid (auth, user update and schedule routes); see `errors`.
    ValidationFailed = "validation_failed",
    /// The body is not JSON.
    MalformedJson = "malformed_json",
    /// A path or query parameter is invalid.
    InvalidParameter = "invalid_parameter",
    /// The body is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type",
    /// The body is larger than the server accepts.
    PayloadTooLarge = "payload_too_large",
    /// No or a bad access token.
    Unauthorized = "unauthorized",
    /// The access token expired: refresh it.
    TokenExpired = "token_expired",
    /// Wrong email or password, or an inactive user.
    InvalidCredentials = "invalid_credentials",
    /// The refresh token is unknown, expired or revoked.
    InvalidRefreshToken = "invalid_refresh_token",
    /// A used refresh token was presented again: its whole family is revoked.
    RefreshTokenReused = "refresh_token_reused",
    /// The caller may not do this (admin-only routes, others' transactions).
    InsufficientPermissions = "insufficient_permissions",
    /// No such route or resource.
    NotFound = "not_found",
    /// No such user.
    UserNotFound = "user_not_found",
    /// The route exists, not with this method.
    MethodNotAllowed = "method_not_allowed",
    /// The email is registered already.
    EmailTaken = "email_taken",
    /// The username is registered already.
    UsernameTaken = "username_taken",
    /// The last active admin cannot be demoted, deactivated or deleted.
    LastAdmin = "last_admin",
    /// The server gave up on the request (504).
    RequestTimeout = "request_timeout",
    /// Simulation mode's `timeout_after_commit` fault: the request was handled, its answer lost (504). Retry with the
    /// same `Idempotency-Key` to get it.
    GatewayTimeout = "gateway_timeout",
    /// A dependency is unavailable: retry later.
    ServiceUnavailable = "service_unavailable",
    /// The commit was not confirmed: retry with the same `Idempotency-Key` to learn what happened.
    CommitOutcomeUnknown = "commit_outcome_unknown",
    /// A money request's body is invalid; see `errors`.
    InvalidRequest = "invalid_request",
    /// The amount is not positive, has too many decimals, or is above the maximum.
    InvalidAmount = "invalid_amount",
    /// The currency is not enabled.
    UnsupportedCurrency = "unsupported_currency",
    /// The wallet holds less than the movement takes out.
    InsufficientFunds = "insufficient_funds",
    /// The movement would break the wallet's maximum balance.
    BalanceLimitExceeded = "balance_limit_exceeded",
    /// A transfer to oneself.
    SelfTransfer = "self_transfer",
    /// An exchange into the same currency.
    SameCurrency = "same_currency",
    /// The recipient does not exist or is inactive.
    RecipientNotFound = "recipient_not_found",
    /// No exchange rate for this pair.
    RateNotFound = "rate_not_found",
    /// A timestamp is missing or not RFC 3339.
    InvalidTimestamp = "invalid_timestamp",
    /// A back-dated movement's `effective_at` is out of range or would take an earlier balance beyond its limits.
    InvalidEffectiveAt = "invalid_effective_at",
    /// The `Idempotency-Key` is empty, too long or reserved.
    InvalidIdempotencyKey = "invalid_idempotency_key",
    /// A compensating transaction cannot be rolled back.
    NotReversible = "not_reversible",
    /// No such transaction.
    TransactionNotFound = "transaction_not_found",
    /// The transaction was rolled back already.
    AlreadyRolledBack = "already_rolled_back",
    /// The transfer is not a pending hold (any more).
    TransferNotPending = "transfer_not_pending",
    /// An atomic batch was refused as a whole: see [`ApiError::batch_results`].
    BatchFailed = "batch_failed",
    /// The `Idempotency-Key` was used with another body.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// Too many movements are waiting: retry after `Retry-After`.
    WriteQueueFull = "write_queue_full",
    /// Too many requests: retry after `Retry-After`.
    RateLimited = "rate_limited",
    /// No such schedule of the caller's.
    ScheduleNotFound = "schedule_not_found",
    /// The schedule's status does not allow this change.
    ScheduleStateConflict = "schedule_state_conflict",
    /// A bug or an unexpected failure on the server.
    InternalError = "internal_error",
    /// The circuit-breaker demo route failing on purpose.
    SimulatedFailure = "simulated_failure",
    /// A circuit breaker is open: the dependency in `service` is not called until it recovers.
    CircuitOpen = "circuit_open",
    /// Simulation mode: the virtual clock never goes backwards.
    ClockBackwards = "clock_backwards",
    /// Simulation mode: another advance of the virtual clock is under way; retry when it is done.
    ClockBusy = "clock_busy",
    /// Simulation mode: a scenario run is under way on this instance; stop it before starting another.
    ScenarioRunning = "scenario_running",
    /// Simulation mode: this server has no scenario runner (only `banksim serve` installs one).
    ScenarioRunnerUnavailable = "scenario_runner_unavailable",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_the_specs_error_code_enum() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.snapshot.json");
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the spec snapshot")).expect("JSON");
        let codes = &spec["components"]["schemas"]["ErrorBody"]["properties"]["error_code"]["enum"];
        let spec_codes: Vec<&str> = codes.as_array().expect("an enum").iter().filter_map(|c| c.as_str()).collect();
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
        assert_eq!(ours, spec_codes, "add the new codes to error_codes! in this file");
        for code in ErrorCode::ALL {
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
        }
    }

    #[test]
    fn an_error_body_gives_its_code_fields_and_request_id() {
        let body = br#"{"error":"bad","code":400,"error_code":"invalid_amount","request_id":"r-1",
            "errors":[{"field":"amount","message":"too many decimals"}]}"#;
        let error = ApiError::from_answer(StatusCode::BAD_REQUEST, Some("header-id".into()), None, body);
        assert_eq!(error.error_code, ErrorCode::InvalidAmount);
        assert_eq!(error.error_code, "invalid_amount");
        assert_eq!(error.request_id.as_deref(), Some("r-1"));
        assert_eq!(error.fields(), ["amount"]);
        assert!(!error.outcome_unknown());
    }

    #[test]
    fn unknown_codes_and_foreign_bodies_still_make_errors() {
        let body = br#"{"error":"new","code":418,"error_code":"teapot","request_id":"r","retry_after":3}"#;
        let error = ApiError::from_answer(StatusCode::IM_A_TEAPOT, None, None, body);
        assert_eq!(error.error_code, ErrorCode::Other("teapot".into()));
        assert_eq!(error.retry_after, Some(Duration::from_secs(3)));
        let error = ApiError::from_answer(StatusCode::BAD_GATEWAY, Some("x".into()), None, b"<html>proxy</html>");
        assert_eq!(error.error_code, ErrorCode::Other(String::new()));
        assert_eq!(error.message, "<html>proxy</html>");
        assert!(error.outcome_unknown(), "a 502 may follow a commit");
    }
}
