//! Scheduled transactions: the calendar of a schedule, the rules for creating one, and what happens when an
//! occurrence fails.
//!
//! A schedule's n-th occurrence (n = 1, 2, …) is computed from its first execution instant (`execute_at`) and n
//! alone, never from when the previous occurrence actually ran, so a late or slow worker causes no drift. All
//! calendar arithmetic happens in UTC: a monthly schedule on the 31st runs on the last day of shorter months (in
//! UTC) and returns to the 31st afterwards.
//!
//! The worker that runs schedules (in the server) asks [`Calendar::due`] which occurrences to run, runs each once
//! with the idempotency key "schedule id + occurrence number", and consults [`retry_delay`], [`MAX_ATTEMPTS`] and
//! [`status_after_failed_occurrence`] when one fails. Nothing here reads a clock: every "now" is a parameter.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Days, Months, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{CoreError, Validation};
use crate::ledger::TransactionKind;

/// How often a recurring schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recurrence {
    /// Every day at the time of day of the first execution.
    Daily,
    /// Every seven days at the time of day of the first execution.
    Weekly,
    /// Every month on the first execution's day of the month, or the month's last day if it is shorter.
    Monthly,
    /// Every year on the first execution's date; 29 February falls on 28 February in years that are not leap years.
    Yearly,
}

impl Recurrence {
    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }
}

impl fmt::Display for Recurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Recurrence {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "daily" => Ok(Self::Daily),
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            "yearly" => Ok(Self::Yearly),
            _ => Err("must be one of: daily, weekly, monthly, yearly".to_owned()),
        }
    }
}

/// Whether a schedule runs once or repeatedly.
///
/// The API accepts `once` and `one-time` (the name the API it replaces used) for [`ScheduleKind::Once`]; banksim
/// always writes `once`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Runs a single time, at `execute_at`.
    #[serde(alias = "one-time")]
    Once,
    /// Runs at `execute_at` and then by its [`Recurrence`], until its end date or occurrence limit.
    Recurring,
}

impl ScheduleKind {
    /// The canonical API and database name (`once` or `recurring`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Recurring => "recurring",
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ScheduleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "once" | "one-time" => Ok(Self::Once),
            "recurring" => Ok(Self::Recurring),
            _ => Err("must be one of: once, one-time, recurring".to_owned()),
        }
    }
}

/// Where a schedule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleStatus {
    /// Runs when its next occurrence is due.
    Active,
    /// Does not run until resumed (by its owner, or after too many failed occurrences in a row, or because its
    /// owner was deactivated).
    Paused,
    /// Stopped for good by its owner.
    Cancelled,
    /// Ran every occurrence its calendar allows.
    Completed,
    /// A one-time schedule whose only occurrence failed.
    Failed,
}

impl ScheduleStatus {
    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Whether the schedule will never run again, whatever its owner does (it can be neither paused, resumed nor
    /// cancelled).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Completed | Self::Failed)
    }
}

impl fmt::Display for ScheduleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ScheduleStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            "cancelled" => Ok(Self::Cancelled),
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            _ => Err("must be one of: active, paused, cancelled, completed, failed".to_owned()),
        }
    }
}

/// A suggested bound for [`Calendar::due`]: how many missed occurrences of one schedule a worker runs in one pass.
/// The rest stay due and are picked up by the next pass, so a schedule that was down for years cannot monopolise
/// a worker.
pub const DUE_OCCURRENCES_MAX: usize = 100;

/// One occurrence of a schedule: its number (from 1) and the instant its calendar gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Occurrence {
    /// 1 for the first execution, 2 for the next, and so on.
    pub number: u32,
    /// When it is due, in UTC.
    pub at: DateTime<Utc>,
}

/// When a schedule's occurrences fall: its first instant, its recurrence, and where it ends.
///
/// Every occurrence is computed from `execute_at` and its number alone. The end date and the occurrence limit
/// apply to every kind of schedule; creation rules ([`validate_new_schedule`]) refuse them on one-time schedules,
/// where they would mean nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Calendar {
    /// The first occurrence, which also anchors every later one (time of day, day of month, date of year).
    pub execute_at: DateTime<Utc>,
    /// How the schedule repeats; `None` for a one-time schedule.
    pub recurrence: Option<Recurrence>,
    /// The last instant at which an occurrence may fall, inclusive: an occurrence at exactly this instant runs.
    pub recurrence_end_date: Option<DateTime<Utc>>,
    /// The most occurrences the schedule runs in all.
    pub max_occurrences: Option<u32>,
}

impl Calendar {
    /// The calendar of a one-time schedule at `execute_at`.
    pub fn once(execute_at: DateTime<Utc>) -> Self {
        Self { execute_at, recurrence: None, recurrence_end_date: None, max_occurrences: None }
    }

    /// The calendar of a recurring schedule, with an optional inclusive end date and occurrence limit.
    pub fn recurring(
        execute_at: DateTime<Utc>,
        recurrence: Recurrence,
        recurrence_end_date: Option<DateTime<Utc>>,
        max_occurrences: Option<u32>,
    ) -> Self {
        Self { execute_at, recurrence: Some(recurrence), recurrence_end_date, max_occurrences }
    }

    /// Whether the schedule runs once or repeatedly.
    pub fn kind(&self) -> ScheduleKind {
        if self.recurrence.is_some() { ScheduleKind::Recurring } else { ScheduleKind::Once }
    }

    /// The instant of occurrence `n` (counting from 1), or `None` if there is no such occurrence: `n` is 0, beyond
    /// the first of a one-time schedule, beyond `max_occurrences`, after the end date, or outside the range of
    /// instants chrono can represent. Never panics.
    ///
    /// - daily: `execute_at` + (n − 1) days;
    /// - weekly: `execute_at` + 7 (n − 1) days;
    /// - monthly: (n − 1) months after `execute_at`, at the same time of day, on `execute_at`'s day of the month or
    ///   the month's last day if the month is shorter (31 January → 28/29 February → 31 March);
    /// - yearly: (n − 1) years after `execute_at`, with 29 February on 28 February in years that are not leap.
    pub fn occurrence(&self, n: u32) -> Option<DateTime<Utc>> {
        if n == 0 || self.max_occurrences.is_some_and(|max| n > max) {
            return None;
        }
        let steps = n - 1;
        let at = match self.recurrence {
            None if steps == 0 => self.execute_at,
            None => return None,
            Some(Recurrence::Daily) => self.execute_at.checked_add_days(Days::new(u64::from(steps)))?,
            Some(Recurrence::Weekly) => self.execute_at.checked_add_days(Days::new(u64::from(steps) * 7))?,
            // chrono adds months to the original date and clamps its day to the target month's length, which is
            // exactly the anchor rule: the anchor is never lost to a short month in between.
            Some(Recurrence::Monthly) => self.execute_at.checked_add_months(Months::new(steps))?,
            Some(Recurrence::Yearly) => self.execute_at.checked_add_months(Months::new(steps.checked_mul(12)?))?,
        };
        match self.recurrence_end_date {
            Some(end) if at > end => None,
            _ => Some(at),
        }
    }

