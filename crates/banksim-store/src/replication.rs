//! Positions in PostgreSQL's write-ahead log, as a primary and its streaming replicas report them: what the
//! server needs to route reads to a replica without losing a caller's own writes, and to measure its lag.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A log sequence number: a byte position in the write-ahead log. PostgreSQL writes it as two hexadecimal
/// numbers, the high and the low 32 bits (`16/B374D848`); positions compare as the 64-bit number they form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The start of the log (`0/0`).
    pub const ZERO: Self = Self(0);

    /// Bytes of log from `earlier` to `self` (0 when `earlier` is not earlier).
    pub fn bytes_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a text is not a log sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a log sequence number (two hexadecimal numbers of at most 8 digits, as 16/B374D848)")]
pub struct InvalidLsn;

impl FromStr for Lsn {
    type Err = InvalidLsn;

    /// Parses PostgreSQL's `pg_lsn` text: `X/Y`, each part 1 to 8 hexadecimal digits (either case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (high, low) = text.split_once('/').ok_or(InvalidLsn)?;
        let half = |part: &str| {
            let hex = !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit());
            if hex { u32::from_str_radix(part, 16).map_err(|_| InvalidLsn) } else { Err(InvalidLsn) }
        };
        Ok(Self((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

/// Where a server stands in the write-ahead log, read in one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPosition {
    /// Whether the server is a standby replaying another server's log (then `inserted` and `flushed` are none,
    /// `received` and `replayed` are set once it has streamed anything).
    pub in_recovery: bool,
    /// A primary: the position where its next log record will go. Read after a commit has returned, it is past
    /// that commit's record, whatever `synchronous_commit` says (`pg_current_wal_insert_lsn()`).
    pub inserted: Option<Lsn>,
    /// A primary: how far its log is durably written, which is as far as a replica can stream
    /// (`pg_current_wal_flush_lsn()`). Read after a commit has returned, it is past that commit's record when
    /// `durable_commits` holds.
    pub flushed: Option<Lsn>,
    /// Whether a commit returns only once its record is flushed (`synchronous_commit` is not `off`), as banksim's
    /// promise that a 2xx is durable needs.
    pub durable_commits: bool,
    /// A standby: how far it has received the primary's log (`pg_last_wal_receive_lsn()`).
    pub received: Option<Lsn>,
    /// A standby: how far it has replayed the log; its data shows every transaction whose commit record ends at
    /// or before this position (`pg_last_wal_replay_lsn()`).
    pub replayed: Option<Lsn>,
    /// A standby: the commit instant of the last transaction it replayed (`pg_last_xact_replay_timestamp()`).
    pub replayed_commit_at: Option<DateTime<Utc>>,
    /// The server's clock when it answered.
    pub now: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_from_and_print_as_postgresql_writes_them() {
        for (text, value) in [
            ("0/0", 0),
            ("0/16B3748", 0x016B_3748),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
            ("1/0", 1 << 32),
        ] {
            let lsn: Lsn = text.parse().expect(text);
            assert_eq!(lsn, Lsn(value), "{text}");
            assert_eq!(lsn.to_string(), text, "{text}");
        }
        assert_eq!("a/bc".parse::<Lsn>(), Ok(Lsn(0xA_0000_00BC)), "lower case");
        assert_eq!("00000001/00000002".parse::<Lsn>(), Ok(Lsn((1 << 32) | 2)), "leading zeros");
    }

    #[test]
    fn malformed_lsns_are_refused() {
        for text in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/0/0",
            "G/0",
            "0/x1",
            "123456789/0",
            "0/123456789",
            " 0/0",
            "0/0 ",
            "+1/0",
            "-1/0",
        ] {
            assert_eq!(text.parse::<Lsn>(), Err(InvalidLsn), "{text:?}");
        }
    }

    #[test]
    fn lsns_compare_as_positions_not_as_text() {
        let parse = |text: &str| text.parse::<Lsn>().expect(text);
        // As text, "0/FFFFFFFF" sorts after "1/0" and "0/9" after "0/10": as positions they do not.
        assert!(parse("0/FFFFFFFF") < parse("1/0"));
        assert!(parse("0/9") < parse("0/10"));
        assert!(parse("2/0") > parse("1/FFFFFFFF"));
        assert_eq!(parse("1/10").bytes_since(parse("0/FFFFFFF0")), 0x20);
        assert_eq!(parse("0/10").bytes_since(parse("1/0")), 0, "never negative");
    }
}
