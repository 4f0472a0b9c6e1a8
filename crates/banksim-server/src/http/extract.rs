//! Our own extractors for bodies, queries and paths, so that every bad input gets our error envelope with a
//! precise code and a message about the field, never the framework's or serde's own words (which name our types).
//!
//! Text that no database can store is refused here, at the edge, for every route: a NUL character anywhere in a
//! body, a query or a path.

use axum::body::Bytes;
use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use banksim_core::FieldError;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// The message for text holding a NUL character.
const NUL_MESSAGE: &str = "must not contain NUL characters";

/// A JSON body. Rejects a wrong content type or a charset other than UTF-8 (415), an oversized body (413), text
/// that is not JSON (400 `malformed_json`), and JSON of the wrong shape — not an object, wrong types, unknown
/// fields, `null`, NUL characters — (422 `validation_failed`, naming the field).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(&request)?;
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

/// Reads a JSON body as [`ApiJson`] does, with a body limit of its own (for a route whose bodies may be larger
/// than `BODY_LIMIT_BYTES`; the route disables the default limit).
pub async fn read_json<T: DeserializeOwned>(request: Request, limit: usize) -> Result<T, ApiError> {
    check_content_type(&request)?;
    let bytes = axum::body::to_bytes(request.into_body(), limit).await.map_err(|err| {
        let too_large =
            std::error::Error::source(&err).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(ErrorCode::PayloadTooLarge)
        } else {
            ApiError::new(ErrorCode::MalformedJson).with_message("could not read the request body")
        }
    })?;
    parse_json(&bytes)
}

/// A JSON media type (`application/json` or `application/*+json`), in UTF-8: JSON exchanged between systems must
/// be UTF-8 (RFC 8259 §8.1), and a body announced in another charset would be misread.
fn check_content_type(request: &Request) -> Result<(), ApiError> {
    let value = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
        return Err(ErrorCode::UnsupportedMediaType.into());
    }
    for parameter in parts {
        let Some((name, charset)) = parameter.split_once('=') else { continue };
        let charset = charset.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !charset.eq_ignore_ascii_case("utf-8") {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType)
                .with_message("expected a JSON body in UTF-8 (charset=utf-8 or none)"));
        }
    }
    Ok(())
}

/// Parses a JSON body into `T`, telling syntax errors from shape errors. Every body of ours is an object: an
/// array is refused even where serde would fill a struct from it by position.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::new(ErrorCode::MalformedJson)
                    .with_message(format!("request body is not valid JSON ({})", syntax_position(&inner)))
            }
            _ => ApiError::validation(vec![shape_error(&path, &inner.to_string())]),
        }
    })?;
    deserializer.end().map_err(|_| ApiError::new(ErrorCode::MalformedJson).with_message("trailing data after JSON"))?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::validation(vec![FieldError::new("body", "must be a JSON object")]));
    }
    // A NUL can only be written `\u0000` in JSON text; the walk runs only when that escape appears.
    if contains(bytes, b"\\u0000") {
        let parsed: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| ApiError::new(ErrorCode::MalformedJson))?;
        if let Some(field) = nul_path(&parsed, "") {
            return Err(ApiError::validation(vec![FieldError::new(field, NUL_MESSAGE)]));
        }
    }
    Ok(value)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The path of the first key or string holding a NUL character.
fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => {
            Some(if path.is_empty() { "body".to_owned() } else { path.to_owned() })
        }
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, value)| {
            if key.contains('\0') { Some(join(&key.replace('\0', ""))) } else { nul_path(value, &join(key)) }
        }),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(index, item)| nul_path(item, &format!("{path}[{index}]")))
        }
        _ => None,
    }
}

/// Where a syntax error is, for people (serde's own text names nothing of ours, but reads like a parser's).
fn syntax_position(err: &serde_json::Error) -> String {
    format!("at line {} column {}", err.line(), err.column())
}

/// A field error for a value of the wrong shape, from serde's message: the field named by the path (or, for an
/// unknown or missing field, by the message), and a message in our words.
fn shape_error(path: &str, serde_message: &str) -> FieldError {
    let parent = if path == "." || path.is_empty() { None } else { Some(path) };
    // The path of an unknown field already ends with its name; that of a missing field is its parent's.
    let named = |name: &str| match parent {
        Some(parent) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_owned(),
        Some(parent) => format!("{parent}.{name}"),
        None => name.to_owned(),
    };
    if let Some(name) = quoted_after(serde_message, "unknown field ") {
        return FieldError::new(named(&name), "is not a known field");
    }
    if let Some(name) = quoted_after(serde_message, "missing field ") {
        return FieldError::new(named(&name), "is required");
    }
    FieldError::new(parent.unwrap_or("body"), describe_expected(serde_message))
}

/// The name in backticks that follows `prefix` in serde's message (`unknown field `colour`, expected …`).
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split(prefix).nth(1)?.strip_prefix('`')?;
    Some(rest.split('`').next()?.to_owned())
}

/// What a value should have been, in words, from serde's "invalid type: X, expected Y" family of messages.
fn describe_expected(serde_message: &str) -> String {
    let message = serde_message.to_ascii_lowercase();
    if message.contains("uuid") {
        return "must be a UUID".to_owned();
    }
    if let Some(variants) = message.split("expected one of ").nth(1).filter(|_| message.contains("unknown variant")) {
        let allowed: Vec<&str> = variants.split(',').map(|v| v.trim().trim_matches('`')).collect();
        return format!("must be one of: {}", allowed.join(", "));
    }
    let expected = message.split("expected ").last().unwrap_or_default();
    let kind = if expected.contains("struct") || expected.contains("map") {
        "must be a JSON object"
    } else if expected.contains("sequence") || expected.contains("array") || expected.contains("tuple") {
        "must be an array"
    } else if expected.contains("bool") {
        "must be true or false"
    } else if is_integer_type(expected, 'u') {
        "must be a whole number, 0 or more, within range"
    } else if is_integer_type(expected, 'i') || expected.contains("integer") {
        "must be a whole number within range"
    } else if expected.contains("number") || expected.starts_with('f') {
        "must be a number"
    } else if expected.contains("string") || expected.contains("char") {
        "must be a string"
    } else {
        "has an invalid value"
    };
    kind.to_owned()
}

