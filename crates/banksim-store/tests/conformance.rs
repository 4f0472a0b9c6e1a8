//! The conformance suite: every backend keeps every contract of the `Store` trait.

use std::future::Future;
use std::sync::Arc;

use banksim_core::user::{Role, User};
use banksim_store::testing::{TestDatabase, backends};
use banksim_store::{
    AuditContext, ConnectOptions, NewRefreshToken, NewUser, RefreshOutcome, Store, StoreError, UserChanges,
    UserListQuery,
};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// The audit context of changes made by the tests themselves.
/// A trace id, as a traced request hands it to the store for the audit trail.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

const AUDIT: AuditContext =
    AuditContext { actor_id: None, ip: None, user_agent: None, request_id: None, trace_id: None };

/// Runs `scenario` on a fresh, migrated store of every backend under test.
async fn each_backend<F, Fut>(scenario: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        let db = TestDatabase::create(backend).await;
        let store = banksim_store::connect(&db.url, ConnectOptions::default()).await.expect("connect");
        store.migrate().await.expect("migrate");
        scenario(store.clone()).await;
        store.close().await;
        db.remove().await;
    }
}

/// Runs `scenario` on a fresh, migrated store of every backend, with the database's URL (for raw SQL, or a second
/// store on the same database).
async fn each_backend_with_url<F, Fut>(scenario: F)
where
    F: Fn(Arc<dyn Store>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        let db = TestDatabase::create(backend).await;
        let store = banksim_store::connect(&db.url, ConnectOptions::default()).await.expect("connect");
        store.migrate().await.expect("migrate");
        scenario(store.clone(), db.url.clone()).await;
        store.close().await;
        db.remove().await;
    }
}

fn now() -> DateTime<Utc> {
    // Stores keep microseconds; compare like with like.
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now")
}

fn new_user(name: &str, role: Role) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        username: name.to_owned(),
        email: format!("{}@example.com", name.to_lowercase()),
        password_hash: "$argon2id$fake".to_owned(),
        role,
        now: now(),
    }
}

fn token(user: &User, hash: &[u8], expires_in: Duration) -> NewRefreshToken {
    let issued_at = now();
    NewRefreshToken {
        id: Uuid::new_v4(),
        family_id: Uuid::new_v4(),
        user_id: user.id,
        token_hash: hash.to_vec(),
        issued_at,
        expires_at: issued_at + expires_in,
    }
}

async fn rotate(store: &Arc<dyn Store>, presented: &[u8], successor: &[u8]) -> Result<RefreshOutcome, StoreError> {
    store.rotate_refresh_token(presented, successor, now(), now() + Duration::days(1)).await
}

fn page(limit: u32, offset: u64, include_inactive: bool) -> UserListQuery {
    UserListQuery { limit, offset, after: None, include_inactive }
}

#[tokio::test]
async fn migrations_can_run_twice() {
    each_backend(|store| async move {
        store.migrate().await.expect("second migrate");
        store.ping().await.expect("ping");
    })
    .await;
}

#[tokio::test]
async fn created_users_can_be_found_by_id_and_email() {
    each_backend(|store| async move {
        let new = new_user("sefa", Role::User);
        let created = store.create_user(new.clone(), &AuditContext::default()).await.expect("create");
        assert_eq!(created.id, new.id);
        assert_eq!(created.email, "sefa@example.com");
        assert_eq!(created.created_at, new.now);
        assert!(created.is_active);
        assert_eq!(store.find_user(new.id).await.expect("find"), Some(created.clone()));
        let credentials = store.find_credentials("sefa@example.com").await.expect("find").expect("some");
        assert_eq!(credentials.user, created);
        assert_eq!(credentials.password_hash, "$argon2id$fake");
        assert!(store.find_user(Uuid::new_v4()).await.expect("find").is_none());
        assert!(store.find_credentials("nobody@example.com").await.expect("find").is_none());
    })
    .await;
}

#[tokio::test]
async fn users_created_in_bulk_are_registered_in_order_with_events_and_a_sound_audit_chain() {
    each_backend(|store| async move {
        store.create_user(new_user("first", Role::Admin), &AUDIT).await.expect("create");
        let users: Vec<NewUser> = (0..2_500).map(|i| new_user(&format!("bulk_{i:05}"), Role::User)).collect();
        store.create_users(&users, &AUDIT).await.expect("create in bulk");
        store.create_user(new_user("last", Role::User), &AUDIT).await.expect("create after");
        for user in [&users[0], &users[2_499]] {
            let found = store.find_user(user.id).await.expect("find").expect("some");
            assert_eq!((found.created_at, found.updated_at, found.is_active), (user.now, user.now, true));
            let credentials = store.find_credentials(&user.email).await.expect("find").expect("some");
            assert_eq!(credentials.password_hash, "$argon2id$fake");
        }
        let events = store.list_events(0, 3_000).await.expect("events");
        let registered: Vec<Uuid> =
            events.iter().filter(|e| e.event_type == "UserRegistered").map(|e| e.aggregate_id).collect();
        assert_eq!(registered.len(), 2_502);
        assert_eq!(registered[1..2_501], users.iter().map(|u| u.id).collect::<Vec<_>>()[..]);
        assert!(events.iter().all(|e| e.version == 1));
        let report = store.verify_ledger().await.expect("verify");
        assert!(report.is_sound(), "{:?}", report.violations);
    })
    .await;
}

#[tokio::test]
async fn a_bulk_registration_with_a_taken_email_writes_nothing() {
    each_backend(|store| async move {
        store.create_user(new_user("sefa", Role::User), &AUDIT).await.expect("create");
        let clash = NewUser { username: "other".into(), ..new_user("sefa", Role::User) };
        let users = vec![new_user("kerem", Role::User), clash];
        assert!(matches!(store.create_users(&users, &AUDIT).await, Err(StoreError::Conflict("email_taken"))));
        assert!(store.find_user(users[0].id).await.expect("find").is_none());
        store.create_users(&[], &AUDIT).await.expect("nothing to create");
    })
    .await;
}

#[tokio::test]
async fn emails_and_usernames_are_unique_case_insensitively() {
    each_backend(|store| async move {
        store.create_user(new_user("sefa", Role::User), &AuditContext::default()).await.expect("create");
        let same_email = NewUser { username: "other".into(), ..new_user("sefa", Role::User) };
        assert!(matches!(
            store.create_user(same_email, &AuditContext::default()).await,
            Err(StoreError::Conflict("email_taken"))
        ));
        let same_name = NewUser { email: "other@example.com".into(), ..new_user("SEFA", Role::User) };
        assert!(matches!(
            store.create_user(same_name, &AuditContext::default()).await,
            Err(StoreError::Conflict("username_taken"))
        ));
    })
    .await;
}

#[tokio::test]
async fn users_are_listed_in_pages_with_a_total() {
    each_backend(|store| async move {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                store
                    .create_user(new_user(&format!("user{i}"), Role::User), &AuditContext::default())
                    .await
                    .expect("create")
                    .id,
            );
        }
        let inactive = store
            .update_user(
                ids[4],
                UserChanges { is_active: Some(false), ..Default::default() },
                now(),
                &AuditContext::default(),
            )
            .await
            .expect("deactivate");
        assert!(!inactive.is_active);

        let first = store.list_users(page(2, 0, false)).await.expect("list");
        assert_eq!(first.total, 4);
        assert_eq!(first.users.iter().map(|u| u.id).collect::<Vec<_>>(), ids[..2]);
        let second = store.list_users(page(2, 2, false)).await.expect("list");
        assert_eq!(second.users.iter().map(|u| u.id).collect::<Vec<_>>(), ids[2..4]);
        let all = store.list_users(page(100, 0, true)).await.expect("list");
        assert_eq!(all.total, 5);
        assert_eq!(all.users.len(), 5);
        assert!(all.next.is_none(), "a short page has no successor");

        let mut seen = Vec::new();
        let mut query = page(2, 0, true);
        loop {
            let page = store.list_users(query).await.expect("list");
            seen.extend(page.users.iter().map(|u| u.id));
            match page.next {
                Some(cursor) => query.after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, ids, "cursor paging visits every user once, in order");
    })
    .await;
}

#[tokio::test]
async fn updates_change_only_the_given_fields() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("kerem", Role::User), &AuditContext::default()).await.expect("create");
        let later = now() + Duration::seconds(1);
        let changes = UserChanges { email: Some("k@example.com".into()), ..Default::default() };
        let updated = store.update_user(user.id, changes, later, &AuditContext::default()).await.expect("update");
        assert_eq!(updated.email, "k@example.com");
        assert_eq!(updated.username, "kerem");
        assert_eq!(updated.role, Role::User);
        assert_eq!(updated.updated_at, later);
        assert_eq!(updated.created_at, user.created_at);
        let missing = store.update_user(Uuid::new_v4(), UserChanges::default(), later, &AuditContext::default()).await;
        assert!(matches!(missing, Err(StoreError::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_or_deactivated() {
    each_backend(|store| async move {
        let admin = store.create_user(new_user("root", Role::Admin), &AuditContext::default()).await.expect("create");
        let demote = UserChanges { role: Some(Role::User), ..Default::default() };
        let deactivate = UserChanges { is_active: Some(false), ..Default::default() };
        for changes in [demote.clone(), deactivate.clone()] {
            let refused = store.update_user(admin.id, changes, now(), &AuditContext::default()).await;
            assert!(matches!(refused, Err(StoreError::Conflict("last_admin"))), "{refused:?}");
        }
        assert_eq!(store.count_active_admins().await.expect("count"), 1);

        let second = store.create_user(new_user("root2", Role::Admin), &AuditContext::default()).await.expect("create");
        store.update_user(admin.id, demote, now(), &AuditContext::default()).await.expect("demote with another admin");
        let refused = store.update_user(second.id, deactivate, now(), &AuditContext::default()).await;
        assert!(matches!(refused, Err(StoreError::Conflict("last_admin"))));
    })
    .await;
}

#[tokio::test]
async fn admins_demoting_each_other_at_once_leave_one_admin() {
    each_backend(|store| async move {
        let a = store.create_user(new_user("admin_a", Role::Admin), &AuditContext::default()).await.expect("create");
        let b = store.create_user(new_user("admin_b", Role::Admin), &AuditContext::default()).await.expect("create");
        let demote = || UserChanges { role: Some(Role::User), ..Default::default() };
        let (ra, rb) = tokio::join!(
            store.update_user(a.id, demote(), now(), &AUDIT),
            store.update_user(b.id, demote(), now(), &AUDIT)
        );
        assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "exactly one demotion succeeds: {ra:?} {rb:?}");
        assert_eq!(store.count_active_admins().await.expect("count"), 1);
    })
    .await;
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User), &AuditContext::default()).await.expect("create");
        let first = token(&user, b"first", Duration::days(1));
        store.insert_refresh_token(first.clone()).await.expect("insert");

        let outcome = rotate(&store, b"first", b"second").await;
        assert_eq!(outcome.expect("rotate"), RefreshOutcome::Rotated { user_id: user.id });

        let reused = rotate(&store, b"first", b"third").await;
        assert!(matches!(reused.expect("rotate"), RefreshOutcome::Reused { .. }));

        let revoked = rotate(&store, b"second", b"fourth").await;
        assert_eq!(revoked.expect("rotate"), RefreshOutcome::Invalid, "the successor went with its family");

        let unknown = rotate(&store, b"nope", b"fifth").await;
        assert_eq!(unknown.expect("rotate"), RefreshOutcome::Invalid);
    })
    .await;
}

