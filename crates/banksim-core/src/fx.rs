//! Exchange-rate tables: no cycle of exchanges may return more than it started with.
//!
//! Going round a cycle of currencies (USD → GBP → EUR → USD) multiplies an amount by the product of the rates
//! on the way; if that product exceeds one, anyone can create money by going round, and the money comes out of
//! the FX accounts (so the ledger's invariants stay clean while the bank bleeds). A table is sound when every
//! cycle's product is at most one; a new rate keeps a sound table sound when every cycle through it does, which
//! is checked here exactly (products of decimal rates as big integers, never floats).

use std::collections::HashMap;

use num_bigint::BigUint;

use crate::currency::Currency;
use crate::money::Rate;

/// An exact product of rates: `numerator / 10^scale`.
#[derive(Debug, Clone)]
struct Product {
    numerator: BigUint,
    scale: u32,
}

impl Product {
    fn one() -> Self {
        Self { numerator: BigUint::from(1u8), scale: 0 }
    }

    fn times(&self, rate: Rate) -> Self {
        let (mantissa, scale) = rate.parts();
        Self { numerator: &self.numerator * BigUint::from(mantissa), scale: self.scale + scale }
    }

    /// `self > other`, exactly: a·10^t > b·10^s.
    fn exceeds(&self, other: &Self) -> bool {
        let ten = BigUint::from(10u8);
        &self.numerator * ten.pow(other.scale) > &other.numerator * ten.pow(self.scale)
    }
}

