//! The JSON body extractor: any bytes — never a panic, and an answer that is either the parsed body or one of
//! the documented codes, with field names that never leak serde's words.
#![no_main]

use banksim_server::error::ErrorCode;
use banksim_server::http::extract::parse_json;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

/// The shape of the money routes' bodies: a raw amount, texts, an id, a nested object.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Body {
    amount: Option<Box<RawValue>>,
    currency: Option<String>,
    description: Option<String>,
    to_user_id: Option<uuid::Uuid>,
    limit: Option<u32>,
    nested: Option<Nested>,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Nested {
    flag: bool,
    items: Vec<i64>,
}

fuzz_target!(|bytes: &[u8]| {
    match parse_json::<Body>(bytes) {
        Ok(_) => {}
        Err(error) => {
            assert!(matches!(error.code(), ErrorCode::MalformedJson | ErrorCode::ValidationFailed), "{error:?}");
            let body = error.body("fuzz");
            for field in &body.errors {
                assert!(!field.message.contains("struct") && !field.message.contains("expected"), "{field:?}");
            }
        }
    }
});