#[tokio::test]
async fn expired_refresh_tokens_and_inactive_owners_are_refused() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User), &AuditContext::default()).await.expect("create");
        store.insert_refresh_token(token(&user, b"old", Duration::seconds(-1))).await.expect("insert");
        let expired = rotate(&store, b"old", b"x").await;
        assert_eq!(expired.expect("rotate"), RefreshOutcome::Invalid);

        store.insert_refresh_token(token(&user, b"live", Duration::days(1))).await.expect("insert");
        let deactivate = UserChanges { is_active: Some(false), ..Default::default() };
        store.update_user(user.id, deactivate, now(), &AuditContext::default()).await.expect("deactivate");
        let inactive = rotate(&store, b"live", b"y").await;
        assert_eq!(inactive.expect("rotate"), RefreshOutcome::Invalid);

        let reactivate = UserChanges { is_active: Some(true), ..Default::default() };
        store.update_user(user.id, reactivate, now(), &AuditContext::default()).await.expect("reactivate");
        let still = rotate(&store, b"live", b"z").await;
        assert_eq!(still.expect("rotate"), RefreshOutcome::Invalid, "deactivation revoked the token for good");
    })
    .await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_rotate_it_at_most_once() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User), &AuditContext::default()).await.expect("create");
        store.insert_refresh_token(token(&user, b"t", Duration::days(1))).await.expect("insert");
        let (a, b) = tokio::join!(rotate(&store, b"t", b"a"), rotate(&store, b"t", b"b"),);
        let outcomes = [a.expect("rotate"), b.expect("rotate")];
        let rotated = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Rotated { .. })).count();
        assert_eq!(rotated, 1, "{outcomes:?}");
        assert!(outcomes.iter().any(|o| matches!(o, RefreshOutcome::Reused { .. })), "{outcomes:?}");
    })
    .await;
}

#[tokio::test]
async fn logout_revokes_only_the_owners_family() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User), &AuditContext::default()).await.expect("create");
        let other = store.create_user(new_user("kerem", Role::User), &AuditContext::default()).await.expect("create");
        store.insert_refresh_token(token(&user, b"mine", Duration::days(1))).await.expect("insert");
        assert!(!store.revoke_refresh_family(b"mine", other.id, now()).await.expect("revoke"));
        assert!(store.revoke_refresh_family(b"mine", user.id, now()).await.expect("revoke"));
        let after = rotate(&store, b"mine", b"n").await;
        assert_eq!(after.expect("rotate"), RefreshOutcome::Invalid);
    })
    .await;
}

mod ledger {
    use banksim_core::currency::Currency;
    use banksim_core::ledger::{Command, LedgerError, Movement, TransactionRecord, TransactionStatus};
    use banksim_core::money::Money;
    use banksim_store::{AuditContext, IdempotencyClaim, LedgerOutcome, LedgerRequest, LedgerWork, ResponseRenderer};

    use super::*;

    struct Plain;

