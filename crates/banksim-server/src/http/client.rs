//! Who is on the other end of a request, for the audit trail.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, header};
use ipnet::IpNet;

use crate::app::AppState;
use crate::http::context::RequestIds;

/// The client's address, user agent and the request's ids.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    /// The client's IP address (see [`client_ip`]).
    pub ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The request's trace id.
    pub trace_id: Option<String>,
}

impl FromRequestParts<AppState> for ClientContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self {
            ip: client_ip(&parts.extensions, &parts.headers, &state.config.trusted_proxies).map(|ip| ip.to_string()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(512).collect()),
            request_id: parts.extensions.get::<RequestIds>().map(|ids| ids.request_id.clone()),
            trace_id: parts.extensions.get::<RequestIds>().map(|ids| ids.trace_id.clone()),
        })
    }
}

impl From<ClientContext> for banksim_store::AuditContext {
    fn from(client: ClientContext) -> Self {
        Self {
            actor_id: None,
            ip: client.ip,
            user_agent: client.user_agent,
            request_id: client.request_id,
            trace_id: client.trace_id,
        }
    }
}

/// The client's IP: the socket peer, unless the peer is a trusted proxy, in which case the last address of
/// `X-Forwarded-For` that is not itself a trusted proxy. A client cannot choose its address by sending the
/// header itself: from an untrusted peer the header is ignored.
pub fn client_ip(extensions: &Extensions, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d; its IPv4 form is what ranges name.
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
        .collect();
    Some(forwarded.into_iter().rev().find(|hop| !is_trusted(hop)).unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(peer: &str, forwarded: &str, trusted: &[&str]) -> Option<IpAddr> {
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::new(peer.parse().expect("peer"), 4000)));
        let mut headers = HeaderMap::new();
        if !forwarded.is_empty() {
            headers.insert("x-forwarded-for", forwarded.parse().expect("header"));
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|r| r.parse().expect("range")).collect();
        client_ip(&extensions, &headers, &trusted)
    }

    #[test]
    fn a_trusted_range_lets_its_proxies_name_the_client() {
        let proxies = ["10.0.0.0/8", "::1/128"];
        assert_eq!(ip("10.1.2.3", "203.0.113.9", &proxies), Some("203.0.113.9".parse().expect("ip")));
        assert_eq!(ip("10.1.2.3", "203.0.113.9, 10.9.9.9", &proxies), Some("203.0.113.9".parse().expect("ip")));
        assert_eq!(ip("::ffff:10.1.2.3", "198.51.100.7", &proxies), Some("198.51.100.7".parse().expect("ip")));
        assert_eq!(ip("::1", "198.51.100.7", &proxies), Some("198.51.100.7".parse().expect("ip")));
    }

    #[test]
    fn outside_the_ranges_the_header_is_ignored() {
        let proxies = ["10.0.0.0/8"];
        assert_eq!(ip("11.0.0.1", "203.0.113.9", &proxies), Some("11.0.0.1".parse().expect("ip")));
        assert_eq!(ip("10.1.2.3", "", &proxies), Some("10.1.2.3".parse().expect("ip")));
    }
}
