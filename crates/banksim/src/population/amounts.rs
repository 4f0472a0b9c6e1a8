//! Amounts for a population, in exact minor units: drawn from quantile tables with integer arithmetic only, then
//! converted from a reference currency (US cents) to each currency at a fixed, rounded rate.
//!
//! No float is used anywhere here. Floats would be deterministic for `+ − × ÷`, but the usual log-normal draw needs
//! `exp`/`ln`, whose last bit may differ between platforms and libm versions; a population must be the same byte
//! for byte wherever it is seeded. A table of quantiles, interpolated linearly, gives the same skewed shapes
//! (many small card payments, a long tail of large ones) with integers alone.

use banksim_core::currency::Currency;
use banksim_core::money::DEFAULT_AMOUNT_MAX_MAJOR;
use rand::Rng;

/// Resolution of a quantile draw: a uniform integer below this picks the point of the distribution.
const QUANTILE_SCALE: u32 = 1_000_000;

/// A distribution given by its quantiles: `(share of draws below, in millionths; value)`, both increasing, from 0
/// to [`QUANTILE_SCALE`]. Between two points, values are spread evenly. Values are US cents unless said otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Quantiles(&'static [(u32, i64)]);

impl Quantiles {
    /// A distribution with these points (at least two, both coordinates increasing, from 0 to a million).
    pub const fn new(points: &'static [(u32, i64)]) -> Self {
        Self(points)
    }

    /// Draws one value (US cents).
    pub fn draw(self, rng: &mut impl Rng) -> i64 {
        self.at(rng.gen_range(0..QUANTILE_SCALE))
    }

    /// The value at quantile `q` (millionths): linear between the two table points around it.
    pub fn at(self, q: u32) -> i64 {
        let points = self.0;
        let upper = points.iter().position(|&(p, _)| p > q).unwrap_or(points.len() - 1).max(1);
        let (p0, v0) = points[upper - 1];
        let (p1, v1) = points[upper];
        let span = i128::from(p1 - p0).max(1);
        let into = i128::from(q.clamp(p0, p1) - p0);
        let value = i128::from(v0) + i128::from(v1 - v0) * into / span;
        i64::try_from(value).unwrap_or(v1)
    }
}

/// Monthly net salaries (US cents): a right-skewed shape close to national pay statistics, median 3,600.
pub const SALARY: Quantiles = Quantiles::new(&[
    (0, 120_000),
    (100_000, 190_000),
    (250_000, 260_000),
    (500_000, 360_000),
    (750_000, 520_000),
    (900_000, 750_000),
    (990_000, 1_500_000),
    (1_000_000, 3_000_000),
]);

/// Savings already held when the history starts (US cents), for a main wallet: median 2,500, a long tail.
pub const SAVINGS: Quantiles = Quantiles::new(&[
    (0, 20_000),
    (250_000, 100_000),
    (500_000, 250_000),
    (750_000, 900_000),
    (900_000, 2_500_000),
    (990_000, 12_000_000),
    (1_000_000, 50_000_000),
]);

/// One card payment (US cents): coffee to furniture, median 14.
pub const CARD_PAYMENT: Quantiles = Quantiles::new(&[
    (0, 150),
    (250_000, 600),
    (500_000, 1_400),
    (750_000, 3_500),
    (900_000, 8_000),
    (990_000, 35_000),
    (1_000_000, 120_000),
]);

/// A monthly utilities bill (US cents).
pub const UTILITIES: Quantiles =
    Quantiles::new(&[(0, 4_000), (500_000, 11_000), (950_000, 25_000), (1_000_000, 40_000)]);

/// A transfer to a friend (US cents): splitting a bill, paying back a loan.
pub const FRIEND_TRANSFER: Quantiles =
    Quantiles::new(&[(0, 500), (500_000, 3_000), (900_000, 12_000), (990_000, 50_000), (1_000_000, 100_000)]);

