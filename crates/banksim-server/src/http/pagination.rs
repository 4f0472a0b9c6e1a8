//! Paging of list routes: page sizes, and opaque cursors for constant-time keyset paging.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

/// Default page size of list routes.
pub const PAGE_LIMIT_DEFAULT: u32 = 20;
/// Largest page size of list routes.
pub const PAGE_LIMIT_MAX: u32 = 100;

/// Checks a page size (1–100, default 20).
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(PAGE_LIMIT_DEFAULT) {
        limit @ 1..=PAGE_LIMIT_MAX => Ok(limit),
        _ => Err(ApiError::parameter("limit", format!("must be between 1 and {PAGE_LIMIT_MAX}"))),
    }
}

/// Checks an offset (0 to `i64::MAX`, default 0): the databases count rows in signed 64 bits, and the spec says so.
pub fn page_offset(offset: Option<u64>) -> Result<u64, ApiError> {
    match offset.unwrap_or(0) {
        offset if offset <= i64::MAX as u64 => Ok(offset),
        _ => Err(ApiError::parameter("offset", format!("must be between 0 and {}", i64::MAX))),
    }
}

/// A cursor naming a row by its (instant, id) sort key.
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

/// The (instant, id) sort key of a cursor made by [`encode_cursor`]; anything else is a 400.
pub fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::parameter("cursor", "is not a cursor returned by this route");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|at| banksim_core::clock::is_storable(*at))
        .ok_or_else(invalid)?;
    Ok((at, id.parse().map_err(|_| invalid())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("instant");
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).expect("decode"), (at, id));
        let beyond = |micros: i64| URL_SAFE_NO_PAD.encode(format!("{micros}:{id}"));
        for garbage in ["", "!!", "bm9wZQ", "MTox", &beyond(-250_000_000_000_000_000), &beyond(253_402_300_800_000_000)]
        {
            assert!(decode_cursor(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn page_limits_are_bounded() {
        assert_eq!(page_limit(None).expect("default"), 20);
        assert_eq!(page_limit(Some(100)).expect("max"), 100);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(101)).is_err());
    }
}
