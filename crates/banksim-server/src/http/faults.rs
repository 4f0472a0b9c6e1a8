//! Simulated faults for client developers (simulation mode only): the `X-Simulate-Fault` header on any `/api/v1`
//! request, and the random faults that `/api/v1/admin/faults` switches on. One middleware, [`inject_faults`],
//! applies both; without simulation mode it lets every request through untouched (the header is ignored).
//!
//! The faults are those a client of a real bank meets: a slow answer, a 500 or a 503 with nothing done, and the two
//! that matter most, an answer lost *after* the money moved (`timeout_after_commit`, a 504 from "the gateway", and
//! `drop_after_commit`, the connection closed with no answer at all). After those two, a client's retry with the
//! same `Idempotency-Key` gets the stored answer and moves nothing again: that is what they let a client test.
//!
//! **Random faults are per instance.** The setting and its seeded generator live in this instance's memory: each
//! instance behind a load balancer has its own (set each, or run one instance for a reproducible drill). The
//! generator draws exactly once per `/api/v1` request in the order requests reach the middleware, so the same
//! seed and the same request sequence (sent one at a time) meet the same faults. The simulation routes themselves
//! (`/admin/faults`, `/admin/clock`, `/admin/scenarios`, `/admin/state-hash`) never get a random fault, so the
//! operator can always switch them off.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, OriginalUri, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::money::{MoneyJson, invalid_request};
use crate::http::simulation::SimulationMode;

/// The request header that asks for one fault.
pub static X_SIMULATE_FAULT: HeaderName = HeaderName::from_static("x-simulate-fault");
/// The longest `latency=` a request may ask for.
pub const LATENCY_MAX: Duration = Duration::from_secs(30);
/// The wait of a random `latency` fault.
pub const RANDOM_LATENCY: Duration = Duration::from_secs(1);
/// A rate is kept in millionths: exact for every decimal of at most six places.
const RATE_MILLIONTHS_MAX: u32 = 1_000_000;
/// The largest seed: one a JavaScript number still holds exactly (2^53 − 1).
const SEED_MAX: u64 = (1 << 53) - 1;

/// The kinds of fault, as `/admin/faults` and the `banksim_simulated_faults_total` metric name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum FaultKind {
    /// The answer comes [`RANDOM_LATENCY`] late (the header chooses its own wait).
    #[serde(rename = "latency")]
    Latency,
    /// 500 `internal_error`; the request is not handled.
    #[serde(rename = "error_500")]
    Error500,
    /// 503 `service_unavailable` with `Retry-After`; the request is not handled.
    #[serde(rename = "error_503")]
    Error503,
    /// The request is handled (a movement commits), then the answer is 504 `gateway_timeout`.
    #[serde(rename = "timeout_after_commit")]
    TimeoutAfterCommit,
    /// The request is handled (a movement commits), then the connection closes with no answer.
    #[serde(rename = "drop_after_commit")]
    DropAfterCommit,
}

impl FaultKind {
    /// Every kind, for the metric's series.
    pub const ALL: [Self; 5] =
        [Self::Latency, Self::Error500, Self::Error503, Self::TimeoutAfterCommit, Self::DropAfterCommit];

    /// The kind's name in the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Error500 => "error_500",
            Self::Error503 => "error_503",
            Self::TimeoutAfterCommit => "timeout_after_commit",
            Self::DropAfterCommit => "drop_after_commit",
        }
    }
}

/// One fault to inject into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Latency(Duration),
    Error500,
    Error503,
    TimeoutAfterCommit,
    DropAfterCommit,
}

impl Fault {
    fn kind(self) -> FaultKind {
        match self {
            Self::Latency(_) => FaultKind::Latency,
            Self::Error500 => FaultKind::Error500,
            Self::Error503 => FaultKind::Error503,
            Self::TimeoutAfterCommit => FaultKind::TimeoutAfterCommit,
            Self::DropAfterCommit => FaultKind::DropAfterCommit,
        }
    }

    fn of_kind(kind: FaultKind) -> Self {
        match kind {
            FaultKind::Latency => Self::Latency(RANDOM_LATENCY),
            FaultKind::Error500 => Self::Error500,
            FaultKind::Error503 => Self::Error503,
            FaultKind::TimeoutAfterCommit => Self::TimeoutAfterCommit,
            FaultKind::DropAfterCommit => Self::DropAfterCommit,
        }
    }
}

