//! Moving money: checks that need the database or the configuration, idempotency, and the hand-off to the
//! writer pool. The ledger's rules themselves live in `banksim_core::ledger`.

use banksim_core::clock::parse_instant;
use banksim_core::ledger::{Command, LedgerError, Movement, TransactionRecord};
use banksim_core::user::{Role, User};
use banksim_store::{
    AuditContext, BatchOutcome, IdempotencyClaim, LedgerOutcome, LedgerRequest, LedgerWork, StoredResponse,
};
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// Longest accepted idempotency key, in characters.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

/// What a money request gets.
#[derive(Debug)]
pub enum MoneyAnswer {
    /// The movement was posted.
    Posted(Box<TransactionRecord>),
    /// The key was used before with the same request: its stored answer, to send again as it was.
    Replayed(StoredResponse),
}

/// A money request as the service receives it from a handler.
#[derive(Debug)]
pub struct MoneyRequest<'a> {
    /// The caller.
    pub caller: &'a User,
    /// Who asks from where, for the audit trail (`actor_id` is set from `caller`).
    pub audit: AuditContext,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<&'a str>,
    /// Fingerprint of the request (route and body).
    pub fingerprint: Vec<u8>,
    /// The movement, or why the request cannot make one.
    pub movement: Result<ValidMovement, ApiError>,
}

/// A movement that passed the checks made before the writer (body, currency, recipient, rate).
#[derive(Debug)]
pub struct ValidMovement {
    /// The movement.
    pub movement: Movement,
    /// Free text.
    pub description: Option<String>,
    /// When it takes effect, if back-dated (admins only; checked against `EFFECTIVE_AT_MAX_AGE_DAYS`).
    pub effective_at: Option<DateTime<Utc>>,
}

impl ValidMovement {
    /// The ledger command that posts it as transaction `transaction_id`.
    fn into_command(self, transaction_id: Uuid) -> Command {
        Command {
            transaction_id,
            movement: self.movement,
            description: self.description,
            effective_at: self.effective_at,
        }
    }
}

/// The fingerprint of a request: SHA-256 of its route and its body as parsed (amounts as the client wrote them,
/// so `25` and `"25.00"` are different requests).
pub fn fingerprint(route: &str, body: &impl serde::Serialize) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hasher.finalize().to_vec()
}

/// Posts a movement: the new transaction, the refusal's error, or — for a repeated idempotency key — the stored
/// answer (409 `idempotency_key_reused` if the request differs).
pub async fn post(state: &AppState, request: MoneyRequest<'_>) -> Result<MoneyAnswer, ApiError> {
    let MoneyRequest { caller, audit, idempotency_key, fingerprint, movement } = request;
    let transaction_id = state.ids.movement(caller.id, idempotency_key, 0);
    let work = movement.map(|movement| LedgerWork::One(movement.into_command(transaction_id)));
    match submit(state, caller, audit, idempotency_key, fingerprint, work).await? {
        LedgerOutcome::Posted(record) => Ok(MoneyAnswer::Posted(record)),
        // The writer audited the refusal in the transaction that decided it (a non-payer's rollback included).
        LedgerOutcome::Refused(refusal) => Err(ApiError::from(refusal).audited()),
        LedgerOutcome::Replayed(stored) => Ok(MoneyAnswer::Replayed(stored)),
        LedgerOutcome::Batch(_) => Err(ApiError::internal("one movement was answered as a batch")),
    }
}

/// What a batch request gets.
#[derive(Debug)]
pub enum BatchAnswer {
    /// The batch went through the ledger: each item's outcome.
    Done(BatchOutcome),
    /// The key was used before with the same batch: its stored answer.
    Replayed(StoredResponse),
}

/// A client's batch as the service receives it from its handler.
#[derive(Debug)]
pub struct BatchRequest<'a> {
    /// The caller.
    pub caller: &'a User,
    /// Who asks from where, for the audit trail.
    pub audit: AuditContext,
    /// The `Idempotency-Key` header (one key for the whole batch), if sent.
    pub idempotency_key: Option<&'a str>,
    /// Fingerprint of the request.
    pub fingerprint: Vec<u8>,
    /// The items (each a movement or its refusal), or why the request as a whole is invalid.
    pub items: Result<Vec<Result<ValidMovement, LedgerError>>, ApiError>,
    /// All or nothing.
    pub atomic: bool,
}

/// Posts a client's batch in one database transaction: each item's outcome, or the stored answer of its key.
pub async fn post_batch(state: &AppState, request: BatchRequest<'_>) -> Result<BatchAnswer, ApiError> {
    let BatchRequest { caller, audit, idempotency_key, fingerprint, items, atomic } = request;
    let work = items.map(|items| {
        let id = |index| state.ids.movement(caller.id, idempotency_key, index);
        let items =
            items.into_iter().enumerate().map(|(index, item)| item.map(|m| m.into_command(id(index)))).collect();
        LedgerWork::Batch { items, atomic }
    });
    match submit(state, caller, audit, idempotency_key, fingerprint, work).await? {
        LedgerOutcome::Batch(outcome) => Ok(BatchAnswer::Done(outcome)),
        LedgerOutcome::Replayed(stored) => Ok(BatchAnswer::Replayed(stored)),
        LedgerOutcome::Posted(_) | LedgerOutcome::Refused(_) => {
            Err(ApiError::internal("a batch was answered as one movement"))
        }
    }
}

