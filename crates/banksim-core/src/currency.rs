//! Currencies: the ISO 4217 codes banksim knows, each with its minor-unit exponent, and the set of currencies
//! a deployment has enabled.
//!
//! Everything about *which* currency a value is in belongs here; amounts and their arithmetic live in
//! [`crate::money`]. A [`Currency`] can only be obtained from the static table below, so holding one proves the
//! code is real and its exponent is known.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 currency that banksim knows, with the number of decimal places of its minor unit.
///
/// It is a reference into a static table rather than free text, so it is `Copy`, compares cheaply, and cannot
/// carry an unknown code or a wrong exponent. It displays and serializes as its code (`"USD"`).
/// Currencies order alphabetically by code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// Defines one `Currency` constant per table row and the table itself, so the two can never disagree.
macro_rules! currency_table {
    ($($code:ident = $exponent:literal, $name:literal;)*) => {
        impl Currency {
            $(
                #[doc = concat!($name, " (", stringify!($code), "), with ", stringify!($exponent),
                    " decimal places.")]
                pub const $code: Currency = Currency { code: stringify!($code), exponent: $exponent };
            )*
        }

        /// Every currency banksim knows, sorted by code so that lookups can binary-search it.
        const TABLE: &[Currency] = &[$(Currency::$code),*];
    };
}

// Keep this sorted by code: `Currency::parse` binary-searches it, and a test checks the order.
currency_table! {
    AED = 2, "UAE dirham";
    AUD = 2, "Australian dollar";
    BHD = 3, "Bahraini dinar";
    BRL = 2, "Brazilian real";
    CAD = 2, "Canadian dollar";
    CHF = 2, "Swiss franc";
    CLP = 0, "Chilean peso";
    CNY = 2, "Chinese yuan renminbi";
    CZK = 2, "Czech koruna";
    DKK = 2, "Danish krone";
    EUR = 2, "Euro";
    GBP = 2, "Pound sterling";
    HKD = 2, "Hong Kong dollar";
    ILS = 2, "Israeli new shekel";
    INR = 2, "Indian rupee";
    IQD = 3, "Iraqi dinar";
    ISK = 0, "Icelandic króna";
    JOD = 3, "Jordanian dinar";
    JPY = 0, "Japanese yen";
    KRW = 0, "South Korean won";
    KWD = 3, "Kuwaiti dinar";
    LYD = 3, "Libyan dinar";
    MXN = 2, "Mexican peso";
    MYR = 2, "Malaysian ringgit";
    NOK = 2, "Norwegian krone";
    NZD = 2, "New Zealand dollar";
    OMR = 3, "Omani rial";
    PHP = 2, "Philippine peso";
    PLN = 2, "Polish złoty";
    PYG = 0, "Paraguayan guaraní";
    SAR = 2, "Saudi riyal";
    SEK = 2, "Swedish krona";
    SGD = 2, "Singapore dollar";
    THB = 2, "Thai baht";
    TND = 3, "Tunisian dinar";
    TRY = 2, "Turkish lira";
    TWD = 2, "New Taiwan dollar";
    UGX = 0, "Ugandan shilling";
    USD = 2, "United States dollar";
    VND = 0, "Vietnamese đồng";
    XAF = 0, "Central African CFA franc";
    XOF = 0, "West African CFA franc";
    ZAR = 2, "South African rand";
}

impl Currency {
    /// Looks up an upper-case ISO 4217 code (`"USD"`) in the table.
    ///
    /// The code must be exactly three ASCII letters in upper case: API.md makes codes case-sensitive, so `"usd"`
    /// is an error rather than silently accepted, and so is a code banksim does not know.
    pub fn parse(text: &str) -> Result<Currency, CurrencyError> {
        let bytes = text.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(CurrencyError::Malformed);
        }
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(CurrencyError::NotUpperCase);
        }
        match TABLE.binary_search_by(|currency| currency.code.cmp(text)) {
            Ok(index) => Ok(TABLE[index]),
            Err(_) => Err(CurrencyError::Unknown { code: text.to_owned() }),
        }
    }

    /// The three-letter ISO 4217 code, such as `"USD"`.
    pub const fn code(self) -> &'static str {
        self.code
    }

    /// How many decimal places the minor unit has: 2 for USD (cents), 0 for JPY, 3 for BHD.
    pub const fn exponent(self) -> u32 {
        self.exponent as u32
    }

    /// How many minor units make one major unit: 100 for USD, 1 for JPY, 1000 for BHD.
    ///
    /// Exponents in the table are at most 3, so this cannot overflow.
    pub const fn minor_units_per_major(self) -> i64 {
        10_i64.pow(self.exponent as u32)
    }

    /// Every currency banksim knows, sorted by code.
    pub fn all() -> &'static [Currency] {
        TABLE
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Debug for Currency {
    /// Prints the bare code, so that `Money` and error values stay readable in test failures and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Currency::parse(text)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CurrencyVisitor)
    }
}