    impl ResponseRenderer for Plain {
        fn render(&self, _: &LedgerRequest, outcome: &LedgerOutcome) -> (u16, String) {
            match outcome {
                LedgerOutcome::Posted(record) => (201, record.id.to_string()),
                LedgerOutcome::Refused(refusal) => (400, refusal.code().to_owned()),
                LedgerOutcome::Batch(batch) => (if batch.applied { 201 } else { 400 }, format!("{batch:?}")),
                LedgerOutcome::Replayed(stored) => (stored.status, stored.body.clone()),
            }
        }
    }

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD)
    }

    fn request(movement: Movement, key: Option<(&User, &str, &[u8])>) -> LedgerRequest {
        LedgerRequest {
            work: LedgerWork::One(Command {
                transaction_id: Uuid::now_v7(),
                movement,
                description: None,
                effective_at: None,
            }),
            idempotency: key.map(|(user, key, hash)| IdempotencyClaim {
                user_id: user.id,
                key: key.to_owned(),
                request_hash: hash.to_vec(),
            }),
            audit: AuditContext::default(),
        }
    }

    /// The id of the transaction a one-movement request creates.
    fn transaction_id(request: &LedgerRequest) -> Uuid {
        request.work.commands().next().expect("one movement").transaction_id
    }

    async fn post(store: &Arc<dyn Store>, requests: Vec<LedgerRequest>) -> Vec<LedgerOutcome> {
        store.post_batch(&requests, &Plain, now()).await.expect("batch").outcomes
    }

    async fn balance(store: &Arc<dyn Store>, user: &User) -> i64 {
        store.wallets(user.id, Some(Currency::USD)).await.expect("wallets").first().map_or(0, |w| w.balance_minor)
    }

    /// On SQLite a batch waits for a write lock that another connection holds (another process; here the test's own
    /// connection, on the one thread of the test's runtime, which must go on running to release it) asleep, off the
    /// thread, and posts once it is released.
    #[tokio::test]
    async fn a_sqlite_batch_waits_for_another_writer_without_holding_up_the_runtime() {
        let db = TestDatabase::create(banksim_store::Backend::Sqlite).await;
        let store = banksim_store::connect(&db.url, ConnectOptions::default()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let user = store.create_user(new_user("ines", Role::User), &AUDIT).await.expect("create");
        let lock = db.lock_writes().await;
        let credit = request(Movement::Credit { user_id: user.id, amount: usd(500) }, None);
        let posting = tokio::spawn({
            let store = store.clone();
            async move { store.post_batch(&[credit], &Plain, now()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!posting.is_finished(), "the batch waits for the lock");
        lock.release().await;
        let outcomes = posting.await.expect("task").expect("posted once the lock was free").outcomes;
        assert!(matches!(outcomes[..], [LedgerOutcome::Posted(_)]), "{outcomes:?}");
        assert_eq!(balance(&store, &user).await, 500);
        store.close().await;
        db.remove().await;
    }

    #[tokio::test]
    async fn a_batch_posts_each_movement_on_its_own() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            let outcomes = post(
                &store,
                vec![
                    request(Movement::Credit { user_id: a.id, amount: usd(1_000) }, None),
                    request(Movement::Debit { user_id: b.id, amount: usd(1) }, None),
                    request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(400) }, None),
                    request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(601) }, None),
                    request(Movement::Transfer { from_user_id: b.id, to_user_id: a.id, amount: usd(100) }, None),
                ],
            )
            .await;
            assert!(matches!(outcomes[0], LedgerOutcome::Posted(_)));
            assert_eq!(outcomes[1], LedgerOutcome::Refused(LedgerError::InsufficientFunds));
            assert!(matches!(outcomes[2], LedgerOutcome::Posted(_)));
            assert_eq!(outcomes[3], LedgerOutcome::Refused(LedgerError::InsufficientFunds));
            assert!(matches!(outcomes[4], LedgerOutcome::Posted(_)));
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await), (700, 300));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");
            assert_eq!((report.transactions, report.postings), (3, 6));
        })
        .await;
    }

    #[tokio::test]
    async fn a_bulk_posting_posts_batch_after_batch_and_stops_at_a_refused_one() {
        use banksim_store::{Backend, BulkBatch, BulkOutcome};
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            let batch = |movements: Vec<Movement>| BulkBatch {
                requests: movements.into_iter().map(|movement| request(movement, None)).collect(),
                now: now(),
            };
            let mut batches = vec![
                batch(vec![Movement::Credit { user_id: a.id, amount: usd(1_000) }]),
                batch(vec![
                    Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(400) },
                    Movement::Debit { user_id: b.id, amount: usd(100) },
                ]),
            ]
            .into_iter();
            let outcome = store.bulk_post(&mut batches).await.expect("bulk");
            assert_eq!(outcome, BulkOutcome::Posted { batches: 2, transactions: 3 });
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await), (600, 300));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");

            // On a ledger that is no longer empty, a refused movement stops the posting at its batch.
            let mut batches = vec![
                batch(vec![Movement::Credit { user_id: b.id, amount: usd(5) }]),
                batch(vec![Movement::Debit { user_id: a.id, amount: usd(10_000) }]),
                batch(vec![Movement::Credit { user_id: a.id, amount: usd(7) }]),
            ]
            .into_iter();
            let outcome = store.bulk_post(&mut batches).await.expect("bulk");
            let BulkOutcome::Refused { batch: 1, outcomes } = outcome else { panic!("{outcome:?}") };
            assert_eq!(outcomes, vec![LedgerOutcome::Refused(LedgerError::InsufficientFunds)]);
            // PostgreSQL writes a bulk posting in one transaction: nothing of it is kept. Elsewhere each batch
            // before the refused one is committed.
            let kept = if store.backend() == Backend::Postgres { 300 } else { 305 };
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await), (600, kept));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");

            // A posting that both moves stored wallets and opens one: each ends where its movements left it.
            let c = store.create_user(new_user("carol", Role::User), &AuditContext::default()).await.expect("create");
            let mut batches = vec![
                batch(vec![Movement::Transfer { from_user_id: a.id, to_user_id: c.id, amount: usd(250) }]),
                batch(vec![Movement::Credit { user_id: b.id, amount: usd(20) }]),
            ]
            .into_iter();
            let outcome = store.bulk_post(&mut batches).await.expect("bulk");
            assert_eq!(outcome, BulkOutcome::Posted { batches: 2, transactions: 2 });
            let balances = (balance(&store, &a).await, balance(&store, &b).await, balance(&store, &c).await);
            assert_eq!(balances, (350, kept + 20, 250));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");
        })
        .await;
    }

    /// A client's batch as the writer hands it over: `items` in order, all or nothing when `atomic`.
    fn client_batch(items: Vec<Result<Movement, LedgerError>>, atomic: bool) -> LedgerRequest {
        let items = items
            .into_iter()
            .map(|item| {
                item.map(|movement| Command {
                    transaction_id: Uuid::now_v7(),
                    movement,
                    description: None,
                    effective_at: None,
                })
            })
            .collect();
        LedgerRequest {
            work: LedgerWork::Batch { items, atomic },
            ..request(Movement::Credit { user_id: Uuid::nil(), amount: usd(1) }, None)
        }
    }

    #[tokio::test]
    async fn a_refused_atomic_batch_leaves_no_trace_beside_the_movements_it_shares_a_commit_with() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            let c = store.create_user(new_user("carol", Role::User), &AuditContext::default()).await.expect("create");
            let transfer = |from: &User, to: &User, minor| {
                Ok(Movement::Transfer { from_user_id: from.id, to_user_id: to.id, amount: usd(minor) })
            };
            let outcomes = post(
                &store,
                vec![
                    request(Movement::Credit { user_id: a.id, amount: usd(1_000) }, None),
                    // Would open carol's wallet and move 600 before the refusal: none of it may stay.
                    client_batch(vec![transfer(&a, &c, 600), transfer(&a, &b, 500)], true),
                    client_batch(
                        vec![transfer(&a, &b, 300), transfer(&b, &c, 900), Err(LedgerError::RecipientNotFound)],
                        false,
                    ),
                    client_batch(vec![transfer(&a, &b, 100), transfer(&b, &c, 50)], true),
                    request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(600) }, None),
                ],
            )
            .await;
            assert!(matches!(outcomes[0], LedgerOutcome::Posted(_)));
            let LedgerOutcome::Batch(refused) = &outcomes[1] else { panic!("{:?}", outcomes[1]) };
            assert!(!refused.applied);
            assert!(refused.items[0].is_ok());
            assert_eq!(refused.items[1], Err(LedgerError::InsufficientFunds));
            let LedgerOutcome::Batch(each) = &outcomes[2] else { panic!("{:?}", outcomes[2]) };
            assert!(each.applied && each.items[0].is_ok());
            assert_eq!(each.items[1..], [Err(LedgerError::InsufficientFunds), Err(LedgerError::RecipientNotFound)]);
            let LedgerOutcome::Batch(whole) = &outcomes[3] else { panic!("{:?}", outcomes[3]) };
            assert!(whole.applied && whole.items.iter().all(Result::is_ok));
            assert!(matches!(outcomes[4], LedgerOutcome::Posted(_)));
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await, balance(&store, &c).await), (0, 950, 50));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");
            assert_eq!((report.transactions, report.postings), (5, 10));
        })
        .await;
    }

    #[tokio::test]
    async fn rollbacks_link_both_ways_and_happen_once() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            post(&store, vec![request(Movement::Credit { user_id: a.id, amount: usd(500) }, None)]).await;
            let transfer = request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(200) }, None);
            let original = transaction_id(&transfer);
            post(&store, vec![transfer]).await;
            let rollback =
                || request(Movement::Rollback { original_id: original, actor_id: a.id, actor_is_admin: false }, None);
            let outcomes = post(&store, vec![rollback(), rollback()]).await;
            let LedgerOutcome::Posted(reversal) = &outcomes[0] else { panic!("{outcomes:?}") };
            assert_eq!(outcomes[1], LedgerOutcome::Refused(LedgerError::AlreadyRolledBack));
            let stored = store.find_transaction(original).await.expect("find").expect("original");
            assert_eq!((stored.status, stored.reversed_by), (TransactionStatus::RolledBack, Some(reversal.id)));
            assert_eq!(
                store.find_transaction(reversal.id).await.expect("find").expect("reversal").reversal_of,
                Some(original)
            );
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await), (500, 0));
            assert!(store.verify_ledger().await.expect("verify").is_sound());
        })
        .await;
    }

    #[tokio::test]
    async fn an_idempotency_key_is_applied_once_even_within_one_batch() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let credit = || request(Movement::Credit { user_id: a.id, amount: usd(100) }, Some((&a, "k1", b"hash")));
            let outcomes = post(&store, vec![credit(), credit()]).await;
            let LedgerOutcome::Posted(first) = &outcomes[0] else { panic!("{outcomes:?}") };
            let LedgerOutcome::Replayed(replayed) = &outcomes[1] else { panic!("{outcomes:?}") };
            assert_eq!((replayed.status, replayed.body.as_str()), (201, first.id.to_string().as_str()));
            let later = post(&store, vec![credit()]).await;
            assert!(matches!(&later[0], LedgerOutcome::Replayed(r) if r.request_hash == b"hash"));
            let LedgerOutcome::Replayed(stored) = &later[0] else { panic!("{later:?}") };
            assert_eq!(stored.body, first.id.to_string(), "the stored answer is the first one");
            assert_eq!(balance(&store, &a).await, 100);
        })
        .await;
    }

    fn limits(overdraft_minor: Option<i64>, max_balance_minor: Option<i64>) -> banksim_core::ledger::Limits {
        banksim_core::ledger::Limits { overdraft_minor, max_balance_minor }
    }

    async fn set_limits(
        store: &Arc<dyn Store>,
        user: &User,
        limits: banksim_core::ledger::Limits,
    ) -> Result<banksim_core::ledger::Limits, StoreError> {
        let change = banksim_store::LimitsChange { user_id: user.id, currency: Currency::USD, limits };
        store.set_wallet_limits(&change, &AuditContext::default(), now()).await
    }

    #[tokio::test]
    async fn limits_open_the_wallet_and_hold_for_every_movement() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            assert_eq!(store.wallet_limits(a.id, Currency::USD).await.expect("limits"), limits(None, None));
            set_limits(&store, &a, limits(Some(5_000), None)).await.expect("set");
            set_limits(&store, &b, limits(None, Some(3_000))).await.expect("set");
            assert_eq!(store.wallet_limits(a.id, Currency::USD).await.expect("limits"), limits(Some(5_000), None));
            let wallet = store.wallets(a.id, Some(Currency::USD)).await.expect("wallets");
            assert_eq!(wallet.first().map(|w| (w.balance_minor, w.limits)), Some((0, limits(Some(5_000), None))));
            let outcomes = post(
                &store,
                vec![
                    request(Movement::Debit { user_id: a.id, amount: usd(5_001) }, None),
                    request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(3_001) }, None),
                    request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(3_000) }, None),
                    request(Movement::Debit { user_id: a.id, amount: usd(2_000) }, None),
                    request(Movement::Debit { user_id: a.id, amount: usd(1) }, None),
                    request(Movement::Credit { user_id: b.id, amount: usd(1) }, None),
                ],
            )
            .await;
            assert_eq!(outcomes[0], LedgerOutcome::Refused(LedgerError::InsufficientFunds));
            assert_eq!(outcomes[1], LedgerOutcome::Refused(LedgerError::BalanceLimitExceeded));
            assert!(matches!(outcomes[2], LedgerOutcome::Posted(_)), "{outcomes:?}");
            assert!(matches!(outcomes[3], LedgerOutcome::Posted(_)), "{outcomes:?}");
            assert_eq!(outcomes[4], LedgerOutcome::Refused(LedgerError::InsufficientFunds));
            assert_eq!(outcomes[5], LedgerOutcome::Refused(LedgerError::BalanceLimitExceeded));
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await), (-5_000, 3_000));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn limits_the_balance_already_breaks_are_refused_and_unknown_users_are_not_found() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            set_limits(&store, &a, limits(Some(1_000), None)).await.expect("set");
            post(&store, vec![request(Movement::Debit { user_id: a.id, amount: usd(600) }, None)]).await;
            let refused = set_limits(&store, &a, limits(Some(500), None)).await;
            assert!(matches!(refused, Err(StoreError::Conflict("balance_limit_exceeded"))), "{refused:?}");
            let negative = set_limits(&store, &a, limits(Some(1_000), Some(-1))).await;
            assert!(matches!(negative, Err(StoreError::Conflict("balance_limit_exceeded"))), "{negative:?}");
            assert_eq!(store.wallet_limits(a.id, Currency::USD).await.expect("limits"), limits(Some(1_000), None));
            set_limits(&store, &a, limits(Some(600), Some(0))).await.expect("the balance is within these");
            let stranger = User { id: Uuid::new_v4(), ..a.clone() };
            assert!(matches!(set_limits(&store, &stranger, limits(None, None)).await, Err(StoreError::NotFound)));
            let audit = store
                .list_audit(&banksim_store::AuditQuery {
                    action: Some("wallet.limits".to_owned()),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .expect("audit");
            assert_eq!(audit.len(), 2, "one entry per change made");
            let events = store.list_events(0, 100).await.expect("events");
            assert_eq!(events.iter().filter(|e| e.event_type == "WalletLimitsSet").count(), 2);
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn holds_sit_in_the_pending_account_until_settled_and_are_found_when_due() {
        use banksim_core::ledger::Settlement;
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            post(&store, vec![request(Movement::Credit { user_id: a.id, amount: usd(1_000) }, None)]).await;
            let soon = now() + Duration::seconds(60);
            let hold =
                |amount| Movement::Hold { from_user_id: a.id, to_user_id: b.id, amount: usd(amount), expires_at: soon };
            let outcomes =
                post(&store, vec![request(hold(300), None), request(hold(200), None), request(hold(600), None)]).await;
            let LedgerOutcome::Posted(first) = &outcomes[0] else { panic!("{outcomes:?}") };
            let LedgerOutcome::Posted(second) = &outcomes[1] else { panic!("{outcomes:?}") };
            assert_eq!(outcomes[2], LedgerOutcome::Refused(LedgerError::InsufficientFunds));
            assert_eq!(first.status, TransactionStatus::Pending);
            let wallet = store.wallets(a.id, Some(Currency::USD)).await.expect("wallets").remove(0);
            assert_eq!((wallet.balance_minor, wallet.pending_minor), (500, 500));
            assert!(store.verify_ledger().await.expect("verify").is_sound());
            assert!(store.due_holds(now(), 10).await.expect("due").is_empty());

            let settle = |hold_id, settlement| Movement::Settle {
                hold_id,
                payee_id: b.id,
                currency: Currency::USD,
                settlement,
                actor_id: a.id,
                actor_is_admin: false,
            };
            let outcomes = post(
                &store,
                vec![
                    request(settle(first.id, Settlement::Post(Some(usd(100)))), None),
                    request(settle(first.id, Settlement::Void), None),
                ],
            )
            .await;
            let LedgerOutcome::Posted(posted) = &outcomes[0] else { panic!("{outcomes:?}") };
            assert_eq!((posted.id, posted.status, posted.amount), (first.id, TransactionStatus::Success, usd(100)));
            assert_eq!(outcomes[1], LedgerOutcome::Refused(LedgerError::TransferNotPending));
            let stored = store.find_transaction(first.id).await.expect("find").expect("hold");
            assert_eq!(
                (stored.status, stored.amount, stored.expires_at),
                (TransactionStatus::Success, usd(100), Some(soon))
            );
            assert_eq!((balance(&store, &a).await, balance(&store, &b).await), (700, 100));

            let due = store.due_holds(soon, 10).await.expect("due");
            assert_eq!(
                due.iter().map(|h| (h.id, h.from_user_id, h.to_user_id)).collect::<Vec<_>>(),
                [(second.id, a.id, b.id)]
            );
            let expired = store
                .post_batch(&[request(settle(second.id, Settlement::Expire), None)], &Plain, soon)
                .await
                .expect("batch");
            assert!(matches!(&expired.outcomes[0], LedgerOutcome::Posted(t) if t.status == TransactionStatus::Expired));
            let wallet = store.wallets(a.id, Some(Currency::USD)).await.expect("wallets").remove(0);
            assert_eq!((wallet.balance_minor, wallet.pending_minor), (900, 0));
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.is_sound(), "{report:?}");
        })
        .await;
    }

    /// A small deterministic generator (xorshift), so that a failing case can be run again.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % sides
        }
    }

    #[tokio::test]
    async fn history_pages_match_an_oracle_on_random_data() {
        use banksim_core::ledger::TransactionKind;
        use banksim_store::TransactionQuery;
        each_backend(|store| async move {
            let mut users = Vec::new();
            for name in ["alice", "bob", "carol"] {
                users
                    .push(store.create_user(new_user(name, Role::User), &AuditContext::default()).await.expect("user"));
            }
            let mut dice = Dice(0x5eed_1234_abcd_0001);
            let start = now() - Duration::days(10);
            let mut posted: Vec<Uuid> = Vec::new();
            for step in 0..120_i64 {
                // Several movements share an instant now and then: the order falls back to the id.
                let at = start + Duration::minutes(step - (step % 3) * i64::from(dice.roll(2) == 0));
                let user = &users[dice.roll(3) as usize];
                let other =
                    &users[(dice.roll(2) as usize + 1 + users.iter().position(|u| u.id == user.id).unwrap_or(0)) % 3];
                let movement = match dice.roll(5) {
                    0 | 1 => Movement::Credit { user_id: user.id, amount: usd(1 + dice.roll(5_000) as i64) },
                    2 => Movement::Debit { user_id: user.id, amount: usd(1 + dice.roll(2_000) as i64) },
                    3 => Movement::Transfer {
                        from_user_id: user.id,
                        to_user_id: other.id,
                        amount: usd(1 + dice.roll(2_000) as i64),
                    },
                    _ => match posted.get(dice.roll(posted.len().max(1) as u64) as usize) {
                        Some(original) => {
                            Movement::Rollback { original_id: *original, actor_id: user.id, actor_is_admin: true }
                        }
                        None => Movement::Credit { user_id: user.id, amount: usd(7) },
                    },
                };
                let outcomes = store.post_batch(&[request(movement, None)], &Plain, at).await.expect("batch").outcomes;
                if let LedgerOutcome::Posted(record) = &outcomes[0] {
                    posted.push(record.id);
                }
            }
            let mut all = Vec::new();
            for id in &posted {
                all.push(store.find_transaction(*id).await.expect("find").expect("posted"));
            }
            for round in 0..60 {
                let user = &users[round % 3];
                let kind = [
                    None,
                    Some(TransactionKind::Credit),
                    Some(TransactionKind::Debit),
                    Some(TransactionKind::Transfer),
                ][dice.roll(4) as usize];
                let status = [None, Some(TransactionStatus::Success), Some(TransactionStatus::RolledBack)]
                    [dice.roll(3) as usize];
                let since = (dice.roll(3) == 0).then(|| start + Duration::minutes(dice.roll(120) as i64));
                let until = (dice.roll(3) == 0).then(|| start + Duration::minutes(dice.roll(120) as i64));
                let mut expected: Vec<&TransactionRecord> = all
                    .iter()
                    .filter(|t| t.from_user_id == Some(user.id) || t.to_user_id == Some(user.id))
                    .filter(|t| kind.is_none_or(|k| t.kind == k))
                    .filter(|t| status.is_none_or(|s| t.status == s))
                    .filter(|t| since.is_none_or(|s| t.created_at >= s) && until.is_none_or(|u| t.created_at <= u))
                    .collect();
                expected.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
                let limit = 1 + dice.roll(8) as u32;
                let query = TransactionQuery {
                    user_id: user.id,
                    kind,
                    status,
                    currency: None,
                    since,
                    until,
                    limit,
                    offset: dice.roll(12),
                    before: None,
                };
                let page = store.list_transactions(&query).await.expect("page");
                let want: Vec<Uuid> =
                    expected.iter().skip(query.offset as usize).take(limit as usize).map(|t| t.id).collect();
                assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), want, "offset page of {query:?}");
                // Walking every page by cursor gives the whole list, in order, once.
                let mut walked = Vec::new();
                let mut before = None;
                loop {
                    let page = store
                        .list_transactions(&TransactionQuery { offset: 0, before, ..query.clone() })
                        .await
                        .expect("page");
                    walked.extend(page.iter().map(|t| t.id));
                    match page.last() {
                        Some(last) if page.len() == limit as usize => before = Some((last.created_at, last.id)),
                        _ => break,
                    }
                }
                assert_eq!(walked, expected.iter().map(|t| t.id).collect::<Vec<_>>(), "cursor walk of {query:?}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn balance_at_reads_the_posting_at_or_before_an_instant() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t0 = now();
            store
                .post_batch(&[request(Movement::Credit { user_id: a.id, amount: usd(100) }, None)], &Plain, t0)
                .await
                .expect("batch");
            let t1 = t0 + Duration::seconds(1);
            store
                .post_batch(&[request(Movement::Debit { user_id: a.id, amount: usd(30) }, None)], &Plain, t1)
                .await
                .expect("batch");
            let at = |t| store.balance_at(a.id, Currency::USD, t);
            assert_eq!(at(t0 - Duration::microseconds(1)).await.expect("at"), 0);
            assert_eq!(at(t0).await.expect("at"), 100);
            assert_eq!(at(t1 - Duration::microseconds(1)).await.expect("at"), 100);
            assert_eq!(at(t1).await.expect("at"), 70);
        })
        .await;
    }

    /// The projections: daily statements and system totals, built from the events alone.
    mod projections {
        use banksim_core::money::Rate;
        use banksim_core::statement::DayStatement;
        use banksim_store::{EventRecord, Projection, ProjectionProgress, StatementQuery, SystemTotal};
        use chrono::NaiveDate;

        use super::*;

        fn day(d: u32) -> NaiveDate {
            NaiveDate::from_ymd_opt(2026, 3, d).expect("day")
        }

        fn at(d: u32, hour: u32) -> DateTime<Utc> {
            day(d).and_hms_opt(hour, 0, 0).expect("time").and_utc()
        }

        fn statement(d: u32, opening: i64, credits: i64, debits: i64) -> DayStatement {
            DayStatement {
                date: day(d),
                opening_minor: opening,
                credits_minor: credits,
                debits_minor: debits,
                closing_minor: opening + credits - debits,
            }
        }

        /// Alice and Bob move money over four days (the 3rd is quiet for both; the 4th rolls Bob's debit back and
        /// exchanges some of Alice's dollars); returns them.
        async fn four_days_of_movements(store: &Arc<dyn Store>) -> (User, User) {
            let a = store.create_user(new_user("alice", Role::User), &AUDIT).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AUDIT).await.expect("create");
            let debit = request(Movement::Debit { user_id: b.id, amount: usd(100) }, None);
            let debit_id = transaction_id(&debit);
            let rate = Rate::parse("0.5").expect("rate");
            let days: Vec<(DateTime<Utc>, Vec<LedgerRequest>)> = vec![
                (at(1, 9), vec![request(Movement::Credit { user_id: a.id, amount: usd(1_000) }, None)]),
                (
                    at(1, 23),
                    vec![request(Movement::Transfer { from_user_id: a.id, to_user_id: b.id, amount: usd(300) }, None)],
                ),
                (at(2, 8), vec![debit]),
                (
                    at(4, 12),
                    vec![
                        request(
                            Movement::Rollback { original_id: debit_id, actor_id: b.id, actor_is_admin: false },
                            None,
                        ),
                        request(
                            Movement::Exchange { user_id: a.id, amount: usd(101), to_currency: Currency::EUR, rate },
                            None,
                        ),
                    ],
                ),
            ];
            for (instant, requests) in days {
                let outcomes = store.post_batch(&requests, &Plain, instant).await.expect("batch").outcomes;
                assert!(outcomes.iter().all(|o| matches!(o, LedgerOutcome::Posted(_))), "{outcomes:?}");
            }
            (a, b)
        }

        async fn all_events(store: &Arc<dyn Store>) -> Vec<EventRecord> {
            store.list_events(0, 1_000).await.expect("events")
        }

        async fn apply(store: &Arc<dyn Store>, projection: Projection, events: &[EventRecord]) -> ProjectionProgress {
            store.apply_to_projection(projection, events, now()).await.expect("apply")
        }

        async fn days_of(store: &Arc<dyn Store>, user: &User, currency: Currency) -> Vec<DayStatement> {
            let query = StatementQuery { user_id: user.id, currency: Some(currency), from: day(1), to: day(31) };
            let wallets = store.statements(&query).await.expect("statements");
            wallets.into_iter().flat_map(|w| w.days).collect()
        }

        /// What every test expects once the projections have caught up with [`four_days_of_movements`].
        async fn assert_exact(store: &Arc<dyn Store>, a: &User, b: &User) {
            assert_eq!(
                days_of(store, a, Currency::USD).await,
                vec![statement(1, 0, 1_000, 300), statement(4, 700, 0, 101)],
            );
            assert_eq!(days_of(store, a, Currency::EUR).await, vec![statement(4, 0, 50, 0)]);
            assert_eq!(
                days_of(store, b, Currency::USD).await,
                vec![statement(1, 0, 300, 0), statement(2, 300, 0, 100), statement(4, 200, 100, 0)],
            );
            let totals = store.system_totals().await.expect("totals");
            let usd_total = SystemTotal {
                currency: Currency::USD,
                user_balances_minor: 599 + 300,
                fx_minor: 101,
                money_in_minor: 1_000 + 100,
                money_out_minor: 100,
                transactions: 5,
            };
            assert_eq!(totals.iter().find(|t| t.currency == Currency::USD), Some(&usd_total));
            let eur = totals.iter().find(|t| t.currency == Currency::EUR).expect("EUR totals");
            assert_eq!((eur.user_balances_minor, eur.fx_minor, eur.transactions), (50, -50, 1));
            assert!(totals.iter().all(SystemTotal::is_balanced), "{totals:?}");
            for projection in Projection::ALL {
                let status = store.projection_status(projection).await.expect("status");
                assert_eq!((status.checkpoint, status.lag_events(), status.oldest_pending_at), (status.head, 0, None));
            }
        }

        #[tokio::test]
        async fn overlapping_and_repeated_deliveries_apply_each_event_once() {
            each_backend(|store| async move {
                let (a, b) = four_days_of_movements(&store).await;
                let events = all_events(&store).await;
                assert!(events.len() > 6, "users and money events: {}", events.len());
                for projection in Projection::ALL {
                    let pending = store.projection_status(projection).await.expect("status");
                    assert_eq!((pending.checkpoint, pending.lag_events()), (0, events.last().expect("event").sequence));
                    assert_eq!(pending.oldest_pending_at, Some(events[0].created_at));
                    let third = apply(&store, projection, &events[..3]).await;
                    assert_eq!(third, ProjectionProgress::Applied { events: 3, checkpoint: events[2].sequence });
                    let overlapping = apply(&store, projection, &events[..5]).await;
                    assert_eq!(overlapping, ProjectionProgress::Applied { events: 2, checkpoint: events[4].sequence });
                    apply(&store, projection, &events[2..]).await;
                    let again = apply(&store, projection, &events).await;
                    let last = events.last().expect("event").sequence;
                    assert_eq!(again, ProjectionProgress::Applied { events: 0, checkpoint: last });
                }
                assert_exact(&store, &a, &b).await;
            })
            .await;
        }

        #[tokio::test]
        async fn a_delivery_that_skips_an_event_is_refused_and_changes_nothing() {
            each_backend(|store| async move {
                four_days_of_movements(&store).await;
                let events = all_events(&store).await;
                for projection in Projection::ALL {
                    let skipped = store.apply_to_projection(projection, &events[1..], now()).await;
                    assert!(matches!(skipped, Err(StoreError::Corrupt(_))), "{skipped:?}");
                    let mut reordered = events.clone();
                    reordered.swap(0, 1);
                    let reordered = store.apply_to_projection(projection, &reordered, now()).await;
                    assert!(matches!(reordered, Err(StoreError::Corrupt(_))), "{reordered:?}");
                    assert_eq!(store.projection_status(projection).await.expect("status").checkpoint, 0);
                }
                assert!(store.system_totals().await.expect("totals").is_empty());
            })
            .await;
        }

        #[tokio::test]
        async fn consumers_racing_over_the_same_events_apply_each_once() {
            each_backend(|store| async move {
                let (a, b) = four_days_of_movements(&store).await;
                let consumers = (0..4).map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for projection in Projection::ALL {
                            loop {
                                let status = store.projection_status(projection).await.expect("status");
                                if status.lag_events() == 0 {
                                    break;
                                }
                                // Small deliveries read before the race, so most of them overlap another's.
                                let events = store.list_events(status.checkpoint, 2).await.expect("events");
                                if apply(&store, projection, &events).await == ProjectionProgress::Busy {
                                    tokio::task::yield_now().await;
                                }
                            }
                        }
                    })
                });
                for consumer in futures::future::join_all(consumers).await {
                    consumer.expect("consumer");
                }
                assert_exact(&store, &a, &b).await;
            })
            .await;
        }

        #[tokio::test]
        async fn statements_read_the_balance_before_the_range() {
            each_backend(|store| async move {
                let (a, _) = four_days_of_movements(&store).await;
                let events = all_events(&store).await;
                apply(&store, Projection::DailyStatements, &events).await;
                let query = StatementQuery { user_id: a.id, currency: None, from: day(2), to: day(4) };
                let wallets = store.statements(&query).await.expect("statements");
                let summary: Vec<_> = wallets.iter().map(|w| (w.currency, w.balance_before, w.days.clone())).collect();
                assert_eq!(
                    summary,
                    vec![
                        (Currency::EUR, None, vec![statement(4, 0, 50, 0)]),
                        (Currency::USD, Some(700), vec![statement(4, 700, 0, 101)]),
                    ]
                );
            })
            .await;
        }
    }

    /// The outbox relay's lease and position: one holder at a time, taken over only after its lease expires, and a
    /// position that moves only forward and only for the holder.
    #[tokio::test]
    async fn a_relay_is_held_by_one_instance_at_a_time_and_its_position_only_moves_forward() {
        each_backend(|store| async move {
            let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
            let t0 = now();
            let lease = |from: DateTime<Utc>| from + Duration::seconds(10);
            let fresh = store.relay_status("nats").await.expect("status");
            assert_eq!((fresh.position, fresh.head, fresh.oldest_pending_at), (0, 0, None));

            assert_eq!(store.claim_relay("nats", a, lease(t0), t0).await.expect("claim"), Some(0));
            assert_eq!(store.claim_relay("nats", b, lease(t0), t0).await.expect("claim"), None, "a holds it");
            assert!(!store.advance_relay("nats", b, 5, t0).await.expect("advance"), "b does not hold it");
            assert!(store.advance_relay("nats", a, 5, t0).await.expect("advance"));
            assert!(store.advance_relay("nats", a, 3, t0).await.expect("advance"));
            assert_eq!(store.relay_status("nats").await.expect("status").position, 5, "never back");
            // Renewing keeps it; another relay is another row.
            let t1 = t0 + Duration::seconds(5);
            assert_eq!(store.claim_relay("nats", a, lease(t1), t1).await.expect("claim"), Some(5));
            assert_eq!(store.claim_relay("other", b, lease(t1), t1).await.expect("claim"), Some(0));
            // Once a's lease has run out, b takes over from a's position and a can no longer move it.
            let t2 = lease(t1) + Duration::microseconds(1);
            assert_eq!(store.claim_relay("nats", b, lease(t2), t2).await.expect("claim"), Some(5));
            assert!(!store.advance_relay("nats", a, 9, t2).await.expect("advance"));
            assert!(store.advance_relay("nats", b, 9, t2).await.expect("advance"));

            let user = store.create_user(new_user("relayed", Role::User), &AUDIT).await.expect("create");
            let events = store.list_events(0, 100).await.expect("events");
            let status = store.relay_status("nats").await.expect("status");
            assert_eq!(status.head, events.last().expect("an event").sequence, "{user:?}");
            assert_eq!(status.lag_events(), (status.head - 9).max(0));
        })
        .await;
    }
}

