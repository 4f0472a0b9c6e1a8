//! Money: amounts as integer minor units, their exact parsing and formatting as decimal text, checked
//! arithmetic, and exact currency conversion at a decimal rate.
//!
//! Everything that turns text into an amount, an amount into text, or one currency's amount into another's
//! belongs here. No float is used anywhere: an amount is an `i64` count of the currency's minor unit (cents for
//! USD, yen for JPY, fils for BHD) and the currency's exponent converts it to and from decimal text at the edges.
//!
//! # Parsing request amounts exactly
//!
//! API.md lets a client send an amount as a JSON number (`500.00`) or a JSON string (`"500.00"`). A JSON number
//! must never reach us as an `f64`: most decimals, `0.1` among them, have no exact `f64`, and the number of
//! decimals written is lost. So this crate works on the *decimal text* only: the server layer takes the raw text
//! of the JSON number (with `serde_json::value::RawValue`), or the content of the JSON string, and passes it to
//! [`parse_amount`]. For the same reason [`Rate`] deserializes from strings only. Responses go the other way:
//! [`format_minor`] gives the exact decimal text, which the server writes out as a raw JSON number.
//!
//! # The amount grammar
//!
//! [`parse_amount`] accepts exactly `digits [ "." digits ]`: the JSON number grammar without sign, exponent or
//! leading zeros, so a number and a string follow the same rule. In particular it rejects:
//!
//! - exponent forms (`1e2`, `1E2`): a client can always write the plain digits, and accepting them would let a
//!   short text like `1e999999` make us do unbounded work;
//! - a leading `+`, any whitespace, an empty text, `1.` and `.5` (none of them is a JSON number);
//! - leading zeros (`007`, `00.5`), again as JSON does; `0.5` is fine;
//! - more fractional digits *written* than the currency's exponent, even when the extra ones are zeros
//!   (`1.000` USD, `500.0` JPY). API.md says an amount "may not have more decimals than the currency's minor
//!   unit"; counting written digits is the literal, predictable reading, and tells a client early that it is
//!   formatting amounts for the wrong currency. Fewer digits are fine (`500`, `500.5` USD).
//!
//! A well-formed negative amount (`-1`) is reported as [`AmountError::NotPositive`] rather than malformed,
//! because that tells the client what is actually wrong.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::currency::Currency;

/// The largest amount of one transaction, in major units of its currency, that API.md allows by default
/// (inclusive). Deployments may configure another value and pass it to [`parse_amount`].
pub const DEFAULT_AMOUNT_MAX_MAJOR: u64 = 1_000_000;

/// The most fractional digits a [`Rate`] may have. Twelve is far beyond what any market quotes (usually 4 to 6),
/// and it keeps every conversion inside `i128` (see [`convert`]).
pub const RATE_FRACTION_DIGITS_MAX: u32 = 12;

/// The most digits a [`Rate`] may have before the decimal point, so a rate is below 10^12.
pub const RATE_INTEGER_DIGITS_MAX: u32 = 12;