    /// The instant of the next occurrence once `completed` occurrences have been run (successfully or recorded as
    /// failed), or `None` if the schedule has none left. This is the schedule's `next_execution_at`.
    pub fn next_after(&self, completed: u32) -> Option<DateTime<Utc>> {
        self.occurrence(completed.checked_add(1)?)
    }

    /// Whether the schedule has no occurrence left once `completed` occurrences have been run.
    pub fn is_finished(&self, completed: u32) -> bool {
        self.next_after(completed).is_none()
    }

    /// Every occurrence after the first `completed` whose instant is at or before `now`, in order, at most
    /// `max_count` of them.
    ///
    /// After downtime this lists each missed occurrence once, oldest first, so the worker runs each of them once
    /// and in order. Occurrences beyond `max_count` stay due and are returned by the next call, once the worker
    /// has recorded the ones it ran (see [`DUE_OCCURRENCES_MAX`]).
    pub fn due(&self, completed: u32, now: DateTime<Utc>, max_count: usize) -> Vec<Occurrence> {
        let mut due = Vec::new();
        let mut number = completed;
        while due.len() < max_count {
            let Some(next) = number.checked_add(1) else { break };
            match self.occurrence(next) {
                Some(at) if at <= now => due.push(Occurrence { number: next, at }),
                _ => break,
            }
            number = next;
        }
        due
    }
}

/// A request to create a schedule, with its fields as the client sent them, so that every invalid field can be
/// reported at once. Amount, currency and description are checked by the money rules, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewScheduleInput<'a> {
    /// `credit`, `debit` or `transfer`.
    pub transaction_type: &'a str,
    /// `once`, `one-time` or `recurring`.
    pub schedule_type: &'a str,
    /// The first execution; required.
    pub execute_at: Option<DateTime<Utc>>,
    /// `daily`, `weekly`, `monthly` or `yearly`; required for a recurring schedule, refused on a one-time one.
    pub recurrence_pattern: Option<&'a str>,
    /// Inclusive end of a recurring schedule.
    pub recurrence_end_date: Option<DateTime<Utc>>,
    /// Occurrence limit of a recurring schedule, as sent (a wide integer, so that 0 and negative numbers are
    /// reported as field errors rather than as an unreadable body).
    pub max_occurrences: Option<i64>,
    /// The receiver of a transfer; refused on a credit or debit.
    pub to_user_id: Option<Uuid>,
    /// The user creating the schedule (who may not be the receiver of their own transfer).
    pub caller_id: Uuid,
}

/// A schedule request that passed every creation rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewSchedule {
    /// `credit`, `debit` or `transfer` (never `exchange`).
    pub transaction_type: TransactionKind,
    /// Once or recurring.
    pub schedule_type: ScheduleKind,
    /// The receiver, for a transfer only.
    pub to_user_id: Option<Uuid>,
    /// When the schedule runs.
    pub calendar: Calendar,
}

/// Checks a schedule request against every creation rule, reporting every invalid field at once.
///
/// See [`check_new_schedule`] for the rules; this is the same check with its own collector.
pub fn validate_new_schedule(input: &NewScheduleInput<'_>, now: DateTime<Utc>) -> Result<NewSchedule, CoreError> {
    let mut validation = Validation::new();
    let schedule = check_new_schedule(input, now, &mut validation);
    validation.finish()?;
    // `check_new_schedule` returns a schedule exactly when it recorded no error, so this fallback never happens;
    // it answers with a validation failure rather than a panic all the same.
    schedule.ok_or_else(|| CoreError::Validation(Vec::new()))
}

/// Checks a schedule request against every creation rule, recording each invalid field in `validation` (so that
/// the caller can add its own checks of amount, currency and description to the same report), and returns the
/// schedule when `validation` holds no error at all afterwards.
///
/// The rules, by field:
/// - `transaction_type`: one of `credit`, `debit`, `transfer`;
/// - `schedule_type`: one of `once`, `one-time`, `recurring`;
/// - `execute_at`: present and strictly after `now`, with no grace period: an instant at or before `now` would be
///   overdue the moment the schedule exists (a client that wants money moved now uses the transaction routes);
/// - `recurrence_pattern`: one of `daily`, `weekly`, `monthly`, `yearly`; required for a recurring schedule and
///   refused on a one-time one;
/// - `recurrence_end_date`: refused on a one-time schedule; not before `execute_at` (it may equal it: the end date
///   is inclusive, so that schedule runs once);
/// - `max_occurrences`: refused on a one-time schedule; at least 1 and at most `u32::MAX`;
/// - `to_user_id`: required for a transfer and refused on a credit or debit; a transfer to the caller themself is
///   refused.
pub fn check_new_schedule(
    input: &NewScheduleInput<'_>,
    now: DateTime<Utc>,
    validation: &mut Validation,
) -> Option<NewSchedule> {
    const NOT_ON_ONE_TIME: &str = "must not be set on a one-time schedule";

    let transaction_type =
        validation.check("transaction_type", parse_scheduled_transaction_type(input.transaction_type));
    let schedule_type = validation.check("schedule_type", input.schedule_type.parse::<ScheduleKind>());

    let execute_at = validation.check(
        "execute_at",
        match input.execute_at {
            None => Err("is required".to_owned()),
            Some(at) if at <= now => Err("must be in the future".to_owned()),
            Some(at) => Ok(at),
        },
    );

    let recurrence = match (schedule_type, input.recurrence_pattern) {
        (Some(ScheduleKind::Once), Some(_)) => {
            validation.add("recurrence_pattern", NOT_ON_ONE_TIME);
            None
        }
        (Some(ScheduleKind::Recurring), None) => {
            validation.add("recurrence_pattern", "is required for a recurring schedule");
            None
        }
        (_, Some(pattern)) => validation.check("recurrence_pattern", pattern.parse::<Recurrence>()),
        (_, None) => None,
    };

    if let Some(end) = input.recurrence_end_date {
        if schedule_type == Some(ScheduleKind::Once) {
            validation.add("recurrence_end_date", NOT_ON_ONE_TIME);
        } else if input.execute_at.is_some_and(|start| end < start) {
            validation.add("recurrence_end_date", "must not be before execute_at");
        }
    }

    let max_occurrences = match input.max_occurrences {
        None => None,
        Some(_) if schedule_type == Some(ScheduleKind::Once) => {
            validation.add("max_occurrences", NOT_ON_ONE_TIME);
            None
        }
        Some(max) if max < 1 => {
            validation.add("max_occurrences", "must be at least 1");
            None
        }
        Some(max) => {
            validation.check("max_occurrences", u32::try_from(max).map_err(|_| format!("must be at most {}", u32::MAX)))
        }
    };

    match (transaction_type, input.to_user_id) {
        (Some(TransactionKind::Transfer), None) => validation.add("to_user_id", "is required for a transfer"),
        (Some(TransactionKind::Transfer), Some(to)) if to == input.caller_id => {
            validation.add("to_user_id", "must not be your own user id: a transfer needs another receiver")
        }
        (Some(kind @ (TransactionKind::Credit | TransactionKind::Debit)), Some(_)) => {
            validation.add("to_user_id", format!("must not be set on a {kind}"))
        }
        _ => {}
    }

    if !validation.is_ok() {
        return None;
    }
    let (transaction_type, schedule_type, execute_at) = (transaction_type?, schedule_type?, execute_at?);
    let calendar = match schedule_type {
        ScheduleKind::Once => Calendar::once(execute_at),
        ScheduleKind::Recurring => {
            Calendar::recurring(execute_at, recurrence?, input.recurrence_end_date, max_occurrences)
        }
    };
    Some(NewSchedule { transaction_type, schedule_type, to_user_id: input.to_user_id, calendar })
}

