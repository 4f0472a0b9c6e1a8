//! Paging cursors: any text — never a panic; an accepted cursor names an instant both databases store, and
//! encodes back to an equivalent cursor.
#![no_main]

use banksim_server::http::pagination::{decode_cursor, encode_cursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok((at, id)) = decode_cursor(text) {
        assert!(banksim_core::clock::is_storable(at), "{text:?} decoded to {at}");
        assert_eq!(decode_cursor(&encode_cursor(at, id)).expect("round trip"), (at, id));
    }
});