/// An amount of one currency, as a signed count of its minor units.
///
/// `Money` is what the ledger passes around: a posting's signed amount, a balance, a request amount once parsed.
/// It may be negative or zero (a debit leg, an empty wallet); the rules for *request* amounts (positive, at most
/// the maximum) are checked by [`parse_amount`]. Arithmetic is checked and never mixes currencies.
///
/// It serializes as `{"amount_minor": 50000, "currency": "USD"}`, the exact form for events and storage; API
/// responses use [`format_minor`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// `amount_minor` minor units of `currency`: `Money::new(50000, Currency::USD)` is 500.00 USD.
    pub const fn new(amount_minor: i64, currency: Currency) -> Self {
        Self { amount_minor, currency }
    }

    /// Nothing, in `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// Parses a request amount with [`parse_amount`]'s rules.
    pub fn parse(text: &str, currency: Currency, max_major: u64) -> Result<Self, AmountError> {
        parse_amount(text, currency, max_major).map(|amount_minor| Self::new(amount_minor, currency))
    }

    /// The signed amount in minor units of [`Money::currency`].
    pub const fn amount_minor(self) -> i64 {
        self.amount_minor
    }

    /// The currency of the amount.
    pub const fn currency(self) -> Currency {
        self.currency
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.amount_minor > 0
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.amount_minor < 0
    }

    /// Whether the amount is exactly zero.
    pub const fn is_zero(self) -> bool {
        self.amount_minor == 0
    }

    /// The exact decimal text with the currency's decimals (`"500.00"`); see [`format_minor`].
    pub fn to_decimal_string(self) -> String {
        format_minor(self.amount_minor, self.currency)
    }

    /// The sum of two amounts of the same currency, or an error instead of overflowing or mixing currencies.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        let currency = self.same_currency(other)?;
        let sum = self.amount_minor.checked_add(other.amount_minor).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(sum, currency))
    }

    /// `self - other` for two amounts of the same currency, or an error instead of overflowing or mixing
    /// currencies.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        let currency = self.same_currency(other)?;
        let difference = self.amount_minor.checked_sub(other.amount_minor).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(difference, currency))
    }

    /// The opposite amount, as a rollback posts it; fails only for `i64::MIN`, which has no opposite.
    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let negated = self.amount_minor.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money::new(negated, self.currency))
    }

    /// This amount converted to `to` at `rate`, rounded down to `to`'s minor unit; see [`convert`].
    pub fn convert(self, to: Currency, rate: Rate) -> Result<Money, ConversionError> {
        convert(self.amount_minor, self.currency, to, rate).map(|amount_minor| Money::new(amount_minor, to))
    }

    /// The common currency of two amounts, or the mismatch as an error.
    fn same_currency(self, other: Money) -> Result<Currency, MoneyError> {
        if self.currency == other.currency {
            Ok(self.currency)
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
}

impl fmt::Display for Money {
    /// Writes `"500.00 USD"`, for logs and messages; API bodies carry amount and currency as separate fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Why two amounts could not be combined. These are programming or capacity errors, not client errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amounts are in different currencies; the ledger never adds those.
    #[error("cannot combine an amount in {left} with an amount in {right}")]
    CurrencyMismatch {
        /// The currency of the left-hand amount.
        left: Currency,
        /// The currency of the right-hand amount.
        right: Currency,
    },
    /// The result does not fit in an `i64` count of minor units.
    #[error("amount is too large")]
    Overflow,
}

/// Why a request amount was refused. Every variant maps to API.md's 400 `invalid_amount`, and the messages are
/// written to be shown to an API client as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The text is not a plain decimal number (see the module documentation for the grammar).
    #[error(
        "amount must be a plain decimal number such as 500 or 500.00 \
         (no exponent, plus sign, spaces or leading zeros)"
    )]
    Malformed,
    /// More fractional digits were written than the currency's minor unit has.
    #[error("amount has more decimal places than {currency} allows ({max})")]
    TooManyDecimals {
        /// The currency of the amount.
        currency: Currency,
        /// The currency's exponent: the most fractional digits allowed.
        max: u32,
    },
    /// Zero or negative: money only moves in positive amounts, the direction comes from the operation.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// Above the configured maximum per transaction (the maximum itself is allowed).
    #[error("amount is above the maximum of {max_major} {currency} per transaction")]
    AboveMaximum {
        /// The currency of the amount.
        currency: Currency,
        /// The maximum, in major units.
        max_major: u64,
    },
    /// Too large to count in minor units at all (beyond `i64`).
    #[error("amount is too large")]
    Overflow,
}

/// Parses a request amount written as decimal text into minor units of `currency`, exactly.
///
/// `text` is the raw text of a JSON number or the content of a JSON string, without surrounding whitespace
/// (see the module documentation for why and for the exact grammar). The amount must be greater than zero, have
/// at most `currency.exponent()` fractional digits written, and be at most `max_major` major units (inclusive;
/// [`DEFAULT_AMOUNT_MAX_MAJOR`] is API.md's default). `parse_amount("500.5", Currency::USD, 1_000_000)` is
/// `Ok(50050)`.
///
/// Checks run in this order, so each text gets the most useful error: grammar, decimals, sign, size, maximum.
pub fn parse_amount(text: &str, currency: Currency, max_major: u64) -> Result<i64, AmountError> {
    let decimal = DecimalText::split(text).ok_or(AmountError::Malformed)?;
    let exponent = currency.exponent();
    if decimal.fraction_digits() > exponent {
        return Err(AmountError::TooManyDecimals { currency, max: exponent });
    }
    if decimal.negative {
        return Err(AmountError::NotPositive);
    }
    let amount_minor =
        decimal.scaled_to(exponent).and_then(|value| i64::try_from(value).ok()).ok_or(AmountError::Overflow)?;
    if amount_minor == 0 {
        return Err(AmountError::NotPositive);
    }
    if i128::from(amount_minor) > i128::from(max_major) * i128::from(currency.minor_units_per_major()) {
        return Err(AmountError::AboveMaximum { currency, max_major });
    }
    Ok(amount_minor)
}

/// Parses a wallet limit (an overdraft or a maximum balance) written as decimal text: like [`parse_amount`], but
/// zero is allowed and no per-transaction maximum applies. `parse_limit("0", Currency::USD)` is `Ok(0)`.
pub fn parse_limit(text: &str, currency: Currency) -> Result<i64, AmountError> {
    match parse_amount(text, currency, u64::MAX) {
        Err(AmountError::NotPositive) if DecimalText::split(text).is_some_and(|d| !d.negative) => Ok(0),
        other => other,
    }
}

/// The exact decimal text of `amount_minor` minor units of `currency`, with exactly the currency's decimals:
/// `"500.00"` for 50000 USD, `"500"` for 500 JPY, `"-0.05"` for -5 USD, `"1.234"` for 1234 BHD.
///
/// This is valid JSON number text, so the server writes it out raw to answer with exact numbers; for
/// positive amounts up to the maximum it parses back with [`parse_amount`] to the same value.
pub fn format_minor(amount_minor: i64, currency: Currency) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    // `unsigned_abs` rather than `abs`: `i64::MIN` has no positive `i64` counterpart.
    let magnitude = amount_minor.unsigned_abs();
    let exponent = currency.exponent();
    if exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let per_major = currency.minor_units_per_major().unsigned_abs();
    let width = exponent as usize;
    format!("{sign}{}.{:0width$}", magnitude / per_major, magnitude % per_major)
}

