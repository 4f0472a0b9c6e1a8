//! The double-entry ledger's rules: which postings each movement writes, and when a movement is refused.
//!
//! Every movement becomes postings whose signed amounts sum to zero per currency:
//! a credit posts world → user, a debit user → world, a transfer user → user, an exchange user(A) → fx(A) and
//! fx(B) → user(B), and a rollback posts the inverse of its original. User wallets stay within their [`Limits`]
//! (never negative unless an admin granted an overdraft, never above a maximum balance when one is set); system
//! accounts (`world`, `fx`) have no limits.
//!
//! [`Book`] applies movements to an in-memory view of the accounts they touch, so the storage layer can lock
//! those accounts once, apply a whole batch of movements in order, and write the results in one commit. Nothing
//! here does I/O.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::currency::Currency;
use crate::effective::EffectiveHistory;
use crate::money::{Money, Rate, convert};

/// The kind of a transaction, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// Money enters a wallet from outside the bank.
    Credit,
    /// Money leaves a wallet to outside the bank.
    Debit,
    /// Money moves between two users' wallets.
    Transfer,
    /// Money moves between two currencies of one user.
    Exchange,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    /// Posted.
    Success,
    /// Refused (kept for records that need it; refused requests are not stored as transactions).
    Failed,
    /// Posted, then reversed by a compensating transaction.
    RolledBack,
    /// A two-phase transfer's hold, not settled yet: the amount sits in the pending account.
    Pending,
    /// A hold released by its payer, payee or an admin before it was posted.
    Voided,
    /// A hold released by the clock at its `expires_at`.
    Expired,
}

macro_rules! names {
    ($type:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            /// The API and database name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $type {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    _ => Err(format!("must be one of: {}", [$($name),+].join(", "))),
                }
            }
        }
    };
}

names!(TransactionKind { Credit => "credit", Debit => "debit", Transfer => "transfer", Exchange => "exchange" });
names!(TransactionStatus {
    Success => "success",
    Failed => "failed",
    RolledBack => "rolled_back",
    Pending => "pending",
    Voided => "voided",
    Expired => "expired",
});

/// An account of the ledger: a user's wallet in one currency, or a system account of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccountKey {
    /// A user's wallet.
    User {
        /// The owner.
        user_id: Uuid,
        /// The wallet's currency.
        currency: Currency,
    },
    /// Money entering and leaving the bank.
    World {
        /// The account's currency.
        currency: Currency,
    },
    /// The counterpart of exchanges; rounding stays here.
    Fx {
        /// The account's currency.
        currency: Currency,
    },
    /// The clearing account of two-phase transfers: holds sit here until they are posted or released.
    Pending {
        /// The account's currency.
        currency: Currency,
    },
}

impl AccountKey {
    /// The account's currency.
    pub fn currency(self) -> Currency {
        match self {
            Self::User { currency, .. }
            | Self::World { currency }
            | Self::Fx { currency }
            | Self::Pending { currency } => currency,
        }
    }

    /// The owner of a user wallet.
    pub fn user_id(self) -> Option<Uuid> {
        match self {
            Self::User { user_id, .. } => Some(user_id),
            _ => None,
        }
    }

    /// The account's id, derived from what the account is, so every instance names an account the same way
    /// without a lookup (UUID v5 in banksim's namespace).
    pub fn id(self) -> Uuid {
        let name = match self {
            Self::User { user_id, currency } => format!("user:{user_id}:{currency}"),
            Self::World { currency } => format!("world:{currency}"),
            Self::Fx { currency } => format!("fx:{currency}"),
            Self::Pending { currency } => format!("pending:{currency}"),
        };
        Uuid::new_v5(&ACCOUNT_NAMESPACE, name.as_bytes())
    }

    /// An account from its stored parts: kind, owner and currency.
    pub fn from_parts(kind: &str, user_id: Option<Uuid>, currency: Currency) -> Option<Self> {
        match (kind, user_id) {
            ("user", Some(user_id)) => Some(Self::User { user_id, currency }),
            ("world", None) => Some(Self::World { currency }),
            ("fx", None) => Some(Self::Fx { currency }),
            ("pending", None) => Some(Self::Pending { currency }),
            _ => None,
        }
    }

    /// `user`, `world` or `fx`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::User { .. } => "user",
            Self::World { .. } => "world",
            Self::Fx { .. } => "fx",
            Self::Pending { .. } => "pending",
        }
    }
}

/// The namespace of account ids (a fixed, random UUID).
const ACCOUNT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_0c1e_52a4_4d3c_9f0e_8a7b_2c4d_6e10);

/// An account's state as stored: its id, balance, the number of postings it has and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    /// Stable id.
    pub id: Uuid,
    /// What the account is.
    pub key: AccountKey,
    /// Balance in minor units.
    pub balance_minor: i64,
    /// Postings so far; the next posting gets `version + 1`.
    pub version: i64,
    /// The wallet's balance limits (system accounts have none).
    pub limits: Limits,
    /// What the wallet's pending transfers hold (already moved out of `balance_minor` into the pending account):
    /// the posted balance is `balance_minor + pending_minor`.
    pub pending_minor: i64,
}

/// A wallet's balance limits, set by admins: how far below zero it may go, and how high it may rise.
///
/// A movement is checked only in the direction it moves a wallet: money out may not take the balance below
/// `-overdraft`, money in may not take it above `max_balance`. Limits can therefore only be changed to values the
/// current balance already satisfies ([`Limits::admit`]), so that every balance of a wallet stays within them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// How far below zero the balance may go, in minor units (`None`: not at all).
    pub overdraft_minor: Option<i64>,
    /// The highest balance allowed, in minor units (`None`: no ceiling).
    pub max_balance_minor: Option<i64>,
}

impl Limits {
    /// The lowest balance allowed: `-overdraft`, or 0.
    pub fn floor_minor(self) -> i64 {
        self.overdraft_minor.map_or(0, |overdraft| -overdraft)
    }

    /// Whether a wallet may hold `balance_minor` under these limits; the refusal names the limit it breaks.
    pub fn admit(self, balance_minor: i64) -> Result<(), LedgerError> {
        if balance_minor < self.floor_minor() {
            return Err(LedgerError::InsufficientFunds);
        }
        if self.max_balance_minor.is_some_and(|max| balance_minor > max) {
            return Err(LedgerError::BalanceLimitExceeded);
        }
        Ok(())
    }

    /// Whether the limits themselves make sense: neither is negative.
    pub fn is_valid(self) -> bool {
        self.overdraft_minor.is_none_or(|o| o >= 0) && self.max_balance_minor.is_none_or(|m| m >= 0)
    }
}

/// One signed movement on one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// The account.
    pub account: AccountKey,
    /// Signed minor units of the account's currency: positive in, negative out.
    pub amount_minor: i64,
}