/// Parses the transaction type of a schedule: an exchange cannot be scheduled, since its rate is only known when
/// it runs.
fn parse_scheduled_transaction_type(raw: &str) -> Result<TransactionKind, String> {
    const EXPECTED: &str = "must be one of: credit, debit, transfer";
    match raw.parse::<TransactionKind>() {
        Ok(kind @ (TransactionKind::Credit | TransactionKind::Debit | TransactionKind::Transfer)) => Ok(kind),
        Ok(TransactionKind::Exchange) | Err(_) => Err(EXPECTED.to_owned()),
    }
}

/// How many times one occurrence is attempted (the first try included) before it is recorded as failed.
pub const MAX_ATTEMPTS: u32 = 5;

/// After this many failed occurrences in a row, a recurring schedule pauses until its owner resumes it.
pub const CONSECUTIVE_FAILURES_BEFORE_PAUSE: u32 = 3;

/// The wait before the first retry of a failed attempt; each later retry waits twice as long as the one before.
pub const RETRY_DELAY_BASE: Duration = Duration::from_secs(1);

/// The longest wait between two attempts of one occurrence.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

/// Whether an occurrence whose attempt number `failed_attempt` (counting from 1) just failed gets another attempt.
pub fn should_retry(failed_attempt: u32) -> bool {
    failed_attempt < MAX_ATTEMPTS
}

/// How long to wait after attempt number `failed_attempt` (counting from 1) failed before the next attempt:
/// 1 s, 2 s, 4 s, … doubling up to [`RETRY_DELAY_MAX`]. Attempt 0 is treated as attempt 1.
pub fn retry_delay(failed_attempt: u32) -> Duration {
    let doublings = failed_attempt.saturating_sub(1);
    2_u32
        .checked_pow(doublings)
        .and_then(|factor| RETRY_DELAY_BASE.checked_mul(factor))
        .map_or(RETRY_DELAY_MAX, |delay| delay.min(RETRY_DELAY_MAX))
}