/// An exchange rate as an exact positive decimal: how many major units of the target currency one major unit
/// of the source currency buys (`149.5` for USD → JPY).
///
/// Stored as `mantissa / 10^scale` with no trailing zeros, so `1.50` and `1.5` are the same `Rate`. A rate has
/// at most [`RATE_FRACTION_DIGITS_MAX`] fractional digits and [`RATE_INTEGER_DIGITS_MAX`] integer digits; those
/// limits keep [`convert`] exact in `i128`. It displays and serializes as its canonical decimal text (`"149.5"`)
/// and deserializes only from a string, never from a float.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Below 10^(RATE_INTEGER_DIGITS_MAX + scale), above zero, and not a multiple of 10 unless `scale` is 0.
    mantissa: u128,
    /// At most `RATE_FRACTION_DIGITS_MAX`.
    scale: u32,
}

impl Rate {
    /// The rate `mantissa / 10^scale`, checked against the limits and normalised (trailing zeros dropped).
    ///
    /// This is the form to store a rate in a database as two integer columns; `Rate::new(10833, 4)` is 1.0833.
    pub fn new(mantissa: u128, scale: u32) -> Result<Self, RateError> {
        if scale > RATE_FRACTION_DIGITS_MAX {
            return Err(RateError::TooManyDecimals { max: RATE_FRACTION_DIGITS_MAX });
        }
        if mantissa == 0 {
            return Err(RateError::NotPositive);
        }
        // Both exponents are at most 12, so 10^24 fits easily in a u128.
        if mantissa >= 10_u128.pow(RATE_INTEGER_DIGITS_MAX + scale) {
            return Err(RateError::TooLarge { max_integer_digits: RATE_INTEGER_DIGITS_MAX });
        }
        let (mut mantissa, mut scale) = (mantissa, scale);
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Ok(Self { mantissa, scale })
    }

    /// Parses a rate from decimal text with the amount grammar (`digits [ "." digits ]`: no sign, exponent,
    /// whitespace or leading zeros), at most [`RATE_FRACTION_DIGITS_MAX`] fractional digits written and at most
    /// [`RATE_INTEGER_DIGITS_MAX`] integer digits. Trailing zeros are allowed within those limits.
    pub fn parse(text: &str) -> Result<Self, RateError> {
        let decimal = DecimalText::split(text).ok_or(RateError::Malformed)?;
        if decimal.negative {
            return Err(RateError::NotPositive);
        }
        if decimal.fraction_digits() > RATE_FRACTION_DIGITS_MAX {
            return Err(RateError::TooManyDecimals { max: RATE_FRACTION_DIGITS_MAX });
        }
        let too_large = RateError::TooLarge { max_integer_digits: RATE_INTEGER_DIGITS_MAX };
        if decimal.integer.len() > RATE_INTEGER_DIGITS_MAX as usize {
            return Err(too_large);
        }
        // At most 24 digits by now, so this cannot overflow a u128; the error only keeps the code panic-free.
        let mantissa = decimal.scaled_to(decimal.fraction_digits()).ok_or(too_large)?;
        Self::new(mantissa, decimal.fraction_digits())
    }

    /// The integer `m` of `m / 10^scale`, without trailing zeros.
    pub const fn mantissa(self) -> u128 {
        self.mantissa
    }

    /// The number of fractional digits of the canonical form, at most [`RATE_FRACTION_DIGITS_MAX`].
    pub const fn scale(self) -> u32 {
        self.scale
    }

    /// The rate as `(mantissa, scale)`: `mantissa / 10^scale`, normalised (no trailing zeros in the mantissa).
    pub fn parts(self) -> (u128, u32) {
        (self.mantissa, self.scale)
    }
}

impl fmt::Display for Rate {
    /// Writes the canonical decimal text: `"149.5"`, `"1.0833"`, `"2"`. It is valid JSON number text too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let divisor = 10_u128.pow(self.scale);
        let width = self.scale as usize;
        write!(f, "{}.{:0width$}", self.mantissa / divisor, self.mantissa % divisor)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rate({self})")
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Rate::parse(text)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(RateVisitor)
    }
}

/// Reads a rate from a string only: a JSON number would already have been rounded through an `f64`.
struct RateVisitor;

impl Visitor<'_> for RateVisitor {
    type Value = Rate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an exchange rate as a decimal string such as \"1.0833\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Rate, E> {
        Rate::parse(text).map_err(E::custom)
    }
}

/// Why a text or a mantissa and scale are not an acceptable exchange rate. Messages are written for API clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not a plain decimal number.
    #[error("rate must be a plain decimal number such as 1.0833 (no exponent, plus sign, spaces or leading zeros)")]
    Malformed,
    /// Zero or negative: a rate of zero would destroy money.
    #[error("rate must be greater than zero")]
    NotPositive,
    /// More fractional digits than [`RATE_FRACTION_DIGITS_MAX`].
    #[error("rate may have at most {max} decimal places")]
    TooManyDecimals {
        /// The most fractional digits allowed.
        max: u32,
    },
    /// More integer digits than [`RATE_INTEGER_DIGITS_MAX`].
    #[error("rate may have at most {max_integer_digits} digits before the decimal point")]
    TooLarge {
        /// The most integer digits allowed.
        max_integer_digits: u32,
    },
}

