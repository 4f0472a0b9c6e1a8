//! One method per route a client developer uses, named after the spec's operation ids where that reads well.
//! Each returns a [`Call`]: await it for the body, or adjust it first (key, retries, headers).

use std::borrow::Cow;

use banksim_core::currency::Currency;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use reqwest::{Method, Url};
use uuid::Uuid;

use crate::client::{Call, Client};
use crate::model::{
    AmountRequest, BalanceAtTime, BalanceHistory, BalanceHistoryQuery, Balances, BatchRequest, BatchResponse,
    CreateScheduleRequest, CurrentBalance, DailyStatements, ExchangeRequest, Executions, Health, HistoryQuery, Login,
    LoginRequest, Message, PostTransferRequest, PutLimitsRequest, Readiness, RefreshRequest, RegisterRequest, Schedule,
    ScheduleList, ScheduleQuery, Tokens, Transaction, TransactionList, TransferRequest, UpdateUserRequest, User,
    UserList, WalletLimits,
};
use crate::retry::Safety;

/// An RFC 3339 timestamp as the query parameters take it.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `url` with the query pairs whose values are present.
fn with_query<'a>(base: &Url, pairs: impl IntoIterator<Item = (&'a str, Option<String>)>) -> Url {
    let mut url = base.clone();
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, &value);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

impl Client {
    // ---- service ----