#[tokio::test]
async fn verify_names_each_kind_of_tampering() {
    let tampering = [
        (
            "UPDATE accounts SET balance_minor = balance_minor + 1 WHERE kind = 'user'",
            "differs from the sum of its postings",
        ),
        (
            "UPDATE postings SET amount_minor = amount_minor + 1 WHERE id = (SELECT min(id) FROM postings)",
            "do not sum to zero",
        ),
        ("UPDATE accounts SET version = version + 1 WHERE kind = 'world'", "posting count is wrong"),
        ("UPDATE transactions SET reversed_by = NULL WHERE reversed_by IS NOT NULL", "not linked both ways"),
        (
            "UPDATE audit_log SET outcome = 'forged' WHERE id = (SELECT max(id) FROM audit_log)",
            "was changed after it was written",
        ),
        ("DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)", "does not link to the entry before it"),
        // The trace id is covered when an entry has one, and cannot be added to an entry that had none.
        (
            "UPDATE audit_log SET trace_id = NULL WHERE id = (SELECT max(id) FROM audit_log)",
            "was changed after it was written",
        ),
        (
            "UPDATE audit_log SET trace_id = '0af7651916cd43dd8448eb211c80319c' WHERE id = (SELECT min(id) FROM audit_log)",
            "was changed after it was written",
        ),
        ("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)", "the last entries were removed"),
        // Reordering: the first two entries trade their links.
        (
            "UPDATE audit_log SET
                 prev_hash = (SELECT b.prev_hash FROM audit_log b WHERE b.id <> audit_log.id
                              AND b.id IN (SELECT id FROM audit_log ORDER BY id LIMIT 2)),
                 hash = (SELECT b.hash FROM audit_log b WHERE b.id <> audit_log.id
                         AND b.id IN (SELECT id FROM audit_log ORDER BY id LIMIT 2))
             WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT 2)",
            "does not link to the entry before it",
        ),
    ];
    for (sql, named) in tampering {
        for backend in backends() {
            let (db, store) = ledger_with_a_rollback(backend).await;
            db.execute(sql).await;
            let report = store.verify_ledger().await.expect("verify");
            assert!(report.violations.iter().any(|v| v.contains(named)), "{backend:?} {sql}: {report:?}");
            store.close().await;
            db.remove().await;
        }
    }
}