/// Converts `amount_minor` minor units of `from` into minor units of `to` at `rate` (major units of `to` per
/// major unit of `from`), rounding down (towards negative infinity) to `to`'s minor unit.
///
/// The result is exact: it is the floor of `amount × rate` with the exponent difference applied
/// (10000 USD cents at 149.5 is 14950 yen; 1 yen at 0.0067 is 0 cents; 1000 EUR cents at 1.0833 is 1083 USD
/// cents). Rounding down means an exchange never pays out more than it took in; the remainder stays in the
/// system's FX accounts. A zero result is returned as zero: the caller decides to refuse it.
///
/// The computation is `amount × mantissa × 10^to_exponent` divided by `10^(scale + from_exponent)` in `i128`.
/// The divisor is at most 10^15, so whenever the result fits in an `i64` the intermediate product fits in an
/// `i128`; an overflow therefore always means the result itself is out of range, and is reported as
/// [`ConversionError::Overflow`].
pub fn convert(amount_minor: i64, from: Currency, to: Currency, rate: Rate) -> Result<i64, ConversionError> {
    let mantissa = i128::try_from(rate.mantissa).map_err(|_| ConversionError::Overflow)?;
    let numerator = i128::from(amount_minor)
        .checked_mul(mantissa)
        .and_then(|product| product.checked_mul(10_i128.pow(to.exponent())))
        .ok_or(ConversionError::Overflow)?;
    let divisor = 10_i128.pow(rate.scale + from.exponent());
    i64::try_from(numerator.div_euclid(divisor)).map_err(|_| ConversionError::Overflow)
}

/// Why a conversion has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// The converted amount does not fit in an `i64` count of minor units.
    #[error("converted amount is too large")]
    Overflow,
}

/// A decimal text that passed the grammar `[-] digits [ "." digits ]` with no leading zeros, split into parts.
///
/// Amounts and rates share it so that both accept exactly the same spellings.
struct DecimalText<'a> {
    negative: bool,
    integer: &'a str,
    fraction: &'a str,
}

impl<'a> DecimalText<'a> {
    /// Splits `text`, or `None` if it breaks the grammar.
    fn split(text: &'a str) -> Option<Self> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (integer, fraction) = match unsigned.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (unsigned, None),
        };
        let has_leading_zero = integer.len() > 1 && integer.starts_with('0');
        if !is_digits(integer) || has_leading_zero || fraction.is_some_and(|digits| !is_digits(digits)) {
            return None;
        }
        Some(Self { negative, integer, fraction: fraction.unwrap_or("") })
    }

    /// How many fractional digits were written, saturating far beyond any limit we check against.
    fn fraction_digits(&self) -> u32 {
        u32::try_from(self.fraction.len()).unwrap_or(u32::MAX)
    }

    /// The magnitude as an integer count of `10^-exponent` units, or `None` on overflow.
    ///
    /// The caller has checked that at most `exponent` fractional digits were written.
    fn scaled_to(&self, exponent: u32) -> Option<u128> {
        let value = append_digits(append_digits(0, self.integer)?, self.fraction)?;
        let padding = exponent.checked_sub(self.fraction_digits())?;
        value.checked_mul(10_u128.checked_pow(padding)?)
    }
}