/// Hands `work` to the writer under the caller's idempotency key. A `Replayed` outcome is the stored answer of
/// the same request; a key reused for another request is refused.
async fn submit(
    state: &AppState,
    caller: &User,
    audit: AuditContext,
    idempotency_key: Option<&str>,
    fingerprint: Vec<u8>,
    work: Result<LedgerWork, ApiError>,
) -> Result<LedgerOutcome, ApiError> {
    let claim = match idempotency_key {
        Some(key) => Some(claim(caller.id, key, fingerprint)?),
        None => None,
    };
    let work = match work {
        Ok(work) => work,
        // A retry of a request that succeeded may no longer pass the checks (its recipient was deactivated since,
        // say): a stored answer wins over a fresh refusal. A valid request needs no lookup here: the writer
        // answers a repeated key from the stored answer inside its own transaction.
        Err(refusal) => {
            return match &claim {
                Some(claim) => match state.store.find_idempotent(claim.user_id, &claim.key).await? {
                    Some(stored) => replay(claim, stored),
                    None => Err(refusal),
                },
                None => Err(refusal),
            };
        }
    };
    let request =
        LedgerRequest { work, idempotency: claim.clone(), audit: AuditContext { actor_id: Some(caller.id), ..audit } };
    match state.writer.submit(request).await? {
        LedgerOutcome::Replayed(stored) => match &claim {
            Some(claim) => replay(claim, stored),
            None => Err(ApiError::internal("a request without a key was answered as a replay")),
        },
        outcome => Ok(outcome),
    }
}

/// Whether a client may use `key`: 1–255 characters, no control characters, not in the scheduler's namespace.
pub fn is_client_key(key: &str) -> bool {
    let chars = key.chars().count();
    (1..=IDEMPOTENCY_KEY_CHARS_MAX).contains(&chars)
        && !key.chars().any(char::is_control)
        && !key.starts_with(crate::jobs::scheduler::SCHEDULER_KEY_PREFIX)
        && !key.starts_with(crate::jobs::holds::EXPIRY_KEY_PREFIX)
}

fn claim(user_id: Uuid, key: &str, request_hash: Vec<u8>) -> Result<IdempotencyClaim, ApiError> {
    if !is_client_key(key) {
        return Err(ErrorCode::InvalidIdempotencyKey.into());
    }
    Ok(IdempotencyClaim { user_id, key: key.to_owned(), request_hash })
}

/// The stored answer of an idempotency key, if the request is the same one.
fn replay(claim: &IdempotencyClaim, stored: StoredResponse) -> Result<LedgerOutcome, ApiError> {
    if stored.request_hash != claim.request_hash {
        return Err(ErrorCode::IdempotencyKeyReused.into());
    }
    Ok(LedgerOutcome::Replayed(stored))
}

/// A transaction, for a party to it or an admin; others get 403 before anything about it is revealed.
pub async fn find(state: &AppState, caller: &User, id: Uuid) -> Result<TransactionRecord, ApiError> {
    let record = state.store.find_transaction(id).await?.ok_or(ErrorCode::TransactionNotFound)?;
    let is_party = record.from_user_id == Some(caller.id) || record.to_user_id == Some(caller.id);
    if !is_party && caller.role != Role::Admin {
        return Err(ErrorCode::InsufficientPermissions.into());
    }
    Ok(record)
}

/// Reads the `effective_at` of a movement (sent in `field`): only an admin may back-date one, to an RFC 3339 instant
/// not in the future and at most `EFFECTIVE_AT_MAX_AGE_DAYS` old (kept to the microsecond, as stored). Whether it
/// keeps the wallets' past balances within their limits is the ledger's to say.
pub fn effective_at(
    state: &AppState,
    caller: &User,
    field: &str,
    text: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    if caller.role != Role::Admin {
        return Err(ApiError::new(ErrorCode::InsufficientPermissions)
            .with_message(format!("{field}: only an admin may back-date a movement")));
    }
    let invalid = |why: &str| ApiError::new(ErrorCode::InvalidEffectiveAt).with_message(format!("{field} {why}"));
    let at = parse_instant(text).map_err(|why| invalid(&why))?;
    let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
    let now = state.clock.now();
    let max_age_days = state.config.effective_at_max_age_days;
    if at > now {
        return Err(invalid("must not be in the future"));
    }
    if at < now - TimeDelta::days(i64::from(max_age_days)) {
        return Err(invalid(&format!("must be at most {max_age_days} days ago (EFFECTIVE_AT_MAX_AGE_DAYS)")));
    }
    Ok(Some(at))
}

/// Checks that a transfer's recipient exists and is active.
pub async fn check_recipient(state: &AppState, to_user_id: Uuid) -> Result<(), ApiError> {
    match state.users.find_cached(to_user_id).await? {
        Some(user) if user.is_active => Ok(()),
        _ => Err(ErrorCode::RecipientNotFound.into()),
    }
}