/// Whether serde's expected type is one of Rust's integer types of this sign (`u32`, `i64`, …).
fn is_integer_type(expected: &str, sign: char) -> bool {
    expected.strip_prefix(sign).is_some_and(|bits| !bits.is_empty() && bits.chars().all(|c| c.is_ascii_digit()))
}

/// Query parameters; a bad one is a 400 `invalid_parameter` naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

/// Parses a query string into `T`: every parameter decoded (invalid UTF-8 becomes U+FFFD), none holding a NUL.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name.contains('\0') || value.contains('\0') {
            return Err(ApiError::parameter(&name.replace('\0', ""), NUL_MESSAGE));
        }
    }
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = shape_error(&path, &err.into_inner().to_string());
        let field = if field.field == "body" { FieldError::new("query", field.message) } else { field };
        let field = if field.message == "is not a known field" {
            FieldError::new(field.field, "is not a known parameter")
        } else {
            field
        };
        ApiError::parameter(&field.field, field.message)
    })
}

/// Path parameters; a bad one (say, an id that is not a UUID) is a 400 `invalid_parameter` naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await
            && let Some((name, _)) = raw.iter().find(|(_, value)| value.contains('\0'))
        {
            return Err(ApiError::parameter(name, NUL_MESSAGE));
        }
        Path::<T>::from_request_parts(parts, state).await.map(|Path(value)| Self(value)).map_err(path_error)
    }
}

/// A path rejection in our words: the parameter it concerns and what it should be.
fn path_error(rejection: PathRejection) -> ApiError {
    let PathRejection::FailedToDeserializePathParams(failure) = rejection else {
        return ApiError::parameter("path", "is invalid");
    };
    match failure.into_kind() {
        PathErrorKind::ParseErrorAtKey { key, expected_type, .. } => {
            ApiError::parameter(&key, describe_expected(&format!("expected {expected_type}")))
        }
        PathErrorKind::InvalidUtf8InPathParam { key } => ApiError::parameter(&key, "must be valid UTF-8"),
        PathErrorKind::DeserializeError { key, message, .. } => ApiError::parameter(&key, describe_expected(&message)),
        _ => ApiError::parameter("path", "is invalid"),
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
        count: Option<u32>,
    }

    fn field_error(text: &str) -> (String, String) {
        let err = parse_json::<Body>(text.as_bytes()).expect_err(text);
        assert_eq!(err.code(), ErrorCode::ValidationFailed, "{text}");
        let body = err.body("test");
        (body.errors[0].field.clone(), body.errors[0].message.clone())
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for text in ["{", "nope", "{\"name\": }", "", "{\"name\": \"\\ud800\"}"] {
            assert_eq!(parse_json::<Body>(text.as_bytes()).expect_err(text).code(), ErrorCode::MalformedJson);
        }
    }

    #[test]
    fn shape_errors_are_validation_errors() {
        for text in ["null", "[]", "[\"x\", 1]", "{\"name\": 5}", "{\"other\": 1}", "42"] {
            assert_eq!(parse_json::<Body>(text.as_bytes()).expect_err(text).code(), ErrorCode::ValidationFailed);
        }
    }

    #[test]
    fn an_array_is_not_an_object_even_when_serde_would_fill_the_struct() {
        assert_eq!(field_error("[\"x\", 1]"), ("body".to_owned(), "must be a JSON object".to_owned()));
    }

    #[test]
    fn messages_name_the_field_in_our_words() {
        assert_eq!(field_error("{\"name\": 5}"), ("name".to_owned(), "must be a string".to_owned()));
        assert_eq!(field_error("{\"count\": -1}").0, "count");
        assert_eq!(field_error("{\"colour\": 1}"), ("colour".to_owned(), "is not a known field".to_owned()));
        for text in ["{\"count\": \"x\"}", "{\"colour\": 1}", "[]", "{\"name\": {}}"] {
            let (_, message) = field_error(text);
            for leak in ["struct", "expected", "u32", "Body", "line"] {
                assert!(!message.contains(leak), "{leak} in {message:?}");
            }
        }
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_with_its_field() {
        assert_eq!(field_error("{\"name\": \"a\\u0000b\"}"), ("name".to_owned(), NUL_MESSAGE.to_owned()));
        assert!(parse_json::<Body>(b"{\"name\": \"a\\\\u0000b\"}").is_ok(), "an escaped backslash is no NUL");
    }

    #[test]
    fn trailing_data_is_malformed_json() {
        assert_eq!(parse_json::<Body>(b"{} {}").expect_err("trailing").code(), ErrorCode::MalformedJson);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Params {
        limit: Option<u32>,
        since: Option<String>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let fields = |query: &str| {
            let body = parse_query::<Params>(query).expect_err(query).body("test");
            (body.errors[0].field.clone(), body.errors[0].message.clone())
        };
        assert_eq!(fields("limit=many").0, "limit");
        assert_eq!(fields("bogus=1"), ("bogus".to_owned(), "is not a known parameter".to_owned()));
        assert_eq!(fields("since=a%00b"), ("since".to_owned(), NUL_MESSAGE.to_owned()));
        assert!(parse_query::<Params>("since=%FF%FE&limit=5").is_ok(), "bad UTF-8 is decoded, not a crash");
    }
}
