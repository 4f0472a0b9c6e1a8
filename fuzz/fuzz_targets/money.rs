//! The money parser: any text, any currency, any maximum — never a panic; an accepted amount is positive, within
//! the maximum, and reads back the same from its canonical text.
#![no_main]

use banksim_core::currency::Currency;
use banksim_core::money::{Money, format_minor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u64, &str)| {
    let (which, max_major, text) = input;
    let currencies = Currency::all();
    let currency = currencies[usize::from(which) % currencies.len()];
    let max_major = max_major % 10_000_000_000;
    if let Ok(money) = Money::parse(text, currency, max_major) {
        assert!(money.amount_minor() > 0, "{text:?} parsed to a non-positive amount");
        let canonical = format_minor(money.amount_minor(), currency);
        let again = Money::parse(&canonical, currency, max_major).expect("canonical text parses");
        assert_eq!(again, money, "{text:?} → {canonical:?}");
    }
});