/// Units of each supported currency per US dollar, as (numerator, denominator): rounded mid-market rates, fixed
/// so that a population never depends on a rate table. Only these currencies can be seeded.
const UNITS_PER_USD: &[(Currency, i64, i64)] = &[
    (Currency::AUD, 152, 100),
    (Currency::BRL, 500, 100),
    (Currency::CAD, 136, 100),
    (Currency::CHF, 88, 100),
    (Currency::CNY, 720, 100),
    (Currency::DKK, 690, 100),
    (Currency::EUR, 92, 100),
    (Currency::GBP, 79, 100),
    (Currency::INR, 8_300, 100),
    (Currency::JPY, 150, 1),
    (Currency::KWD, 31, 100),
    (Currency::MXN, 1_700, 100),
    (Currency::NOK, 1_070, 100),
    (Currency::PLN, 400, 100),
    (Currency::SEK, 1_050, 100),
    (Currency::TRY, 3_200, 100),
    (Currency::USD, 1, 1),
    (Currency::ZAR, 1_850, 100),
];

/// Whether a population can hold wallets in `currency` (it has a rate in the table).
pub fn is_supported(currency: Currency) -> bool {
    UNITS_PER_USD.iter().any(|(c, _, _)| *c == currency)
}

/// The currencies a population can hold, for messages.
pub fn supported() -> Vec<&'static str> {
    UNITS_PER_USD.iter().map(|(c, _, _)| c.code()).collect()
}

/// How a drawn amount is rounded once converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// To the minor unit (card payments: 3.47 EUR, 512 JPY).
    Minor,
    /// Down to a whole major unit (salaries, rents, bills: 2,480.00 EUR).
    Major,
}

/// `cents` US cents in minor units of `currency`, rounded down, at least one unit (of the rounding), at most the
/// largest amount the API accepts for one movement.
pub fn convert(cents: i64, currency: Currency, rounding: Rounding) -> i64 {
    let (_, numerator, denominator) =
        UNITS_PER_USD.iter().copied().find(|(c, _, _)| *c == currency).unwrap_or((currency, 1, 1));
    let per_major = currency.minor_units_per_major();
    // cents / 100 dollars × (numerator / denominator) units per dollar × per_major minor units per unit.
    let minor = i128::from(cents) * i128::from(numerator) * i128::from(per_major) / (100 * i128::from(denominator));
    let step = match rounding {
        Rounding::Minor => 1,
        Rounding::Major => i128::from(per_major),
    };
    let max = i128::from(per_major) * i128::from(DEFAULT_AMOUNT_MAX_MAJOR);
    let rounded = (minor / step * step).clamp(step, max);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn quantiles_hit_their_points_and_interpolate_between_them() {
        assert_eq!(SALARY.at(0), 120_000);
        assert_eq!(SALARY.at(500_000), 360_000);
        assert_eq!(SALARY.at(999_999), 2_999_850);
        assert_eq!(CARD_PAYMENT.at(125_000), 375);
    }

    #[test]
    fn drawn_card_payments_are_skewed_like_real_spending() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut draws: Vec<i64> = (0..20_000).map(|_| CARD_PAYMENT.draw(&mut rng)).collect();
        draws.sort_unstable();
        let median = draws[10_000];
        let mean = draws.iter().sum::<i64>() / 20_000;
        assert!((1_200..1_600).contains(&median), "median {median}");
        assert!(mean > median * 3 / 2, "a long tail pulls the mean above the median: {mean} vs {median}");
        assert!(draws[0] >= 150 && draws[19_999] <= 120_000);
    }

    #[test]
    fn conversion_respects_each_currencys_exponent() {
        assert_eq!(convert(1_234, Currency::USD, Rounding::Minor), 1_234);
        assert_eq!(convert(1_000, Currency::EUR, Rounding::Minor), 920);
        assert_eq!(convert(1_000, Currency::JPY, Rounding::Minor), 1_500, "JPY has no minor unit");
        assert_eq!(convert(1_000, Currency::KWD, Rounding::Minor), 3_100, "KWD has three decimals");
        assert_eq!(convert(360_099, Currency::EUR, Rounding::Major), 331_200);
        assert_eq!(convert(1, Currency::USD, Rounding::Major), 100, "at least one whole unit");
        assert_eq!(convert(50_000_000, Currency::INR, Rounding::Minor), 100_000_000, "capped at 1,000,000.00 INR");
    }

    #[test]
    fn every_supported_currency_is_known_and_listed_once() {
        let codes = supported();
        let mut sorted = codes.clone();
        sorted.dedup();
        assert_eq!(codes, sorted);
        assert!(is_supported(Currency::JPY) && !is_supported(Currency::VND));
    }
}