/// Parses `X-Simulate-Fault`: `latency=<n>ms|<n>s`, `error=500|503`, `timeout_after_commit` or `drop_after_commit`.
fn parse_header(value: &HeaderValue) -> Result<Fault, String> {
    let expected = "expected latency=<n>ms or latency=<n>s (at most 30s), error=500, error=503, \
                    timeout_after_commit or drop_after_commit";
    let text = value.to_str().map_err(|_| expected.to_owned())?.trim();
    match text.split_once('=') {
        Some(("latency", wait)) => parse_latency(wait).map(Fault::Latency),
        Some(("error", "500")) => Ok(Fault::Error500),
        Some(("error", "503")) => Ok(Fault::Error503),
        None if text == "timeout_after_commit" => Ok(Fault::TimeoutAfterCommit),
        None if text == "drop_after_commit" => Ok(Fault::DropAfterCommit),
        _ => Err(format!("{text:?}: {expected}")),
    }
}

/// A wait of `<whole number>ms` or `<whole number>s`, at most [`LATENCY_MAX`]. (The clock's duration parser counts
/// whole seconds and up to weeks; a latency wants milliseconds and a far smaller bound.)
fn parse_latency(text: &str) -> Result<Duration, String> {
    let (number, millis_per_unit) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1_000)
    } else {
        return Err(format!("latency {text:?}: give milliseconds or seconds, as in 250ms or 2s"));
    };
    let too_long = || format!("latency {text:?}: at most {}s", LATENCY_MAX.as_secs());
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("latency {text:?}: give a whole number of ms or s, as in 250ms or 2s"));
    }
    let count: u64 = number.parse().map_err(|_| too_long())?;
    let millis = count.checked_mul(millis_per_unit).ok_or_else(too_long)?;
    let wait = Duration::from_millis(millis);
    if wait > LATENCY_MAX {
        return Err(too_long());
    }
    Ok(wait)
}

/// The random faults of this instance, when switched on: the setting and its generator.
#[derive(Debug, Default)]
pub struct FaultInjector {
    random: Mutex<Option<RandomFaults>>,
}

#[derive(Debug)]
struct RandomFaults {
    setting: FaultSetting,
    rng: StdRng,
}

/// A setting of random faults, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FaultSetting {
    rate_millionths: u32,
    kinds: Vec<FaultKind>,
    seed: u64,
}

impl FaultInjector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RandomFaults>> {
        self.random.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, setting: FaultSetting) {
        let rng = StdRng::seed_from_u64(setting.seed);
        *self.lock() = Some(RandomFaults { setting, rng });
    }

    fn clear(&self) {
        *self.lock() = None;
    }

    fn setting(&self) -> Option<FaultSetting> {
        self.lock().as_ref().map(|random| random.setting.clone())
    }

    /// The random fault of the next request, if any: one draw of a number below a million; below the rate, it
    /// is a fault, and where it falls below the rate picks the kind (so one draw decides both).
    fn draw(&self) -> Option<Fault> {
        let mut random = self.lock();
        let random = random.as_mut()?;
        let drawn: u32 = random.rng.gen_range(0..RATE_MILLIONTHS_MAX);
        let rate = random.setting.rate_millionths;
        if drawn >= rate {
            return None;
        }
        let kinds = &random.setting.kinds;
        let index = (u64::from(drawn) * kinds.len() as u64 / u64::from(rate)) as usize;
        kinds.get(index.min(kinds.len() - 1)).copied().map(Fault::of_kind)
    }
}

/// The header on every `/api/v1` answer in simulation mode: the server's clock when it answered (RFC 3339, UTC,
/// microseconds), so that a client sees the virtual instant its request was handled at and a recording keeps it.
pub static X_SIMULATION_CLOCK: HeaderName = HeaderName::from_static("x-simulation-clock");