    /// `GET /healthz`: the process is alive.
    pub fn health(&self) -> Call<'_, Health> {
        self.call(Method::GET, Cow::Borrowed(&self.urls().healthz), Safety::Repeatable)
    }

    /// `GET /readyz`: the instance can serve (a 503 answer is an [`crate::Error::Api`]).
    pub fn readiness(&self) -> Call<'_, Readiness> {
        self.call(Method::GET, Cow::Borrowed(&self.urls().readyz), Safety::Repeatable)
    }

    // ---- auth ----

    /// `POST /auth/register` → 201 the user. Sent again only when the server did nothing (a repeat after a lost
    /// answer would find the email taken).
    pub fn register(&self, request: &RegisterRequest) -> Call<'_, User> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().register), Safety::Once, request)
    }

    /// `POST /auth/login` → a session. Safe to repeat.
    pub fn login(&self, email: &str, password: &str) -> Call<'_, Login> {
        let request = LoginRequest { email: email.to_owned(), password: password.to_owned() };
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().login), Safety::Repeatable, &request)
    }

    /// `POST /auth/refresh` → the next pair of tokens. Never repeated after a lost answer: presenting a used
    /// refresh token revokes its whole family.
    pub fn refresh(&self, refresh_token: &str) -> Call<'_, Tokens> {
        let request = RefreshRequest { refresh_token: refresh_token.to_owned() };
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().refresh), Safety::Once, &request)
    }

    /// `POST /auth/logout` (auth) → 204: revokes the refresh token's family.
    pub fn logout(&self, refresh_token: &str) -> Call<'_, ()> {
        let request = RefreshRequest { refresh_token: refresh_token.to_owned() };
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().logout), Safety::Once, &request)
    }

    // ---- users ----

    /// `GET /me`: the caller.
    pub fn me(&self) -> Call<'_, User> {
        self.call(Method::GET, Cow::Borrowed(&self.urls().me), Safety::Repeatable)
    }

    /// `GET /users` (admin): a page of users.
    pub fn users(&self, limit: Option<u32>, offset: Option<u64>, include_inactive: bool) -> Call<'_, UserList> {
        let url = with_query(
            &self.urls().users,
            [
                ("limit", limit.map(|v| v.to_string())),
                ("offset", offset.map(|v| v.to_string())),
                ("include_inactive", include_inactive.then(|| "true".to_owned())),
            ],
        );
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    /// `GET /users/{id}` (admin).
    pub fn user(&self, id: Uuid) -> Call<'_, User> {
        self.call(Method::GET, Cow::Owned(self.urls().path(&["users", &id.to_string()])), Safety::Repeatable)
    }

    /// `PUT /users/{id}` (admin): change fields, deactivate or reactivate.
    pub fn update_user(&self, id: Uuid, request: &UpdateUserRequest) -> Call<'_, User> {
        self.call_with(
            Method::PUT,
            Cow::Owned(self.urls().path(&["users", &id.to_string()])),
            Safety::Repeatable,
            request,
        )
    }

    /// `DELETE /users/{id}` (admin): deactivates the user.
    pub fn delete_user(&self, id: Uuid) -> Call<'_, Message> {
        self.call(Method::DELETE, Cow::Owned(self.urls().path(&["users", &id.to_string()])), Safety::Once)
    }

    // ---- transactions: every one carries an Idempotency-Key ----

    /// `POST /transactions/credit` → 201.
    pub fn credit(&self, request: &AmountRequest) -> Call<'_, Transaction> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().credit), Safety::Keyed, request)
    }

    /// `POST /transactions/debit` → 201.
    pub fn debit(&self, request: &AmountRequest) -> Call<'_, Transaction> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().debit), Safety::Keyed, request)
    }

    /// `POST /transactions/transfer` → 201 (a hold with `pending`).
    pub fn transfer(&self, request: &TransferRequest) -> Call<'_, Transaction> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().transfer), Safety::Keyed, request)
    }

    /// `POST /transactions/exchange` → 201.
    pub fn exchange(&self, request: &ExchangeRequest) -> Call<'_, Transaction> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().exchange), Safety::Keyed, request)
    }

    /// `POST /transactions/batch` → 201 every item's result (atomic: all or nothing, a refusal is a 400
    /// `batch_failed` whose [`crate::ApiError::batch_results`] has every item's result).
    pub fn batch(&self, request: &BatchRequest) -> Call<'_, BatchResponse> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().batch), Safety::Keyed, request)
    }

    /// `POST /transactions/{id}/rollback` → 201 the compensating transaction.
    pub fn rollback(&self, id: Uuid) -> Call<'_, Transaction> {
        self.call(
            Method::POST,
            Cow::Owned(self.urls().path(&["transactions", &id.to_string(), "rollback"])),
            Safety::Keyed,
        )
    }

    /// `POST /transactions/{id}/post` → 200: posts a hold, whole or in part.
    pub fn post_transfer(&self, id: Uuid, request: &PostTransferRequest) -> Call<'_, Transaction> {
        let url = self.urls().path(&["transactions", &id.to_string(), "post"]);
        self.call_with(Method::POST, Cow::Owned(url), Safety::Keyed, request)
    }

    /// `POST /transactions/{id}/void` → 200: releases a hold.
    pub fn void_transfer(&self, id: Uuid) -> Call<'_, Transaction> {
        self.call(Method::POST, Cow::Owned(self.urls().path(&["transactions", &id.to_string(), "void"])), Safety::Keyed)
    }

    /// `GET /transactions/{id}`.
    pub fn transaction(&self, id: Uuid) -> Call<'_, Transaction> {
        self.call(Method::GET, Cow::Owned(self.urls().path(&["transactions", &id.to_string()])), Safety::Repeatable)
    }

    /// `GET /transactions/history`: the caller's transactions, newest first.
    pub fn history(&self, query: &HistoryQuery) -> Call<'_, TransactionList> {
        let url = with_query(
            &self.urls().history,
            [
                ("limit", query.limit.map(|v| v.to_string())),
                ("offset", query.offset.map(|v| v.to_string())),
                ("cursor", query.cursor.clone()),
                ("type", query.kind.map(|v| v.as_str().to_owned())),
                ("status", query.status.map(|v| v.as_str().to_owned())),
                ("currency", query.currency.map(|v| v.code().to_owned())),
                ("since", query.since.map(timestamp)),
                ("until", query.until.map(timestamp)),
            ],
        );
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    // ---- balances ----

    /// `GET /balances/current?currency=…`.
    pub fn current_balance(&self, currency: Currency) -> Call<'_, CurrentBalance> {
        let url = with_query(&self.urls().balance_current, [("currency", Some(currency.code().to_owned()))]);
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    /// `GET /balances`: every wallet of the caller.
    pub fn balances(&self) -> Call<'_, Balances> {
        self.call(Method::GET, Cow::Borrowed(&self.urls().balances), Safety::Repeatable)
    }

    /// `GET /balances/at-time?timestamp=…&currency=…`.
    pub fn balance_at(&self, at: DateTime<Utc>, currency: Currency) -> Call<'_, BalanceAtTime> {
        let url = with_query(
            &self.urls().balance_at_time,
            [("timestamp", Some(timestamp(at))), ("currency", Some(currency.code().to_owned()))],
        );
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    /// `GET /balances/historical`: the caller's balance changes, newest first.
    pub fn balance_history(&self, query: &BalanceHistoryQuery) -> Call<'_, BalanceHistory> {
        let url = with_query(
            &self.urls().balance_history,
            [
                ("currency", query.currency.map(|v| v.code().to_owned())),
                ("limit", query.limit.map(|v| v.to_string())),
                ("since", query.since.map(timestamp)),
                ("until", query.until.map(timestamp)),
            ],
        );
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    /// `GET /balances/statements?from&to&currency`: daily statements.
    pub fn statements(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        currency: Option<Currency>,
    ) -> Call<'_, DailyStatements> {
        let url = with_query(
            &self.urls().statements,
            [
                ("from", from.map(|d| d.to_string())),
                ("to", to.map(|d| d.to_string())),
                ("currency", currency.map(|c| c.code().to_owned())),
            ],
        );
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    // ---- schedules ----

    /// `POST /scheduled-transactions` → 201 (with an Idempotency-Key).
    pub fn create_schedule(&self, request: &CreateScheduleRequest) -> Call<'_, Schedule> {
        self.call_with(Method::POST, Cow::Borrowed(&self.urls().schedules), Safety::Keyed, request)
    }

    /// `GET /scheduled-transactions`.
    pub fn schedules(&self, query: &ScheduleQuery) -> Call<'_, ScheduleList> {
        let url = with_query(
            &self.urls().schedules,
            [
                ("limit", query.limit.map(|v| v.to_string())),
                ("offset", query.offset.map(|v| v.to_string())),
                ("status", query.status.map(|v| v.as_str().to_owned())),
                ("is_active", query.is_active.map(|v| v.to_string())),
            ],
        );
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    /// `GET /scheduled-transactions/{id}`.
    pub fn schedule(&self, id: Uuid) -> Call<'_, Schedule> {
        self.call(
            Method::GET,
            Cow::Owned(self.urls().path(&["scheduled-transactions", &id.to_string()])),
            Safety::Repeatable,
        )
    }

    /// `DELETE /scheduled-transactions/{id}`: cancels it (a repeat would answer 409, so it is sent once).
    pub fn cancel_schedule(&self, id: Uuid) -> Call<'_, Message> {
        self.call(
            Method::DELETE,
            Cow::Owned(self.urls().path(&["scheduled-transactions", &id.to_string()])),
            Safety::Once,
        )
    }

    /// `POST /scheduled-transactions/{id}/pause`.
    pub fn pause_schedule(&self, id: Uuid) -> Call<'_, Schedule> {
        let url = self.urls().path(&["scheduled-transactions", &id.to_string(), "pause"]);
        self.call(Method::POST, Cow::Owned(url), Safety::Once)
    }

    /// `POST /scheduled-transactions/{id}/resume`.
    pub fn resume_schedule(&self, id: Uuid) -> Call<'_, Schedule> {
        let url = self.urls().path(&["scheduled-transactions", &id.to_string(), "resume"]);
        self.call(Method::POST, Cow::Owned(url), Safety::Once)
    }

    /// `GET /scheduled-transactions/{id}/executions`: every run.
    pub fn executions(&self, id: Uuid) -> Call<'_, Executions> {
        let url = self.urls().path(&["scheduled-transactions", &id.to_string(), "executions"]);
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    // ---- admin ----

    /// `GET /admin/wallets/{user_id}/{currency}/limits` (admin).
    pub fn wallet_limits(&self, user_id: Uuid, currency: Currency) -> Call<'_, WalletLimits> {
        let url = self.urls().path(&["admin", "wallets", &user_id.to_string(), currency.code(), "limits"]);
        self.call(Method::GET, Cow::Owned(url), Safety::Repeatable)
    }

    /// `PUT /admin/wallets/{user_id}/{currency}/limits` (admin).
    pub fn put_wallet_limits(
        &self,
        user_id: Uuid,
        currency: Currency,
        request: &PutLimitsRequest,
    ) -> Call<'_, WalletLimits> {
        let url = self.urls().path(&["admin", "wallets", &user_id.to_string(), currency.code(), "limits"]);
        self.call_with(Method::PUT, Cow::Owned(url), Safety::Repeatable, request)
    }
}
