//! The HTTP layer: one module per resource, each exposing `routes()`; the request context and our extractors.
//! `router.rs` puts them together.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod balances;
pub mod batch;
pub mod breakers;
pub mod client;
pub mod console;
pub mod context;
pub mod extract;
pub mod faults;
pub mod fx;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod pagination;
pub mod rate_limit;
pub mod refusals;
pub mod scenarios;
pub mod schedules;
pub mod service;
pub mod simulation;
pub mod transactions;
pub mod users;
