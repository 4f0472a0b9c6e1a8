//! The HTTP layer: one module per resource, each exposing `routes()`; the request context and our extractors.
//! `router.rs` puts them together.

pub mod auth;
pub mod context;
pub mod extract;
pub mod service;
pub mod users;
