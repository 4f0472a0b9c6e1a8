//! The conformance suite: every backend keeps every contract of the `Store` trait.

use std::future::Future;
use std::sync::Arc;

use banksim_core::user::{Role, User};
use banksim_store::testing::{TestDatabase, backends};
use banksim_store::{
    ConnectOptions, NewRefreshToken, NewUser, RefreshOutcome, Store, StoreError, UserChanges, UserListQuery,
};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

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
        let created = store.create_user(new.clone()).await.expect("create");
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
async fn emails_and_usernames_are_unique_case_insensitively() {
    each_backend(|store| async move {
        store.create_user(new_user("sefa", Role::User)).await.expect("create");
        let same_email = NewUser { username: "other".into(), ..new_user("sefa", Role::User) };
        assert!(matches!(store.create_user(same_email).await, Err(StoreError::Conflict("email_taken"))));
        let same_name = NewUser { email: "other@example.com".into(), ..new_user("SEFA", Role::User) };
        assert!(matches!(store.create_user(same_name).await, Err(StoreError::Conflict("username_taken"))));
    })
    .await;
}

#[tokio::test]
async fn users_are_listed_in_pages_with_a_total() {
    each_backend(|store| async move {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(store.create_user(new_user(&format!("user{i}"), Role::User)).await.expect("create").id);
        }
        let inactive = store
            .update_user(ids[4], UserChanges { is_active: Some(false), ..Default::default() }, now())
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
        let user = store.create_user(new_user("kerem", Role::User)).await.expect("create");
        let later = now() + Duration::seconds(1);
        let changes = UserChanges { email: Some("k@example.com".into()), ..Default::default() };
        let updated = store.update_user(user.id, changes, later).await.expect("update");
        assert_eq!(updated.email, "k@example.com");
        assert_eq!(updated.username, "kerem");
        assert_eq!(updated.role, Role::User);
        assert_eq!(updated.updated_at, later);
        assert_eq!(updated.created_at, user.created_at);
        let missing = store.update_user(Uuid::new_v4(), UserChanges::default(), later).await;
        assert!(matches!(missing, Err(StoreError::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_or_deactivated() {
    each_backend(|store| async move {
        let admin = store.create_user(new_user("root", Role::Admin)).await.expect("create");
        let demote = UserChanges { role: Some(Role::User), ..Default::default() };
        let deactivate = UserChanges { is_active: Some(false), ..Default::default() };
        for changes in [demote.clone(), deactivate.clone()] {
            let refused = store.update_user(admin.id, changes, now()).await;
            assert!(matches!(refused, Err(StoreError::Conflict("last_admin"))), "{refused:?}");
        }
        assert_eq!(store.count_active_admins().await.expect("count"), 1);

        let second = store.create_user(new_user("root2", Role::Admin)).await.expect("create");
        store.update_user(admin.id, demote, now()).await.expect("demote with another admin");
        let refused = store.update_user(second.id, deactivate, now()).await;
        assert!(matches!(refused, Err(StoreError::Conflict("last_admin"))));
    })
    .await;
}

#[tokio::test]
async fn admins_demoting_each_other_at_once_leave_one_admin() {
    each_backend(|store| async move {
        let a = store.create_user(new_user("admin_a", Role::Admin)).await.expect("create");
        let b = store.create_user(new_user("admin_b", Role::Admin)).await.expect("create");
        let demote = || UserChanges { role: Some(Role::User), ..Default::default() };
        let (ra, rb) = tokio::join!(store.update_user(a.id, demote(), now()), store.update_user(b.id, demote(), now()));
        assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "exactly one demotion succeeds: {ra:?} {rb:?}");
        assert_eq!(store.count_active_admins().await.expect("count"), 1);
    })
    .await;
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User)).await.expect("create");
        let first = token(&user, b"first", Duration::days(1));
        store.insert_refresh_token(first.clone()).await.expect("insert");

        let outcome = rotate(&store, b"first", b"second").await;
        assert_eq!(outcome.expect("rotate"), RefreshOutcome::Rotated { user_id: user.id });

        let reused = rotate(&store, b"first", b"third").await;
        assert_eq!(reused.expect("rotate"), RefreshOutcome::Reused);

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
        let user = store.create_user(new_user("sefa", Role::User)).await.expect("create");
        store.insert_refresh_token(token(&user, b"old", Duration::seconds(-1))).await.expect("insert");
        let expired = rotate(&store, b"old", b"x").await;
        assert_eq!(expired.expect("rotate"), RefreshOutcome::Invalid);

        store.insert_refresh_token(token(&user, b"live", Duration::days(1))).await.expect("insert");
        let deactivate = UserChanges { is_active: Some(false), ..Default::default() };
        store.update_user(user.id, deactivate, now()).await.expect("deactivate");
        let inactive = rotate(&store, b"live", b"y").await;
        assert_eq!(inactive.expect("rotate"), RefreshOutcome::Invalid);

        let reactivate = UserChanges { is_active: Some(true), ..Default::default() };
        store.update_user(user.id, reactivate, now()).await.expect("reactivate");
        let still = rotate(&store, b"live", b"z").await;
        assert_eq!(still.expect("rotate"), RefreshOutcome::Invalid, "deactivation revoked the token for good");
    })
    .await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_rotate_it_at_most_once() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User)).await.expect("create");
        store.insert_refresh_token(token(&user, b"t", Duration::days(1))).await.expect("insert");
        let (a, b) = tokio::join!(rotate(&store, b"t", b"a"), rotate(&store, b"t", b"b"),);
        let outcomes = [a.expect("rotate"), b.expect("rotate")];
        let rotated = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Rotated { .. })).count();
        assert_eq!(rotated, 1, "{outcomes:?}");
        assert!(outcomes.contains(&RefreshOutcome::Reused), "{outcomes:?}");
    })
    .await;
}

#[tokio::test]
async fn logout_revokes_only_the_owners_family() {
    each_backend(|store| async move {
        let user = store.create_user(new_user("sefa", Role::User)).await.expect("create");
        let other = store.create_user(new_user("kerem", Role::User)).await.expect("create");
        store.insert_refresh_token(token(&user, b"mine", Duration::days(1))).await.expect("insert");
        assert!(!store.revoke_refresh_family(b"mine", other.id, now()).await.expect("revoke"));
        assert!(store.revoke_refresh_family(b"mine", user.id, now()).await.expect("revoke"));
        let after = rotate(&store, b"mine", b"n").await;
        assert_eq!(after.expect("rotate"), RefreshOutcome::Invalid);
    })
    .await;
}
