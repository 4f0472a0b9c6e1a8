//! The ledger invariants of DESIGN.md as set-based queries, shared by both backends.
//!
//! Each query returns one text row per violation. `ID(expr)` stands for "this UUID column as text", which the
//! backends spell differently; everything else is SQL that PostgreSQL and SQLite both accept.

/// (query, what it checks) pairs.
pub(crate) const CHECKS: [(&str, &str); 12] = [
    (
        "SELECT ID(p.transaction_id) || ' ' || a.currency || ' sums to ' || CAST(sum(p.amount_minor) AS TEXT)
         FROM postings p JOIN accounts a ON a.id = p.account_id
         GROUP BY p.transaction_id, a.currency HAVING sum(p.amount_minor) <> 0",
        "a transaction's postings do not sum to zero",
    ),
    (
        "SELECT ID(a.id) || ' stores ' || CAST(a.balance_minor AS TEXT) || ' but its postings sum to '
             || CAST(coalesce(p.total, 0) AS TEXT)
         FROM accounts a LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM postings GROUP BY account_id) p
             ON p.account_id = a.id
         WHERE a.balance_minor <> coalesce(p.total, 0)",
        "an account's balance differs from the sum of its postings",
    ),
    (
        "SELECT ID(a.id) || ' counts ' || CAST(a.version AS TEXT) || ' postings but has '
             || CAST(coalesce(p.n, 0) AS TEXT)
         FROM accounts a LEFT JOIN (SELECT account_id, count(*) AS n FROM postings GROUP BY account_id) p
             ON p.account_id = a.id
         WHERE a.version <> coalesce(p.n, 0)",
        "an account's posting count is wrong",
    ),
    (
        "SELECT currency || ' sums to ' || CAST(sum(balance_minor) AS TEXT)
         FROM accounts GROUP BY currency HAVING sum(balance_minor) <> 0",
        "the balances of a currency do not sum to zero",
    ),
    (
        "SELECT ID(id) || ' holds ' || CAST(balance_minor AS TEXT) || ' with an overdraft of '
             || CAST(coalesce(overdraft_minor, 0) AS TEXT)
         FROM accounts WHERE kind = 'user' AND balance_minor < -coalesce(overdraft_minor, 0)",
        "a user wallet is below its overdraft (negative, without one)",
    ),
    (
        "SELECT ID(id) || ' holds ' || CAST(balance_minor AS TEXT) || ' above its maximum of '
             || CAST(max_balance_minor AS TEXT)
         FROM accounts
         WHERE kind = 'user' AND max_balance_minor IS NOT NULL AND balance_minor + pending_minor > max_balance_minor",
        "a user wallet is above its maximum balance",
    ),
    (
        "SELECT ID(a.id) || ' holds ' || CAST(a.pending_minor AS TEXT) || ' but its pending transfers hold '
             || CAST(coalesce(h.total, 0) AS TEXT)
         FROM accounts a LEFT JOIN (SELECT from_user_id, currency, sum(amount_minor) AS total FROM transactions
                                    WHERE status = 'pending' GROUP BY from_user_id, currency) h
             ON h.from_user_id = a.user_id AND h.currency = a.currency
         WHERE a.kind = 'user' AND a.pending_minor <> coalesce(h.total, 0)",
        "a wallet's pending amount differs from its open holds",
    ),
    (
        "SELECT a.currency || ' pending account holds ' || CAST(a.balance_minor AS TEXT) || ' but wallets hold '
             || CAST(coalesce(w.total, 0) AS TEXT)
         FROM accounts a LEFT JOIN (SELECT currency, sum(pending_minor) AS total FROM accounts WHERE kind = 'user'
                                    GROUP BY currency) w ON w.currency = a.currency
         WHERE a.kind = 'pending' AND a.balance_minor <> coalesce(w.total, 0)",
        "the pending account differs from what the wallets hold",
    ),
    (
        "SELECT ID(t.id) || ' reverses ' || ID(t.reversal_of)
         FROM transactions t LEFT JOIN transactions o ON o.id = t.reversal_of
         WHERE t.reversal_of IS NOT NULL
           AND (o.id IS NULL OR o.reversed_by IS NULL OR o.reversed_by <> t.id OR o.status <> 'rolled_back')
         UNION ALL
         SELECT ID(o.id) || ' is reversed by ' || ID(o.reversed_by)
         FROM transactions o LEFT JOIN transactions t ON t.id = o.reversed_by
         WHERE o.reversed_by IS NOT NULL AND (t.id IS NULL OR t.reversal_of IS NULL OR t.reversal_of <> o.id)",
        "a rollback is not linked both ways",
    ),
    (
        "SELECT ID(account_id) || ' version ' || CAST(account_version AS TEXT)
         FROM (SELECT account_id, account_version, balance_after_minor, amount_minor,
                      lag(balance_after_minor, 1, 0) OVER (PARTITION BY account_id ORDER BY account_version) AS before,
                      row_number() OVER (PARTITION BY account_id ORDER BY account_version) AS n
               FROM postings) chain
         WHERE balance_after_minor <> before + amount_minor OR account_version <> n",
        "a posting's balance-after does not follow from the one before",
    ),
    (
        "SELECT DISTINCT ID(t.id)
         FROM transactions t JOIN postings p ON p.transaction_id = t.id
         WHERE t.effective_at > t.created_at
            OR ((p.effective_at IS NOT NULL OR t.effective_at < t.created_at)
                AND (p.effective_at IS NULL OR p.effective_at <> t.effective_at))",
        "a back-dated transaction's postings do not take effect when it does",
    ),
    (
        "SELECT 'posting ' || CAST(p.id AS TEXT) || ' of ' || ID(p.transaction_id)
             || CASE WHEN t.id IS NULL THEN ' has no transaction' ELSE ' has no account' END
         FROM postings p LEFT JOIN transactions t ON t.id = p.transaction_id LEFT JOIN accounts a ON a.id = p.account_id
         WHERE t.id IS NULL OR a.id IS NULL
         UNION ALL
         SELECT ID(t.id) || ' names a user that does not exist'
         FROM transactions t LEFT JOIN users f ON f.id = t.from_user_id LEFT JOIN users u ON u.id = t.to_user_id
         WHERE (t.from_user_id IS NOT NULL AND f.id IS NULL) OR (t.to_user_id IS NOT NULL AND u.id IS NULL)",
        "a ledger row points nowhere",
    ),
];

