//! Daily statements: read from their projection once it has caught up with the log as it was when asked, so a
//! caller always sees their own movements.

use std::time::Duration;

use banksim_core::FieldError;
use banksim_core::currency::Currency;
use banksim_core::statement::{DayStatement, every_day};
use banksim_store::{Projection, StatementQuery};
use chrono::NaiveDate;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::jobs::projector;
use crate::replica::Reads;

/// Most days one request may span.
pub const STATEMENT_DAYS_MAX: u32 = 366;

/// Days shown when `from` is not given: this many, ending with `to`.
const STATEMENT_DAYS_DEFAULT: u64 = 30;

/// How long a read waits for the projection to reach the log's head before answering with what it has.
const FRESHNESS_WAIT: Duration = Duration::from_secs(2);

/// The days a statement request covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementRange {
    /// First day.
    pub from: NaiveDate,
    /// Last day (inclusive), never after today.
    pub to: NaiveDate,
}

/// Earliest day a statement may be asked for.
const STATEMENT_DAY_MIN: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

/// Reads `from` and `to` (`YYYY-MM-DD`, UTC days, from 1970 on): `to` defaults to today and is capped at today (a
/// statement of a day that has not ended yet shows it so far; later days have none); `from` defaults to 29 days
/// before `to`. Every bad field is reported: unreadable or out-of-range dates, `from` after `to` (or after today),
/// a range of more than [`STATEMENT_DAYS_MAX`] days.
pub fn statement_range(from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<StatementRange, ApiError> {
    let mut errors = Vec::new();
    let mut date = |field: &str, text: Option<&str>| {
        let parsed = NaiveDate::parse_from_str(text?, "%Y-%m-%d").ok().filter(|d| *d >= STATEMENT_DAY_MIN);
        if parsed.is_none() {
            errors.push(FieldError::new(field, "must be a date like 2026-01-31, from 1970-01-01 on"));
        }
        parsed
    };
    let (asked_from, asked_to) = (date("from", from), date("to", to));
    let to = asked_to.unwrap_or(today).min(today);
    if let Some(from) = asked_from {
        if from > to {
            errors.push(FieldError::new("from", "must not be after to, nor after today"));
        } else if (to - from).num_days() >= i64::from(STATEMENT_DAYS_MAX) {
            errors.push(FieldError::new("to", format!("the range may span at most {STATEMENT_DAYS_MAX} days")));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).recode(ErrorCode::ValidationFailed, ErrorCode::InvalidParameter));
    }
    let default_from = || to.checked_sub_days(chrono::Days::new(STATEMENT_DAYS_DEFAULT - 1)).unwrap_or(to);
    Ok(StatementRange { from: asked_from.unwrap_or_else(default_from).max(STATEMENT_DAY_MIN), to })
}

/// A user's statements for every day of `range`, per wallet (`currency`'s only, when given), ordered by day and
/// then currency. Quiet days carry the previous closing balance; days before a wallet's first movement have none.
pub async fn daily_statements(
    state: &AppState,
    mut reads: Reads<'_>,
    user_id: Uuid,
    currency: Option<Currency>,
    range: StatementRange,
) -> Result<Vec<(Currency, DayStatement)>, ApiError> {
    // A projection that cannot catch up (busy elsewhere for too long, or stuck on an event it cannot read) is
    // served as it stands; the lag shows in the metrics.
    match projector::catch_up(state, Projection::DailyStatements, FRESHNESS_WAIT).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("daily statements served before their projection caught up"),
        Err(err) => tracing::error!(error = %err, "daily statements served while their projection fails"),
    }
    // The projection is now up to date on the primary; a replica serves it once it has replayed that far.
    reads.include_primary_now().await;
    let query = StatementQuery { user_id, currency, from: range.from, to: range.to };
    let wallets = reads.statements(&query).await?;
    let mut days: Vec<(Currency, DayStatement)> = wallets
        .iter()
        .flat_map(|w| every_day(w.balance_before, &w.days, range.from, range.to).into_iter().map(|d| (w.currency, d)))
        .collect();
    days.sort_by(|(ca, a), (cb, b)| (a.date, ca.code()).cmp(&(b.date, cb.code())));
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn the_default_range_is_the_last_thirty_days() {
        let range = statement_range(None, None, day("2026-03-31")).expect("range");
        assert_eq!(range, StatementRange { from: day("2026-03-02"), to: day("2026-03-31") });
    }

    #[test]
    fn a_range_ending_in_the_future_ends_today() {
        let range = statement_range(Some("2026-03-01"), Some("2027-01-01"), day("2026-03-10")).expect("range");
        assert_eq!(range, StatementRange { from: day("2026-03-01"), to: day("2026-03-10") });
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = statement_range(Some("yesterday"), Some("2026-13-01"), day("2026-03-10")).expect_err("bad");
        assert_eq!(err.code(), ErrorCode::InvalidParameter);
        assert_eq!(format!("{err:?}").matches("must be a date").count(), 2, "{err:?}");
    }

    #[test]
    fn backwards_and_overlong_ranges_are_refused() {
        let today = day("2026-12-31");
        assert!(statement_range(Some("2026-03-02"), Some("2026-03-01"), today).is_err());
        assert!(statement_range(Some("2024-12-31"), Some("2026-01-01"), today).is_err(), "367 days");
        assert!(statement_range(Some("2025-01-01"), Some("2026-01-01"), today).is_ok(), "366 days");
    }

    #[test]
    fn the_span_is_checked_on_the_range_actually_served() {
        let today = day("2026-03-10");
        assert!(statement_range(Some("2020-01-01"), None, today).is_err(), "to defaults to today");
        assert!(statement_range(Some("2025-03-10"), Some("2030-01-01"), today).is_ok(), "to capped at today");
        assert!(statement_range(Some("2026-03-11"), None, today).is_err(), "from after today");
    }

    #[test]
    fn dates_outside_the_supported_years_are_refused_not_a_panic() {
        let today = day("2026-03-10");
        for text in ["-262143-01-01", "-100000-01-01", "1969-12-31", "+262142-12-31"] {
            assert!(statement_range(Some(text), None, today).is_err(), "from={text}");
        }
        assert!(statement_range(None, Some("-262143-01-05"), today).is_err());
        let earliest = statement_range(None, Some("1970-01-05"), today).expect("range");
        assert_eq!(earliest.from, day("1970-01-01"), "the default start stops at the earliest day");
    }
}