/// Reads a currency from a string with the same rules as [`Currency::parse`].
struct CurrencyVisitor;

impl Visitor<'_> for CurrencyVisitor {
    type Value = Currency;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an upper-case ISO 4217 currency code such as \"USD\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Currency, E> {
        Currency::parse(text).map_err(E::custom)
    }
}

/// Why a text is not a currency banksim knows. Messages are written for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not three ASCII letters. The text is not echoed back: it may be long or contain anything.
    #[error("currency must be a three-letter ISO 4217 code such as USD")]
    Malformed,
    /// Three letters, but not all upper case (`"usd"`): codes are case-sensitive.
    #[error("currency code must be upper case, such as USD")]
    NotUpperCase,
    /// A well-formed code that is not in banksim's table.
    #[error("unknown currency code {code}")]
    Unknown {
        /// The code as given; safe to echo, since it is three upper-case ASCII letters.
        code: String,
    },
}

/// The currencies a deployment has enabled; money may only move in these.
///
/// Iteration is in alphabetical order of code, whatever order the configuration listed them in, so that two
/// equal sets always list the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencySet {
    /// Sorted by code and free of duplicates; never empty.
    currencies: Vec<Currency>,
}

impl CurrencySet {
    /// Builds a set from a list, rejecting an empty list and duplicates (a duplicate in configuration is most
    /// likely a typo for another currency, so it is reported rather than ignored).
    pub fn new(currencies: impl IntoIterator<Item = Currency>) -> Result<Self, CurrencySetError> {
        let mut sorted: Vec<Currency> = currencies.into_iter().collect();
        if sorted.is_empty() {
            return Err(CurrencySetError::Empty);
        }
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(CurrencySetError::Duplicate { currency: pair[0] });
        }
        Ok(Self { currencies: sorted })
    }

    /// Parses a comma-separated list of upper-case codes such as `"USD,EUR,JPY"`.
    ///
    /// Spaces around each code are ignored (`"USD, EUR"`), because this usually comes from an environment
    /// variable written by hand; an empty item (`"USD,,EUR"` or a trailing comma) is an error.
    pub fn parse(text: &str) -> Result<Self, CurrencySetError> {
        if text.trim().is_empty() {
            return Err(CurrencySetError::Empty);
        }
        let currencies = text
            .split(',')
            .enumerate()
            .map(|(index, item)| parse_set_item(index + 1, item.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(currencies)
    }

    /// Whether money may move in `currency`.
    pub fn contains(&self, currency: Currency) -> bool {
        self.currencies.binary_search(&currency).is_ok()
    }

    /// The enabled currencies in alphabetical order of code.
    pub fn iter(&self) -> impl Iterator<Item = Currency> + '_ {
        self.currencies.iter().copied()
    }

    /// How many currencies are enabled; at least one.
    pub fn len(&self) -> usize {
        self.currencies.len()
    }

    /// Always false, since an empty set cannot be built; present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.currencies.is_empty()
    }
}

/// Parses one item of a comma-separated currency list; `position` counts from 1 for the error message.
fn parse_set_item(position: usize, item: &str) -> Result<Currency, CurrencySetError> {
    if item.is_empty() {
        return Err(CurrencySetError::EmptyItem { position });
    }
    Currency::parse(item).map_err(|source| CurrencySetError::Invalid { position, source })
}

impl Default for CurrencySet {
    /// The currencies API.md enables by default: USD, EUR, GBP, JPY, CAD, AUD.
    fn default() -> Self {
        let mut currencies =
            vec![Currency::USD, Currency::EUR, Currency::GBP, Currency::JPY, Currency::CAD, Currency::AUD];
        currencies.sort_unstable();
        Self { currencies }
    }
}

