//! The query-string parser: any query — never a panic; a refusal is an `invalid_parameter` naming a parameter.
#![no_main]

use banksim_server::error::ErrorCode;
use banksim_server::http::extract::parse_query;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Params {
    limit: Option<u32>,
    offset: Option<u64>,
    since: Option<String>,
    include_inactive: Option<bool>,
    id: Option<uuid::Uuid>,
}

fuzz_target!(|query: &str| {
    if let Err(error) = parse_query::<Params>(query) {
        assert_eq!(error.code(), ErrorCode::InvalidParameter);
        assert!(!error.body("fuzz").errors.is_empty());
    }
});
