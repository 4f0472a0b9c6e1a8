//! Client instants: any text — never a panic; an accepted instant is one both databases store.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(at) = banksim_core::clock::parse_instant(text) {
        assert!(banksim_core::clock::is_storable(at), "{text:?} → {at}");
        let again = banksim_core::clock::parse_instant(&at.to_rfc3339()).expect("its own text parses");
        assert_eq!(again, at);
    }
});