/// A money movement asked for by a user (or a schedule, or an admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    /// Money enters `user_id`'s wallet from the world.
    Credit {
        /// The receiver.
        user_id: Uuid,
        /// A positive amount.
        amount: Money,
    },
    /// Money leaves `user_id`'s wallet to the world.
    Debit {
        /// The payer.
        user_id: Uuid,
        /// A positive amount.
        amount: Money,
    },
    /// Money moves between two users.
    Transfer {
        /// The payer.
        from_user_id: Uuid,
        /// The receiver (checked to exist and be active before the movement is queued).
        to_user_id: Uuid,
        /// A positive amount.
        amount: Money,
    },
    /// Money moves between two currencies of one user at `rate` (units of `to_currency` per unit of
    /// `amount`'s currency), rounded down to the target's minor unit.
    Exchange {
        /// The user.
        user_id: Uuid,
        /// A positive amount in the source currency.
        amount: Money,
        /// The target currency.
        to_currency: Currency,
        /// The rate used.
        rate: Rate,
    },
    /// The first phase of a two-phase transfer: `amount` moves from the payer's wallet into the pending account
    /// (the payer's available balance drops; nothing is posted to the payee) until it is settled or `expires_at`.
    Hold {
        /// The payer.
        from_user_id: Uuid,
        /// The payee (checked to exist and be active before the movement is queued).
        to_user_id: Uuid,
        /// A positive amount.
        amount: Money,
        /// When the hold expires if nobody settles it.
        expires_at: DateTime<Utc>,
    },
    /// The second phase of a two-phase transfer: the hold is released to its payer, and (for a post) the posted
    /// part paid to the payee, in one transaction.
    Settle {
        /// The hold.
        hold_id: Uuid,
        /// Its payee (as the caller read it; checked against the hold).
        payee_id: Uuid,
        /// Its currency.
        currency: Currency,
        /// Post, void or expire.
        settlement: Settlement,
        /// Who asks (the payer, for an expiry).
        actor_id: Uuid,
        /// Whether they are an admin.
        actor_is_admin: bool,
    },
    /// The inverse of an earlier transaction.
    Rollback {
        /// The transaction to reverse.
        original_id: Uuid,
        /// Who asks.
        actor_id: Uuid,
        /// Whether they are an admin (admins may reverse anything reversible).
        actor_is_admin: bool,
    },
}

impl Movement {
    /// The user who starts the movement: the payer, receiver of a credit, or the actor of a rollback.
    pub fn actor_id(&self) -> Uuid {
        match self {
            Self::Credit { user_id, .. } | Self::Debit { user_id, .. } | Self::Exchange { user_id, .. } => *user_id,
            Self::Transfer { from_user_id, .. } => *from_user_id,
            Self::Rollback { actor_id, .. } | Self::Settle { actor_id, .. } => *actor_id,
            Self::Hold { from_user_id, .. } => *from_user_id,
        }
    }
}

/// How a hold is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Pay the payee the whole hold, or this part of it (the rest goes back to the payer).
    Post(Option<Money>),
    /// Release the whole hold to the payer (the payer, the payee or an admin asks).
    Void,
    /// Release the whole hold to the payer because its time is up (the clock asks).
    Expire,
}

/// A movement to post, with the id its transaction will have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The id of the transaction this command creates.
    pub transaction_id: Uuid,
    /// What to do.
    pub movement: Movement,
    /// Free text from the client.
    pub description: Option<String>,
    /// When the movement takes effect, if earlier than when it is posted (back-dated: credits, debits and transfers
    /// only; see [`crate::effective`]). An instant not before the posting's is the posting's.
    pub effective_at: Option<DateTime<Utc>>,
}

/// A posted transaction, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    /// Id.
    pub id: Uuid,
    /// Kind (a rollback has its original's kind).
    pub kind: TransactionKind,
    /// Status.
    pub status: TransactionStatus,
    /// The payer, if any (none for a credit).
    pub from_user_id: Option<Uuid>,
    /// The receiver, if any (none for a debit).
    pub to_user_id: Option<Uuid>,
    /// The amount moved (source side of an exchange).
    pub amount: Money,
    /// The converted amount of an exchange.
    pub to_amount: Option<Money>,
    /// The rate of an exchange.
    pub rate: Option<Rate>,
    /// Free text.
    pub description: Option<String>,
    /// The transaction this one reverses.
    pub reversal_of: Option<Uuid>,
    /// The transaction that reversed this one.
    pub reversed_by: Option<Uuid>,
    /// When it was posted.
    pub created_at: DateTime<Utc>,
    /// When it takes effect: `created_at`, or earlier for a back-dated movement.
    pub effective_at: DateTime<Utc>,
    /// A hold's expiry (two-phase transfers only).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A posting as written: a leg, the account's balance right after it, and its place in the account's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// The account's id.
    pub account_id: Uuid,
    /// The account.
    pub account: AccountKey,
    /// Signed amount.
    pub amount_minor: i64,
    /// Balance right after this posting.
    pub balance_after_minor: i64,
    /// 1 for the account's first posting, then 2, 3, …
    pub account_version: i64,
    /// When it takes effect, if earlier than when it is posted (a back-dated movement's postings).
    pub effective_at: Option<DateTime<Utc>>,
}

/// An earlier transaction with its legs, loaded so that it can be rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// The transaction.
    pub record: TransactionRecord,
    /// Its legs.
    pub legs: Vec<Leg>,
}

/// Why a movement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A wallet holds less than the movement takes out.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// A transfer to oneself.
    #[error("cannot transfer to yourself")]
    SelfTransfer,
    /// An exchange into the same currency.
    #[error("cannot exchange a currency into itself")]
    SameCurrency,
    /// An exchange whose converted amount rounds down to nothing.
    #[error("the converted amount rounds down to zero")]
    ConvertsToZero,
    /// The transaction to roll back does not exist.
    #[error("transaction not found")]
    TransactionNotFound,
    /// The caller may not roll back this transaction.
    #[error("only an admin or the payer of a debit or transfer may roll it back")]
    RollbackForbidden,
    /// The transaction was rolled back already.
    #[error("transaction was already rolled back")]
    AlreadyRolledBack,
    /// A compensating transaction cannot itself be rolled back.
    #[error("a rollback cannot be rolled back")]
    NotReversible,
    /// The transaction is not a pending hold (any more): settled, expired, or never a hold.
    #[error("the transfer is not pending")]
    TransferNotPending,
    /// A post of more than the hold holds.
    #[error("cannot post more than the hold's amount")]
    PostExceedsHold,
    /// The caller may not settle this hold.
    #[error("only the payer or an admin may post a hold; only its payer, payee or an admin may void it")]
    SettleForbidden,
    /// A wallet would rise above its maximum balance.
    #[error("the wallet's balance limit would be exceeded")]
    BalanceLimitExceeded,
    /// A balance would leave the range of `i64`.
    #[error("amount out of range")]
    Overflow,
    /// The payee is not an active user (decided by the server before the ledger, for a batch's item).
    #[error("recipient not found")]
    RecipientNotFound,
    /// A back-dated movement that would take an earlier balance of a wallet beyond its limits, or a movement that
    /// cannot be back-dated.
    #[error("the effective time would take an earlier balance of the wallet beyond its limits")]
    InvalidEffectiveAt,
}

impl LedgerError {
    /// The stable API error code of the refusal.
    pub fn code(self) -> &'static str {
        match self {
            Self::InsufficientFunds => "insufficient_funds",
            Self::SelfTransfer => "self_transfer",
            Self::SameCurrency => "same_currency",
            Self::ConvertsToZero => "invalid_amount",
            Self::TransactionNotFound => "transaction_not_found",
            Self::RollbackForbidden => "insufficient_permissions",
            Self::AlreadyRolledBack => "already_rolled_back",
            Self::NotReversible => "not_reversible",
            Self::BalanceLimitExceeded => "balance_limit_exceeded",
            Self::TransferNotPending => "transfer_not_pending",
            Self::PostExceedsHold => "invalid_amount",
            Self::SettleForbidden => "insufficient_permissions",
            Self::Overflow => "invalid_amount",
            Self::RecipientNotFound => "recipient_not_found",
            Self::InvalidEffectiveAt => "invalid_effective_at",
        }
    }
}

/// The accounts a batch touches, as locked by the store, with movements applied in memory one by one.
#[derive(Debug, Clone, Default)]
pub struct Book {
    accounts: HashMap<AccountKey, AccountState>,
    originals: HashMap<Uuid, Original>,
    /// The effective-time histories of the wallets that back-dated movements touch.
    histories: HashMap<AccountKey, EffectiveHistory>,
}