/// A posting without its transaction or account, a transaction naming a user that does not exist: PostgreSQL has no
/// trigger per row for these (the ledger's batch is the only writer), `verify` names them; SQLite's foreign keys
/// refuse them.
#[tokio::test]
async fn ledger_rows_that_point_nowhere_are_named_or_refused() {
    let dangling = [
        ("DELETE FROM transactions", "has no transaction"),
        ("DELETE FROM accounts WHERE kind = 'world'", "has no account"),
        // A UUID of the column's type on both backends that is no user's: the transaction's own.
        ("UPDATE transactions SET to_user_id = id WHERE to_user_id IS NOT NULL", "names a user that does not exist"),
    ];
    for (sql, named) in dangling {
        for backend in backends() {
            let (db, store) = ledger_with_a_rollback(backend).await;
            let written = db.try_execute(sql).await;
            if backend == banksim_store::Backend::Sqlite {
                let refusal = written.expect_err("SQLite's foreign keys refuse it").to_string();
                assert!(refusal.contains("FOREIGN KEY"), "{sql}: {refusal}");
                assert!(store.verify_ledger().await.expect("verify").is_sound(), "{sql}");
            } else {
                written.expect("PostgreSQL takes it");
                let report = store.verify_ledger().await.expect("verify");
                let named_here = |v: &String| v.starts_with("a ledger row points nowhere") && v.contains(named);
                assert!(report.violations.iter().any(named_here), "{sql}: {report:?}");
            }
            store.close().await;
            db.remove().await;
        }
    }
}