/// A check in PostgreSQL's spelling.
pub(crate) fn postgres_sql(query: &str) -> String {
    spell_ids(query, "CAST(", " AS TEXT)")
}

/// A check in SQLite's spelling (UUIDs are blobs: shown as hex).
pub(crate) fn sqlite_sql(query: &str) -> String {
    spell_ids(query, "lower(hex(", "))")
}

fn spell_ids(query: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("ID(") {
        let preceded_by_word = rest[..start].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..start]);
        if preceded_by_word {
            out.push_str("ID(");
            rest = &rest[start + 3..];
            continue;
        }
        let inner_start = start + 3;
        let inner_len = rest[inner_start..].find(')').unwrap_or(0);
        out.push_str(open);
        out.push_str(&rest[inner_start..inner_start + inner_len]);
        out.push_str(close);
        rest = &rest[inner_start + inner_len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_spelled_per_backend() {
        assert_eq!(postgres_sql("SELECT ID(a.id) || x"), "SELECT CAST(a.id AS TEXT) || x");
        assert_eq!(sqlite_sql("SELECT ID(a.id), ID(b)"), "SELECT lower(hex(a.id)), lower(hex(b))");
        assert_eq!(sqlite_sql("SELECT ACCOUNT_ID(x)"), "SELECT ACCOUNT_ID(x)");
    }
}