/// What applying one command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new transaction.
    pub transaction: TransactionRecord,
    /// Its postings.
    pub postings: Vec<Posting>,
    /// For a rollback: the original, now marked rolled back.
    pub reversed: Option<Uuid>,
    /// Whether `transaction` is an earlier hold, now settled (its row changes; no new row is written).
    pub settles: bool,
    /// The version of the transaction event this movement emits on its aggregate (1 for a new transaction, 2 for
    /// a settlement or a rollback, 3 for the rollback of a settled hold).
    pub event_version: i64,
}

impl Book {
    /// A book over the given accounts and rollback originals.
    pub fn new(
        accounts: impl IntoIterator<Item = AccountState>,
        originals: impl IntoIterator<Item = Original>,
    ) -> Self {
        Self {
            accounts: accounts.into_iter().map(|a| (a.key, a)).collect(),
            originals: originals.into_iter().map(|o| (o.record.id, o)).collect(),
            histories: HashMap::new(),
        }
    }

    /// The book with the effective-time histories of the wallets that back-dated movements touch (see
    /// [`backdated_wallets`]), each from the earliest instant a movement of the batch takes effect on it.
    #[must_use]
    pub fn with_histories(mut self, histories: impl IntoIterator<Item = (AccountKey, EffectiveHistory)>) -> Self {
        self.histories.extend(histories);
        self
    }

    /// The accounts as they are now, after every movement applied so far.
    pub fn accounts(&self) -> impl Iterator<Item = &AccountState> {
        self.accounts.values()
    }

    /// An earlier transaction the book holds (a rollback's original or a hold), as the movements so far left it.
    pub fn original(&self, id: Uuid) -> Option<&Original> {
        self.originals.get(&id)
    }

    /// The state of one account, if the book holds it.
    pub fn account(&self, key: AccountKey) -> Option<&AccountState> {
        self.accounts.get(&key)
    }

    /// Applies `command` at `now`: either every leg is posted, or nothing changes and the reason is returned.
    ///
    /// # Panics
    /// When an account the command needs is missing from the book: the store must load every account that
    /// [`accounts_needed`] names, and the history of every wallet that [`backdated_wallets`] names (a bug, not an
    /// operating error).
    pub fn apply(&mut self, command: &Command, now: DateTime<Utc>) -> Result<Applied, LedgerError> {
        let (transaction, legs, reversed) = self.plan(command, now)?;
        assert_balanced(&legs);
        // A settlement's record keeps its hold's instants; its postings take effect now.
        let backdated = command.effective_at.filter(|at| *at < now);
        let postings = self.post(&legs, now, backdated)?;
        let mut event_version = 1;
        if let Some(original) = reversed.and_then(|id| self.originals.get_mut(&id)) {
            event_version = if original.record.expires_at.is_some() { 3 } else { 2 };
            original.record.status = TransactionStatus::RolledBack;
            original.record.reversed_by = Some(transaction.id);
        }
        let settles = matches!(command.movement, Movement::Settle { .. });
        // What the payer's pending transfers hold moves with each hold and settlement.
        let held = match command.movement {
            Movement::Hold { amount, .. } => Some(amount.amount_minor()),
            Movement::Settle { hold_id, .. } => {
                let original = self.originals.get_mut(&hold_id).expect("a planned settlement has its hold");
                let held = original.record.amount.amount_minor();
                original.record = transaction.clone();
                original.legs.extend(legs.iter().copied());
                event_version = 2;
                Some(-held)
            }
            _ => None,
        };
        if let (Some(delta), Some(payer)) = (held, transaction.from_user_id) {
            let key = AccountKey::User { user_id: payer, currency: transaction.amount.currency() };
            let account = self.accounts.get_mut(&key).expect("the payer's wallet was posted to");
            account.pending_minor += delta;
        }
        Ok(Applied { transaction, postings, reversed, settles, event_version })
    }

    /// The transaction and legs of a command, or why it cannot be posted (before looking at balances).
    fn plan(
        &self,
        command: &Command,
        now: DateTime<Utc>,
    ) -> Result<(TransactionRecord, Vec<Leg>, Option<Uuid>), LedgerError> {
        let backdated = command.effective_at.filter(|at| *at < now);
        if backdated.is_some()
            && !matches!(command.movement, Movement::Credit { .. } | Movement::Debit { .. } | Movement::Transfer { .. })
        {
            return Err(LedgerError::InvalidEffectiveAt);
        }
        let record = |kind, from_user_id, to_user_id, amount| TransactionRecord {
            id: command.transaction_id,
            kind,
            status: TransactionStatus::Success,
            from_user_id,
            to_user_id,
            amount,
            to_amount: None,
            rate: None,
            description: command.description.clone(),
            reversal_of: None,
            reversed_by: None,
            created_at: now,
            effective_at: backdated.unwrap_or(now),
            expires_at: None,
        };
        match command.movement {
            Movement::Credit { user_id, amount } => {
                let legs = pair(AccountKey::World { currency: amount.currency() }, wallet(user_id, amount), amount);
                Ok((record(TransactionKind::Credit, None, Some(user_id), amount), legs, None))
            }
            Movement::Debit { user_id, amount } => {
                let legs = pair(wallet(user_id, amount), AccountKey::World { currency: amount.currency() }, amount);
                Ok((record(TransactionKind::Debit, Some(user_id), None, amount), legs, None))
            }
            Movement::Transfer { from_user_id, to_user_id, amount } => {
                if from_user_id == to_user_id {
                    return Err(LedgerError::SelfTransfer);
                }
                let legs = pair(wallet(from_user_id, amount), wallet(to_user_id, amount), amount);
                Ok((record(TransactionKind::Transfer, Some(from_user_id), Some(to_user_id), amount), legs, None))
            }
            Movement::Exchange { user_id, amount, to_currency, rate } => {
                let (legs, to_amount) = exchange_legs(user_id, amount, to_currency, rate)?;
                let mut transaction = record(TransactionKind::Exchange, Some(user_id), Some(user_id), amount);
                transaction.to_amount = Some(to_amount);
                transaction.rate = Some(rate);
                Ok((transaction, legs, None))
            }
            Movement::Hold { from_user_id, to_user_id, amount, expires_at } => {
                if from_user_id == to_user_id {
                    return Err(LedgerError::SelfTransfer);
                }
                let legs =
                    pair(wallet(from_user_id, amount), AccountKey::Pending { currency: amount.currency() }, amount);
                let mut transaction = record(TransactionKind::Transfer, Some(from_user_id), Some(to_user_id), amount);
                transaction.status = TransactionStatus::Pending;
                transaction.expires_at = Some(expires_at);
                Ok((transaction, legs, None))
            }
            Movement::Settle { hold_id, payee_id, currency, settlement, actor_id, actor_is_admin } => {
                let original = self.originals.get(&hold_id).ok_or(LedgerError::TransactionNotFound)?;
                let (transaction, legs) =
                    settle(&original.record, payee_id, currency, settlement, actor_id, actor_is_admin, now)?;
                Ok((transaction, legs, None))
            }
            Movement::Rollback { original_id, actor_id, actor_is_admin } => {
                let original = self.originals.get(&original_id).ok_or(LedgerError::TransactionNotFound)?;
                check_rollback(&original.record, actor_id, actor_is_admin)?;
                // Netted per account: a settled hold's legs through the pending account cancel out.
                let legs =
                    net(&original.legs).into_iter().map(|leg| Leg { amount_minor: -leg.amount_minor, ..leg }).collect();
                let o = &original.record;
                let transaction = TransactionRecord {
                    kind: o.kind,
                    from_user_id: o.to_user_id,
                    to_user_id: o.from_user_id,
                    amount: o.to_amount.unwrap_or(o.amount),
                    to_amount: o.to_amount.map(|_| o.amount),
                    // A reversal posts the exact inverse amounts; no rate applies to it.
                    rate: None,
                    reversal_of: Some(o.id),
                    description: command.description.clone().or_else(|| Some(format!("Rollback of {}", o.id))),
                    ..record(o.kind, None, None, o.amount)
                };
                Ok((transaction, legs, Some(original_id)))
            }
        }
    }

