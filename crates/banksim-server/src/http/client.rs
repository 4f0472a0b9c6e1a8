//! Who is on the other end of a request, for the audit trail.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::http::context::RequestIds;

/// The client's address, user agent and the request id.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    /// The peer's IP address (trusted-proxy handling of `X-Forwarded-For` comes with rate limiting).
    pub ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(512).collect()),
            request_id: parts.extensions.get::<RequestIds>().map(|ids| ids.request_id.clone()),
        })
    }
}

impl From<ClientContext> for banksim_store::AuditContext {
    fn from(client: ClientContext) -> Self {
        Self { actor_id: None, ip: client.ip, user_agent: client.user_agent, request_id: client.request_id }
    }
}
