//! Hold expiry: releases the holds of two-phase transfers whose `expires_at` has passed on the server's clock.
//!
//! The scheduler's worker runs it on every tick, on every instance. Each due hold is expired through the writer like
//! any other movement, under the idempotency key `expiry:<hold id>` of its payer: the first instance to commit the
//! expiry stores its answer, and any other instance that found the same hold due gets that stored answer back instead
//! of a second movement (and the ledger refuses to settle a hold that is no longer pending in any case, under the
//! hold's row lock). So each hold expires exactly once, however many instances run.

use banksim_core::ledger::{Command, Movement, Settlement};
use banksim_store::{AuditContext, IdempotencyClaim, LedgerOutcome, LedgerRequest, LedgerWork, StoreError};

use crate::app::AppState;

/// The idempotency keys of hold expiries start with this; clients may not use it.
pub const EXPIRY_KEY_PREFIX: &str = "expiry:";

/// Expires the holds that are due now (at most `SCHEDULER_BATCH_MAX` per call); returns how many this call expired.
pub async fn expire_due_holds(state: &AppState) -> Result<usize, StoreError> {
    let due = state.store.due_holds(state.clock.now(), state.config.scheduler_batch_max).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let expiries = due.into_iter().map(|hold| async move {
        let key = format!("{EXPIRY_KEY_PREFIX}{}", hold.id);
        let request = LedgerRequest {
            work: LedgerWork::One(Command {
                transaction_id: state.ids.system_movement(&key),
                movement: Movement::Settle {
                    hold_id: hold.id,
                    payee_id: hold.to_user_id,
                    currency: hold.currency,
                    settlement: Settlement::Expire,
                    actor_id: hold.from_user_id,
                    actor_is_admin: false,
                },
                description: None,
                effective_at: None,
            }),
            idempotency: Some(IdempotencyClaim {
                user_id: hold.from_user_id,
                key,
                request_hash: hold.id.as_bytes().to_vec(),
            }),
            audit: AuditContext { request_id: Some(format!("hold-expiry-{}", hold.id)), ..AuditContext::default() },
        };
        match state.writer.submit(request).await {
            Ok(LedgerOutcome::Posted(_)) => true,
            Ok(_) => false,
            Err(err) => {
                tracing::warn!(tx.id = %hold.id, error = ?err, "hold not expired; retrying next tick");
                false
            }
        }
    });
    let expired = futures::future::join_all(expiries).await.into_iter().filter(|posted| *posted).count();
    if expired > 0 {
        tracing::info!(holds.expired = expired, "holds expired");
    }
    Ok(expired)
}
