//! The replica at the HTTP edge: the `X-Banksim-Min-LSN` header (written on the answers of writes, read on
//! reads), the layer that remembers each caller's writes, and [`Reads`], what handlers call for reads that may
//! lag.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use banksim_core::currency::Currency;
use banksim_core::ledger::TransactionRecord;
use banksim_core::user::User;
use banksim_store::{
    AuditQuery, AuditRecord, EventRecord, HistoryEntry, HistoryQuery, Lsn, StatementQuery, Store, StoreError,
    TransactionQuery, UserListQuery, UserPage, WalletStatements,
};
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::routing::Floor;
use crate::app::AppState;
use crate::auth::CallerSlot;
use crate::error::ApiError;

/// The header that carries a position of the primary's log: on the answer of a write, the caller's floor (past
/// that write); on a read, a floor the client asks for (the answer of a write it made on any instance).
pub const MIN_LSN_HEADER: HeaderName = HeaderName::from_static("x-banksim-min-lsn");

/// The floor a client sends with a read (`X-Banksim-Min-LSN: 16/B374D848`), if it sends one. A malformed one is
/// refused with 400 `invalid_parameter`: a client that means to read its writes must learn that it cannot.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinLsn(pub Option<Lsn>);

impl<S: Send + Sync> FromRequestParts<S> for MinLsn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(&MIN_LSN_HEADER) else { return Ok(Self(None)) };
        let lsn = value.to_str().ok().and_then(|text| text.trim().parse::<Lsn>().ok()).ok_or_else(|| {
            ApiError::parameter("X-Banksim-Min-LSN", "must be a log position as sent by a write's answer (16/B374D848)")
        })?;
        Ok(Self(Some(lsn)))
    }
}

impl utoipa::IntoParams for MinLsn {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let parameter = ParameterBuilder::new()
            .name("X-Banksim-Min-LSN")
            .parameter_in(ParameterIn::Header)
            .required(utoipa::openapi::Required::False)
            .description(Some(
                "Read at least this position of the primary's log (the `X-Banksim-Min-LSN` of a write's answer, \
                 from any instance); the caller's own writes on this instance are always read",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).examples(["16/B374D848"])))
            .build();
        vec![parameter]
    }
}

/// Serves the request; when it may have written (any method but GET, HEAD and OPTIONS), an authenticated caller
/// made it and was told its outcome (any answer but a 5xx), raises the caller's floor to the primary's log
/// position after it and writes that floor in `X-Banksim-Min-LSN`. A 5xx acknowledges nothing to read back (a
/// commit of unknown outcome is learnt by retrying it, whose answer carries the floor), and comes when the primary
/// is likely out, when its position could not be read anyway. Without a replica, passes the request through.
pub async fn remember_writes(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(replica) = state.replica.clone() else { return next.run(request).await };
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let caller = CallerSlot::install(request.extensions_mut());
    let mut response = next.run(request).await;
    let Some(caller) = caller.get().filter(|_| !response.status().is_server_error()) else { return response };
    let floor = replica.note_write(caller, Instant::now()).await;
    if let Some(value) = floor.lsn.and_then(|lsn| HeaderValue::from_str(&lsn.to_string()).ok()) {
        response.headers_mut().insert(MIN_LSN_HEADER, value);
    }
    response
}

impl AppState {
    /// The reads of `caller` that may lag, with the floor `min_lsn` the client sent: served by the replica when
    /// it shows the caller's writes, else by the primary (the primary alone without a replica).
    pub fn lagging_reads(&self, caller: &User, MinLsn(min_lsn): MinLsn) -> Reads<'_> {
        let floor = self.replica.as_ref().map(|replica| replica.floor(caller.id, min_lsn)).unwrap_or_default();
        Reads { state: self, floor }
    }
}

/// Reads that may be served by the replica, for one caller. See [the module](super).
pub struct Reads<'a> {
    state: &'a AppState,
    floor: Floor,
}

impl std::fmt::Debug for Reads<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").field("floor", &self.floor).finish_non_exhaustive()
    }
}

impl<'a> Reads<'a> {
    /// Makes the floor everything committed on the primary so far: for a read model that this request itself
    /// brought up to date on the primary (statements). If the primary's position cannot be read, the read goes to
    /// the primary.
    pub async fn include_primary_now(&mut self) {
        let Some(replica) = &self.state.replica else { return };
        self.floor = self.floor.max(replica.primary_floor().await);
    }

    async fn run<T>(
        &self,
        call: impl Fn(&'a dyn Store) -> futures::future::BoxFuture<'a, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match &self.state.replica {
            Some(replica) => super::read(replica, self.floor, call).await,
            None => call(self.state.store.as_ref()).await,
        }
    }

    /// See [`Store::list_transactions`].
    pub async fn list_transactions(&self, query: &'a TransactionQuery) -> Result<Vec<TransactionRecord>, StoreError> {
        self.run(|store| store.list_transactions(query)).await
    }

    /// See [`Store::balance_history`].
    pub async fn balance_history(&self, query: &'a HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        self.run(|store| store.balance_history(query)).await
    }

    /// See [`Store::balance_at`].
    pub async fn balance_at(&self, user_id: Uuid, currency: Currency, at: DateTime<Utc>) -> Result<i64, StoreError> {
        self.run(|store| store.balance_at(user_id, currency, at)).await
    }

    /// See [`Store::statements`].
    pub async fn statements(&self, query: &'a StatementQuery) -> Result<Vec<WalletStatements>, StoreError> {
        self.run(|store| store.statements(query)).await
    }

    /// See [`Store::list_events`].
    pub async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.run(|store| store.list_events(after, limit)).await
    }

    /// See [`Store::list_audit`].
    pub async fn list_audit(&self, query: &'a AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(|store| store.list_audit(query)).await
    }

    /// See [`Store::list_users`].
    pub async fn list_users(&self, query: UserListQuery) -> Result<UserPage, StoreError> {
        self.run(|store| store.list_users(query)).await
    }
}