/// Injects the fault a request asks for (`X-Simulate-Fault`) or draws (random faults), and shows the clock
/// (`X-Simulation-Clock`) — in simulation mode only.
pub async fn inject_faults(state: &AppState, request: Request, next: Next) -> Response {
    let Some(injector) = state.faults.clone() else { return next.run(request).await };
    let path = request.extensions().get::<OriginalUri>().map_or(request.uri().path(), |uri| uri.path());
    if !(path == "/api/v1" || path.starts_with("/api/v1/")) {
        return next.run(request).await;
    }
    let mut response = with_fault(state, &injector, request, next).await;
    let now = state.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    if let Ok(value) = HeaderValue::from_str(&now) {
        response.headers_mut().insert(X_SIMULATION_CLOCK.clone(), value);
    }
    response
}

async fn with_fault(state: &AppState, injector: &FaultInjector, request: Request, next: Next) -> Response {
    let fault = match request.headers().get(&X_SIMULATE_FAULT) {
        Some(value) => match parse_header(value) {
            Ok(fault) => Some(fault),
            Err(problem) => {
                return invalid_request("X-Simulate-Fault", &problem)
                    .with_message(format!("invalid X-Simulate-Fault header: {problem}"))
                    .into_response();
            }
        },
        None => {
            let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
            let simulation_route = route.is_some_and(|route| crate::http::simulation::PATHS.contains(&route));
            if simulation_route { None } else { injector.draw() }
        }
    };
    let Some(fault) = fault else { return next.run(request).await };
    state.metrics.record_simulated_fault(fault.kind().as_str());
    tracing::info!(fault.kind = fault.kind().as_str(), "simulated fault");
    match fault {
        Fault::Latency(wait) => {
            tokio::time::sleep(wait).await;
            next.run(request).await
        }
        Fault::Error500 => ApiError::new(ErrorCode::InternalError)
            .with_message("internal server error (simulated fault)")
            .into_response(),
        Fault::Error503 => ApiError::new(ErrorCode::ServiceUnavailable)
            .with_message("service temporarily unavailable (simulated fault)")
            .into_response(),
        Fault::TimeoutAfterCommit => {
            // The request runs to its end (a movement commits, its answer is stored under its key); only the
            // answer is lost on the way.
            drop(next.run(request).await);
            ApiError::new(ErrorCode::GatewayTimeout).into_response()
        }
        Fault::DropAfterCommit => without_answer(next.run(request).await),
    }
}

/// The connection closes with no answer: the body fails at its first poll, before hyper has flushed the head it
/// buffered, and a failing body makes hyper close the connection. The client reads an end of stream, no status.
fn without_answer(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let failing = futures::stream::iter([Err::<Bytes, _>(std::io::Error::other("simulated fault: answer dropped"))]);
    Response::from_parts(parts, Body::from_stream(failing))
}

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_faults, set_faults, stop_faults))
}

/// The random faults asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSettingRequest {
    /// The share of `/api/v1` requests that get a fault: more than 0, at most 1, at most six decimals; a JSON
    /// number or a string (`0.1`, `"0.25"`).
    #[schema(required = true, schema_with = rate_schema)]
    rate: Option<Box<RawValue>>,
    /// The kinds to choose from, each at most once (each equally likely).
    #[schema(min_items = 1)]
    kinds: Option<Vec<FaultKind>>,
    /// The generator's seed (0 to 2^53 − 1): the same seed and the same requests give the same faults. A random
    /// one when absent (the answer shows it).
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991.0, example = 42)]
    seed: Option<u64>,
}

impl FaultSettingRequest {
    fn parse(self) -> Result<FaultSetting, ApiError> {
        let mut errors = Vec::new();
        let rate = match &self.rate {
            None => Err("is required".to_owned()),
            Some(raw) => parse_rate(raw.get()),
        };
        let rate = rate.map_err(|e| errors.push(banksim_core::FieldError::new("rate", e))).ok();
        let kinds = match self.kinds {
            None => Err("is required"),
            Some(kinds) if kinds.is_empty() => Err("give at least one kind"),
            Some(kinds) if kinds.iter().enumerate().any(|(i, kind)| kinds[..i].contains(kind)) => {
                Err("give each kind at most once")
            }
            Some(kinds) => Ok(kinds),
        };
        let kinds = kinds.map_err(|e| errors.push(banksim_core::FieldError::new("kinds", e))).ok();
        let seed = self.seed.unwrap_or_else(|| rand::thread_rng().gen_range(0..=SEED_MAX));
        if seed > SEED_MAX {
            errors.push(banksim_core::FieldError::new("seed", "at most 9007199254740991 (2^53 - 1)"));
        }
        match (rate, kinds) {
            (Some(rate_millionths), Some(kinds)) if errors.is_empty() => {
                Ok(FaultSetting { rate_millionths, kinds, seed })
            }
            _ => Err(ApiError::validation(errors).recode(ErrorCode::ValidationFailed, ErrorCode::InvalidRequest)),
        }
    }
}

