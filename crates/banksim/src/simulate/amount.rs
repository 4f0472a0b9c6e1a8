//! Amounts as the generator sees them: integer minor units, written as exact decimal text in requests and read
//! back from the decimal text of JSON numbers in responses, never through a float.

use std::ops::RangeInclusive;

use banksim_core::currency::Currency;
use banksim_core::money;

/// The most significant digits a response amount may have to be read exactly. Without serde_json's
/// `arbitrary_precision` feature a JSON number with a fraction is held as an `f64`, whose shortest text gives
/// back the written decimal only up to 15 significant digits (10^13 USD with cents): beyond that we refuse
/// rather than guess.
pub const RESPONSE_DIGITS_MAX: usize = 15;

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

/// Reads an amount from a response: the text of a JSON number such as `12.34`, `-0.5`, `500` or `10000.0`
/// (fewer decimals than the currency has are fine; more, an exponent, or a malformed text are errors).
pub fn parse_response(text: &str, currency: Currency) -> Result<i64, String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || (unsigned.contains('.') && fraction.is_empty())
    {
        return Err(format!("amount {text:?} is not a plain decimal number"));
    }
    let exponent = currency.exponent() as usize;
    if fraction.len() > exponent {
        return Err(format!("amount {text:?} has more decimals than {currency} allows"));
    }
    let significant = format!("{whole}{fraction}");
    if significant.trim_start_matches('0').len() > RESPONSE_DIGITS_MAX {
        return Err(format!("amount {text:?} has too many digits to be read exactly"));
    }
    let scaled = format!("{whole}{fraction:0<exponent$}");
    let magnitude: i64 = scaled.parse().map_err(|_| format!("amount {text:?} is too large"))?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// Reads the `amount` of a response, deserialized as a [`serde_json::Number`] so that no float is made of it
/// here, through its decimal text.
pub fn parse_number(number: &serde_json::Number, currency: Currency) -> Result<i64, String> {
    parse_response(&number.to_string(), currency)
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
    fn response_amounts_are_read_exactly_from_their_text() {
        assert_eq!(parse_response("12.34", Currency::USD), Ok(1234));
        assert_eq!(parse_response("10000.0", Currency::USD), Ok(1_000_000));
        assert_eq!(parse_response("0", Currency::USD), Ok(0));
        assert_eq!(parse_response("0.1", Currency::USD), Ok(10));
        assert_eq!(parse_response("-0.05", Currency::USD), Ok(-5));
        assert_eq!(parse_response("500", Currency::JPY), Ok(500));
        assert_eq!(parse_response("1.234", Currency::BHD), Ok(1234));
        assert_eq!(parse_response("9999999999999.99", Currency::USD), Ok(999_999_999_999_999));
    }

    #[test]
    fn response_amounts_that_cannot_be_exact_are_refused() {
        for text in ["", "-", "1.", ".5", "1.234", "1e3", "1.5E2", "abc", "1,5", "+1", "0.5.5"] {
            assert!(parse_response(text, Currency::USD).is_err(), "{text:?}");
        }
        assert!(parse_response("500.0", Currency::JPY).is_err());
        assert!(parse_response("99999999999999.99", Currency::USD).unwrap_err().contains("too many digits"));
    }

    #[test]
    fn json_numbers_round_trip_through_their_text() {
        for (json, minor) in [("12.34", 1234), ("10000.00", 1_000_000), ("0.10", 10), ("7", 700), ("0.07", 7)] {
            let number: serde_json::Number = serde_json::from_str(json).expect("number");
            assert_eq!(parse_number(&number, Currency::USD), Ok(minor), "{json}");
        }
        // Every cent amount up to a million reads back exactly: the text of the f64 is the shortest decimal.
        for minor in (0..100_000_000_i64).step_by(9_973) {
            let number: serde_json::Number = serde_json::from_str(&format(minor, Currency::USD)).expect("number");
            assert_eq!(parse_number(&number, Currency::USD), Ok(minor));
        }
    }

    #[test]
    fn movement_amounts_stay_small_and_positive() {
        assert_eq!(small_range(Currency::USD), 1..=100);
        assert_eq!(small_range(Currency::JPY), 1..=100);
        assert_eq!(small_range(Currency::BHD), 1..=1000);
        assert_eq!(medium_range(Currency::USD), 1..=5000);
    }
}