    /// Posts legs in order, all or nothing; back-dated legs are held to the wallet's limits in the past too.
    fn post(
        &mut self,
        legs: &[Leg],
        now: DateTime<Utc>,
        backdated: Option<DateTime<Utc>>,
    ) -> Result<Vec<Posting>, LedgerError> {
        let mut next: Vec<AccountState> = Vec::with_capacity(legs.len());
        for leg in legs {
            let known = next.iter().rev().find(|a| a.key == leg.account).or_else(|| self.accounts.get(&leg.account));
            let current = match known {
                Some(account) => *account,
                // A wallet that never received money does not exist yet: nothing can be taken out of it.
                None if leg.amount_minor < 0 && leg.account.user_id().is_some() => {
                    return Err(LedgerError::InsufficientFunds);
                }
                None => panic!("account {:?} was not loaded", leg.account),
            };
            let balance_minor = current.balance_minor.checked_add(leg.amount_minor).ok_or(LedgerError::Overflow)?;
            if matches!(leg.account, AccountKey::User { .. }) {
                // Each leg is held to the limit in the direction it moves the wallet (see `Limits`).
                let limits = current.limits;
                if leg.amount_minor < 0 && balance_minor < limits.floor_minor() {
                    return Err(LedgerError::InsufficientFunds);
                }
                if leg.amount_minor > 0 && limits.max_balance_minor.is_some_and(|max| balance_minor > max) {
                    return Err(LedgerError::BalanceLimitExceeded);
                }
            }
            next.push(AccountState { balance_minor, version: current.version + 1, ..current });
        }
        if let Some(at) = backdated {
            for (leg, state) in legs.iter().zip(&next).filter(|(leg, _)| leg.account.user_id().is_some()) {
                let history = self.histories.get(&leg.account).expect("a back-dated movement's wallets have histories");
                history.admits(at, leg.amount_minor, state.limits)?;
            }
        }
        for leg in legs {
            if let Some(history) = self.histories.get_mut(&leg.account) {
                history.record(backdated.unwrap_or(now), leg.amount_minor);
            }
        }
        let postings = legs
            .iter()
            .zip(&next)
            .map(|(leg, state)| Posting {
                account_id: state.id,
                account: leg.account,
                amount_minor: leg.amount_minor,
                balance_after_minor: state.balance_minor,
                account_version: state.version,
                effective_at: backdated,
            })
            .collect();
        for state in next {
            self.accounts.insert(state.key, state);
        }
        Ok(postings)
    }
}

fn wallet(user_id: Uuid, amount: Money) -> AccountKey {
    AccountKey::User { user_id, currency: amount.currency() }
}

/// Two legs moving `amount` from one account to another.
fn pair(from: AccountKey, to: AccountKey, amount: Money) -> Vec<Leg> {
    vec![
        Leg { account: from, amount_minor: -amount.amount_minor() },
        Leg { account: to, amount_minor: amount.amount_minor() },
    ]
}

fn exchange_legs(user_id: Uuid, amount: Money, to: Currency, rate: Rate) -> Result<(Vec<Leg>, Money), LedgerError> {
    let from = amount.currency();
    if from == to {
        return Err(LedgerError::SameCurrency);
    }
    let converted = convert(amount.amount_minor(), from, to, rate).map_err(|_| LedgerError::Overflow)?;
    if converted <= 0 {
        return Err(LedgerError::ConvertsToZero);
    }
    let to_amount = Money::new(converted, to);
    let mut legs = pair(wallet(user_id, amount), AccountKey::Fx { currency: from }, amount);
    legs.extend(pair(AccountKey::Fx { currency: to }, wallet(user_id, to_amount), to_amount));
    Ok((legs, to_amount))
}

/// A hold's settlement: the updated transaction and the legs, or why it cannot be settled.
///
/// The legs always release the whole hold to the payer first and then (for a post) pay the payee from the payer's
/// wallet, so that every settlement moves the payer's wallet (its version, and so every cache of it, moves too).
fn settle(
    hold: &TransactionRecord,
    payee_id: Uuid,
    currency: Currency,
    settlement: Settlement,
    actor_id: Uuid,
    actor_is_admin: bool,
    now: DateTime<Utc>,
) -> Result<(TransactionRecord, Vec<Leg>), LedgerError> {
    let (Some(expires_at), Some(payer)) = (hold.expires_at, hold.from_user_id) else {
        return Err(LedgerError::TransferNotPending);
    };
    if hold.to_user_id != Some(payee_id) || hold.amount.currency() != currency {
        return Err(LedgerError::TransactionNotFound);
    }
    let is_payer = actor_id == payer;
    let allowed = match settlement {
        Settlement::Post(_) => actor_is_admin || is_payer,
        Settlement::Void => actor_is_admin || is_payer || actor_id == payee_id,
        Settlement::Expire => true,
    };
    if !allowed {
        return Err(LedgerError::SettleForbidden);
    }
    // A hold past its time is expired, whether or not the clock's job has marked it yet; one before it cannot be.
    let due = now >= expires_at;
    if hold.status != TransactionStatus::Pending || due != matches!(settlement, Settlement::Expire) {
        return Err(LedgerError::TransferNotPending);
    }
    let held = hold.amount;
    let mut legs = pair(AccountKey::Pending { currency }, wallet(payer, held), held);
    let mut transaction = hold.clone();
    match settlement {
        Settlement::Post(part) => {
            let posted = part.unwrap_or(held);
            if posted.currency() != currency || posted.amount_minor() > held.amount_minor() {
                return Err(LedgerError::PostExceedsHold);
            }
            legs.extend(pair(wallet(payer, posted), wallet(payee_id, posted), posted));
            transaction.status = TransactionStatus::Success;
            transaction.amount = posted;
        }
        Settlement::Void => transaction.status = TransactionStatus::Voided,
        Settlement::Expire => transaction.status = TransactionStatus::Expired,
    }
    Ok((transaction, legs))
}

/// Legs summed per account (in the order accounts first appear), without those that sum to zero.
fn net(legs: &[Leg]) -> Vec<Leg> {
    let mut netted: Vec<Leg> = Vec::new();
    for leg in legs {
        match netted.iter_mut().find(|n| n.account == leg.account) {
            Some(n) => n.amount_minor += leg.amount_minor,
            None => netted.push(*leg),
        }
    }
    netted.retain(|leg| leg.amount_minor != 0);
    netted
}

/// Who may roll back what: an admin anything, the payer their own debits and transfers; never twice, never a
/// rollback itself, never a hold that was not posted.
fn check_rollback(original: &TransactionRecord, actor_id: Uuid, actor_is_admin: bool) -> Result<(), LedgerError> {
    let payer_may = matches!(original.kind, TransactionKind::Debit | TransactionKind::Transfer)
        && original.from_user_id == Some(actor_id);
    if !actor_is_admin && !payer_may {
        return Err(LedgerError::RollbackForbidden);
    }
    if original.reversal_of.is_some()
        || matches!(
            original.status,
            TransactionStatus::Pending | TransactionStatus::Voided | TransactionStatus::Expired
        )
    {
        return Err(LedgerError::NotReversible);
    }
    if original.status == TransactionStatus::RolledBack || original.reversed_by.is_some() {
        return Err(LedgerError::AlreadyRolledBack);
    }
    Ok(())
}

/// Asserts the double-entry invariant: the legs of one transaction sum to zero in each currency.
///
/// # Panics
/// When they do not: such a transaction would create or destroy money, and must never reach storage.
pub fn assert_balanced(legs: &[Leg]) {
    let mut sums: HashMap<Currency, i128> = HashMap::new();
    for leg in legs {
        *sums.entry(leg.account.currency()).or_default() += i128::from(leg.amount_minor);
    }
    assert!(sums.values().all(|sum| *sum == 0), "unbalanced legs: {legs:?}");
}