/// The status of a schedule after one of its occurrences was recorded as failed (every attempt failed).
///
/// `consecutive_failures` counts the failed occurrences in a row, this one included; `finished` says whether the
/// calendar has no occurrence left ([`Calendar::is_finished`]). A one-time schedule ends `failed`. A recurring
/// schedule moves on to its next occurrence, is `completed` if it has none, and pauses after
/// [`CONSECUTIVE_FAILURES_BEFORE_PAUSE`] failed occurrences in a row, so that it does not keep failing unseen.
pub fn status_after_failed_occurrence(kind: ScheduleKind, consecutive_failures: u32, finished: bool) -> ScheduleStatus {
    match kind {
        ScheduleKind::Once => ScheduleStatus::Failed,
        ScheduleKind::Recurring if finished => ScheduleStatus::Completed,
        ScheduleKind::Recurring if consecutive_failures >= CONSECUTIVE_FAILURES_BEFORE_PAUSE => ScheduleStatus::Paused,
        ScheduleKind::Recurring => ScheduleStatus::Active,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
    use proptest::prelude::*;

    use super::*;

    fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, hour, minute, second).single().expect("valid test instant")
    }

    fn date(at: DateTime<Utc>) -> (i32, u32, u32) {
        (at.year(), at.month(), at.day())
    }

    fn days_in_month(year: i32, month: u32) -> u32 {
        let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        NaiveDate::from_ymd_opt(next_year, next_month, 1)
            .and_then(|first| first.pred_opt())
            .map_or(31, |last| last.day())
    }

    fn monthly(execute_at: DateTime<Utc>) -> Calendar {
        Calendar::recurring(execute_at, Recurrence::Monthly, None, None)
    }

    fn yearly(execute_at: DateTime<Utc>) -> Calendar {
        Calendar::recurring(execute_at, Recurrence::Yearly, None, None)
    }

    #[test]
    fn recurrences_parse_from_and_print_their_api_names() {
        for (name, recurrence) in [
            ("daily", Recurrence::Daily),
            ("weekly", Recurrence::Weekly),
            ("monthly", Recurrence::Monthly),
            ("yearly", Recurrence::Yearly),
        ] {
            assert_eq!(name.parse::<Recurrence>(), Ok(recurrence));
            assert_eq!(recurrence.as_str(), name);
            assert_eq!(recurrence.to_string(), name);
        }
        for bad in ["", "Daily", "hourly", "annually"] {
            assert!(bad.parse::<Recurrence>().is_err(), "{bad}");
        }
    }

    fn deserialize<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, serde::de::value::Error> {
        use serde::de::IntoDeserializer;
        T::deserialize(name.into_deserializer())
    }

    #[test]
    fn recurrences_deserialize_from_their_lower_case_names_only() {
        assert_eq!(deserialize::<Recurrence>("weekly"), Ok(Recurrence::Weekly));
        assert_eq!(deserialize::<Recurrence>("yearly"), Ok(Recurrence::Yearly));
        assert!(deserialize::<Recurrence>("Weekly").is_err());
    }

    #[test]
    fn schedule_kinds_accept_once_and_one_time_and_are_written_once() {
        for (name, kind) in
            [("once", ScheduleKind::Once), ("one-time", ScheduleKind::Once), ("recurring", ScheduleKind::Recurring)]
        {
            assert_eq!(name.parse::<ScheduleKind>(), Ok(kind), "{name}");
            assert_eq!(deserialize::<ScheduleKind>(name), Ok(kind), "{name}");
        }
        assert_eq!(ScheduleKind::Once.as_str(), "once");
        assert_eq!(ScheduleKind::Recurring.to_string(), "recurring");
        for bad in ["", "one_time", "Once", "daily"] {
            assert!(bad.parse::<ScheduleKind>().is_err(), "{bad}");
            assert!(deserialize::<ScheduleKind>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedule_statuses_round_trip_through_their_names_and_know_which_are_final() {
        for (status, is_final) in [
            (ScheduleStatus::Active, false),
            (ScheduleStatus::Paused, false),
            (ScheduleStatus::Cancelled, true),
            (ScheduleStatus::Completed, true),
            (ScheduleStatus::Failed, true),
        ] {
            assert_eq!(status.as_str().parse::<ScheduleStatus>(), Ok(status));
            assert_eq!(deserialize::<ScheduleStatus>(status.as_str()), Ok(status));
            assert_eq!(status.is_final(), is_final, "{status}");
        }
        assert!("canceled".parse::<ScheduleStatus>().is_err());
    }

    #[test]
    fn a_one_time_schedule_has_exactly_one_occurrence() {
        let at = utc(2024, 3, 1, 9, 0, 0);
        let calendar = Calendar::once(at);
        assert_eq!(calendar.kind(), ScheduleKind::Once);
        assert_eq!(calendar.occurrence(0), None);
        assert_eq!(calendar.occurrence(1), Some(at));
        assert_eq!(calendar.occurrence(2), None);
        assert_eq!(calendar.occurrence(u32::MAX), None);
        assert_eq!(calendar.next_after(0), Some(at));
        assert_eq!(calendar.next_after(1), None);
        assert!(!calendar.is_finished(0));
        assert!(calendar.is_finished(1));
    }

    #[test]
    fn occurrence_zero_never_exists() {
        for recurrence in [Recurrence::Daily, Recurrence::Weekly, Recurrence::Monthly, Recurrence::Yearly] {
            let calendar = Calendar::recurring(utc(2024, 1, 1, 0, 0, 0), recurrence, None, None);
            assert_eq!(calendar.occurrence(0), None, "{recurrence}");
            assert_eq!(calendar.occurrence(1), Some(calendar.execute_at), "{recurrence}");
        }
    }

    #[test]
    fn daily_and_weekly_occurrences_step_over_leap_days_by_whole_days() {
        let cases = [
            // (recurrence, first, n, expected date)
            (Recurrence::Daily, utc(2024, 2, 28, 8, 15, 0), 2, (2024, 2, 29)),
            (Recurrence::Daily, utc(2024, 2, 28, 8, 15, 0), 3, (2024, 3, 1)),
            (Recurrence::Daily, utc(2023, 2, 28, 8, 15, 0), 2, (2023, 3, 1)),
            (Recurrence::Daily, utc(2025, 2, 28, 8, 15, 0), 2, (2025, 3, 1)),
            (Recurrence::Daily, utc(2100, 2, 28, 8, 15, 0), 2, (2100, 3, 1)),
            (Recurrence::Daily, utc(2000, 2, 28, 8, 15, 0), 2, (2000, 2, 29)),
            (Recurrence::Daily, utc(2024, 12, 31, 8, 15, 0), 2, (2025, 1, 1)),
            (Recurrence::Daily, utc(2024, 1, 1, 8, 15, 0), 367, (2025, 1, 1)),
            (Recurrence::Daily, utc(2023, 1, 1, 8, 15, 0), 366, (2024, 1, 1)),
            (Recurrence::Weekly, utc(2024, 2, 22, 8, 15, 0), 2, (2024, 2, 29)),
            (Recurrence::Weekly, utc(2024, 2, 22, 8, 15, 0), 3, (2024, 3, 7)),
            (Recurrence::Weekly, utc(2023, 2, 22, 8, 15, 0), 2, (2023, 3, 1)),
            (Recurrence::Weekly, utc(2100, 2, 22, 8, 15, 0), 2, (2100, 3, 1)),
            (Recurrence::Weekly, utc(2000, 2, 22, 8, 15, 0), 2, (2000, 2, 29)),
            (Recurrence::Weekly, utc(2024, 12, 30, 8, 15, 0), 2, (2025, 1, 6)),
        ];
        for (recurrence, first, n, expected) in cases {
            let at = Calendar::recurring(first, recurrence, None, None).occurrence(n).expect("in range");
            assert_eq!(date(at), expected, "{recurrence} from {first}, occurrence {n}");
            assert_eq!(at.time(), first.time(), "{recurrence} from {first}, occurrence {n}");
        }
    }

    #[test]
    fn occurrence_1000_of_a_daily_schedule_is_exactly_999_days_after_the_first() {
        let first = utc(2024, 1, 31, 23, 59, 59) + chrono::TimeDelta::nanoseconds(123_456_789);
        let daily = Calendar::recurring(first, Recurrence::Daily, None, None);
        assert_eq!(daily.occurrence(1000), Some(first + chrono::TimeDelta::days(999)));
        let weekly = Calendar::recurring(first, Recurrence::Weekly, None, None);
        assert_eq!(weekly.occurrence(1000), Some(first + chrono::TimeDelta::days(999 * 7)));
    }

    #[test]
    fn a_monthly_schedule_on_the_31st_runs_on_each_month_end_over_a_whole_year() {
        let leap = [(2024, 1, 31), (2024, 2, 29), (2024, 3, 31), (2024, 4, 30), (2024, 5, 31), (2024, 6, 30)];
        let leap_rest = [(2024, 7, 31), (2024, 8, 31), (2024, 9, 30), (2024, 10, 31), (2024, 11, 30), (2024, 12, 31)];
        let first = utc(2024, 1, 31, 10, 30, 0);
        let calendar = monthly(first);
        for (n, expected) in (1..).zip(leap.into_iter().chain(leap_rest).chain([(2025, 1, 31), (2025, 2, 28)])) {
            let at = calendar.occurrence(n).expect("in range");
            assert_eq!(date(at), expected, "occurrence {n}");
            assert_eq!(at.time(), first.time(), "occurrence {n}");
        }
    }

    #[test]
    fn january_31st_monthly_lands_on_february_28th_or_29th_by_leap_year() {
        for (year, february_end) in [(2023, 28), (2024, 29), (2025, 28), (2100, 28), (2000, 29)] {
            let calendar = monthly(utc(year, 1, 31, 12, 0, 0));
            assert_eq!(calendar.occurrence(2).map(date), Some((year, 2, february_end)), "{year}");
            assert_eq!(calendar.occurrence(3).map(date), Some((year, 3, 31)), "{year}");
        }
    }

    #[test]
    fn the_monthly_anchor_day_returns_after_a_short_month() {
        let cases = [
            // (first, the dates of occurrences 2, 3 and 4)
            (utc(2023, 1, 30, 6, 0, 0), [(2023, 2, 28), (2023, 3, 30), (2023, 4, 30)]),
            (utc(2024, 1, 29, 6, 0, 0), [(2024, 2, 29), (2024, 3, 29), (2024, 4, 29)]),
            (utc(2023, 1, 29, 6, 0, 0), [(2023, 2, 28), (2023, 3, 29), (2023, 4, 29)]),
            (utc(2024, 8, 31, 6, 0, 0), [(2024, 9, 30), (2024, 10, 31), (2024, 11, 30)]),
            (utc(2024, 3, 31, 6, 0, 0), [(2024, 4, 30), (2024, 5, 31), (2024, 6, 30)]),
            (utc(2099, 12, 31, 6, 0, 0), [(2100, 1, 31), (2100, 2, 28), (2100, 3, 31)]),
            (utc(1999, 12, 31, 6, 0, 0), [(2000, 1, 31), (2000, 2, 29), (2000, 3, 31)]),
        ];
        for (first, expected) in cases {
            let calendar = monthly(first);
            for (n, expected) in (2..).zip(expected) {
                assert_eq!(calendar.occurrence(n).map(date), Some(expected), "from {first}, occurrence {n}");
            }
        }
    }

    #[test]
    fn a_yearly_schedule_on_29_february_falls_on_28_february_outside_leap_years_for_8_years() {
        let first = utc(2024, 2, 29, 7, 45, 30);
        let calendar = yearly(first);
        let expected = [
            (2024, 2, 29),
            (2025, 2, 28),
            (2026, 2, 28),
            (2027, 2, 28),
            (2028, 2, 29),
            (2029, 2, 28),
            (2030, 2, 28),
            (2031, 2, 28),
            (2032, 2, 29),
        ];
        for (n, expected) in (1..).zip(expected) {
            let at = calendar.occurrence(n).expect("in range");
            assert_eq!(date(at), expected, "occurrence {n}");
            assert_eq!(at.time(), first.time(), "occurrence {n}");
        }
    }

    #[test]
    fn yearly_schedules_follow_the_gregorian_century_rule() {
        let from_2096 = yearly(utc(2096, 2, 29, 0, 0, 0));
        assert_eq!(from_2096.occurrence(5).map(date), Some((2100, 2, 28)));
        assert_eq!(from_2096.occurrence(9).map(date), Some((2104, 2, 29)));
        let from_1996 = yearly(utc(1996, 2, 29, 0, 0, 0));
        assert_eq!(from_1996.occurrence(5).map(date), Some((2000, 2, 29)));
        let from_2023 = yearly(utc(2023, 3, 1, 0, 0, 0));
        assert_eq!(from_2023.occurrence(2).map(date), Some((2024, 3, 1)));
    }

    #[test]
    fn the_end_date_is_inclusive() {
        let first = utc(2024, 1, 1, 9, 0, 0);
        let ends_on_the_fifth = Calendar::recurring(first, Recurrence::Daily, Some(utc(2024, 1, 5, 9, 0, 0)), None);
        assert_eq!(ends_on_the_fifth.occurrence(5), Some(utc(2024, 1, 5, 9, 0, 0)));
        assert_eq!(ends_on_the_fifth.occurrence(6), None);
        assert!(!ends_on_the_fifth.is_finished(4));
        assert!(ends_on_the_fifth.is_finished(5));

        let ends_just_before = Calendar::recurring(first, Recurrence::Daily, Some(utc(2024, 1, 5, 8, 59, 59)), None);
        assert_eq!(ends_just_before.occurrence(4), Some(utc(2024, 1, 4, 9, 0, 0)));
        assert_eq!(ends_just_before.occurrence(5), None);
        assert!(ends_just_before.is_finished(4));

        let ends_at_the_start = Calendar::recurring(first, Recurrence::Monthly, Some(first), None);
        assert_eq!(ends_at_the_start.occurrence(1), Some(first));
        assert_eq!(ends_at_the_start.occurrence(2), None);
    }

    #[test]
    fn max_occurrences_limits_the_number_of_runs() {
        let first = utc(2024, 1, 31, 9, 0, 0);
        let three = Calendar::recurring(first, Recurrence::Monthly, None, Some(3));
        assert_eq!(three.occurrence(3).map(date), Some((2024, 3, 31)));
        assert_eq!(three.occurrence(4), None);
        assert_eq!(three.next_after(2).map(date), Some((2024, 3, 31)));
        assert_eq!(three.next_after(3), None);
        assert!(three.is_finished(3));

        let none = Calendar::recurring(first, Recurrence::Daily, None, Some(0));
        assert_eq!(none.occurrence(1), None);
        assert!(none.is_finished(0));
    }

    #[test]
    fn the_end_date_and_max_occurrences_stop_a_schedule_at_whichever_comes_first() {
        let first = utc(2024, 1, 1, 9, 0, 0);
        let end_first = Calendar::recurring(first, Recurrence::Weekly, Some(utc(2024, 1, 15, 9, 0, 0)), Some(10));
        assert_eq!(end_first.occurrence(3), Some(utc(2024, 1, 15, 9, 0, 0)));
        assert_eq!(end_first.occurrence(4), None);
        let max_first = Calendar::recurring(first, Recurrence::Weekly, Some(utc(2025, 1, 1, 0, 0, 0)), Some(2));
        assert_eq!(max_first.occurrence(2), Some(utc(2024, 1, 8, 9, 0, 0)));
        assert_eq!(max_first.occurrence(3), None);
    }

    #[test]
    fn occurrences_beyond_chronos_range_are_none_instead_of_a_panic() {
        // chrono's last year is 262 142, so every occurrence that would fall in the year 262 143 does not exist.
        let last_month = utc(262_142, 12, 1, 0, 0, 0);
        assert_eq!(monthly(last_month).occurrence(1), Some(last_month));
        assert_eq!(monthly(last_month).occurrence(2), None);
        assert_eq!(monthly(last_month).occurrence(u32::MAX), None);
        assert_eq!(yearly(utc(262_142, 2, 28, 0, 0, 0)).occurrence(2), None);
        assert_eq!(yearly(utc(2024, 1, 1, 0, 0, 0)).occurrence(u32::MAX), None);

        let max = DateTime::<Utc>::MAX_UTC;
        for recurrence in [Recurrence::Daily, Recurrence::Weekly, Recurrence::Monthly, Recurrence::Yearly] {
            let calendar = Calendar::recurring(max, recurrence, None, None);
            assert_eq!(calendar.occurrence(1), Some(max), "{recurrence}");
            assert_eq!(calendar.occurrence(2), None, "{recurrence}");
            assert_eq!(calendar.next_after(u32::MAX), None, "{recurrence}");
            assert!(calendar.is_finished(1), "{recurrence}");
            assert_eq!(calendar.due(0, max, 10), vec![Occurrence { number: 1, at: max }], "{recurrence}");
            assert_eq!(calendar.due(u32::MAX, max, 10), vec![], "{recurrence}");
        }

        let min = DateTime::<Utc>::MIN_UTC;
        let from_min = Calendar::recurring(min, Recurrence::Daily, None, None);
        assert_eq!(from_min.occurrence(2), Some(min + chrono::TimeDelta::days(1)));
        assert_eq!(from_min.occurrence(u32::MAX), None);
    }

    #[test]
    fn due_after_a_long_downtime_lists_each_missed_occurrence_once_in_order() {
        let first = utc(2024, 1, 1, 9, 0, 0);
        let calendar = Calendar::recurring(first, Recurrence::Daily, None, None);
        let now = utc(2024, 1, 10, 12, 0, 0);
        let due = calendar.due(0, now, DUE_OCCURRENCES_MAX);
        let expected: Vec<Occurrence> =
            (1..=10).map(|n| Occurrence { number: n, at: first + chrono::TimeDelta::days(i64::from(n) - 1) }).collect();
        assert_eq!(due, expected);

        // Once they ran, nothing is due until the next instant, which is due at exactly that instant.
        assert_eq!(calendar.due(10, now, DUE_OCCURRENCES_MAX), vec![]);
        assert_eq!(calendar.due(10, utc(2024, 1, 11, 8, 59, 59), DUE_OCCURRENCES_MAX), vec![]);
        assert_eq!(
            calendar.due(10, utc(2024, 1, 11, 9, 0, 0), DUE_OCCURRENCES_MAX),
            vec![Occurrence { number: 11, at: utc(2024, 1, 11, 9, 0, 0) }]
        );
        // Having run only some of them, the rest are still due.
        assert_eq!(calendar.due(7, now, DUE_OCCURRENCES_MAX).iter().map(|o| o.number).collect::<Vec<_>>(), [8, 9, 10]);
    }

    #[test]
    fn due_is_bounded_and_years_of_downtime_drain_in_order_without_repeats() {
        let first = utc(2020, 1, 31, 9, 0, 0);
        let calendar = Calendar::recurring(first, Recurrence::Daily, None, None);
        let now = utc(2024, 1, 31, 9, 0, 0);
        assert_eq!(calendar.due(0, now, 0), vec![]);
        assert_eq!(calendar.due(0, now, 100).len(), 100);

        let mut completed = 0;
        let mut ran = Vec::new();
        loop {
            let batch = calendar.due(completed, now, 100);
            assert!(batch.len() <= 100);
            let Some(last) = batch.last() else { break };
            completed = last.number;
            ran.extend(batch);
        }
        let days = (now - first).num_days();
        assert_eq!(ran.len() as i64, days + 1, "every day from the first to now, both included");
        assert!(ran.windows(2).all(|pair| pair[1].number == pair[0].number + 1 && pair[0].at < pair[1].at));
        assert_eq!(ran.last().map(|o| o.at), Some(now));
    }

    #[test]
    fn due_stops_at_the_end_date_max_occurrences_and_a_one_time_schedule() {
        let first = utc(2024, 1, 1, 9, 0, 0);
        let now = utc(2030, 1, 1, 0, 0, 0);
        let until = Calendar::recurring(first, Recurrence::Monthly, Some(utc(2024, 6, 1, 9, 0, 0)), None);
        assert_eq!(until.due(0, now, 100).len(), 6);
        let limited = Calendar::recurring(first, Recurrence::Monthly, None, Some(4));
        assert_eq!(limited.due(2, now, 100).iter().map(|o| o.number).collect::<Vec<_>>(), [3, 4]);
        let once = Calendar::once(first);
        assert_eq!(once.due(0, utc(2024, 1, 1, 8, 59, 59), 100), vec![]);
        assert_eq!(once.due(0, now, 100), vec![Occurrence { number: 1, at: first }]);
        assert_eq!(once.due(1, now, 100), vec![]);
    }

    fn caller() -> Uuid {
        Uuid::from_u128(1)
    }

    fn other_user() -> Uuid {
        Uuid::from_u128(2)
    }

    fn now() -> DateTime<Utc> {
        utc(2024, 5, 1, 12, 0, 0)
    }

    fn recurring_transfer() -> NewScheduleInput<'static> {
        NewScheduleInput {
            transaction_type: "transfer",
            schedule_type: "recurring",
            execute_at: Some(utc(2024, 5, 31, 9, 0, 0)),
            recurrence_pattern: Some("monthly"),
            recurrence_end_date: Some(utc(2025, 5, 31, 9, 0, 0)),
            max_occurrences: Some(12),
            to_user_id: Some(other_user()),
            caller_id: caller(),
        }
    }

    fn one_time_credit() -> NewScheduleInput<'static> {
        NewScheduleInput {
            transaction_type: "credit",
            schedule_type: "one-time",
            execute_at: Some(utc(2024, 5, 1, 12, 0, 1)),
            recurrence_pattern: None,
            recurrence_end_date: None,
            max_occurrences: None,
            to_user_id: None,
            caller_id: caller(),
        }
    }

    fn failing_fields(input: &NewScheduleInput<'_>) -> Vec<String> {
        match validate_new_schedule(input, now()) {
            Ok(_) => Vec::new(),
            Err(CoreError::Validation(errors)) => errors.into_iter().map(|error| error.field).collect(),
        }
    }

    #[test]
    fn a_valid_recurring_transfer_is_accepted_with_its_calendar() {
        let schedule = validate_new_schedule(&recurring_transfer(), now()).expect("valid");
        assert_eq!(schedule.transaction_type, TransactionKind::Transfer);
        assert_eq!(schedule.schedule_type, ScheduleKind::Recurring);
        assert_eq!(schedule.to_user_id, Some(other_user()));
        assert_eq!(
            schedule.calendar,
            Calendar::recurring(
                utc(2024, 5, 31, 9, 0, 0),
                Recurrence::Monthly,
                Some(utc(2025, 5, 31, 9, 0, 0)),
                Some(12)
            )
        );
    }

    #[test]
    fn a_valid_one_time_credit_is_accepted_as_once() {
        let schedule = validate_new_schedule(&one_time_credit(), now()).expect("valid");
        assert_eq!(schedule.transaction_type, TransactionKind::Credit);
        assert_eq!(schedule.schedule_type, ScheduleKind::Once);
        assert_eq!(schedule.calendar, Calendar::once(utc(2024, 5, 1, 12, 0, 1)));
        let debit = NewScheduleInput { transaction_type: "debit", schedule_type: "once", ..one_time_credit() };
        assert_eq!(validate_new_schedule(&debit, now()).map(|s| s.transaction_type), Ok(TransactionKind::Debit));
    }

    #[test]
    fn a_recurring_schedule_may_end_exactly_at_its_first_execution_or_have_no_end() {
        let start = recurring_transfer().execute_at;
        let ends_at_start = NewScheduleInput { recurrence_end_date: start, ..recurring_transfer() };
        assert_eq!(failing_fields(&ends_at_start), Vec::<String>::new());
        let open = NewScheduleInput { recurrence_end_date: None, max_occurrences: None, ..recurring_transfer() };
        assert_eq!(failing_fields(&open), Vec::<String>::new());
        let max = NewScheduleInput { max_occurrences: Some(i64::from(u32::MAX)), ..recurring_transfer() };
        assert_eq!(failing_fields(&max), Vec::<String>::new());
    }

    #[test]
    fn each_creation_rule_reports_its_field() {
        let transfer = recurring_transfer();
        let credit = one_time_credit();
        let cases: Vec<(&str, NewScheduleInput<'_>, &str)> = vec![
            ("execute_at now", NewScheduleInput { execute_at: Some(now()), ..credit }, "execute_at"),
            (
                "execute_at past",
                NewScheduleInput { execute_at: Some(utc(2024, 4, 30, 12, 0, 0)), ..credit },
                "execute_at",
            ),
            ("execute_at missing", NewScheduleInput { execute_at: None, ..credit }, "execute_at"),
            ("exchange", NewScheduleInput { transaction_type: "exchange", ..credit }, "transaction_type"),
            ("unknown type", NewScheduleInput { transaction_type: "Credit", ..credit }, "transaction_type"),
            ("unknown schedule type", NewScheduleInput { schedule_type: "monthly", ..credit }, "schedule_type"),
            ("pattern on once", NewScheduleInput { recurrence_pattern: Some("daily"), ..credit }, "recurrence_pattern"),
            ("no pattern", NewScheduleInput { recurrence_pattern: None, ..transfer }, "recurrence_pattern"),
            ("bad pattern", NewScheduleInput { recurrence_pattern: Some("hourly"), ..transfer }, "recurrence_pattern"),
            (
                "end before start",
                NewScheduleInput { recurrence_end_date: Some(utc(2024, 5, 31, 8, 59, 59)), ..transfer },
                "recurrence_end_date",
            ),
            (
                "end on once",
                NewScheduleInput { recurrence_end_date: Some(utc(2024, 6, 1, 0, 0, 0)), ..credit },
                "recurrence_end_date",
            ),
            ("max zero", NewScheduleInput { max_occurrences: Some(0), ..transfer }, "max_occurrences"),
            ("max negative", NewScheduleInput { max_occurrences: Some(-3), ..transfer }, "max_occurrences"),
            (
                "max too large",
                NewScheduleInput { max_occurrences: Some(i64::from(u32::MAX) + 1), ..transfer },
                "max_occurrences",
            ),
            ("max on once", NewScheduleInput { max_occurrences: Some(1), ..credit }, "max_occurrences"),
            ("receiver on credit", NewScheduleInput { to_user_id: Some(other_user()), ..credit }, "to_user_id"),
            (
                "receiver on debit",
                NewScheduleInput { transaction_type: "debit", to_user_id: Some(other_user()), ..credit },
                "to_user_id",
            ),
            ("transfer without receiver", NewScheduleInput { to_user_id: None, ..transfer }, "to_user_id"),
            ("transfer to self", NewScheduleInput { to_user_id: Some(caller()), ..transfer }, "to_user_id"),
        ];
        for (case, input, field) in cases {
            assert_eq!(failing_fields(&input), [field], "{case}");
        }
    }

    #[test]
    fn every_failing_field_is_reported_at_once_with_a_message() {
        let input = NewScheduleInput {
            transaction_type: "credit",
            schedule_type: "once",
            execute_at: Some(utc(2024, 1, 1, 0, 0, 0)),
            recurrence_pattern: Some("weekly"),
            recurrence_end_date: Some(utc(2024, 2, 1, 0, 0, 0)),
            max_occurrences: Some(0),
            to_user_id: Some(other_user()),
            caller_id: caller(),
        };
        let Err(CoreError::Validation(errors)) = validate_new_schedule(&input, now()) else {
            panic!("expected errors")
        };
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            ["execute_at", "recurrence_pattern", "recurrence_end_date", "max_occurrences", "to_user_id"]
        );
        assert!(errors.iter().all(|error| !error.message.is_empty()));
        assert_eq!(errors[4].message, "must not be set on a credit");
    }

    #[test]
    fn unparsable_types_still_let_the_other_fields_be_checked() {
        let input = NewScheduleInput {
            transaction_type: "wire",
            schedule_type: "sometimes",
            execute_at: None,
            recurrence_pattern: Some("hourly"),
            recurrence_end_date: Some(utc(2024, 1, 1, 0, 0, 0)),
            max_occurrences: Some(-1),
            to_user_id: Some(caller()),
            caller_id: caller(),
        };
        assert_eq!(
            failing_fields(&input),
            ["transaction_type", "schedule_type", "execute_at", "recurrence_pattern", "max_occurrences"]
        );
    }

    #[test]
    fn checking_a_schedule_adds_to_the_callers_own_report() {
        let mut validation = Validation::new();
        validation.add("amount", "must be greater than zero");
        assert_eq!(check_new_schedule(&recurring_transfer(), now(), &mut validation), None);
        let bad = NewScheduleInput { to_user_id: None, ..recurring_transfer() };
        assert_eq!(check_new_schedule(&bad, now(), &mut validation), None);
        let Err(CoreError::Validation(errors)) = validation.finish() else { panic!("expected errors") };
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["amount", "to_user_id"]);
    }

    #[test]
    fn retry_delays_double_from_one_second_up_to_the_cap() {
        let delays: Vec<u64> = (1..=9).map(|attempt| retry_delay(attempt).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(0), RETRY_DELAY_BASE);
        assert_eq!(retry_delay(33), RETRY_DELAY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_DELAY_MAX);
    }

    #[test]
    fn an_occurrence_is_attempted_at_most_max_attempts_times() {
        let attempts = (1..).take_while(|&attempt| attempt == 1 || should_retry(attempt - 1)).count();
        assert_eq!(attempts, MAX_ATTEMPTS as usize);
        assert!(!should_retry(MAX_ATTEMPTS));
        assert!(!should_retry(u32::MAX));
    }

    #[test]
    fn a_failed_occurrence_ends_a_one_time_schedule_and_pauses_a_recurring_one_after_repeated_failures() {
        use ScheduleKind::{Once, Recurring};
        use ScheduleStatus::{Active, Completed, Failed, Paused};
        let pause_at = CONSECUTIVE_FAILURES_BEFORE_PAUSE;
        let cases = [
            (Once, 1, true, Failed),
            (Once, pause_at, true, Failed),
            (Recurring, 1, false, Active),
            (Recurring, pause_at - 1, false, Active),
            (Recurring, pause_at, false, Paused),
            (Recurring, pause_at + 5, false, Paused),
            (Recurring, 1, true, Completed),
            (Recurring, pause_at, true, Completed),
        ];
        for (kind, consecutive_failures, finished, expected) in cases {
            assert_eq!(
                status_after_failed_occurrence(kind, consecutive_failures, finished),
                expected,
                "{kind} after {consecutive_failures} failures, finished: {finished}"
            );
        }
    }

    /// Any instant chrono can represent, leap-second representations included.
    fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
        let seconds = DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp();
        (seconds, 0_u32..2_000_000_000)
            .prop_filter_map("not a representable instant", |(seconds, nanos)| DateTime::from_timestamp(seconds, nanos))
    }

    /// An instant between the years -9999 and 9999, where every calendar has room for a few thousand occurrences.
    fn ordinary_instant() -> impl Strategy<Value = DateTime<Utc>> {
        let seconds = utc(-9999, 1, 1, 0, 0, 0).timestamp()..=utc(9999, 12, 31, 23, 59, 59).timestamp();
        (seconds, 0_u32..1_000_000_000)
            .prop_filter_map("not a representable instant", |(seconds, nanos)| DateTime::from_timestamp(seconds, nanos))
    }

    fn any_recurrence() -> impl Strategy<Value = Option<Recurrence>> {
        prop_oneof![
            Just(None),
            Just(Some(Recurrence::Daily)),
            Just(Some(Recurrence::Weekly)),
            Just(Some(Recurrence::Monthly)),
            Just(Some(Recurrence::Yearly)),
        ]
    }

    fn any_occurrence_number() -> impl Strategy<Value = u32> {
        prop_oneof![1_u32..5_000, any::<u32>()]
    }

    proptest! {
        #[test]
        fn occurrences_are_strictly_increasing_and_end_for_good(
            execute_at in any_instant(),
            recurrence in any_recurrence(),
            n in any_occurrence_number(),
        ) {
            let calendar = Calendar { execute_at, recurrence, recurrence_end_date: None, max_occurrences: None };
            let (this, next) = (calendar.occurrence(n), n.checked_add(1).and_then(|next| calendar.occurrence(next)));
            match (this, next) {
                (Some(this), Some(next)) => prop_assert!(this < next, "{this} then {next}"),
                (None, Some(next)) => prop_assert!(false, "occurrence {n} missing before {next}"),
                _ => {}
            }
        }

        #[test]
        fn consecutive_occurrences_in_ordinary_years_always_exist_and_increase(
            execute_at in ordinary_instant(),
            recurrence in any_recurrence().prop_filter("recurring", Option::is_some),
            n in 1_u32..2_000,
        ) {
            let calendar = Calendar { execute_at, recurrence, recurrence_end_date: None, max_occurrences: None };
            let this = calendar.occurrence(n).expect("in range");
            let next = calendar.occurrence(n + 1).expect("in range");
            prop_assert!(this < next);
            prop_assert_eq!(this.time(), execute_at.time());
        }

        #[test]
        fn monthly_occurrences_keep_the_time_of_day_and_clamp_the_anchor_day(
            execute_at in ordinary_instant(),
            n in 1_u32..2_000,
        ) {
            let at = monthly(execute_at).occurrence(n).expect("in range");
            prop_assert_eq!(at.time(), execute_at.time());
            let months = |at: DateTime<Utc>| i64::from(at.year()) * 12 + i64::from(at.month0());
            prop_assert_eq!(months(at) - months(execute_at), i64::from(n) - 1);
            prop_assert_eq!(at.day(), execute_at.day().min(days_in_month(at.year(), at.month())));
            prop_assert_eq!(at.nanosecond(), execute_at.nanosecond());
        }

        #[test]
        fn yearly_occurrences_keep_the_date_except_29_february(execute_at in ordinary_instant(), n in 1_u32..2_000) {
            let at = yearly(execute_at).occurrence(n).expect("in range");
            prop_assert_eq!(at.time(), execute_at.time());
            prop_assert_eq!(i64::from(at.year()) - i64::from(execute_at.year()), i64::from(n) - 1);
            prop_assert_eq!(at.month(), execute_at.month());
            prop_assert_eq!(at.day(), execute_at.day().min(days_in_month(at.year(), at.month())));
        }

        #[test]
        fn daily_and_weekly_occurrences_are_whole_days_from_the_first(
            execute_at in any_instant(),
            n in any_occurrence_number(),
        ) {
            for (recurrence, days_per_step) in [(Recurrence::Daily, 1), (Recurrence::Weekly, 7)] {
                let calendar = Calendar::recurring(execute_at, recurrence, None, None);
                if let Some(at) = calendar.occurrence(n) {
                    prop_assert_eq!(at - execute_at, chrono::TimeDelta::days(days_per_step * (i64::from(n) - 1)));
                }
            }
        }

        #[test]
        fn the_calendar_never_panics_for_any_input(
            execute_at in any_instant(),
            recurrence in any_recurrence(),
            recurrence_end_date in proptest::option::of(any_instant()),
            max_occurrences in proptest::option::of(any::<u32>()),
            n in any::<u32>(),
            now in any_instant(),
        ) {
            let calendar = Calendar { execute_at, recurrence, recurrence_end_date, max_occurrences };
            let _ = calendar.occurrence(n);
            let _ = calendar.next_after(n);
            let _ = calendar.is_finished(n);
            let due = calendar.due(n, now, 16);
            prop_assert!(due.len() <= 16);
            prop_assert!(due.iter().all(|occurrence| occurrence.at <= now && occurrence.number > n));
        }
    }
}