impl fmt::Display for CurrencySet {
    /// Writes the set back in the form [`CurrencySet::parse`] reads: `"AUD,CAD,EUR"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, currency) in self.currencies.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(currency.code)?;
        }
        Ok(())
    }
}

impl FromStr for CurrencySet {
    type Err = CurrencySetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CurrencySet::parse(text)
    }
}

impl<'a> IntoIterator for &'a CurrencySet {
    type Item = Currency;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, Currency>>;

    fn into_iter(self) -> Self::IntoIter {
        self.currencies.iter().copied()
    }
}

/// Why a list of enabled currencies is not acceptable. Messages are written for an operator reading start-up
/// errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencySetError {
    /// No currency at all: banksim could not move any money.
    #[error("at least one currency must be enabled")]
    Empty,
    /// Two commas with nothing between them, or a leading or trailing comma.
    #[error("currency list item {position} is empty")]
    EmptyItem {
        /// Position of the item in the list, counting from 1.
        position: usize,
    },
    /// An item that is not a known upper-case code.
    #[error("currency list item {position}: {source}")]
    Invalid {
        /// Position of the item in the list, counting from 1.
        position: usize,
        /// Why the item is not a currency.
        source: CurrencyError,
    },
    /// The same currency listed twice.
    #[error("currency {currency} is listed more than once")]
    Duplicate {
        /// The repeated currency.
        currency: Currency,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StrDeserializer, U64Deserializer};

    #[test]
    fn table_is_sorted_by_code_without_duplicates() {
        assert!(TABLE.windows(2).all(|pair| pair[0].code < pair[1].code));
    }

    #[test]
    fn every_table_code_is_three_upper_case_ascii_letters() {
        for currency in Currency::all() {
            assert_eq!(currency.code.len(), 3, "{currency}");
            assert!(currency.code.bytes().all(|b| b.is_ascii_uppercase()), "{currency}");
        }
    }

    #[test]
    fn table_exponents_match_iso_4217() {
        let expected = [
            ("USD", 2),
            ("EUR", 2),
            ("GBP", 2),
            ("JPY", 0),
            ("CAD", 2),
            ("AUD", 2),
            ("CHF", 2),
            ("CNY", 2),
            ("SEK", 2),
            ("NOK", 2),
            ("DKK", 2),
            ("NZD", 2),
            ("HKD", 2),
            ("SGD", 2),
            ("INR", 2),
            ("BRL", 2),
            ("MXN", 2),
            ("ZAR", 2),
            ("PLN", 2),
            ("TRY", 2),
            ("KRW", 0),
            ("ISK", 0),
            ("CLP", 0),
            ("VND", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("JOD", 3),
            ("OMR", 3),
            ("TND", 3),
        ];
        for (code, exponent) in expected {
            assert_eq!(Currency::parse(code).map(Currency::exponent), Ok(exponent), "{code}");
        }
    }

    #[test]
    fn every_table_currency_parses_back_from_its_code() {
        for &currency in Currency::all() {
            assert_eq!(Currency::parse(currency.code()), Ok(currency));
            assert_eq!(currency.to_string().parse::<Currency>(), Ok(currency));
        }
    }

    #[test]
    fn minor_units_per_major_follow_the_exponent() {
        assert_eq!(Currency::USD.minor_units_per_major(), 100);
        assert_eq!(Currency::JPY.minor_units_per_major(), 1);
        assert_eq!(Currency::BHD.minor_units_per_major(), 1000);
    }

    #[test]
    fn malformed_currency_codes_are_rejected() {
        for text in ["", "US", "USDD", "US1", "U$D", " USD", "USD ", "ÜSD", "12", "U S"] {
            assert_eq!(Currency::parse(text), Err(CurrencyError::Malformed), "{text:?}");
        }
    }

    #[test]
    fn lower_case_currency_codes_are_rejected() {
        for text in ["usd", "Usd", "usD", "jpy"] {
            assert_eq!(Currency::parse(text), Err(CurrencyError::NotUpperCase), "{text:?}");
        }
    }

    #[test]
    fn unknown_currency_codes_are_rejected() {
        assert_eq!(Currency::parse("XYZ"), Err(CurrencyError::Unknown { code: "XYZ".into() }));
        assert_eq!(Currency::parse("XYZ").map_err(|e| e.to_string()), Err("unknown currency code XYZ".into()));
    }

    #[test]
    fn currency_deserializes_from_its_code() {
        let deserializer: StrDeserializer<'_, ValueError> = "JPY".into_deserializer();
        assert_eq!(Currency::deserialize(deserializer), Ok(Currency::JPY));
    }

    #[test]
    fn currency_deserialization_rejects_bad_codes_and_non_strings() {
        let lower: StrDeserializer<'_, ValueError> = "usd".into_deserializer();
        assert!(Currency::deserialize(lower).is_err());
        let number: U64Deserializer<ValueError> = 840_u64.into_deserializer();
        assert!(Currency::deserialize(number).is_err());
    }

    #[test]
    fn default_set_is_the_six_currencies_of_the_api() {
        let set = CurrencySet::default();
        assert_eq!(set.to_string(), "AUD,CAD,EUR,GBP,JPY,USD");
        assert!(set.contains(Currency::USD));
        assert!(!set.contains(Currency::CHF));
        assert_eq!(set.len(), 6);
        assert!(!set.is_empty());
    }

    #[test]
    fn currency_set_parses_a_comma_separated_list() {
        let set = CurrencySet::parse("USD,EUR");
        assert_eq!(set.as_ref().map(|s| s.iter().collect::<Vec<_>>()), Ok(vec![Currency::EUR, Currency::USD]));
    }

    #[test]
    fn currency_set_ignores_spaces_around_items() {
        assert_eq!(CurrencySet::parse(" USD , EUR ").map(|s| s.to_string()), Ok("EUR,USD".into()));
    }

    #[test]
    fn currency_set_iterates_in_code_order_whatever_the_input_order() {
        let set = CurrencySet::parse("USD,JPY,AUD,EUR");
        let codes: Option<Vec<&str>> = set.ok().map(|s| s.iter().map(Currency::code).collect());
        assert_eq!(codes, Some(vec!["AUD", "EUR", "JPY", "USD"]));
    }

    #[test]
    fn currency_set_rejects_an_empty_list() {
        assert_eq!(CurrencySet::parse(""), Err(CurrencySetError::Empty));
        assert_eq!(CurrencySet::parse("   "), Err(CurrencySetError::Empty));
        assert_eq!(CurrencySet::new([]), Err(CurrencySetError::Empty));
    }

    #[test]
    fn currency_set_rejects_empty_items() {
        assert_eq!(CurrencySet::parse("USD,,EUR"), Err(CurrencySetError::EmptyItem { position: 2 }));
        assert_eq!(CurrencySet::parse("USD,"), Err(CurrencySetError::EmptyItem { position: 2 }));
        assert_eq!(CurrencySet::parse(",USD"), Err(CurrencySetError::EmptyItem { position: 1 }));
    }

    #[test]
    fn currency_set_rejects_unknown_and_lower_case_codes() {
        assert_eq!(
            CurrencySet::parse("USD,XYZ"),
            Err(CurrencySetError::Invalid { position: 2, source: CurrencyError::Unknown { code: "XYZ".into() } })
        );
        assert_eq!(
            CurrencySet::parse("usd"),
            Err(CurrencySetError::Invalid { position: 1, source: CurrencyError::NotUpperCase })
        );
    }

    #[test]
    fn currency_set_rejects_duplicates() {
        assert_eq!(CurrencySet::parse("USD,EUR,USD"), Err(CurrencySetError::Duplicate { currency: Currency::USD }));
    }

    #[test]
    fn currency_set_error_messages_name_the_item() {
        let message = CurrencySet::parse("USD,usd").map_err(|e| e.to_string());
        assert_eq!(message, Err("currency list item 2: currency code must be upper case, such as USD".into()));
    }

    proptest! {
        #[test]
        fn currency_set_display_parses_back_to_the_same_set(
            currencies in proptest::sample::subsequence(Currency::all().to_vec(), 1..=Currency::all().len())
        ) {
            let set = CurrencySet::new(currencies.iter().copied());
            prop_assert!(set.is_ok());
            let set = set.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(CurrencySet::parse(&set.to_string()), Ok(set.clone()));
            for currency in Currency::all() {
                prop_assert_eq!(set.contains(*currency), currencies.contains(currency));
            }
        }

        #[test]
        fn arbitrary_text_never_panics_the_currency_parser(text in ".{0,6}") {
            let _ = Currency::parse(&text);
            let _ = CurrencySet::parse(&text);
        }
    }
}