/// A fresh, sound ledger for tampering: a user, a credit of theirs and its rollback (audited with a trace id).
async fn ledger_with_a_rollback(backend: banksim_store::Backend) -> (TestDatabase, Arc<dyn Store>) {
    use banksim_core::currency::Currency;
    use banksim_core::ledger::{Command, Movement};
    use banksim_core::money::Money;
    use banksim_store::{AuditContext, LedgerRequest, ResponseRenderer};

    struct Plain;
    impl ResponseRenderer for Plain {
        fn render(&self, _: &LedgerRequest, _: &banksim_store::LedgerOutcome) -> (u16, String) {
            (201, String::new())
        }
    }
    let db = TestDatabase::create(backend).await;
    let store = banksim_store::connect(&db.url, ConnectOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
    let request = |movement| LedgerRequest {
        work: banksim_store::LedgerWork::One(Command {
            transaction_id: Uuid::now_v7(),
            movement,
            description: None,
            effective_at: None,
        }),
        idempotency: None,
        // The user's entry has no trace id (as entries written before trace ids were kept), these have one.
        audit: AuditContext { trace_id: Some(TRACE_ID.to_owned()), ..AuditContext::default() },
    };
    let original_id = Uuid::now_v7();
    let credit = LedgerRequest {
        work: banksim_store::LedgerWork::One(Command {
            transaction_id: original_id,
            movement: Movement::Credit { user_id: a.id, amount: Money::new(500, Currency::USD) },
            description: None,
            effective_at: None,
        }),
        ..request(Movement::Credit { user_id: a.id, amount: Money::new(0, Currency::USD) })
    };
    store.post_batch(&[credit], &Plain, now()).await.expect("credit");
    let rollback = request(Movement::Rollback { original_id, actor_id: a.id, actor_is_admin: true });
    store.post_batch(&[rollback], &Plain, now()).await.expect("rollback");
    assert!(store.verify_ledger().await.expect("verify").is_sound(), "sound before tampering");
    (db, store)
}

mod schedules {
    use std::collections::HashSet;
    use std::time::Duration as StdDuration;

    use banksim_core::currency::Currency;
    use banksim_core::ledger::{Command, Movement, TransactionKind};
    use banksim_core::money::Money;
    use banksim_core::schedule::{Calendar, Recurrence, ScheduleStatus};
    use banksim_store::testing::query_count;
    use banksim_store::{
        AuditContext, ExecutionRecord, ExecutionStatus, IdempotencyClaim, LedgerOutcome, LedgerRequest, NextRun,
        OccurrenceUpdate, ResponseRenderer, ScheduleClaim, ScheduleQuery, ScheduleRecord,
    };

    use super::*;

    const LEASE: StdDuration = StdDuration::from_secs(30);

    /// A one-time credit of 10.00 USD due at `at`, created at `created_at`.
    fn once(user: &User, at: DateTime<Utc>, created_at: DateTime<Utc>) -> ScheduleRecord {
        let calendar = Calendar::once(at);
        ScheduleRecord {
            id: Uuid::now_v7(),
            user_id: user.id,
            transaction_type: TransactionKind::Credit,
            amount: Money::new(1_000, Currency::USD),
            description: Some("pocket money".to_owned()),
            to_user_id: None,
            calendar,
            current_occurrence: 0,
            next_execution_at: Some(at),
            last_executed_at: None,
            status: ScheduleStatus::Active,
            attempt: 0,
            consecutive_failures: 0,
            created_at,
            updated_at: created_at,
        }
    }

    fn audit(user: &User) -> AuditContext {
        AuditContext {
            actor_id: Some(user.id),
            ip: Some("127.0.0.1".to_owned()),
            user_agent: Some("tests".to_owned()),
            request_id: Some("req-1".to_owned()),
            trace_id: Some(TRACE_ID.to_owned()),
        }
    }

    fn query(user: &User) -> ScheduleQuery {
        ScheduleQuery { user_id: user.id, status: None, is_active: None, limit: 100, offset: 0 }
    }

    async fn ids(store: &Arc<dyn Store>, query: ScheduleQuery) -> Vec<Uuid> {
        store.list_schedules(&query).await.expect("list").iter().map(|s| s.id).collect()
    }

    async fn claim(store: &Arc<dyn Store>, at: DateTime<Utc>, limit: u32) -> Vec<Uuid> {
        claims(store, at, limit).await.iter().map(|c| c.schedule.id).collect()
    }

    async fn claims(store: &Arc<dyn Store>, at: DateTime<Utc>, limit: u32) -> Vec<ScheduleClaim> {
        store.claim_due_schedules(at, LEASE, limit).await.expect("claim")
    }

    /// The claim of the one schedule due at `at`.
    async fn claim_one(store: &Arc<dyn Store>, at: DateTime<Utc>) -> ScheduleClaim {
        let mut claimed = claims(store, at, 10).await;
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        claimed.remove(0)
    }

    async fn find(store: &Arc<dyn Store>, id: Uuid) -> ScheduleRecord {
        store.find_schedule(id).await.expect("find").expect("some")
    }

    fn execution(occurrence: u32, status: ExecutionStatus, transaction_id: Option<Uuid>) -> ExecutionRecord {
        ExecutionRecord {
            occurrence,
            executed_at: now(),
            status,
            transaction_id,
            error: (status == ExecutionStatus::Failed).then(|| "insufficient_funds".to_owned()),
            attempts: if status == ExecutionStatus::Skipped { 0 } else { 1 },
        }
    }

    /// Posts a credit and returns its transaction id (executions reference real transactions).
    async fn credit(store: &Arc<dyn Store>, user: &User) -> Uuid {
        struct Plain;
        impl ResponseRenderer for Plain {
            fn render(&self, _: &LedgerRequest, _: &banksim_store::LedgerOutcome) -> (u16, String) {
                (201, String::new())
            }
        }
        let request = LedgerRequest {
            work: banksim_store::LedgerWork::One(Command {
                transaction_id: Uuid::now_v7(),
                movement: Movement::Credit { user_id: user.id, amount: Money::new(1_000, Currency::USD) },
                description: None,
                effective_at: None,
            }),
            idempotency: None,
            audit: AuditContext::default(),
        };
        match &store.post_batch(&[request], &Plain, now()).await.expect("batch").outcomes[..] {
            [LedgerOutcome::Posted(record)] => record.id,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn schedules_are_found_and_listed_newest_first_with_filters_and_paging() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            let t0 = now();
            let first = once(&a, t0 + Duration::days(1), t0);
            let start = t0 + Duration::days(2);
            let second = ScheduleRecord {
                transaction_type: TransactionKind::Transfer,
                to_user_id: Some(b.id),
                description: None,
                calendar: Calendar::recurring(start, Recurrence::Monthly, Some(start + Duration::days(400)), Some(12)),
                next_execution_at: Some(start),
                ..once(&a, start, t0 + Duration::seconds(1))
            };
            let third = once(&a, t0 + Duration::days(3), t0 + Duration::seconds(2));
            let theirs = once(&b, t0 + Duration::days(1), t0);
            for s in [&first, &second, &third, &theirs] {
                store.create_schedule(s, None, &audit(&a)).await.expect("create schedule");
            }
            assert_eq!(find(&store, second.id).await, second, "a schedule reads back as written");
            assert_eq!(find(&store, first.id).await, first);
            assert!(store.find_schedule(Uuid::new_v4()).await.expect("find").is_none());

            let paused = store
                .change_schedule_status(
                    first.id,
                    &[ScheduleStatus::Active],
                    ScheduleStatus::Paused,
                    NextRun::Keep,
                    now(),
                    &audit(&a),
                )
                .await
                .expect("pause");
            assert_eq!(paused.status, ScheduleStatus::Paused);

            assert_eq!(ids(&store, query(&a)).await, [third.id, second.id, first.id]);
            assert_eq!(ids(&store, query(&b)).await, [theirs.id]);
            let only_paused = ScheduleQuery { status: Some(ScheduleStatus::Paused), ..query(&a) };
            assert_eq!(ids(&store, only_paused).await, [first.id]);
            assert_eq!(ids(&store, ScheduleQuery { is_active: Some(true), ..query(&a) }).await, [third.id, second.id]);
            assert_eq!(ids(&store, ScheduleQuery { is_active: Some(false), ..query(&a) }).await, [first.id]);
            let contradiction =
                ScheduleQuery { status: Some(ScheduleStatus::Paused), is_active: Some(true), ..query(&a) };
            assert!(ids(&store, contradiction).await.is_empty());
            assert_eq!(ids(&store, ScheduleQuery { limit: 1, offset: 1, ..query(&a) }).await, [second.id]);
            assert!(ids(&store, ScheduleQuery { offset: 3, ..query(&a) }).await.is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn an_idempotency_key_creates_one_schedule() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let claim = IdempotencyClaim { user_id: a.id, key: "k1".to_owned(), request_hash: b"hash".to_vec() };
            let first = once(&a, now() + Duration::days(1), now());
            store.create_schedule(&first, Some((&claim, 201, "{\"id\":1}")), &audit(&a)).await.expect("create");
            let stored = store.find_idempotent(a.id, "k1").await.expect("find").expect("stored");
            assert_eq!(
                (stored.status, stored.body.as_str(), stored.request_hash),
                (201, "{\"id\":1}", b"hash".to_vec())
            );

            let second = once(&a, now() + Duration::days(1), now());
            let again = store.create_schedule(&second, Some((&claim, 201, "{\"id\":2}")), &audit(&a)).await;
            assert!(matches!(again, Err(StoreError::Conflict("idempotency_key_taken"))), "{again:?}");
            assert!(store.find_schedule(second.id).await.expect("find").is_none(), "nothing of it was written");
            assert_eq!(store.find_idempotent(a.id, "k1").await.expect("find").expect("stored").body, "{\"id\":1}");
        })
        .await;
    }

    #[tokio::test]
    async fn status_changes_follow_the_allowed_moves_with_events_and_audit() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let s = once(&a, now() + Duration::days(1), now());
            store.create_schedule(&s, None, &audit(&a)).await.expect("create");
            let change = |from: Vec<ScheduleStatus>, to, next| {
                let store = store.clone();
                let audit = audit(&a);
                async move { store.change_schedule_status(s.id, &from, to, next, now(), &audit).await }
            };
            use ScheduleStatus::{Active, Cancelled, Paused};

            let paused = change(vec![Active], Paused, NextRun::Keep).await.expect("pause");
            assert_eq!((paused.status, paused.next_execution_at), (Paused, s.next_execution_at));
            let again = change(vec![Active], Paused, NextRun::Keep).await;
            assert!(matches!(again, Err(StoreError::Conflict("schedule_state"))), "{again:?}");

            let resumed = change(vec![Paused], Active, NextRun::FromCalendar).await.expect("resume");
            assert_eq!((resumed.status, resumed.next_execution_at), (Active, s.calendar.next_after(0)));
            assert!(resumed.updated_at >= paused.updated_at);

            let cancelled = change(vec![Active, Paused], Cancelled, NextRun::Clear).await.expect("cancel");
            assert_eq!((cancelled.status, cancelled.next_execution_at), (Cancelled, None));
            assert_eq!(find(&store, s.id).await, cancelled);
            let twice = change(vec![Active, Paused], Cancelled, NextRun::Clear).await;
            assert!(matches!(twice, Err(StoreError::Conflict("schedule_state"))), "{twice:?}");

            let missing =
                store.change_schedule_status(Uuid::new_v4(), &[Active], Paused, NextRun::Keep, now(), &audit(&a)).await;
            assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

            let count = |sql: &'static str| query_count(&url, sql);
            assert_eq!(count("SELECT count(*) FROM events WHERE aggregate_type = 'schedule'").await, 4);
            assert_eq!(count("SELECT max(version) FROM events WHERE aggregate_type = 'schedule'").await, 4);
            for event in ["ScheduleCreated", "SchedulePaused", "ScheduleResumed", "ScheduleCancelled"] {
                let sql = format!("SELECT count(*) FROM events WHERE event_type = '{event}'");
                assert_eq!(query_count(&url, &sql).await, 1, "{event}");
            }
            for action in ["schedule.create", "schedule.pause", "schedule.resume", "schedule.cancel"] {
                let sql = format!(
                    "SELECT count(*) FROM audit_log WHERE action = '{action}' AND entity_type = 'schedule'
                     AND entity_id = '{}' AND outcome = 'success' AND request_id = 'req-1'
                     AND trace_id = '{TRACE_ID}'",
                    s.id
                );
                assert_eq!(query_count(&url, &sql).await, 1, "{action}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn claims_take_only_due_active_unleased_schedules_until_the_lease_expires() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let older = once(&a, t - Duration::seconds(2), t);
            let newer = once(&a, t - Duration::seconds(1), t);
            let exact = once(&a, t, t);
            let future = once(&a, t + Duration::hours(1), t);
            let paused = once(&a, t - Duration::seconds(3), t);
            let finished =
                ScheduleRecord { next_execution_at: None, status: ScheduleStatus::Completed, ..once(&a, t, t) };
            for s in [&older, &newer, &exact, &future, &paused, &finished] {
                store.create_schedule(s, None, &audit(&a)).await.expect("create");
            }
            store
                .change_schedule_status(
                    paused.id,
                    &[ScheduleStatus::Active],
                    ScheduleStatus::Paused,
                    NextRun::Keep,
                    t,
                    &audit(&a),
                )
                .await
                .expect("pause");

            assert_eq!(claim(&store, t, 1).await, [older.id], "oldest due first, at most `limit`");
            assert_eq!(claim(&store, t, 10).await, [newer.id, exact.id], "due at or before now, leased ones excluded");
            assert!(claim(&store, t, 10).await.is_empty(), "a second claim right after gets nothing");
            assert!(claim(&store, t + Duration::seconds(29), 10).await.is_empty(), "the lease holds");
            let expired = claim(&store, t + Duration::seconds(30), 10).await;
            assert_eq!(expired, [older.id, newer.id, exact.id], "an expired lease frees the schedule");
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_claims_never_return_the_same_schedule() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let mut all = HashSet::new();
            for i in 0..24 {
                let s = once(&a, t - Duration::seconds(i), t);
                store.create_schedule(&s, None, &audit(&a)).await.expect("create");
                all.insert(s.id);
            }
            let (x, y, z) = tokio::join!(claim(&store, t, 10), claim(&store, t, 10), claim(&store, t, 10));
            let mut seen = HashSet::new();
            for id in x.iter().chain(&y).chain(&z) {
                assert!(seen.insert(*id), "schedule {id} was claimed twice: {x:?} {y:?} {z:?}");
            }
            assert!(seen.len() <= 24 && seen.len() >= 10, "{}", seen.len());
            let rest = claim(&store, t, 100).await;
            assert!(rest.iter().all(|id| !seen.contains(id)));
            assert_eq!(seen.len() + rest.len(), all.len(), "every due schedule is claimed exactly once");
        })
        .await;
    }

    #[tokio::test]
    async fn occurrences_are_recorded_once_and_advance_the_schedule() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let start = t - Duration::days(1);
            let s = ScheduleRecord {
                calendar: Calendar::recurring(start, Recurrence::Daily, None, Some(2)),
                ..once(&a, start, t - Duration::days(2))
            };
            store.create_schedule(&s, None, &audit(&a)).await.expect("create");
            let held = claim_one(&store, t).await;
            assert_eq!(held.schedule.id, s.id);

            let transaction_id = credit(&store, &a).await;
            let first = OccurrenceUpdate {
                execution: execution(1, ExecutionStatus::Success, Some(transaction_id)),
                next_execution_at: Some(t - Duration::seconds(1)),
                status: ScheduleStatus::Active,
                consecutive_failures: 0,
            };
            assert!(store.record_occurrence(&held, &first, t).await.expect("record"));
            let after = find(&store, s.id).await;
            assert_eq!(after.current_occurrence, 1);
            assert_eq!(after.next_execution_at, first.next_execution_at);
            assert_eq!(after.last_executed_at, Some(first.execution.executed_at));
            assert_eq!((after.status, after.attempt, after.consecutive_failures), (ScheduleStatus::Active, 0, 0));
            assert_eq!(after.updated_at, t);

            assert!(!store.record_occurrence(&held, &first, t).await.expect("duplicate"), "a duplicate is refused");
            let held = claim_one(&store, t).await;
            assert_eq!(held.schedule.id, s.id, "recording freed the lease");
            assert!(!store.record_occurrence(&held, &first, t).await.expect("duplicate"), "so is a later duplicate");
            let skipping = OccurrenceUpdate { execution: execution(3, ExecutionStatus::Success, None), ..first.clone() };
            assert!(!store.record_occurrence(&held, &skipping, t).await.expect("skip"), "occurrences come in order");
            assert_eq!(find(&store, s.id).await.current_occurrence, 1, "refused records change nothing");

            let second = OccurrenceUpdate {
                execution: execution(2, ExecutionStatus::Failed, None),
                next_execution_at: None,
                status: ScheduleStatus::Completed,
                consecutive_failures: 1,
            };
            assert!(store.record_occurrence(&held, &second, t).await.expect("record"));
            let done = find(&store, s.id).await;
            assert_eq!((done.current_occurrence, done.next_execution_at), (2, None));
            assert_eq!((done.status, done.consecutive_failures), (ScheduleStatus::Completed, 1));
            assert!(claim(&store, t + Duration::days(1), 10).await.is_empty());

            let executions = store.list_executions(s.id).await.expect("executions");
            assert_eq!(executions, [first.execution.clone(), second.execution.clone()]);
            assert!(store.list_executions(Uuid::new_v4()).await.expect("executions").is_empty());
            let unknown = ScheduleClaim { schedule: ScheduleRecord { id: Uuid::new_v4(), ..s.clone() }, ..held.clone() };
            let missing = store.record_occurrence(&unknown, &first, t).await;
            assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

            let count = |sql: &'static str| query_count(&url, sql);
            assert_eq!(count("SELECT count(*) FROM events WHERE event_type = 'ScheduleExecuted'").await, 1);
            assert_eq!(count("SELECT count(*) FROM events WHERE event_type = 'ScheduleFailed'").await, 1);
            assert_eq!(count("SELECT max(version) FROM events WHERE aggregate_type = 'schedule'").await, 3);
            assert_eq!(
                count("SELECT count(*) FROM audit_log WHERE action = 'schedule.execute' AND outcome = 'success'").await,
                1
            );
            assert_eq!(
                count(
                    "SELECT count(*) FROM audit_log WHERE action = 'schedule.execute' AND outcome = 'insufficient_funds'"
                )
                .await,
                1
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_owners_pause_during_a_run_stands() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let start = t - Duration::seconds(1);
            let s = ScheduleRecord {
                calendar: Calendar::recurring(start, Recurrence::Weekly, None, None),
                ..once(&a, start, t - Duration::seconds(2))
            };
            store.create_schedule(&s, None, &audit(&a)).await.expect("create");
            let held = claim_one(&store, t).await;
            let (active, paused) = (ScheduleStatus::Active, ScheduleStatus::Paused);
            store.change_schedule_status(s.id, &[active], paused, NextRun::Keep, t, &audit(&a)).await.expect("pause");
            let update = OccurrenceUpdate {
                execution: execution(1, ExecutionStatus::Skipped, None),
                next_execution_at: Some(start + Duration::weeks(1)),
                status: ScheduleStatus::Active,
                consecutive_failures: 0,
            };
            assert!(store.record_occurrence(&held, &update, t).await.expect("record"));
            let after = find(&store, s.id).await;
            assert_eq!((after.status, after.current_occurrence), (ScheduleStatus::Paused, 1));
            assert_eq!(after.next_execution_at, update.next_execution_at);
        })
        .await;
    }

    #[tokio::test]
    async fn a_retry_frees_the_lease_until_its_time() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let s = once(&a, t - Duration::seconds(1), t - Duration::seconds(2));
            store.create_schedule(&s, None, &audit(&a)).await.expect("create");
            let held = claim_one(&store, t).await;

            let retry_at = t + Duration::seconds(2);
            assert!(store.retry_occurrence(&held, 1, retry_at, t).await.expect("retry"));
            assert!(!store.retry_occurrence(&held, 2, retry_at, t).await.expect("retry"), "a claim retries once");
            let waiting = find(&store, s.id).await;
            assert_eq!(
                (waiting.attempt, waiting.next_execution_at, waiting.current_occurrence),
                (1, Some(retry_at), 0)
            );
            assert!(claim(&store, t + Duration::seconds(1), 10).await.is_empty(), "not due before retry_at");
            let held = claim_one(&store, retry_at).await;
            assert_eq!((held.schedule.id, held.schedule.attempt), (s.id, 1), "due again, lease freed");

            let update = OccurrenceUpdate {
                execution: ExecutionRecord { attempts: 2, ..execution(1, ExecutionStatus::Failed, None) },
                next_execution_at: None,
                status: ScheduleStatus::Failed,
                consecutive_failures: 1,
            };
            assert!(store.record_occurrence(&held, &update, retry_at).await.expect("record"));
            let failed = find(&store, s.id).await;
            assert_eq!((failed.status, failed.attempt, failed.next_execution_at), (ScheduleStatus::Failed, 0, None));

            let unknown =
                ScheduleClaim { schedule: ScheduleRecord { id: Uuid::new_v4(), ..s.clone() }, ..held.clone() };
            let missing = store.retry_occurrence(&unknown, 1, retry_at, t).await;
            assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_claim_that_lost_its_lease_cannot_move_the_schedule() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let start = t - Duration::seconds(1);
            let monthly = ScheduleRecord {
                calendar: Calendar::recurring(start, Recurrence::Monthly, None, None),
                next_execution_at: Some(start),
                ..once(&a, start, t)
            };
            store.create_schedule(&monthly, None, &audit(&a)).await.expect("create");
            // Instance A claims occurrence 1 and is slow; its lease expires and instance B claims it too.
            let claimed_by_a = claim_one(&store, t).await;
            let later = t + Duration::seconds(31);
            let claimed_by_b = claim_one(&store, later).await;
            assert_ne!(claimed_by_a.lease_token, claimed_by_b.lease_token);
            // A tries to record occurrence 1 (the money moved under its key, which B's attempt will replay)...
            let transaction_id = credit(&store, &a).await;
            let update = OccurrenceUpdate {
                execution: execution(1, ExecutionStatus::Success, Some(transaction_id)),
                next_execution_at: monthly.calendar.next_after(1),
                status: ScheduleStatus::Active,
                consecutive_failures: 0,
            };
            assert!(!store.record_occurrence(&claimed_by_a, &update, later).await.expect("record"), "A lost its claim");
            assert!(
                !store.retry_occurrence(&claimed_by_a, 1, later, later).await.expect("retry"),
                "so it cannot retry"
            );
            // ...B, whose attempt met a writer error, asks for the same attempt again in a second.
            let retry_at = later + Duration::seconds(1);
            assert!(store.retry_occurrence(&claimed_by_b, 0, retry_at, later).await.expect("retry"));
            let after = find(&store, monthly.id).await;
            assert_eq!((after.current_occurrence, after.attempt, after.next_execution_at), (0, 0, Some(retry_at)));

            // The next claim records occurrence 1; a late retry of B's old claim cannot bring occurrence 2 forward.
            let claimed_again = claim_one(&store, retry_at).await;
            assert!(store.record_occurrence(&claimed_again, &update, retry_at).await.expect("record"));
            assert!(!store.retry_occurrence(&claimed_by_b, 1, retry_at, retry_at).await.expect("retry"));
            assert!(!store.retry_occurrence(&claimed_again, 1, retry_at, retry_at).await.expect("retry"));
            let after = find(&store, monthly.id).await;
            assert_eq!(after.current_occurrence, 1);
            assert_eq!(after.next_execution_at, monthly.calendar.next_after(1), "occurrence 2 runs a month later");
        })
        .await;
    }

    #[tokio::test]
    async fn deactivating_a_user_pauses_their_active_schedules() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            let t = now();
            let mine = [once(&a, t - Duration::seconds(1), t), once(&a, t + Duration::days(1), t)];
            let cancelled = once(&a, t + Duration::days(1), t);
            let theirs = once(&b, t - Duration::seconds(1), t);
            for s in mine.iter().chain([&cancelled, &theirs]) {
                store.create_schedule(s, None, &audit(&a)).await.expect("create");
            }
            store
                .change_schedule_status(
                    cancelled.id,
                    &[ScheduleStatus::Active],
                    ScheduleStatus::Cancelled,
                    NextRun::Clear,
                    t,
                    &audit(&a),
                )
                .await
                .expect("cancel");

            let deactivate = UserChanges { is_active: Some(false), ..Default::default() };
            store.update_user(a.id, deactivate, t, &AuditContext::default()).await.expect("deactivate");
            for s in &mine {
                assert_eq!(find(&store, s.id).await.status, ScheduleStatus::Paused);
            }
            assert_eq!(find(&store, cancelled.id).await.status, ScheduleStatus::Cancelled);
            assert_eq!(find(&store, theirs.id).await.status, ScheduleStatus::Active);
            assert_eq!(claim(&store, t, 10).await, [theirs.id]);
            let paused_events = "SELECT count(*) FROM events WHERE event_type = 'SchedulePaused'";
            assert_eq!(query_count(&url, paused_events).await, 2);
            let audits = "SELECT count(*) FROM audit_log WHERE action = 'schedule.pause'";
            assert_eq!(query_count(&url, audits).await, 2);
            let versions = "SELECT count(*) FROM events WHERE aggregate_type = 'schedule' AND version = 2";
            assert_eq!(query_count(&url, versions).await, 3, "each event follows its schedule's creation");

            let reactivate = UserChanges { is_active: Some(true), ..Default::default() };
            store.update_user(a.id, reactivate, t, &AuditContext::default()).await.expect("reactivate");
            assert_eq!(find(&store, mine[0].id).await.status, ScheduleStatus::Paused, "resuming is the owner's call");
        })
        .await;
    }
}