/// The accounts `command` may touch (beyond rollback originals' legs, which come with the originals), so the
/// store can create and lock them before applying a batch.
pub fn accounts_needed(command: &Command) -> Vec<AccountKey> {
    match command.movement {
        Movement::Credit { user_id, amount } | Movement::Debit { user_id, amount } => {
            vec![wallet(user_id, amount), AccountKey::World { currency: amount.currency() }]
        }
        Movement::Transfer { from_user_id, to_user_id, amount } => {
            vec![wallet(from_user_id, amount), wallet(to_user_id, amount)]
        }
        Movement::Exchange { user_id, amount, to_currency, .. } => vec![
            wallet(user_id, amount),
            AccountKey::Fx { currency: amount.currency() },
            AccountKey::Fx { currency: to_currency },
            AccountKey::User { user_id, currency: to_currency },
        ],
        Movement::Hold { from_user_id, amount, .. } => {
            vec![wallet(from_user_id, amount), AccountKey::Pending { currency: amount.currency() }]
        }
        // The payer's wallet and the pending account come with the hold's legs.
        Movement::Settle { payee_id, currency, .. } => {
            vec![AccountKey::User { user_id: payee_id, currency }, AccountKey::Pending { currency }]
        }
        Movement::Rollback { .. } => Vec::new(),
    }
}

/// The wallets whose effective-time history a command needs (see [`Book::with_histories`]), with the instant it
/// takes effect on them: the user wallets of a movement back-dated before `now`; none for any other.
pub fn backdated_wallets(command: &Command, now: DateTime<Utc>) -> Vec<(AccountKey, DateTime<Utc>)> {
    let Some(at) = command.effective_at.filter(|at| *at < now) else { return Vec::new() };
    accounts_needed(command).into_iter().filter(|key| key.user_id().is_some()).map(|key| (key, at)).collect()
}

