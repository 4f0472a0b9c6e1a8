//! The use cases behind the routes: plain async functions on the [`AppState`](crate::app::AppState) that apply
//! the domain rules, call the store and return domain values or an [`ApiError`](crate::error::ApiError).
//! Handlers parse and authorise, then call one of these; the CLI calls them too.

pub mod auth;
pub mod ids;
pub mod ledger;
pub mod scenarios;
pub mod schedules;
pub mod simulation;
pub mod statements;
pub mod users;