#[tokio::test]
async fn logout_racing_a_refresh_never_leaves_a_live_token() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
        for round in 0..150_u32 {
            let first = format!("first-{round}").into_bytes();
            let second = format!("second-{round}").into_bytes();
            store.insert_refresh_token(token(&user, &first, Duration::days(1))).await.expect("insert");
            let (rotated, revoked) =
                tokio::join!(rotate(&store, &first, &second), store.revoke_refresh_family(&first, user.id, now()));
            assert!(revoked.expect("revoke"), "the family exists");
            if let RefreshOutcome::Rotated { .. } = rotated.expect("rotate") {
                let third = format!("third-{round}").into_bytes();
                let after = rotate(&store, &second, &third).await.expect("rotate");
                assert_eq!(after, RefreshOutcome::Invalid, "round {round}: the successor survived the logout");
            }
        }
    })
    .await;
}

mod clamp {
    use banksim_core::currency::Currency;
    use banksim_core::ledger::{AccountKey, Command, Movement};
    use banksim_core::money::Money;
    use banksim_store::{LedgerOutcome, LedgerRequest, ResponseRenderer};
    use sqlx::Connection;

    use super::*;

    struct Plain;
    impl ResponseRenderer for Plain {
        fn render(&self, _: &LedgerRequest, _: &banksim_store::LedgerOutcome) -> (u16, String) {
            (201, String::new())
        }
    }

    #[tokio::test]
    async fn a_wallet_opened_by_a_concurrent_batch_keeps_its_postings_in_time_order() {
        if !backends().contains(&banksim_store::Backend::Postgres) {
            return;
        }
        let db = TestDatabase::create(banksim_store::Backend::Postgres).await;
        let store = banksim_store::connect(&db.url, ConnectOptions::default()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let bob = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
        let wallet = AccountKey::User { user_id: bob.id, currency: Currency::USD };
        let (t1, t2) = (now(), now() + Duration::hours(1));
        // Another batch (of another instance) opens bob's wallet and posts to it at t2, and has not committed yet.
        let mut other = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("BEGIN").execute(&mut other).await.expect("begin");
        sqlx::query(
            "INSERT INTO accounts (id, kind, user_id, currency, created_at, updated_at) VALUES ($1, 'user', $2, 'USD', $3, $3)",
        )
        .bind(wallet.id())
        .bind(bob.id)
        .bind(t2)
        .execute(&mut other)
        .await
        .expect("open the wallet");
        // This batch, whose clock read t1, finds no wallet, opens it, and waits for the other batch.
        let request = LedgerRequest {
            work: banksim_store::LedgerWork::One(Command {
                transaction_id: Uuid::now_v7(),
                movement: Movement::Credit { user_id: bob.id, amount: Money::new(100, Currency::USD) },
                description: None,
                effective_at: None,
            }),
            idempotency: None,
            audit: AuditContext::default(),
        };
        let posting = {
            let store = store.clone();
            tokio::spawn(async move { store.post_batch(&[request], &Plain, t1).await })
        };
        let mut watcher = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        for _ in 0..500 {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted")
                .fetch_one(&mut watcher)
                .await
                .expect("locks");
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        sqlx::query("COMMIT").execute(&mut other).await.expect("commit");
        let outcomes = posting.await.expect("task").expect("batch").outcomes;
        assert!(matches!(outcomes[..], [LedgerOutcome::Posted(_)]), "{outcomes:?}");
        let posted_at: DateTime<Utc> = sqlx::query_scalar("SELECT max(created_at) FROM postings WHERE account_id = $1")
            .bind(wallet.id())
            .fetch_one(&mut watcher)
            .await
            .expect("posting");
        assert!(posted_at >= t2, "a posting at {posted_at} went back before the wallet's last movement at {t2}");
        store.close().await;
        db.remove().await;
    }
}

/// The balance read lease's trigger on `accounts` finds its table from a session whose `search_path` leads
/// elsewhere (an administrator's psql naming the schema): without its own `search_path` the update failed.
#[tokio::test]
async fn a_wallet_updated_from_another_search_path_passes_the_lease_trigger() {
    use sqlx::Connection;
    each_backend_with_url(|store, url| async move {
        if store.backend() != banksim_store::Backend::Postgres {
            return;
        }
        let alice = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
        let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
        let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut admin).await.expect("schema");
        sqlx::query(&format!(
            "INSERT INTO {schema}.accounts (id, kind, user_id, currency, created_at, updated_at)
             VALUES (gen_random_uuid(), 'user', $1, 'USD', now(), now())"
        ))
        .bind(alice.id)
        .execute(&mut admin)
        .await
        .expect("open a wallet");
        sqlx::query("SET search_path = pg_catalog").execute(&mut admin).await.expect("leave the schema");
        let updated = sqlx::query(&format!("UPDATE {schema}.accounts SET updated_at = now() WHERE user_id = $1"))
            .bind(alice.id)
            .execute(&mut admin)
            .await
            .expect("the trigger finds the lease from any search_path");
        assert_eq!(updated.rows_affected(), 1);
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_file_and_its_folder_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("temporary folder");
    let folder = root.path().join("data");
    let url = format!("sqlite:{}", folder.join("banksim.db").display());
    let store = banksim_store::connect(&url, ConnectOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
    let mode = |path: std::path::PathBuf| std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(folder.clone()), 0o700, "the data folder");
    for name in ["banksim.db", "banksim.db-wal", "banksim.db-shm"] {
        let path = folder.join(name);
        if path.exists() {
            assert_eq!(mode(path), 0o600, "{name} holds password hashes");
        }
    }
    store.close().await;
}

/// The writer only appends to SQLite's write-ahead log (it checkpoints itself past 256 MB): a connection of the
/// store's own copies the log into the database file soon after each commit.
#[tokio::test]
async fn the_sqlite_log_reaches_the_database_file_without_the_writer_checkpointing() {
    use sqlx::ConnectOptions as _;
    let root = tempfile::tempdir().expect("temporary folder");
    let file = root.path().join("banksim.db");
    let store = banksim_store::connect(&format!("sqlite:{}", file.display()), ConnectOptions::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let users: Vec<_> = (0..200).map(|i| new_user(&format!("user{i}"), Role::User)).collect();
    store.create_users(&users, &AuditContext::default()).await.expect("create users");
    let mut reader =
        sqlx::sqlite::SqliteConnectOptions::new().filename(&file).read_only(true).connect().await.expect("reader");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut reader).await.expect("page count");
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut reader).await.expect("page size");
    let expected = u64::try_from(pages * page_size).expect("size");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut on_disk = 0;
    while std::time::Instant::now() < deadline {
        on_disk = std::fs::metadata(&file).expect("database file").len();
        if on_disk == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(on_disk, expected, "every page of the database ({pages}) copied from the log into the file");
    drop(reader);
    store.close().await;
}

#[tokio::test]
async fn a_primary_reports_its_wal_position_past_every_commit_and_sqlite_none() {
    each_backend(|store| async move {
        let Some(before) = store.wal_position().await.expect("position") else {
            assert_eq!(store.backend(), banksim_store::Backend::Sqlite, "only SQLite has no write-ahead log to report");
            return;
        };
        assert!(!before.in_recovery, "{before:?}");
        assert!(before.durable_commits, "synchronous_commit is on: {before:?}");
        assert_eq!((before.received, before.replayed), (None, None), "a primary replays nothing: {before:?}");
        let (inserted, flushed) = (before.inserted.expect("insert position"), before.flushed.expect("flush position"));
        assert!(flushed <= inserted, "{before:?}");
        store.create_user(new_user("Walter", Role::User), &AUDIT).await.expect("create");
        let after = store.wal_position().await.expect("position").expect("a primary's position");
        assert!(after.flushed.expect("flush position") > flushed, "the commit moved the flushed position: {after:?}");
    })
    .await;
}

mod wallet_bus {
    use banksim_core::currency::Currency;
    use banksim_core::ledger::{Command, Movement};
    use banksim_core::money::Money;
    use banksim_store::{LeaseRenewal, LedgerRequest, ResponseRenderer, WalletChange};

    use super::*;

    struct Plain;
    impl ResponseRenderer for Plain {
        fn render(&self, _: &LedgerRequest, _: &banksim_store::LedgerOutcome) -> (u16, String) {
            (201, String::new())
        }
    }

    fn credit(user: &User, minor: i64) -> LedgerRequest {
        LedgerRequest {
            work: banksim_store::LedgerWork::One(Command {
                transaction_id: Uuid::now_v7(),
                movement: Movement::Credit { user_id: user.id, amount: Money::new(minor, Currency::USD) },
                description: None,
                effective_at: None,
            }),
            idempotency: None,
            audit: AuditContext::default(),
        }
    }

    /// Announces a marker, then reads `feed` until it comes back: the (user, version) of every change announced
    /// before it, in order, for `users` only (other tests share the channel).
    async fn changes_before_a_marker(
        store: &Arc<dyn Store>,
        feed: &mut dyn banksim_store::WalletChangeFeed,
        users: &[Uuid],
    ) -> Vec<(Uuid, i64)> {
        let marker = format!("test-{}", Uuid::new_v4());
        store.announce_wallet_marker(&marker).await.expect("announce");
        let mut announced = Vec::new();
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), feed.next())
                .await
                .expect("a delivery in time")
                .expect("delivery");
            match next {
                WalletChange::Changed(changes) => announced.extend(
                    changes.into_iter().filter(|(user, _, _)| users.contains(user)).map(|(user, _, v)| (user, v)),
                ),
                WalletChange::Marker(m) if m == marker => return announced,
                WalletChange::Marker(_) => {}
                WalletChange::Lost => panic!("the connection was lost"),
            }
        }
    }