/// The wallets a movement may open: the receiving ones. A wallet "opens on its first credit or incoming
/// transfer"; wallets that are only debited must already exist.
pub fn accounts_opened(command: &Command) -> Vec<AccountKey> {
    match command.movement {
        Movement::Credit { user_id, amount } => vec![wallet(user_id, amount)],
        Movement::Transfer { to_user_id, amount, .. } => vec![wallet(to_user_id, amount)],
        Movement::Exchange { user_id, to_currency, .. } => vec![AccountKey::User { user_id, currency: to_currency }],
        Movement::Settle { payee_id, currency, settlement: Settlement::Post(_), .. } => {
            vec![AccountKey::User { user_id: payee_id, currency }]
        }
        Movement::Debit { .. } | Movement::Rollback { .. } | Movement::Hold { .. } | Movement::Settle { .. } => {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const USD: Currency = Currency::USD;

    fn usd(minor: i64) -> Money {
        Money::new(minor, USD)
    }

    fn state(key: AccountKey, balance_minor: i64) -> AccountState {
        AccountState { id: Uuid::new_v4(), key, balance_minor, version: 0, limits: Limits::default(), pending_minor: 0 }
    }

    fn command(movement: Movement) -> Command {
        Command { transaction_id: Uuid::new_v4(), movement, description: None, effective_at: None }
    }

    fn book(users: &[Uuid], balance: i64) -> Book {
        let mut accounts: Vec<AccountState> =
            users.iter().map(|u| state(AccountKey::User { user_id: *u, currency: USD }, balance)).collect();
        let world = -balance * users.len() as i64;
        accounts.push(state(AccountKey::World { currency: USD }, world));
        Book::new(accounts, [])
    }

    fn balance(book: &Book, key: AccountKey) -> i64 {
        book.account(key).map_or(0, |a| a.balance_minor)
    }

    fn user(user_id: Uuid) -> AccountKey {
        AccountKey::User { user_id, currency: USD }
    }

    #[test]
    fn a_transfer_moves_money_and_records_balances_after() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut book = book(&[a, b], 1000);
        let applied = book
            .apply(&command(Movement::Transfer { from_user_id: a, to_user_id: b, amount: usd(300) }), Utc::now())
            .expect("applied");
        assert_eq!(applied.transaction.kind, TransactionKind::Transfer);
        assert_eq!(applied.transaction.status, TransactionStatus::Success);
        let after: Vec<(i64, i64, i64)> =
            applied.postings.iter().map(|p| (p.amount_minor, p.balance_after_minor, p.account_version)).collect();
        assert_eq!(after, [(-300, 700, 1), (300, 1300, 1)]);
        assert_eq!((balance(&book, user(a)), balance(&book, user(b))), (700, 1300));
    }

    #[test]
    fn wallets_never_go_negative_and_a_refusal_changes_nothing() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut book = book(&[a, b], 100);
        let refused = book.apply(&command(Movement::Debit { user_id: a, amount: usd(101) }), Utc::now());
        assert_eq!(refused, Err(LedgerError::InsufficientFunds));
        assert_eq!(balance(&book, user(a)), 100);
        assert_eq!(book.account(user(a)).map(|s| s.version), Some(0));
        let never_opened = Uuid::new_v4();
        let refused = book.apply(&command(Movement::Debit { user_id: never_opened, amount: usd(1) }), Utc::now());
        assert_eq!(refused, Err(LedgerError::InsufficientFunds));
    }

    #[test]
    fn self_transfers_and_same_currency_exchanges_are_refused() {
        let a = Uuid::new_v4();
        let mut book = book(&[a], 100);
        let transfer = Movement::Transfer { from_user_id: a, to_user_id: a, amount: usd(1) };
        assert_eq!(book.apply(&command(transfer), Utc::now()), Err(LedgerError::SelfTransfer));
        let rate = Rate::parse("1").expect("rate");
        let exchange = Movement::Exchange { user_id: a, amount: usd(1), to_currency: USD, rate };
        assert_eq!(book.apply(&command(exchange), Utc::now()), Err(LedgerError::SameCurrency));
    }

    #[test]
    fn an_exchange_goes_through_the_fx_accounts_and_rounds_down() {
        let a = Uuid::new_v4();
        let jpy = AccountKey::User { user_id: a, currency: Currency::JPY };
        let mut book = Book::new(
            [
                state(user(a), 10_000),
                state(AccountKey::World { currency: USD }, -10_000),
                state(AccountKey::Fx { currency: USD }, 0),
                state(AccountKey::Fx { currency: Currency::JPY }, 0),
                state(jpy, 0),
            ],
            [],
        );
        let rate = Rate::parse("149.567").expect("rate");
        let exchange = Movement::Exchange { user_id: a, amount: usd(1_001), to_currency: Currency::JPY, rate };
        let applied = book.apply(&command(exchange), Utc::now()).expect("applied");
        assert_eq!(applied.transaction.to_amount, Some(Money::new(1_497, Currency::JPY)), "10.01 × 149.567 = 1497.16");
        assert_eq!(balance(&book, user(a)), 8_999);
        assert_eq!(balance(&book, jpy), 1_497);
        assert_eq!(balance(&book, AccountKey::Fx { currency: USD }), 1_001);
        assert_eq!(balance(&book, AccountKey::Fx { currency: Currency::JPY }), -1_497);
        let tiny = Movement::Exchange {
            user_id: a,
            amount: usd(1),
            to_currency: Currency::JPY,
            rate: Rate::parse("0.5").expect("rate"),
        };
        assert_eq!(book.apply(&command(tiny), Utc::now()), Err(LedgerError::ConvertsToZero));
    }

    fn original(payer: Uuid, payee: Uuid, amount: i64) -> Original {
        Original {
            record: TransactionRecord {
                id: Uuid::new_v4(),
                kind: TransactionKind::Transfer,
                status: TransactionStatus::Success,
                from_user_id: Some(payer),
                to_user_id: Some(payee),
                amount: usd(amount),
                to_amount: None,
                rate: None,
                description: None,
                reversal_of: None,
                reversed_by: None,
                created_at: days(0),
                effective_at: days(0),
                expires_at: None,
            },
            legs: pair(user(payer), user(payee), usd(amount)),
        }
    }

    #[test]
    fn a_rollback_posts_the_inverse_once_and_only_for_the_payer_or_an_admin() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let transfer = original(a, b, 300);
        let id = transfer.record.id;
        let mut book = Book::new([state(user(a), 700), state(user(b), 1300)], [transfer]);
        let by = |actor_id, actor_is_admin| command(Movement::Rollback { original_id: id, actor_id, actor_is_admin });

        assert_eq!(book.apply(&by(b, false), Utc::now()), Err(LedgerError::RollbackForbidden));
        let applied = book.apply(&by(a, false), Utc::now()).expect("payer rolls back");
        assert_eq!(applied.reversed, Some(id));
        assert_eq!(applied.transaction.reversal_of, Some(id));
        assert_eq!((applied.transaction.from_user_id, applied.transaction.to_user_id), (Some(b), Some(a)));
        assert_eq!((balance(&book, user(a)), balance(&book, user(b))), (1000, 1000));
        assert_eq!(book.apply(&by(Uuid::new_v4(), true), Utc::now()), Err(LedgerError::AlreadyRolledBack));
        let unknown = Movement::Rollback { original_id: Uuid::new_v4(), actor_id: a, actor_is_admin: true };
        assert_eq!(book.apply(&command(unknown), Utc::now()), Err(LedgerError::TransactionNotFound));
    }

    #[test]
    fn rollbacks_cannot_be_rolled_back_and_need_the_funds() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut reversal = original(b, a, 300);
        reversal.record.reversal_of = Some(Uuid::new_v4());
        let reversal_id = reversal.record.id;
        let spent = original(a, b, 500);
        let spent_id = spent.record.id;
        let mut book = Book::new([state(user(a), 1000), state(user(b), 100)], [reversal, spent]);
        let rollback = |original_id| command(Movement::Rollback { original_id, actor_id: a, actor_is_admin: true });
        assert_eq!(book.apply(&rollback(reversal_id), Utc::now()), Err(LedgerError::NotReversible));
        assert_eq!(book.apply(&rollback(spent_id), Utc::now()), Err(LedgerError::InsufficientFunds));
    }

    #[test]
    fn only_admins_roll_back_credits() {
        let a = Uuid::new_v4();
        let mut credit = original(a, a, 100);
        credit.record.kind = TransactionKind::Credit;
        credit.record.from_user_id = None;
        credit.legs = pair(AccountKey::World { currency: USD }, user(a), usd(100));
        let id = credit.record.id;
        let mut book = Book::new([state(user(a), 100), state(AccountKey::World { currency: USD }, -100)], [credit]);
        let by = |actor_is_admin| command(Movement::Rollback { original_id: id, actor_id: a, actor_is_admin });
        assert_eq!(book.apply(&by(false), Utc::now()), Err(LedgerError::RollbackForbidden));
        assert!(book.apply(&by(true), Utc::now()).is_ok());
    }

    fn limited(book: &mut Book, key: AccountKey, limits: Limits) {
        let mut account = *book.account(key).expect("account");
        account.limits = limits;
        book.accounts.insert(key, account);
    }

    #[test]
    fn an_overdraft_lets_a_wallet_go_that_far_below_zero_and_no_further() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut book = book(&[a, b], 100);
        limited(&mut book, user(a), Limits { overdraft_minor: Some(50), max_balance_minor: None });
        let debit = |amount| command(Movement::Debit { user_id: a, amount: usd(amount) });
        assert_eq!(book.apply(&debit(151), Utc::now()), Err(LedgerError::InsufficientFunds));
        assert!(book.apply(&debit(150), Utc::now()).is_ok());
        assert_eq!(balance(&book, user(a)), -50);
        let transfer = Movement::Transfer { from_user_id: a, to_user_id: b, amount: usd(1) };
        assert_eq!(book.apply(&command(transfer), Utc::now()), Err(LedgerError::InsufficientFunds));
        // Money in is always welcome below zero.
        assert!(book.apply(&command(Movement::Credit { user_id: a, amount: usd(10) }), Utc::now()).is_ok());
        assert_eq!(balance(&book, user(a)), -40);
    }

    #[test]
    fn a_maximum_balance_refuses_money_in_beyond_it_but_not_money_out() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut book = book(&[a, b], 100);
        limited(&mut book, user(b), Limits { overdraft_minor: None, max_balance_minor: Some(150) });
        let to_b = |amount| command(Movement::Transfer { from_user_id: a, to_user_id: b, amount: usd(amount) });
        assert_eq!(book.apply(&to_b(51), Utc::now()), Err(LedgerError::BalanceLimitExceeded));
        assert_eq!((balance(&book, user(a)), balance(&book, user(b))), (100, 100), "a refusal changes nothing");
        assert!(book.apply(&to_b(50), Utc::now()).is_ok());
        let credit = command(Movement::Credit { user_id: b, amount: usd(1) });
        assert_eq!(book.apply(&credit, Utc::now()), Err(LedgerError::BalanceLimitExceeded));
        assert!(book.apply(&command(Movement::Debit { user_id: b, amount: usd(150) }), Utc::now()).is_ok());
    }

    #[test]
    fn limits_hold_for_rollbacks_too() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let transfer = original(a, b, 300);
        let id = transfer.record.id;
        let mut book = Book::new([state(user(a), 700), state(user(b), 1300)], [transfer]);
        limited(&mut book, user(a), Limits { overdraft_minor: None, max_balance_minor: Some(900) });
        let rollback = command(Movement::Rollback { original_id: id, actor_id: a, actor_is_admin: true });
        assert_eq!(book.apply(&rollback, Utc::now()), Err(LedgerError::BalanceLimitExceeded));
    }

    #[test]
    fn limits_admit_only_balances_within_them() {
        let limits = Limits { overdraft_minor: Some(100), max_balance_minor: Some(1_000) };
        assert_eq!(limits.admit(-101), Err(LedgerError::InsufficientFunds));
        assert_eq!(limits.admit(1_001), Err(LedgerError::BalanceLimitExceeded));
        assert!(limits.admit(-100).is_ok() && limits.admit(1_000).is_ok());
        assert_eq!(Limits::default().admit(-1), Err(LedgerError::InsufficientFunds));
        assert!(!Limits { overdraft_minor: Some(-1), max_balance_minor: None }.is_valid());
    }

    /// A book over users with `balance` each, and the pending account.
    fn book_with_pending(users: &[Uuid], balance: i64) -> Book {
        let mut book = book(users, balance);
        let pending = state(AccountKey::Pending { currency: USD }, 0);
        book.accounts.insert(pending.key, pending);
        book
    }

    /// Holds `amount` from `a` to `b`, expiring an hour from `now`; the hold becomes an original of the book, as
    /// the store would load it to settle it.
    fn hold(book: &mut Book, a: Uuid, b: Uuid, amount: i64, now: DateTime<Utc>) -> Result<Uuid, LedgerError> {
        let movement = Movement::Hold {
            from_user_id: a,
            to_user_id: b,
            amount: usd(amount),
            expires_at: now + chrono::Duration::hours(1),
        };
        let applied = book.apply(&command(movement), now)?;
        let legs = applied.postings.iter().map(|p| Leg { account: p.account, amount_minor: p.amount_minor }).collect();
        let id = applied.transaction.id;
        book.originals.insert(id, Original { record: applied.transaction, legs });
        Ok(id)
    }

    fn settle_by(hold_id: Uuid, payee_id: Uuid, settlement: Settlement, actor_id: Uuid) -> Command {
        command(Movement::Settle { hold_id, payee_id, currency: USD, settlement, actor_id, actor_is_admin: false })
    }

    fn pending_of(book: &Book, user_id: Uuid) -> i64 {
        book.account(user(user_id)).map_or(0, |a| a.pending_minor)
    }

    #[test]
    fn a_hold_moves_money_to_the_pending_account_and_a_partial_post_pays_part_and_releases_the_rest() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let mut book = book_with_pending(&[a, b], 1_000);
        let id = hold(&mut book, a, b, 600, now).expect("held");
        assert_eq!((balance(&book, user(a)), pending_of(&book, a)), (400, 600), "posted stays 1000");
        assert_eq!(balance(&book, AccountKey::Pending { currency: USD }), 600);
        assert_eq!(balance(&book, user(b)), 1_000, "the payee sees nothing");
        // More than available is refused while the hold stands.
        let refused = book.apply(&command(Movement::Debit { user_id: a, amount: usd(401) }), now);
        assert_eq!(refused, Err(LedgerError::InsufficientFunds));

        let over = settle_by(id, b, Settlement::Post(Some(usd(601))), a);
        assert_eq!(book.apply(&over, now), Err(LedgerError::PostExceedsHold));
        assert_eq!(book.apply(&settle_by(id, b, Settlement::Post(None), b), now), Err(LedgerError::SettleForbidden));
        let posted = book.apply(&settle_by(id, b, Settlement::Post(Some(usd(250))), a), now).expect("posted");
        assert!(posted.settles);
        assert_eq!((posted.transaction.status, posted.transaction.amount), (TransactionStatus::Success, usd(250)));
        assert_eq!((balance(&book, user(a)), pending_of(&book, a), balance(&book, user(b))), (750, 0, 1_250));
        assert_eq!(balance(&book, AccountKey::Pending { currency: USD }), 0);
        let again = book.apply(&settle_by(id, b, Settlement::Void, a), now);
        assert_eq!(again, Err(LedgerError::TransferNotPending));
        // The posted transfer rolls back like any other: the pending legs net out.
        let rollback = command(Movement::Rollback { original_id: id, actor_id: a, actor_is_admin: false });
        let reversed = book.apply(&rollback, now).expect("rolled back");
        assert_eq!(reversed.event_version, 3);
        assert_eq!(reversed.postings.len(), 2);
        assert_eq!((balance(&book, user(a)), balance(&book, user(b))), (1_000, 1_000));
    }

    #[test]
    fn voids_release_holds_and_expiries_wait_for_their_time() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let mut book = book_with_pending(&[a, b], 1_000);
        let voided = hold(&mut book, a, b, 300, now).expect("held");
        let expiring = hold(&mut book, a, b, 200, now).expect("held");
        assert_eq!(pending_of(&book, a), 500);
        let stranger = Uuid::new_v4();
        assert_eq!(
            book.apply(&settle_by(voided, b, Settlement::Void, stranger), now),
            Err(LedgerError::SettleForbidden)
        );
        let applied = book.apply(&settle_by(voided, b, Settlement::Void, b), now).expect("the payee may void");
        assert_eq!(applied.transaction.status, TransactionStatus::Voided);
        let early = book.apply(&settle_by(expiring, b, Settlement::Expire, a), now);
        assert_eq!(early, Err(LedgerError::TransferNotPending), "not due yet");
        let later = now + chrono::Duration::hours(1);
        let post_late = book.apply(&settle_by(expiring, b, Settlement::Post(None), a), later);
        assert_eq!(post_late, Err(LedgerError::TransferNotPending), "too late to post");
        let expired = book.apply(&settle_by(expiring, b, Settlement::Expire, a), later).expect("expired");
        assert_eq!(expired.transaction.status, TransactionStatus::Expired);
        assert_eq!((balance(&book, user(a)), pending_of(&book, a), balance(&book, user(b))), (1_000, 0, 1_000));
        let rollback = command(Movement::Rollback { original_id: voided, actor_id: a, actor_is_admin: true });
        assert_eq!(book.apply(&rollback, later), Err(LedgerError::NotReversible));
    }

    #[test]
    #[should_panic(expected = "unbalanced")]
    fn unbalanced_legs_never_pass() {
        assert_balanced(&[Leg { account: AccountKey::World { currency: USD }, amount_minor: 1 }]);
    }

    fn days(n: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000 + n)
    }

    fn backdated(movement: Movement, at: DateTime<Utc>) -> Command {
        Command { effective_at: Some(at), ..command(movement) }
    }

    #[test]
    fn a_back_dated_movement_is_checked_against_the_wallets_past_balances() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // a received 100 on day 3 and had nothing before; b has 1,000 since day 0.
        let mut book = book(&[a, b], 0).with_histories([
            (user(a), EffectiveHistory::from_postings(days(0), 0, [(days(3), 100)])),
            (user(b), EffectiveHistory::from_postings(days(0), 1_000, [])),
        ]);
        limited(&mut book, user(a), Limits::default());
        book.accounts.get_mut(&user(a)).expect("a").balance_minor = 100;
        book.accounts.get_mut(&user(b)).expect("b").balance_minor = 1_000;
        let now = days(10);
        let debit = |amount, at| backdated(Movement::Debit { user_id: a, amount: usd(amount) }, at);
        assert_eq!(book.apply(&debit(50, days(1)), now), Err(LedgerError::InvalidEffectiveAt), "a had 0 on day 1");
        assert_eq!(book.apply(&debit(150, days(4)), now), Err(LedgerError::InsufficientFunds), "now is checked too");
        let applied = book.apply(&debit(50, days(4)), now).expect("a had 100 from day 3");
        assert_eq!(applied.transaction.effective_at, days(4));
        assert_eq!(applied.transaction.created_at, now);
        assert!(applied.postings.iter().all(|p| p.effective_at == Some(days(4))));
        // The debit on day 4 counts in a's past, and a credit now does not: a had 50 from day 4 until now.
        book.apply(&command(Movement::Credit { user_id: a, amount: usd(1_000) }), now).expect("credit");
        assert_eq!(book.apply(&debit(51, days(3)), now), Err(LedgerError::InvalidEffectiveAt));
        assert!(book.apply(&debit(50, days(3)), now).is_ok());
        // A back-dated transfer checks the payer's past; the payee's past may rise freely without a ceiling.
        let transfer = Movement::Transfer { from_user_id: b, to_user_id: a, amount: usd(400) };
        assert!(book.apply(&backdated(transfer, days(1)), now).is_ok());
        assert!(book.apply(&debit(400, days(1)), now).is_ok(), "the transfer funded a from day 1");
        assert_eq!(book.apply(&debit(1, days(1)), now), Err(LedgerError::InvalidEffectiveAt));
        // An instant not before now is no back-dating; holds and exchanges cannot be back-dated.
        let credit = book.apply(&backdated(Movement::Credit { user_id: a, amount: usd(1) }, days(11)), now);
        assert_eq!(credit.expect("credit").postings[0].effective_at, None);
        let hold = Movement::Hold { from_user_id: b, to_user_id: a, amount: usd(1), expires_at: days(12) };
        assert_eq!(book.apply(&backdated(hold, days(2)), now), Err(LedgerError::InvalidEffectiveAt));
    }

    proptest! {
        /// Movements back-dated at random, mixed with ordinary ones, keep every wallet's balance within its limits
        /// at every instant of effective time, recomputed from the postings alone.
        #[test]
        fn back_dated_postings_keep_every_historical_balance_within_the_limits(
            overdrafts in proptest::collection::vec(proptest::option::of(0i64..300), 3),
            steps in proptest::collection::vec((0usize..3, 0usize..3, 0u8..3, 1i64..700, proptest::option::of(0i64..30)), 1..120)
        ) {
            let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
            let mut book = book(&users, 500).with_histories(
                users.iter().map(|u| (user(*u), EffectiveHistory::from_postings(days(0), 500, []))),
            );
            for (user_id, overdraft_minor) in users.iter().zip(&overdrafts) {
                limited(&mut book, user(*user_id), Limits { overdraft_minor: *overdraft_minor, max_balance_minor: Some(2_000) });
            }
            let mut effective: Vec<(AccountKey, DateTime<Utc>, i64)> = Vec::new();
            for (step, (from, to, kind, amount, back)) in steps.into_iter().enumerate() {
                let now = days(30) + chrono::TimeDelta::minutes(i64::try_from(step).expect("step"));
                let movement = match kind {
                    0 => Movement::Credit { user_id: users[to], amount: usd(amount) },
                    1 => Movement::Debit { user_id: users[from], amount: usd(amount) },
                    _ => Movement::Transfer { from_user_id: users[from], to_user_id: users[to], amount: usd(amount) },
                };
                let command = Command { effective_at: back.map(days), ..command(movement) };
                if let Ok(applied) = book.apply(&command, now) {
                    let at = applied.transaction.effective_at;
                    effective.extend(applied.postings.iter().map(|p| (p.account, at, p.amount_minor)));
                }
            }
            for (user_id, overdraft_minor) in users.iter().zip(&overdrafts) {
                let limits = Limits { overdraft_minor: *overdraft_minor, max_balance_minor: Some(2_000) };
                let mut moves: Vec<(DateTime<Utc>, i64)> =
                    effective.iter().filter(|(k, _, _)| *k == user(*user_id)).map(|(_, at, a)| (*at, *a)).collect();
                moves.sort_by_key(|(at, _)| *at);
                let mut balance = 500;
                for (index, (at, amount)) in moves.iter().enumerate() {
                    balance += amount;
                    // Judge the balance once every movement effective at the same instant is in.
                    if moves.get(index + 1).is_none_or(|(next, _)| next != at) {
                        prop_assert!(limits.admit(balance).is_ok(), "{} at {}: {:?}", balance, at, limits);
                    }
                }
                prop_assert_eq!(balance, book.account(user(*user_id)).expect("wallet").balance_minor);
            }
        }
    }

    proptest! {
        #[test]
        fn random_movements_conserve_money_and_keep_wallets_non_negative(
            steps in proptest::collection::vec((0usize..4, 0usize..4, 0u8..3, 1i64..500), 1..200)
        ) {
            let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
            let mut book = book(&users, 1_000);
            for (from, to, kind, amount) in steps {
                let movement = match kind {
                    0 => Movement::Credit { user_id: users[to], amount: usd(amount) },
                    1 => Movement::Debit { user_id: users[from], amount: usd(amount) },
                    _ => Movement::Transfer { from_user_id: users[from], to_user_id: users[to], amount: usd(amount) },
                };
                let before: i64 = book.accounts().map(|a| a.balance_minor).sum();
                let outcome = book.apply(&command(movement), Utc::now());
                let after: i64 = book.accounts().map(|a| a.balance_minor).sum();
                prop_assert_eq!(before, after, "{:?}", outcome);
                prop_assert!(book.accounts().filter(|a| a.key.user_id().is_some()).all(|a| a.balance_minor >= 0));
                if let Ok(applied) = outcome {
                    prop_assert_eq!(applied.postings.iter().map(|p| p.amount_minor).sum::<i64>(), 0);
                }
            }
        }

        #[test]
        fn random_holds_posts_voids_and_expiries_keep_posted_and_pending_consistent(
            overdrafts in proptest::collection::vec(proptest::option::of(0i64..500), 3),
            steps in proptest::collection::vec((0usize..3, 0usize..3, 0u8..6, 1i64..900, 0usize..8), 1..150)
        ) {
            let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
            let mut book = book_with_pending(&users, 1_000);
            for (user_id, overdraft_minor) in users.iter().zip(&overdrafts) {
                limited(&mut book, user(*user_id), Limits { overdraft_minor: *overdraft_minor, max_balance_minor: None });
            }
            let start = Utc::now();
            let mut now = start;
            let mut holds: Vec<(Uuid, Uuid)> = Vec::new();
            for (from, to, kind, amount, pick) in steps {
                // The clock moves on a little each step, so some holds expire.
                now += chrono::Duration::minutes(7);
                let picked = (!holds.is_empty()).then(|| holds[pick % holds.len()]);
                let outcome = match (kind, picked) {
                    (0, _) => hold(&mut book, users[from], users[to], amount, now).map(|id| holds.push((id, users[to]))),
                    (1, Some((id, payee))) => {
                        let part = (amount % 2 == 0).then(|| usd(amount));
                        let payer = book.originals[&id].record.from_user_id.expect("payer");
                        book.apply(&settle_by(id, payee, Settlement::Post(part), payer), now).map(|_| ())
                    }
                    (2, Some((id, payee))) => book.apply(&settle_by(id, payee, Settlement::Void, payee), now).map(|_| ()),
                    (3, Some((id, payee))) => {
                        let payer = book.originals[&id].record.from_user_id.expect("payer");
                        book.apply(&settle_by(id, payee, Settlement::Expire, payer), now).map(|_| ())
                    }
                    (4, _) => book.apply(&command(Movement::Debit { user_id: users[from], amount: usd(amount) }), now).map(|_| ()),
                    _ => book
                        .apply(&command(Movement::Transfer { from_user_id: users[from], to_user_id: users[to], amount: usd(amount) }), now)
                        .map(|_| ()),
                };
                let _ = outcome;
                // Money is conserved, the pending account holds exactly the open holds, and each wallet's pending
                // amount is what its open holds hold.
                prop_assert_eq!(book.accounts().map(|a| a.balance_minor).sum::<i64>(), 0);
                let open: Vec<&Original> = book.originals.values().filter(|o| o.record.status == TransactionStatus::Pending).collect();
                let open_total: i64 = open.iter().map(|o| o.record.amount.amount_minor()).sum();
                prop_assert_eq!(balance(&book, AccountKey::Pending { currency: USD }), open_total);
                for user_id in &users {
                    let held: i64 = open.iter().filter(|o| o.record.from_user_id == Some(*user_id)).map(|o| o.record.amount.amount_minor()).sum();
                    let account = book.account(user(*user_id)).expect("wallet");
                    prop_assert_eq!(account.pending_minor, held);
                    // available = posted − pending_out + overdraft = balance_minor + overdraft, never below zero.
                    prop_assert!(account.balance_minor + account.limits.overdraft_minor.unwrap_or(0) >= 0, "{:?}", account);
                }
            }
        }

        #[test]
        fn random_movements_keep_every_wallet_within_its_limits(
            limits in proptest::collection::vec((proptest::option::of(0i64..500), proptest::option::of(1_000i64..3_000)), 4),
            steps in proptest::collection::vec((0usize..4, 0usize..4, 0u8..3, 1i64..800), 1..200)
        ) {
            let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
            let mut book = book(&users, 1_000);
            for (user_id, (overdraft_minor, max_balance_minor)) in users.iter().zip(&limits) {
                limited(&mut book, user(*user_id), Limits { overdraft_minor: *overdraft_minor, max_balance_minor: *max_balance_minor });
            }
            for (from, to, kind, amount) in steps {
                let movement = match kind {
                    0 => Movement::Credit { user_id: users[to], amount: usd(amount) },
                    1 => Movement::Debit { user_id: users[from], amount: usd(amount) },
                    _ => Movement::Transfer { from_user_id: users[from], to_user_id: users[to], amount: usd(amount) },
                };
                let before: i64 = book.accounts().map(|a| a.balance_minor).sum();
                let outcome = book.apply(&command(movement), Utc::now());
                let after: i64 = book.accounts().map(|a| a.balance_minor).sum();
                prop_assert_eq!(before, after, "{:?}", outcome);
                for account in book.accounts().filter(|a| a.key.user_id().is_some()) {
                    prop_assert!(account.limits.admit(account.balance_minor).is_ok(), "{:?}", account);
                }
            }
        }
    }
}
