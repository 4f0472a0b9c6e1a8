//! [`Observer`]: a hook that sees every attempt a [`Client`](crate::Client) makes — the request as sent and the
//! answer as it came back — for recording a scenario, logging or tests. It runs inline after each attempt, so it
//! should be quick (append to a buffer, count).

use std::fmt;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

/// Sees every attempt of the clients built with it ([`ClientBuilder::observer`](crate::ClientBuilder::observer)).
pub trait Observer: Send + Sync + fmt::Debug {
    /// Called once per attempt, after its answer was read to the end, or when none came back.
    fn attempted(&self, exchange: &Exchange<'_>);
}

/// One attempt: what was sent and what came back.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// The method.
    pub method: &'a Method,
    /// The whole URL, query included.
    pub url: &'a Url,
    /// The `Authorization` header sent, if any.
    pub authorization: Option<&'a HeaderValue>,
    /// The `Idempotency-Key` sent, if any.
    pub idempotency_key: Option<&'a str>,
    /// The other headers the call added ([`Call::header`](crate::Call::header)).
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// The JSON body sent, if any.
    pub body: Option<&'a [u8]>,
    /// The answer, or `None` when no complete answer came back (the request may still have taken effect).
    pub answer: Option<ExchangeAnswer<'a>>,
}

/// The answer of an [`Exchange`].
#[derive(Debug)]
pub struct ExchangeAnswer<'a> {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}
