//! Our own extractors for bodies, queries and paths, so that every bad input gets our error envelope with a
//! precise code, instead of the framework's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// A JSON body. Rejects a wrong content type (415), an oversized body (413), text that is not JSON (400
/// `malformed_json`), and JSON of the wrong shape — wrong types, unknown fields, `null` — (422
/// `validation_failed`, naming the field).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(&request) {
            return Err(ErrorCode::UnsupportedMediaType.into());
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge)
            } else {
                ApiError::new(ErrorCode::MalformedJson).with_message("could not read the request body")
            }
        })?;
        parse_json(&bytes).map(Self)
    }
}

fn has_json_content_type(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses a JSON body into `T`, telling syntax errors from shape errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::new(ErrorCode::MalformedJson).with_message(format!("request body is not valid JSON: {inner}"))
            }
            _ => {
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::validation(vec![banksim_core::FieldError::new(field, strip_position(&inner.to_string()))])
            }
        }
    })?;
    deserializer.end().map_err(|_| ApiError::new(ErrorCode::MalformedJson).with_message("trailing data after JSON"))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 17" to messages; the field name says more to an API client.
fn strip_position(message: &str) -> String {
    message.split(" at line ").next().unwrap_or(message).to_owned()
}

/// Query parameters; a bad one is a 400 `invalid_parameter`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| ApiError::parameter("query", rejection.body_text()))
    }
}

/// Path parameters; a bad one (say, an id that is not a UUID) is a 400 `invalid_parameter`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection| ApiError::parameter("path", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Body {
        name: Option<String>,
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for text in ["{", "nope", "{\"name\": }", ""] {
            assert_eq!(parse_json::<Body>(text.as_bytes()).expect_err(text).code(), ErrorCode::MalformedJson);
        }
    }

    #[test]
    fn shape_errors_are_validation_errors() {
        for text in ["null", "[]", "{\"name\": 5}", "{\"other\": 1}", "42"] {
            assert_eq!(parse_json::<Body>(text.as_bytes()).expect_err(text).code(), ErrorCode::ValidationFailed);
        }
    }

    #[test]
    fn trailing_data_is_malformed_json() {
        assert_eq!(parse_json::<Body>(b"{} {}").expect_err("trailing").code(), ErrorCode::MalformedJson);
    }
}