/// Whether `text` is one or more ASCII digits (and nothing else: no Unicode digits, signs or spaces).
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// `value` with the ASCII `digits` appended in base 10, or `None` on overflow (a very long text).
fn append_digits(value: u128, digits: &str) -> Option<u128> {
    digits.bytes().try_fold(value, |value, digit| value.checked_mul(10)?.checked_add(u128::from(digit - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_like_amounts_but_may_be_zero_and_large() {
        assert_eq!(parse_limit("0", Currency::USD), Ok(0));
        assert_eq!(parse_limit("0.00", Currency::USD), Ok(0));
        assert_eq!(parse_limit("50000000.50", Currency::USD), Ok(5_000_000_050));
        assert_eq!(parse_limit("-1", Currency::USD), Err(AmountError::NotPositive));
        assert_eq!(
            parse_limit("1.001", Currency::USD),
            Err(AmountError::TooManyDecimals { currency: Currency::USD, max: 2 })
        );
        assert_eq!(parse_limit("abc", Currency::USD), Err(AmountError::Malformed));
    }
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, F64Deserializer, StrDeserializer};

    const USD: Currency = Currency::USD;
    const JPY: Currency = Currency::JPY;
    const BHD: Currency = Currency::BHD;
    const EUR: Currency = Currency::EUR;
    const MAX: u64 = DEFAULT_AMOUNT_MAX_MAJOR;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).unwrap()
    }

    #[test]
    fn well_formed_amounts_parse_to_minor_units() {
        let cases = [
            ("500", USD, 50_000),
            ("500.5", USD, 50_050),
            ("500.00", USD, 50_000),
            ("0.01", USD, 1),
            ("0.5", USD, 50),
            ("10", USD, 1_000),
            ("500", JPY, 500),
            ("1", JPY, 1),
            ("1.234", BHD, 1_234),
            ("0.001", BHD, 1),
            ("1.2", BHD, 1_200),
        ];
        for (text, currency, expected) in cases {
            assert_eq!(parse_amount(text, currency, MAX), Ok(expected), "{text:?} {currency}");
        }
    }

    #[test]
    fn the_maximum_amount_itself_is_accepted() {
        assert_eq!(parse_amount("1000000", USD, MAX), Ok(100_000_000));
        assert_eq!(parse_amount("1000000.00", USD, MAX), Ok(100_000_000));
        assert_eq!(parse_amount("1000000", JPY, MAX), Ok(1_000_000));
        assert_eq!(parse_amount("1000000.000", BHD, MAX), Ok(1_000_000_000));
        assert_eq!(parse_amount("10.00", USD, 10), Ok(1_000));
    }

    #[test]
    fn amount_above_the_maximum_is_rejected() {
        let above = |currency| AmountError::AboveMaximum { currency, max_major: MAX };
        assert_eq!(parse_amount("1000000.01", USD, MAX), Err(above(USD)));
        assert_eq!(parse_amount("1000001", JPY, MAX), Err(above(JPY)));
        assert_eq!(parse_amount("1000000.001", BHD, MAX), Err(above(BHD)));
        assert_eq!(parse_amount("10.01", USD, 10), Err(AmountError::AboveMaximum { currency: USD, max_major: 10 }));
        assert_eq!(parse_amount("0.01", USD, 0), Err(AmountError::AboveMaximum { currency: USD, max_major: 0 }));
    }

    #[test]
    fn zero_amounts_are_rejected() {
        for text in ["0", "0.0", "0.00", "-0", "-0.00"] {
            assert_eq!(parse_amount(text, USD, MAX), Err(AmountError::NotPositive), "{text:?}");
        }
        assert_eq!(parse_amount("0", JPY, MAX), Err(AmountError::NotPositive));
    }

    #[test]
    fn negative_amounts_are_rejected_as_not_positive() {
        for text in ["-1", "-0.01", "-500.00", "-99999999999999999999"] {
            assert_eq!(parse_amount(text, USD, MAX), Err(AmountError::NotPositive), "{text:?}");
        }
    }

    #[test]
    fn amount_with_too_many_decimals_is_rejected() {
        let too_many = |currency: Currency| AmountError::TooManyDecimals { currency, max: currency.exponent() };
        let cases = [("1.234", USD), ("0.001", USD), ("1.2", JPY), ("1.2345", BHD), ("-1.234", USD)];
        for (text, currency) in cases {
            assert_eq!(parse_amount(text, currency, MAX), Err(too_many(currency)), "{text:?} {currency}");
        }
    }

    #[test]
    fn trailing_zeros_beyond_the_minor_unit_are_rejected() {
        assert_eq!(parse_amount("1.000", USD, MAX), Err(AmountError::TooManyDecimals { currency: USD, max: 2 }));
        assert_eq!(parse_amount("500.0", JPY, MAX), Err(AmountError::TooManyDecimals { currency: JPY, max: 0 }));
        assert_eq!(parse_amount("500.00", JPY, MAX), Err(AmountError::TooManyDecimals { currency: JPY, max: 0 }));
    }

    #[test]
    fn amounts_too_large_for_i64_overflow() {
        let cases = [
            ("99999999999999999999", USD),
            ("92233720368547758.08", USD),
            ("9223372036854775808", JPY),
            ("340282366920938463463374607431768211456", JPY),
        ];
        for (text, currency) in cases {
            assert_eq!(parse_amount(text, currency, u64::MAX), Err(AmountError::Overflow), "{text:?}");
            assert_eq!(parse_amount(text, currency, MAX), Err(AmountError::Overflow), "{text:?}");
        }
        let very_long = "9".repeat(10_000);
        assert_eq!(parse_amount(&very_long, USD, MAX), Err(AmountError::Overflow));
    }

    #[test]
    fn the_largest_i64_amount_parses_when_the_maximum_allows_it() {
        assert_eq!(parse_amount("92233720368547758.07", USD, u64::MAX), Ok(i64::MAX));
        assert_eq!(parse_amount("9223372036854775807", JPY, u64::MAX), Ok(i64::MAX));
    }

    #[test]
    fn malformed_amounts_are_rejected() {
        let whitespace_and_signs = ["", " ", " 500", "500 ", "5 00", "500\n", "\t1", "+500", "+0.01", "--1", "-"];
        let exponents_and_points = ["1e2", "1E2", "1.5e1", "1e-2", "1.", ".5", "-.5", ".", "1..2", "1.2.3"];
        let leading_zeros_and_separators = ["01", "00", "00.5", "-01", "1,000", "1_000", "1'000"];
        let not_decimal_digits = ["abc", "500USD", "USD500", "0x10", "NaN", "Infinity", "\"500\"", "１", "١", "1\0"];
        let cases =
            [&whitespace_and_signs[..], &exponents_and_points, &leading_zeros_and_separators, &not_decimal_digits];
        for text in cases.concat() {
            assert_eq!(parse_amount(text, USD, MAX), Err(AmountError::Malformed), "{text:?}");
        }
    }

    #[test]
    fn amount_errors_read_well_for_api_clients() {
        let message = |text, currency| parse_amount(text, currency, MAX).map_err(|e| e.to_string());
        assert_eq!(message("1.234", USD), Err("amount has more decimal places than USD allows (2)".into()));
        assert_eq!(message("1.5", JPY), Err("amount has more decimal places than JPY allows (0)".into()));
        assert_eq!(message("0", USD), Err("amount must be greater than zero".into()));
        assert_eq!(message("2000000", EUR), Err("amount is above the maximum of 1000000 EUR per transaction".into()));
        assert_eq!(message("99999999999999999999", USD), Err("amount is too large".into()));
        assert!(message("1e2", USD).is_err_and(|m| m.contains("no exponent")));
    }

    #[test]
    fn money_parse_keeps_the_currency() {
        assert_eq!(Money::parse("12.34", EUR, MAX), Ok(Money::new(1_234, EUR)));
        assert_eq!(Money::parse("0", EUR, MAX), Err(AmountError::NotPositive));
    }

    #[test]
    fn amounts_format_with_exactly_the_currency_decimals() {
        let cases = [
            (50_000, USD, "500.00"),
            (50_050, USD, "500.50"),
            (1, USD, "0.01"),
            (0, USD, "0.00"),
            (-5, USD, "-0.05"),
            (-100, USD, "-1.00"),
            (500, JPY, "500"),
            (-500, JPY, "-500"),
            (0, JPY, "0"),
            (1_234, BHD, "1.234"),
            (1, BHD, "0.001"),
            (i64::MAX, USD, "92233720368547758.07"),
            (i64::MIN, USD, "-92233720368547758.08"),
            (i64::MIN, JPY, "-9223372036854775808"),
        ];
        for (amount_minor, currency, expected) in cases {
            assert_eq!(format_minor(amount_minor, currency), expected, "{amount_minor} {currency}");
        }
    }

    #[test]
    fn money_displays_amount_and_currency() {
        assert_eq!(Money::new(50_000, USD).to_string(), "500.00 USD");
        assert_eq!(Money::new(-7, JPY).to_string(), "-7 JPY");
        assert_eq!(Money::new(50_000, USD).to_decimal_string(), "500.00");
    }

    #[test]
    fn money_of_one_currency_adds_and_subtracts() {
        let a = Money::new(1_000, USD);
        let b = Money::new(250, USD);
        assert_eq!(a.checked_add(b), Ok(Money::new(1_250, USD)));
        assert_eq!(b.checked_sub(a), Ok(Money::new(-750, USD)));
        assert_eq!(a.checked_neg(), Ok(Money::new(-1_000, USD)));
        assert!(Money::zero(USD).is_zero() && a.is_positive() && a.checked_neg().is_ok_and(Money::is_negative));
    }

    #[test]
    fn money_of_different_currencies_does_not_combine() {
        let mismatch = MoneyError::CurrencyMismatch { left: USD, right: EUR };
        assert_eq!(Money::new(1, USD).checked_add(Money::new(1, EUR)), Err(mismatch));
        assert_eq!(Money::new(1, USD).checked_sub(Money::new(1, EUR)), Err(mismatch));
    }

    #[test]
    fn money_arithmetic_reports_overflow_instead_of_wrapping() {
        assert_eq!(Money::new(i64::MAX, USD).checked_add(Money::new(1, USD)), Err(MoneyError::Overflow));
        assert_eq!(Money::new(i64::MIN, USD).checked_sub(Money::new(1, USD)), Err(MoneyError::Overflow));
        assert_eq!(Money::new(i64::MIN, USD).checked_neg(), Err(MoneyError::Overflow));
    }

    #[test]
    fn rates_parse_and_display_canonically() {
        let cases = [
            ("149.5", "149.5"),
            ("1.0833", "1.0833"),
            ("0.0067", "0.0067"),
            ("1", "1"),
            ("1.50", "1.5"),
            ("2.000", "2"),
            ("10", "10"),
            ("0.000000000001", "0.000000000001"),
            ("999999999999.999999999999", "999999999999.999999999999"),
        ];
        for (text, expected) in cases {
            assert_eq!(Rate::parse(text).map(|r| r.to_string()), Ok(expected.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn equal_rates_written_differently_are_equal() {
        assert_eq!(rate("1.5"), rate("1.500"));
        assert_eq!(Rate::new(15_000, 4), Ok(rate("1.5")));
        assert_eq!((rate("1.50").mantissa(), rate("1.50").scale()), (15, 1));
    }

    #[test]
    fn rates_outside_the_limits_are_rejected() {
        let too_many = Err(RateError::TooManyDecimals { max: RATE_FRACTION_DIGITS_MAX });
        let too_large = Err(RateError::TooLarge { max_integer_digits: RATE_INTEGER_DIGITS_MAX });
        assert_eq!(Rate::parse("0.0000000000001"), too_many);
        assert_eq!(Rate::parse("1.0000000000000"), too_many);
        assert_eq!(Rate::parse("1000000000000"), too_large);
        assert_eq!(Rate::new(1, 13), too_many);
        assert_eq!(Rate::new(10_u128.pow(12), 0), too_large);
        assert_eq!(Rate::new(u128::MAX, 12), too_large);
    }

    #[test]
    fn zero_and_negative_rates_are_rejected() {
        for text in ["0", "0.0", "0.000000000000", "-1", "-0.5"] {
            assert_eq!(Rate::parse(text), Err(RateError::NotPositive), "{text:?}");
        }
        assert_eq!(Rate::new(0, 3), Err(RateError::NotPositive));
    }

    #[test]
    fn malformed_rates_are_rejected() {
        for text in ["", " 1", "1 ", "+1", "1e2", "1.", ".5", "01.5", "1,5", "abc", "1.2.3"] {
            assert_eq!(Rate::parse(text), Err(RateError::Malformed), "{text:?}");
        }
    }

    #[test]
    fn rate_deserializes_from_a_string_but_not_from_a_float() {
        let text: StrDeserializer<'_, ValueError> = "1.0833".into_deserializer();
        assert_eq!(Rate::deserialize(text), Ok(rate("1.0833")));
        let float: F64Deserializer<ValueError> = 1.0833_f64.into_deserializer();
        assert!(Rate::deserialize(float).is_err());
        let bad: StrDeserializer<'_, ValueError> = "1e2".into_deserializer();
        assert!(Rate::deserialize(bad).is_err());
    }

    #[test]
    fn conversion_rounds_down_to_the_target_minor_unit() {
        let cases = [
            (10_000, USD, JPY, "149.5", 14_950),
            (1, JPY, USD, "0.0067", 0),
            (1_000, EUR, USD, "1.0833", 1_083),
            (100, JPY, USD, "0.0067", 67),
            (150, JPY, USD, "0.0067", 100),
            (1_000, JPY, BHD, "0.0025", 2_500),
            (1, BHD, JPY, "0.5", 0),
            (1_999, USD, USD, "1", 1_999),
            (999, USD, JPY, "1", 9),
            (-1, USD, EUR, "0.5", -1),
        ];
        for (amount_minor, from, to, rate_text, expected) in cases {
            let result = convert(amount_minor, from, to, rate(rate_text));
            assert_eq!(result, Ok(expected), "{amount_minor} {from} -> {to} at {rate_text}");
        }
    }

    #[test]
    fn money_converts_into_the_target_currency() {
        assert_eq!(Money::new(10_000, USD).convert(JPY, rate("149.5")), Ok(Money::new(14_950, JPY)));
    }

    #[test]
    fn conversion_too_large_for_i64_is_an_error_not_a_panic() {
        let huge = rate("999999999999.999999999999");
        assert_eq!(convert(i64::MAX, JPY, USD, rate("2")), Err(ConversionError::Overflow));
        assert_eq!(convert(i64::MAX, JPY, BHD, huge), Err(ConversionError::Overflow));
        assert_eq!(convert(i64::MIN, JPY, BHD, huge), Err(ConversionError::Overflow));
        assert_eq!(convert(i64::MAX, BHD, JPY, rate("0.000000000001")), Ok(9_223));
    }

    /// Any currency of the table.
    fn any_currency() -> impl Strategy<Value = Currency> {
        proptest::sample::select(Currency::all())
    }

    /// A currency with a valid request amount in minor units (from the smallest unit up to the default maximum).
    fn currency_and_valid_amount() -> impl Strategy<Value = (Currency, i64)> {
        any_currency().prop_flat_map(|currency| {
            let max_minor = i64::try_from(MAX).unwrap() * currency.minor_units_per_major();
            (Just(currency), 1..=max_minor)
        })
    }

    /// Decimal text of `value` units of `10^-exponent`, written with exactly `exponent` decimals, from a u128 so
    /// that it can describe values beyond `i64`.
    fn decimal_text(value: u128, exponent: u32) -> String {
        if exponent == 0 {
            return value.to_string();
        }
        let divisor = 10_u128.pow(exponent);
        format!("{}.{:0width$}", value / divisor, value % divisor, width = exponent as usize)
    }

    /// A valid rate with a spread of magnitudes, from 10^-12 up to just below 10^12.
    fn any_rate() -> impl Strategy<Value = Rate> {
        (1_u32..=24, 0_u32..=RATE_FRACTION_DIGITS_MAX)
            .prop_flat_map(|(digits, scale)| (1..10_u128.pow(digits), Just(scale)))
            .prop_filter_map("rate out of range", |(mantissa, scale)| Rate::new(mantissa, scale).ok())
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_gives_back_every_valid_amount((currency, amount_minor) in currency_and_valid_amount()) {
            prop_assert_eq!(parse_amount(&format_minor(amount_minor, currency), currency, MAX), Ok(amount_minor));
        }

        #[test]
        fn formatting_then_parsing_gives_back_any_positive_i64(currency in any_currency(), amount_minor in 1..=i64::MAX) {
            let text = format_minor(amount_minor, currency);
            prop_assert_eq!(parse_amount(&text, currency, u64::MAX), Ok(amount_minor));
        }

        #[test]
        fn parsing_then_formatting_gives_back_canonical_text(
            currency in any_currency(),
            value in 1_u128..=u128::from(MAX) * 1_000,
        ) {
            let value = value % (u128::from(MAX) * u128::from(currency.minor_units_per_major().unsigned_abs())) + 1;
            let text = decimal_text(value, currency.exponent());
            let parsed = parse_amount(&text, currency, MAX);
            prop_assert_eq!(parsed.map(|minor| format_minor(minor, currency)), Ok(text));
        }

        #[test]
        fn any_amount_with_too_many_decimals_is_rejected(
            currency in any_currency(),
            value in any::<u128>(),
            extra_digits in 1_u32..=6,
            negative in any::<bool>(),
        ) {
            let sign = if negative { "-" } else { "" };
            let digits = value.to_string();
            let fraction_digits = (currency.exponent() + extra_digits) as usize;
            let fraction = format!("{:0>fraction_digits$}", &digits[digits.len().saturating_sub(fraction_digits)..]);
            let text = format!("{sign}{}.{fraction}", value / 7);
            let expected = AmountError::TooManyDecimals { currency, max: currency.exponent() };
            prop_assert_eq!(parse_amount(&text, currency, u64::MAX), Err(expected));
        }

        #[test]
        fn any_zero_amount_is_rejected(currency in any_currency(), zeros in 0_usize..=3, negative in any::<bool>()) {
            let zeros = zeros.min(currency.exponent() as usize);
            let sign = if negative { "-" } else { "" };
            let text = if zeros == 0 { format!("{sign}0") } else { format!("{sign}0.{}", "0".repeat(zeros)) };
            prop_assert_eq!(parse_amount(&text, currency, MAX), Err(AmountError::NotPositive));
        }

        #[test]
        fn any_negative_amount_is_rejected(currency in any_currency(), amount_minor in i64::MIN..0) {
            let text = format_minor(amount_minor, currency);
            prop_assert_eq!(parse_amount(&text, currency, u64::MAX), Err(AmountError::NotPositive));
        }

        #[test]
        fn any_amount_beyond_i64_overflows(currency in any_currency(), value in (i64::MAX as u128 + 1)..=u128::MAX / 1_000) {
            let text = decimal_text(value, currency.exponent());
            prop_assert_eq!(parse_amount(&text, currency, u64::MAX), Err(AmountError::Overflow));
        }

        #[test]
        fn any_amount_above_the_maximum_is_rejected(
            (currency, amount_minor) in currency_and_valid_amount(),
            max_major in 0_u64..1_000,
        ) {
            let max_minor = i64::try_from(max_major).unwrap() * currency.minor_units_per_major();
            let result = parse_amount(&format_minor(amount_minor, currency), currency, max_major);
            if amount_minor > max_minor {
                prop_assert_eq!(result, Err(AmountError::AboveMaximum { currency, max_major }));
            } else {
                prop_assert_eq!(result, Ok(amount_minor));
            }
        }

        #[test]
        fn arbitrary_text_never_panics_the_amount_parser(text in ".{0,40}", currency in any_currency()) {
            let _ = parse_amount(&text, currency, MAX);
            let _ = Rate::parse(&text);
        }

        #[test]
        fn number_like_text_never_panics_the_amount_parser(text in "[-+0-9.eE ]{0,30}", currency in any_currency()) {
            let _ = parse_amount(&text, currency, MAX);
            let _ = Rate::parse(&text);
        }

        #[test]
        fn rate_display_parses_back_to_the_same_rate(rate in any_rate()) {
            prop_assert_eq!(Rate::parse(&rate.to_string()), Ok(rate));
        }

        #[test]
        fn conversion_is_the_floor_of_the_exact_product(
            amount_minor in -1_000_000_000_000_000_i64..=1_000_000_000_000_000,
            from in any_currency(),
            to in any_currency(),
            rate in any_rate().prop_filter("keep the check inside i128", |r| r.mantissa() < 10_u128.pow(18)),
        ) {
            // exact = numerator / divisor; the result r must satisfy r * divisor <= numerator < (r + 1) * divisor,
            // i.e. it never exceeds the exact product and is less than one minor unit below it.
            let numerator = i128::from(amount_minor) * i128::try_from(rate.mantissa()).unwrap()
                * 10_i128.pow(to.exponent());
            let divisor = 10_i128.pow(rate.scale() + from.exponent());
            let exact_floor = numerator.div_euclid(divisor);
            match convert(amount_minor, from, to, rate) {
                Ok(converted) => {
                    let converted = i128::from(converted);
                    prop_assert!(converted * divisor <= numerator);
                    prop_assert!(numerator < (converted + 1) * divisor);
                }
                Err(ConversionError::Overflow) => prop_assert!(i64::try_from(exact_floor).is_err()),
            }
        }

        #[test]
        fn conversion_of_any_amount_at_any_rate_never_panics(
            amount_minor in any::<i64>(),
            from in any_currency(),
            to in any_currency(),
            rate in any_rate(),
        ) {
            let result = convert(amount_minor, from, to, rate);
            prop_assert!(result.is_ok() || result == Err(ConversionError::Overflow));
        }
    }
}
