//! banksim's server: the HTTP API (axum), authentication, configuration and the wiring that starts it all.
//!
//! - [`config`]: the one configuration struct.
//! - [`app`]: the shared state and start/stop.
//! - [`router`]: every route and layer.
//! - [`http`]: one module per resource; [`service`]: the use cases behind them; [`auth`]: tokens and passwords.
//! - [`error`]: the one error type and its HTTP mapping.
//! - [`store_layer`]: what every database call passes through; [`replica`]: reads that may lag, on the replica;
//!   [`telemetry`]: logs and traces.
//! - [`coordination`]: what the instances share through Redis (rate limits, user changes), when configured.

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod coordination;
pub mod error;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod replica;
pub mod resilience;
pub mod router;
pub mod service;
pub mod store_layer;
pub mod telemetry;
pub mod writer;

pub use app::{AppState, build, serve, shutdown_signal};
pub use config::Config;
