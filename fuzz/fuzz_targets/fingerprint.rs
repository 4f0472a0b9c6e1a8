//! The idempotency fingerprint: any route and JSON body — never a panic, always 32 bytes, the same for the same
//! request, and different for another route.
#![no_main]

use banksim_server::service::ledger::fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &[u8])| {
    let (route, body) = input;
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let print = fingerprint(route, &value);
    assert_eq!(print.len(), 32);
    assert_eq!(print, fingerprint(route, &value), "deterministic");
    let other = format!("{route}/other");
    assert_ne!(print, fingerprint(&other, &value), "the route is part of it");
});