/// A rate as JSON (a number or a string of one) in millionths, exactly: `0.1` is 100 000.
fn parse_rate(json: &str) -> Result<u32, String> {
    let text = if json.starts_with('"') {
        serde_json::from_str::<String>(json).map_err(|_| "must be a number or a string".to_owned())?
    } else {
        json.to_owned()
    };
    let invalid = || format!("{text:?} is not a rate: more than 0, at most 1, at most six decimals (as 0.1)");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 6
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(invalid());
    }
    let whole: u32 = whole.parse().map_err(|_| invalid())?;
    let fraction: u32 = format!("{fraction:0<6}").parse().map_err(|_| invalid())?;
    let millionths =
        whole.checked_mul(RATE_MILLIONTHS_MAX).and_then(|w| w.checked_add(fraction)).ok_or_else(invalid)?;
    if millionths == 0 || millionths > RATE_MILLIONTHS_MAX {
        return Err(invalid());
    }
    Ok(millionths)
}

/// The OpenAPI schema of a rate: a JSON number or a decimal string, in (0, 1].
pub fn rate_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Number]))
        .pattern(Some(r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$"))
        .exclusive_minimum(Some(0))
        .maximum(Some(1))
        .description(Some("A share of requests: more than 0, at most 1, at most six decimals; a number or a string"))
        .examples([serde_json::json!(0.1)])
        .build()
}

/// The random faults of this instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaultsView {
    /// Whether random faults are on.
    enabled: bool,
    /// The share of `/api/v1` requests that get a fault (0 when off).
    #[schema(value_type = f64, minimum = 0, maximum = 1, example = 0.1)]
    rate: Box<RawValue>,
    /// The kinds drawn from (empty when off).
    kinds: Vec<FaultKind>,
    /// The generator's seed (null when off).
    #[schema(example = 42)]
    seed: Option<u64>,
}

impl FaultsView {
    fn of(setting: Option<FaultSetting>) -> Self {
        match setting {
            None => Self {
                enabled: false,
                rate: crate::http::money::number_json("0".to_owned()),
                kinds: Vec::new(),
                seed: None,
            },
            Some(setting) => {
                let whole = setting.rate_millionths / RATE_MILLIONTHS_MAX;
                let fraction = setting.rate_millionths % RATE_MILLIONTHS_MAX;
                let text = if fraction == 0 {
                    whole.to_string()
                } else {
                    format!("{whole}.{}", format!("{fraction:06}").trim_end_matches('0'))
                };
                Self {
                    enabled: true,
                    rate: crate::http::money::number_json(text),
                    kinds: setting.kinds,
                    seed: Some(setting.seed),
                }
            }
        }
    }
}

/// The injector of a server in simulation mode (every server in that mode has one).
fn injector(state: &AppState) -> Result<Arc<FaultInjector>, ApiError> {
    state.faults.clone().ok_or_else(|| ApiError::new(ErrorCode::NotFound))
}

/// The random faults of this instance (simulation mode, admin).
#[utoipa::path(get, path = "/admin/faults", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = FaultsView),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
))]
pub async fn get_faults(
    State(state): State<AppState>,
    _mode: SimulationMode,
    _admin: AdminUser,
) -> Result<Json<FaultsView>, ApiError> {
    Ok(Json(FaultsView::of(injector(&state)?.setting())))
}

