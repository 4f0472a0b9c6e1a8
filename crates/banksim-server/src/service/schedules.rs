//! Scheduled transactions: creating them (every rule checked at once), reading them, and moving them between
//! states. Running them is the scheduler's job (`jobs::scheduler`).

use banksim_core::ledger::TransactionKind;
use banksim_core::schedule::{NewScheduleInput, ScheduleStatus, check_new_schedule};
use banksim_core::user::User;
use banksim_core::{CoreError, Validation};
use banksim_store::{
    AuditContext, IdempotencyClaim, NextRun, ScheduleQuery, ScheduleRecord, StoreError, StoredResponse,
};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// A schedule as the client asked for it, fields still raw so every mistake can be reported at once.
#[derive(Debug, Default)]
pub struct ScheduleRequest {
    /// `credit`, `debit` or `transfer`.
    pub transaction_type: Option<String>,
    /// Exact decimal text of the amount.
    pub amount: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The recipient of a transfer.
    pub to_user_id: Option<Uuid>,
    /// `once`, `one-time` or `recurring`.
    pub schedule_type: Option<String>,
    /// RFC 3339 text of the first execution.
    pub execute_at: Option<String>,
    /// `daily`, `weekly`, `monthly` or `yearly`.
    pub recurrence_pattern: Option<String>,
    /// RFC 3339 text of the last instant an occurrence may run at.
    pub recurrence_end_date: Option<String>,
    /// Most occurrences.
    pub max_occurrences: Option<i64>,
}

/// What creating a schedule gives.
#[derive(Debug)]
pub enum Created {
    /// A new schedule.
    New(ScheduleRecord),
    /// The idempotency key was used before with the same request: its stored answer.
    Replayed(StoredResponse),
}

/// Checks a request and builds the schedule, reporting every invalid field (422 `validation_failed`). `key` is
/// the request's idempotency key, from which the schedule's id derives in simulation mode.
pub async fn build(
    state: &AppState,
    caller: &User,
    key: Option<&str>,
    request: ScheduleRequest,
) -> Result<ScheduleRecord, ApiError> {
    let now = state.clock.now();
    let mut v = Validation::new();
    let instant = |text: &Option<String>| text.as_deref().map(banksim_core::clock::parse_instant).transpose();
    let execute_at = v.check("execute_at", instant(&request.execute_at)).flatten();
    let end_date = v.check("recurrence_end_date", instant(&request.recurrence_end_date)).flatten();
    let currency = v.check("currency", parse_currency(state, request.currency.as_deref()));
    let amount = currency.and_then(|c| v.check("amount", parse_amount(state, request.amount.as_deref(), c)));
    if request.execute_at.is_none() {
        v.add("execute_at", "is required");
    }
    if let Some(description) = &request.description
        && (description.chars().count() > 500 || description.chars().any(char::is_control))
    {
        v.add("description", "must be at most 500 characters, without control characters");
    }
    let input = NewScheduleInput {
        transaction_type: request.transaction_type.as_deref().unwrap_or_default(),
        schedule_type: request.schedule_type.as_deref().unwrap_or_default(),
        execute_at,
        recurrence_pattern: request.recurrence_pattern.as_deref(),
        recurrence_end_date: end_date,
        max_occurrences: request.max_occurrences,
        to_user_id: request.to_user_id,
        caller_id: caller.id,
    };
    let new = check_new_schedule(&input, now, &mut v);
    if let (Some(new), Some(to)) = (&new, request.to_user_id)
        && new.transaction_type == TransactionKind::Transfer
        && to != caller.id
        && !state.users.find_cached(to).await?.is_some_and(|u| u.is_active)
    {
        v.add("to_user_id", "no active user has this id");
    }
    v.finish()?;
    let (Some(new), Some(amount)) = (new, amount) else {
        return Err(CoreError::Validation(Vec::new()).into());
    };
    Ok(ScheduleRecord {
        id: state.ids.schedule(caller.id, key),
        user_id: caller.id,
        transaction_type: new.transaction_type,
        amount,
        description: request.description,
        to_user_id: new.to_user_id,
        current_occurrence: 0,
        next_execution_at: new.calendar.next_after(0),
        last_executed_at: None,
        status: ScheduleStatus::Active,
        attempt: 0,
        consecutive_failures: 0,
        calendar: new.calendar,
        created_at: now,
        updated_at: now,
    })
}

