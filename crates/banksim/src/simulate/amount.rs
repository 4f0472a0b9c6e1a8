//! Amounts as the generator sees them: integer minor units, written as exact decimal text in requests. Answers
//! are read back by `banksim-client`'s `Amount` from the JSON number's own text, never through a float.

use std::ops::RangeInclusive;

use banksim_core::currency::Currency;
use banksim_core::money;

/// The decimal text of `amount_minor` minor units, with exactly the currency's decimals (`"12.34"`).
pub fn format(amount_minor: i64, currency: Currency) -> String {
    money::format_minor(amount_minor, currency)
}

/// The decimal text of a sum, which may outgrow `i64` only in theory: then it is written in minor units.
pub fn format_sum(amount_minor: i128, currency: Currency) -> String {
    match i64::try_from(amount_minor) {
        Ok(amount_minor) => format(amount_minor, currency),
        Err(_) => format!("{amount_minor} minor units"),
    }
}

/// Amounts of transfers: 0.01 to 1.00 in a currency with cents, 1 to 100 units in one without.
pub fn small_range(currency: Currency) -> RangeInclusive<i64> {
    1..=currency.minor_units_per_major().max(100)
}

/// Amounts of credits and debits in the mixed scenario: up to fifty times a small amount.
pub fn medium_range(currency: Currency) -> RangeInclusive<i64> {
    let small = small_range(currency);
    *small.start()..=small.end() * 50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_are_written_with_the_currency_decimals() {
        assert_eq!(format(1234, Currency::USD), "12.34");
        assert_eq!(format(1, Currency::USD), "0.01");
        assert_eq!(format(1_000_000, Currency::USD), "10000.00");
        assert_eq!(format(500, Currency::JPY), "500");
        assert_eq!(format(1234, Currency::BHD), "1.234");
        assert_eq!(format(-5, Currency::USD), "-0.05");
        assert_eq!(format_sum(i128::from(i64::MAX) + 1, Currency::USD), "9223372036854775808 minor units");
    }

    #[test]
    fn movement_amounts_stay_small_and_positive() {
        assert_eq!(small_range(Currency::USD), 1..=100);
        assert_eq!(small_range(Currency::JPY), 1..=100);
        assert_eq!(small_range(Currency::BHD), 1..=1000);
        assert_eq!(medium_range(Currency::USD), 1..=5000);
    }
}