/// Injects faults at random into a share of this instance's `/api/v1` requests (simulation mode, admin): each
/// request draws once from a generator seeded with `seed`, in arrival order, so the same seed and requests give the
/// same faults. The simulation routes never get one. Replaces any earlier setting and restarts the generator.
#[utoipa::path(put, path = "/admin/faults", tag = "admin", request_body = FaultSettingRequest,
    security(("bearer" = [])), responses(
    (status = 200, description = "The setting now in force", body = FaultsView),
    (status = 400, description = "`invalid_request`: a rate outside (0, 1] or with more than six decimals, no or repeated kinds, an unknown kind, a seed above 2^53 − 1", body = ErrorBody),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
))]
pub async fn set_faults(
    State(state): State<AppState>,
    _mode: SimulationMode,
    AdminUser(admin): AdminUser,
    MoneyJson(body): MoneyJson<FaultSettingRequest>,
) -> Result<Json<FaultsView>, ApiError> {
    let injector = injector(&state)?;
    let setting = body.parse()?;
    tracing::info!(user.id = %admin.id, faults.rate_millionths = setting.rate_millionths, faults.seed = setting.seed,
        "random faults on");
    injector.set(setting);
    Ok(Json(FaultsView::of(injector.setting())))
}

/// Stops the random faults of this instance (simulation mode, admin); the header still works.
#[utoipa::path(delete, path = "/admin/faults", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "Random faults are off", body = FaultsView),
    (status = 401, description = "No valid access token", body = ErrorBody),
    (status = 403, description = "`insufficient_permissions`", body = ErrorBody),
    (status = 404, description = "`not_found`: simulation mode is off", body = ErrorBody),
))]
pub async fn stop_faults(
    State(state): State<AppState>,
    _mode: SimulationMode,
    AdminUser(admin): AdminUser,
) -> Result<Json<FaultsView>, ApiError> {
    let injector = injector(&state)?;
    injector.clear();
    tracing::info!(user.id = %admin.id, "random faults off");
    Ok(Json(FaultsView::of(None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_every_fault_and_refuses_the_rest() {
        let parse = |text: &str| parse_header(&HeaderValue::from_str(text).expect("header"));
        assert_eq!(parse("latency=250ms"), Ok(Fault::Latency(Duration::from_millis(250))));
        assert_eq!(parse("latency=2s"), Ok(Fault::Latency(Duration::from_secs(2))));
        assert_eq!(parse("latency=30s"), Ok(Fault::Latency(LATENCY_MAX)));
        assert_eq!(parse("error=500"), Ok(Fault::Error500));
        assert_eq!(parse("error=503"), Ok(Fault::Error503));
        assert_eq!(parse("timeout_after_commit"), Ok(Fault::TimeoutAfterCommit));
        assert_eq!(parse("drop_after_commit"), Ok(Fault::DropAfterCommit));
        for bad in
            ["latency=31s", "latency=30001ms", "latency=1m", "latency=ms", "latency=-1s", "error=404", "boom", ""]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_are_exact_decimals_in_the_unit_interval() {
        assert_eq!(parse_rate("0.1"), Ok(100_000));
        assert_eq!(parse_rate("\"0.25\""), Ok(250_000));
        assert_eq!(parse_rate("1"), Ok(1_000_000));
        assert_eq!(parse_rate("1.000000"), Ok(1_000_000));
        assert_eq!(parse_rate("0.000001"), Ok(1));
        for bad in ["0", "0.0", "1.000001", "2", "0.0000001", "-0.1", "1e-1", ".5", "0.", "\"x\"", "true"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_faults_and_every_kind_can_come() {
        let setting = FaultSetting { rate_millionths: 1_000_000, kinds: FaultKind::ALL.to_vec(), seed: 7 };
        let draws = || {
            let injector = FaultInjector::default();
            injector.set(setting.clone());
            (0..200).map(|_| injector.draw().map(Fault::kind)).collect::<Vec<_>>()
        };
        let first = draws();
        assert_eq!(first, draws());
        for kind in FaultKind::ALL {
            assert!(first.contains(&Some(kind)), "{kind:?} never drawn");
        }
        let injector = FaultInjector::default();
        injector.set(FaultSetting { rate_millionths: 100_000, ..setting });
        let faults = (0..10_000).filter(|_| injector.draw().is_some()).count();
        assert!((800..1_200).contains(&faults), "{faults} faults in 10 000 at 10 %");
    }
}