/// The cycle of currencies (starting and ending at `base`) through which setting `base → quote` to `rate` would let
/// money grow, or `None` when every cycle through that pair keeps its product at most one. `rates` is the table in
/// force (its own `base → quote` entry, if any, is ignored: the new rate replaces it).
///
/// The best way back from `quote` to `base` is found with Bellman-Ford over products (at most one step per
/// currency): in a sound table no cycle grows, so the best walk is a simple path and the search is exact.
pub fn gaining_cycle(
    rates: &[(Currency, Currency, Rate)],
    base: Currency,
    quote: Currency,
    rate: Rate,
) -> Option<Vec<Currency>> {
    let edges: Vec<&(Currency, Currency, Rate)> =
        rates.iter().filter(|(from, to, _)| !(*from == base && *to == quote) && from != to).collect();
    let mut best: HashMap<Currency, (Product, Option<Currency>)> = HashMap::new();
    best.insert(quote, (Product::one(), None));
    let currencies =
        edges.iter().flat_map(|(from, to, _)| [*from, *to]).collect::<std::collections::HashSet<_>>().len();
    for _ in 0..currencies.max(1) {
        let mut changed = false;
        for (from, to, step) in &edges {
            if *from == base {
                continue; // The way back ends at `base`; it never passes through it.
            }
            let Some((reached, _)) = best.get(from) else { continue };
            let candidate = reached.times(*step);
            if best.get(to).is_none_or(|(known, _)| candidate.exceeds(known)) {
                best.insert(*to, (candidate, Some(*from)));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let (back, _) = best.get(&base)?;
    if !back.times(rate).exceeds(&Product::one()) {
        return None;
    }
    // Walk the way back from `base` to `quote` through the predecessors (bounded, should the table be unsound).
    let mut path = vec![base];
    let mut at = base;
    while let Some((_, Some(previous))) = best.get(&at) {
        if path.len() > currencies + 1 || path.contains(previous) {
            break;
        }
        path.push(*previous);
        at = *previous;
    }
    path.reverse();
    let mut cycle = vec![base];
    cycle.extend(path.into_iter().filter(|c| *c != base));
    cycle.push(base);
    Some(cycle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USD: Currency = Currency::USD;
    const EUR: Currency = Currency::EUR;
    const GBP: Currency = Currency::GBP;
    const JPY: Currency = Currency::JPY;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).expect("rate")
    }

    fn seeded() -> Vec<(Currency, Currency, Rate)> {
        vec![
            (USD, EUR, rate("0.92")),
            (EUR, USD, rate("1.08")),
            (USD, GBP, rate("0.79")),
            (GBP, USD, rate("1.26")),
            (EUR, GBP, rate("0.85")),
            (GBP, EUR, rate("1.16")),
            (USD, JPY, rate("149.5")),
            (JPY, USD, rate("0.00665")),
        ]
    }

    #[test]
    fn a_three_currency_cycle_that_makes_money_is_found() {
        // USD → GBP 0.79 → EUR 1.175 → USD 1.08 = 1.002510.
        let cycle = gaining_cycle(&seeded(), GBP, EUR, rate("1.175")).expect("a gaining cycle");
        assert_eq!(cycle, [GBP, EUR, USD, GBP]);
        assert!(gaining_cycle(&seeded(), GBP, EUR, rate("1.17")).is_none(), "0.998244 loses");
    }

    #[test]
    fn a_round_trip_is_a_cycle_too_and_exactly_one_is_no_gain() {
        assert!(gaining_cycle(&seeded(), USD, EUR, rate("0.93")).is_some(), "0.93 × 1.08 > 1");
        let even = [(EUR, USD, rate("2"))];
        assert!(gaining_cycle(&even, USD, EUR, rate("0.5")).is_none());
        assert!(gaining_cycle(&even, USD, EUR, rate("0.500000000001")).is_some());
    }

    #[test]
    fn the_rate_being_replaced_is_not_part_of_the_way_back() {
        let mut table = seeded();
        table.push((GBP, EUR, rate("1.175")));
        assert!(gaining_cycle(&table, GBP, EUR, rate("1.1")).is_none());
    }

    #[test]
    fn a_pair_without_a_way_back_cannot_gain() {
        assert!(gaining_cycle(&seeded(), JPY, Currency::CAD, rate("999999")).is_none());
    }

    /// Every simple cycle's product, by brute force, for the property test.
    fn any_cycle_gains(table: &[(Currency, Currency, Rate)]) -> bool {
        fn walk(
            table: &[(Currency, Currency, Rate)],
            start: Currency,
            at: Currency,
            product: Product,
            seen: &mut Vec<Currency>,
        ) -> bool {
            table.iter().filter(|(from, _, _)| *from == at).any(|(_, to, r)| {
                let next = product.times(*r);
                if *to == start {
                    return next.exceeds(&Product::one());
                }
                if seen.contains(to) {
                    return false;
                }
                seen.push(*to);
                let found = walk(table, start, *to, next, seen);
                seen.pop();
                found
            })
        }
        let currencies = [USD, EUR, GBP, JPY];
        currencies.iter().any(|c| walk(table, *c, *c, Product::one(), &mut vec![*c]))
    }

    proptest! {
        /// Building a table rate by rate, refusing each that `gaining_cycle` refuses, never lets any cycle gain;
        /// and a refused rate does close a gaining cycle.
        #[test]
        fn a_table_built_through_the_check_never_has_a_gaining_cycle(
            steps in proptest::collection::vec((0usize..4, 0usize..4, 1u128..3_000, 0u32..4), 1..24)
        ) {
            let currencies = [USD, EUR, GBP, JPY];
            let mut table: Vec<(Currency, Currency, Rate)> = Vec::new();
            for (from, to, mantissa, scale) in steps {
                let (base, quote) = (currencies[from], currencies[to]);
                if base == quote {
                    continue;
                }
                let new = Rate::new(mantissa, scale).expect("rate");
                let mut candidate: Vec<_> = table.iter().copied().filter(|(b, q, _)| !(*b == base && *q == quote)).collect();
                candidate.push((base, quote, new));
                match gaining_cycle(&table, base, quote, new) {
                    None => {
                        prop_assert!(!any_cycle_gains(&candidate));
                        table = candidate;
                    }
                    Some(_) => prop_assert!(any_cycle_gains(&candidate)),
                }
            }
        }
    }
}