fn parse_currency(state: &AppState, code: Option<&str>) -> Result<banksim_core::currency::Currency, String> {
    let code = code.ok_or("is required")?;
    let currency = banksim_core::currency::Currency::parse(code).map_err(|e| e.to_string())?;
    if !state.config.enabled_currencies.contains(currency) {
        return Err(format!("{currency} is not enabled"));
    }
    Ok(currency)
}

fn parse_amount(
    state: &AppState,
    text: Option<&str>,
    currency: banksim_core::currency::Currency,
) -> Result<banksim_core::money::Money, String> {
    let text = text.ok_or("is required")?;
    banksim_core::money::Money::parse(text, currency, state.config.amount_max).map_err(|e| e.to_string())
}

/// Stores a new schedule, or answers a repeated idempotency key with its stored answer.
pub async fn create(
    state: &AppState,
    schedule: ScheduleRecord,
    claim: Option<(IdempotencyClaim, String)>,
    audit: AuditContext,
) -> Result<Created, ApiError> {
    let stored = claim.as_ref().map(|(claim, body)| (claim, 201, body.as_str()));
    match state.store.create_schedule(&schedule, stored, &audit).await {
        Ok(()) => Ok(Created::New(schedule)),
        Err(StoreError::Conflict("idempotency_key_taken")) => {
            let Some((claim, _)) = claim else { return Err(ApiError::internal("a key conflict without a key")) };
            let stored = state.store.find_idempotent(claim.user_id, &claim.key).await?;
            match stored {
                Some(stored) if stored.request_hash == claim.request_hash => Ok(Created::Replayed(stored)),
                _ => Err(ErrorCode::IdempotencyKeyReused.into()),
            }
        }
        Err(other) => Err(other.into()),
    }
}

/// A schedule of the caller (another user's is as unknown as a missing one).
pub async fn find(state: &AppState, caller: &User, id: Uuid) -> Result<ScheduleRecord, ApiError> {
    match state.store.find_schedule(id).await? {
        Some(schedule) if schedule.user_id == caller.id => Ok(schedule),
        _ => Err(ErrorCode::ScheduleNotFound.into()),
    }
}

/// The caller's schedules.
pub async fn list(state: &AppState, query: &ScheduleQuery) -> Result<Vec<ScheduleRecord>, ApiError> {
    Ok(state.store.list_schedules(query).await?)
}

/// Cancels, pauses or resumes a schedule of the caller.
pub async fn change(
    state: &AppState,
    caller: &User,
    id: Uuid,
    to: ScheduleStatus,
    audit: AuditContext,
) -> Result<ScheduleRecord, ApiError> {
    let schedule = find(state, caller, id).await?;
    let (from, next): (&[ScheduleStatus], NextRun) = match to {
        ScheduleStatus::Cancelled => (&[ScheduleStatus::Active, ScheduleStatus::Paused], NextRun::Clear),
        ScheduleStatus::Paused => (&[ScheduleStatus::Active], NextRun::Keep),
        // A resumed schedule carries on from its own calendar (after what is recorded when the change is made).
        _ => (&[ScheduleStatus::Paused], NextRun::FromCalendar),
    };
    let audit = AuditContext { actor_id: Some(caller.id), ..audit };
    state.store.change_schedule_status(id, from, to, next, state.clock.now(), &audit).await.map_err(|e| match e {
        StoreError::Conflict("schedule_state") => ApiError::new(ErrorCode::ScheduleStateConflict)
            .with_message(format!("the schedule is {}: it cannot become {to}", schedule.status)),
        StoreError::NotFound => ErrorCode::ScheduleNotFound.into(),
        other => other.into(),
    })
}
