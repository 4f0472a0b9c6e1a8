//! [`Amount`]: an exact decimal amount as text, the way money crosses the API. Never a float.
//!
//! banksim writes amounts as JSON numbers with exactly the currency's decimals (`500.00`, JPY `500`) and accepts
//! them as numbers or strings. A float would lose both the exact value and the written decimals, so this type
//! keeps the *text*: answers are read with `serde_json`'s raw values (the digits as the server wrote them), and
//! requests send the text as a JSON string. Turning it into minor units for arithmetic goes through the currency's
//! exponent ([`Amount::to_minor`]), and back through `banksim-core` ([`Amount::from_minor`]).

use std::fmt;

use banksim_core::currency::Currency;
use banksim_core::money::{Money, format_minor};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An exact decimal amount (`"500.00"`, `"-12.5"`), as text.
///
/// A request amount is sent as written, unchecked: the server is the judge of what it accepts (so a test can send
/// `"1.000"` and see `invalid_amount`). An answer's amount is the server's own text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amount(Box<str>);

impl Amount {
    /// The amount `text`, as written.
    pub fn new(text: impl Into<Box<str>>) -> Self {
        Self(text.into())
    }

    /// `amount_minor` minor units of `currency` with the currency's decimals (`12345` USD is `"123.45"`).
    pub fn from_minor(amount_minor: i64, currency: Currency) -> Self {
        Self(format_minor(amount_minor, currency).into_boxed_str())
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The amount in minor units of `currency`: `"123.45"` USD is `12345`, `"5"` USD is `500`. Fails on text
    /// that is not a plain decimal (`-`? digits, optionally `.` and digits), on more decimals than the currency
    /// has, and on overflow.
    pub fn to_minor(&self, currency: Currency) -> Result<i64, AmountParseError> {
        let error = || AmountParseError { text: self.0.to_string(), currency };
        let (negative, digits) = match self.0.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, &*self.0),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let exponent = currency.exponent() as usize;
        let plain = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !plain(whole) || !plain(fraction) || fraction.len() > exponent {
            return Err(error());
        }
        if digits.contains('.') && fraction.is_empty() {
            return Err(error());
        }
        let mut minor: i64 = 0;
        let padded = fraction.bytes().chain(std::iter::repeat(b'0')).take(exponent);
        for digit in whole.bytes().chain(padded) {
            minor = minor.checked_mul(10).and_then(|m| m.checked_add(i64::from(digit - b'0'))).ok_or_else(error)?;
        }
        Ok(if negative { -minor } else { minor })
    }

    /// The amount as `banksim-core` money of `currency`.
    pub fn to_money(&self, currency: Currency) -> Result<Money, AmountParseError> {
        self.to_minor(currency).map(|minor| Money::new(minor, currency))
    }
}

/// An amount's text is not an amount of its currency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an exact {currency} amount")]
pub struct AmountParseError {
    /// The text.
    pub text: String,
    /// The currency it was read in.
    pub currency: Currency,
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Amount {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for Amount {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<Money> for Amount {
    fn from(money: Money) -> Self {
        Self::from_minor(money.amount_minor(), money.currency())
    }
}

impl PartialEq<str> for Amount {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Amount {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Amount {
    /// A JSON string: banksim accepts one, and no JSON reader on the way can round it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    /// A JSON number's exact text, or a JSON string's content. Works with `serde_json` only (raw values), which is
    /// what this crate reads answers with.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if let Some(quoted) = text.strip_prefix('"') {
            let content: String = serde_json::from_str(text).map_err(D::Error::custom)?;
            debug_assert!(quoted.ends_with('"'));
            return Ok(Self(content.into_boxed_str()));
        }
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Ok(Self(text.into()))
        } else {
            Err(D::Error::custom(format!("an amount must be a number or a string, not {text}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        amount: Amount,
        maybe: Option<Amount>,
    }

    #[test]
    fn answers_keep_the_servers_exact_digits() {
        let held: Holder = serde_json::from_str(r#"{"amount": 500.10, "maybe": null}"#).expect("json");
        assert_eq!(held.amount, "500.10");
        assert_eq!(held.maybe, None);
        let held: Holder = serde_json::from_str(r#"{"amount": "0.1", "maybe": -3}"#).expect("json");
        assert_eq!(held.amount.as_str(), "0.1");
        assert_eq!(held.maybe, Some(Amount::new("-3")));
        assert!(serde_json::from_str::<Holder>(r#"{"amount": true, "maybe": null}"#).is_err());
    }

    #[test]
    fn requests_send_the_text_as_a_string() {
        assert_eq!(serde_json::to_string(&Amount::new("12.34")).expect("json"), r#""12.34""#);
        assert_eq!(Amount::from(Money::new(1_050, Currency::USD)), "10.50");
        assert_eq!(Amount::from_minor(500, Currency::JPY), "500");
    }

    #[test]
    fn minor_units_are_exact_and_signed() {
        assert_eq!(Amount::new("123.45").to_minor(Currency::USD), Ok(12_345));
        assert_eq!(Amount::new("5").to_minor(Currency::USD), Ok(500));
        assert_eq!(Amount::new("0.5").to_minor(Currency::USD), Ok(50));
        assert_eq!(Amount::new("-0.01").to_minor(Currency::USD), Ok(-1));
        assert_eq!(Amount::new("500").to_minor(Currency::JPY), Ok(500));
        for bad in ["1.234", "1.", ".5", "", "-", "1e2", "+1", "1,00", "99999999999999999999"] {
            assert!(Amount::new(bad).to_minor(Currency::USD).is_err(), "{bad:?}");
        }
        assert!(Amount::new("1.5").to_minor(Currency::JPY).is_err());
    }
}