    #[tokio::test]
    async fn a_batch_reports_the_wallets_it_changed_with_their_versions() {
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let posted = store.post_batch(&[credit(&a, 100), credit(&a, 50)], &Plain, now()).await.expect("batch");
            assert_eq!(posted.wallets.len(), 1, "{posted:?}");
            let state = &posted.wallets[0];
            assert_eq!((state.user_id, state.wallet.balance_minor, state.wallet.version), (a.id, 150, 2));
            let read = store.wallets(a.id, Some(Currency::USD)).await.expect("wallets");
            assert_eq!(read, std::slice::from_ref(&state.wallet), "what the batch reports is what a read gives");
        })
        .await;
    }

    #[tokio::test]
    async fn the_change_bus_delivers_every_commit_before_a_later_marker() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let Some(mut feed) = store.wallet_changes().await.expect("subscribe") else {
                // SQLite has no bus. Alone on its file, nothing but itself can change it: the marker stands still.
                let alone = store.foreign_change_marker().await.expect("marker");
                store.post_batch(&[credit(&a, 100)], &Plain, now()).await.expect("batch");
                assert_eq!(store.foreign_change_marker().await.expect("marker"), alone);
                // With another store open on the same file, every commit moves it.
                let other = banksim_store::connect(&url, ConnectOptions::default()).await.expect("connect");
                let before = store.foreign_change_marker().await.expect("marker");
                assert_ne!(before, alone, "no longer alone");
                // Asking must not cost the asker its own presence: the other store is not alone either.
                assert_ne!(other.foreign_change_marker().await.expect("marker"), alone, "the other is not alone");
                other.post_batch(&[credit(&a, 5)], &Plain, now()).await.expect("batch");
                let after = store.foreign_change_marker().await.expect("marker");
                assert_ne!(before, after, "another store's commit moves the data version");
                other.close().await;
                return;
            };
            assert_eq!(store.foreign_change_marker().await.expect("marker"), None);
            store.post_batch(&[credit(&a, 100)], &Plain, now()).await.expect("batch");
            store.post_batch(&[credit(&a, 5)], &Plain, now()).await.expect("batch");
            let versions: Vec<i64> =
                changes_before_a_marker(&store, feed.as_mut(), &[a.id]).await.into_iter().map(|(_, v)| v).collect();
            assert_eq!(versions, [1, 2], "both commits, in order, before the marker");
        })
        .await;
    }

    #[tokio::test]
    async fn a_bulk_posting_announces_every_wallet_it_changed_before_a_later_marker() {
        use banksim_store::BulkBatch;
        each_backend(|store| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let b = store.create_user(new_user("bob", Role::User), &AuditContext::default()).await.expect("create");
            // SQLite has no bus: another process's commit moves its data version instead (tested above).
            let Some(mut feed) = store.wallet_changes().await.expect("subscribe") else { return };
            let mut batches = vec![
                BulkBatch { requests: vec![credit(&a, 100), credit(&b, 7)], now: now() },
                BulkBatch { requests: vec![credit(&a, 5)], now: now() },
            ]
            .into_iter();
            store.bulk_post(&mut batches).await.expect("bulk");
            let mut announced = changes_before_a_marker(&store, feed.as_mut(), &[a.id, b.id]).await;
            announced.sort();
            let mut expected = vec![(a.id, 2), (b.id, 1)];
            expected.sort();
            assert_eq!(announced, expected, "each wallet once, at its version after the posting");
        })
        .await;
    }

    #[tokio::test]
    async fn while_one_store_holds_the_balance_read_lease_another_stores_write_waits_for_it_to_run_out() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            // Long enough for a batch between two renewals on a busy machine.
            let period = std::time::Duration::from_secs(3);
            let asked = std::time::Instant::now();
            let Some(taken) = store.renew_balance_lease(period).await.expect("take") else {
                assert_eq!(store.backend(), banksim_store::Backend::Sqlite, "only SQLite has no lease");
                return;
            };
            assert_eq!(taken, LeaseRenewal { continuous: false }, "taken anew");
            // The holder's own writes go through, and its renewals carry the lease on without a break.
            store.post_batch(&[credit(&a, 100)], &Plain, now()).await.expect("batch");
            let renewed_at = std::time::Instant::now();
            let renewed = store.renew_balance_lease(period).await.expect("renew");
            assert_eq!(renewed, Some(LeaseRenewal { continuous: true }));
            // Another store's change to a wallet commits only once the lease has run out (the database's end of it
            // is at least `period` after the renewal was asked for)...
            let other = banksim_store::connect(&url, ConnectOptions::default()).await.expect("connect");
            other.post_batch(&[credit(&a, 5)], &Plain, now()).await.expect("batch");
            assert!(renewed_at.elapsed() >= period, "committed {:?} after the renewal", renewed_at.elapsed());
            assert!(asked.elapsed() >= period);
            // ...and closes it: while others write, nobody takes it.
            assert_eq!(store.renew_balance_lease(period).await.expect("renew"), None, "the holder's is broken");
            assert_eq!(other.renew_balance_lease(period).await.expect("renew"), None, "closed to the writer too");
            let wallets = store.wallets(a.id, Some(Currency::USD)).await.expect("wallets");
            assert_eq!(wallets[0].balance_minor, 105, "both writes");
            other.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn writes_made_while_no_lease_holds_keep_nobody_from_taking_it() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            let other = banksim_store::connect(&url, ConnectOptions::default()).await.expect("connect");
            other.post_batch(&[credit(&a, 5)], &Plain, now()).await.expect("batch");
            store.post_batch(&[credit(&a, 5)], &Plain, now()).await.expect("batch");
            let taken = store.renew_balance_lease(std::time::Duration::from_secs(3)).await.expect("take");
            if store.backend() == banksim_store::Backend::Postgres {
                assert_eq!(taken, Some(LeaseRenewal { continuous: false }), "nothing closed it");
            } else {
                assert_eq!(taken, None, "SQLite has no lease");
            }
            other.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_balance_read_lease_given_back_holds_no_writer_back() {
        each_backend_with_url(|store, url| async move {
            let a = store.create_user(new_user("alice", Role::User), &AuditContext::default()).await.expect("create");
            // Long enough that a write waiting for it could not go unnoticed.
            let period = std::time::Duration::from_secs(30);
            if store.renew_balance_lease(period).await.expect("take").is_none() {
                return;
            }
            store.release_balance_lease().await.expect("release");
            let other = banksim_store::connect(&url, ConnectOptions::default()).await.expect("connect");
            let started = std::time::Instant::now();
            other.post_batch(&[credit(&a, 5)], &Plain, now()).await.expect("batch");
            assert!(started.elapsed() < period / 2, "the write waited {:?}", started.elapsed());
            other.close().await;
        })
        .await;
    }
}

mod simulation {
    use super::*;

    /// The shared virtual clock: "system" until first moved, then only forward, and only by the holder of its
    /// lease; another holder takes the lease over only once it has run out.
    #[tokio::test]
    async fn the_virtual_clock_moves_only_forward_and_only_for_its_lease_holder() {
        each_backend(|store| async move {
            let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
            let wall = now();
            let lease = |from: DateTime<Utc>| from + Duration::seconds(30);
            let t = |days: i64| DateTime::from_timestamp(1_900_000_000, 0).expect("instant") + Duration::days(days);
            assert_eq!(store.virtual_now().await.expect("read"), None, "a fresh database runs on the wall clock");
            assert!(!store.move_clock(a, t(0), wall).await.expect("move"), "no lease, no move");

            assert!(store.claim_clock(a, wall, lease(wall)).await.expect("claim"));
            assert!(!store.claim_clock(b, wall, lease(wall)).await.expect("claim"), "a holds it");
            assert!(store.claim_clock(a, wall, lease(wall)).await.expect("renew"), "its holder renews it");
            assert!(store.move_clock(a, t(0), wall).await.expect("move"));
            assert!(store.move_clock(a, t(0), wall).await.expect("move"), "to where it stands");
            assert!(store.move_clock(a, t(30), wall).await.expect("move"));
            assert!(!store.move_clock(a, t(29), wall).await.expect("move"), "never back");
            assert!(!store.move_clock(b, t(31), wall).await.expect("move"), "only the holder moves it");
            assert_eq!(store.virtual_now().await.expect("read"), Some(t(30)));

            // a's lease runs out: b takes over, and a can no longer move the clock.
            let later = lease(wall) + Duration::microseconds(1);
            assert!(store.claim_clock(b, later, lease(later)).await.expect("take over"));
            assert!(!store.move_clock(a, t(40), later).await.expect("move"));
            assert!(store.move_clock(b, t(40), later).await.expect("move"));
            store.release_clock(a).await.expect("a no-op for a non-holder");
            assert!(!store.claim_clock(a, later, lease(later)).await.expect("claim"), "b still holds it");
            store.release_clock(b).await.expect("release");
            assert!(store.claim_clock(a, later, lease(later)).await.expect("claim"), "free again");
            assert_eq!(store.virtual_now().await.expect("read"), Some(t(40)));
        })
        .await;
    }

    /// What an advance walks by: the earliest due schedule or pending hold, none on an empty database.
    #[tokio::test]
    async fn the_next_due_instant_is_none_without_schedules_or_holds() {
        each_backend(|store| async move {
            assert_eq!(store.next_due_instant().await.expect("due"), None);
            let dump = store.dump_users(None, 10).await.expect("users");
            assert!(dump.is_empty());
            let hashed = banksim_store::state_hash(store.as_ref()).await.expect("hash");
            // The hash of an empty bank is the SHA-256 of the header line alone (`printf 'banksim-state v1\n' | sha256sum`).
            assert_eq!(hashed.hash, "c72661181a0a8115c27b5597ab815716db471c6779dc3c5bc584d7c8294271e3");
            assert_eq!((hashed.users, hashed.wallets, hashed.transactions), (0, 0, 0));
        })
        .await;
    }
}
