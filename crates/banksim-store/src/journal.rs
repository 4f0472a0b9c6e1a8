//! Reading the event log and the audit trail, and rebuilding balances from the events alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One event of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Global order of the log.
    pub sequence: i64,
    /// `transaction`, `schedule`, …
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: Uuid,
    /// The aggregate's version after this event (1, 2, …).
    pub version: i64,
    /// `MoneyTransferred`, `SchedulePaused`, …
    pub event_type: String,
    /// The event's content.
    pub data: serde_json::Value,
    /// When it was appended.
    pub created_at: DateTime<Utc>,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Order of the trail.
    pub id: i64,
    /// Who (none for the system).
    pub actor_id: Option<Uuid>,
    /// What (`transaction.transfer`, `schedule.pause`, …).
    pub action: String,
    /// On what kind of entity.
    pub entity_type: String,
    /// On which entity.
    pub entity_id: Option<String>,
    /// `success` or the reason it was refused.
    pub outcome: String,
    /// Before/after details.
    pub details: serde_json::Value,
    /// The client's IP.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The trace id of the request or job run that wrote it, if it was traced (none before traces were kept).
    pub trace_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only by this actor.
    pub actor_id: Option<Uuid>,
    /// Only on this kind of entity.
    pub entity_type: Option<String>,
    /// Only on this entity.
    pub entity_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only at or before.
    pub until: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: u32,
    /// Only entries older than this one (keyset paging).
    pub before_id: Option<i64>,
}

/// The balance of every account, rebuilt from the money events alone: the sum of the legs each event carries.
pub fn replay_balances<'a>(events: impl IntoIterator<Item = &'a EventRecord>) -> Result<HashMap<Uuid, i64>, String> {
    let mut balances: HashMap<Uuid, i64> = HashMap::new();
    for event in events.into_iter().filter(|e| e.aggregate_type == "transaction") {
        let legs = event.data["legs"]
            .as_array()
            .ok_or_else(|| format!("event {} ({}) has no legs", event.sequence, event.event_type))?;
        for leg in legs {
            let account = leg["account_id"]
                .as_str()
                .and_then(|id| id.parse::<Uuid>().ok())
                .ok_or_else(|| format!("event {} has a leg without an account", event.sequence))?;
            let amount = leg["amount_minor"]
                .as_i64()
                .ok_or_else(|| format!("event {} has a leg without an amount", event.sequence))?;
            let balance = balances.entry(account).or_default();
            *balance = balance.checked_add(amount).ok_or_else(|| format!("event {} overflows", event.sequence))?;
        }
    }
    Ok(balances)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(sequence: i64, legs: serde_json::Value) -> EventRecord {
        EventRecord {
            sequence,
            aggregate_type: "transaction".into(),
            aggregate_id: Uuid::new_v4(),
            version: 1,
            event_type: "MoneyTransferred".into(),
            data: json!({ "legs": legs }),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn balances_are_the_sum_of_the_legs() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            event(1, json!([{"account_id": a, "amount_minor": -500}, {"account_id": b, "amount_minor": 500}])),
            event(2, json!([{"account_id": b, "amount_minor": -200}, {"account_id": a, "amount_minor": 200}])),
        ];
        let balances = replay_balances(&events).expect("replay");
        assert_eq!((balances[&a], balances[&b]), (-300, 300));
    }

    #[test]
    fn a_malformed_event_is_reported() {
        assert!(replay_balances(&[event(7, json!([{"amount_minor": 1}]))]).is_err());
    }
}
