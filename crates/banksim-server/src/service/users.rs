//! User administration: listing, updating and deactivating users, the first admin, and the demo users.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use banksim_core::user::{self, Role, User};
use banksim_core::{CoreError, Validation};
use banksim_store::{AuditContext, NewUser, Store, StoreError, UserChanges, UserListQuery, UserPage};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::Environment;
use crate::coordination::UserChangePublisher;
use crate::error::{ApiError, ErrorCode};

/// Users by id with a short-lived cache, for the check every authenticated request makes.
///
/// Entries are versioned: each remembers the generation at which its read began, and each `forget` starts a new
/// generation for its user. A fill that read the user before a change is therefore never served after the
/// change's `forget`, even when it lands in the cache after it.
///
/// With Redis, each change is also published to the other instances, which forget the user at once
/// ([`crate::coordination::user_changes`]); without it, they see it within the cache's lifetime.
#[derive(Clone)]
pub struct UserDirectory {
    store: Arc<dyn Store>,
    cache: moka::sync::Cache<Uuid, (u64, Option<User>)>,
    /// The generation of each user's last `forget`, kept longer than any entry it may have to outrank.
    forgotten: moka::sync::Cache<Uuid, u64>,
    /// The generation of the last time every user was forgotten at once.
    all_forgotten: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    publisher: Option<UserChangePublisher>,
}

/// Most users kept in the cache.
const USER_CACHE_CAPACITY: u64 = 100_000;

/// How much longer a `forget` is remembered than an entry lives: longer than any read of a user can take (the
/// request timeout bounds it).
const FORGET_MARGIN: Duration = Duration::from_secs(120);

impl UserDirectory {
    /// A directory over `store`, remembering each answer for `ttl`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder().max_capacity(USER_CACHE_CAPACITY).time_to_live(ttl).build();
        let forgotten =
            moka::sync::Cache::builder().max_capacity(USER_CACHE_CAPACITY).time_to_live(ttl + FORGET_MARGIN).build();
        Self {
            store,
            cache,
            forgotten,
            all_forgotten: Arc::new(AtomicU64::new(0)),
            generation: Arc::new(AtomicU64::new(0)),
            publisher: None,
        }
    }

    /// The same directory, telling the other instances of each change through `publisher`.
    pub fn with_publisher(mut self, publisher: UserChangePublisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// The user with this id, at most the cache's lifetime old, and never older than this instance's last change
    /// to them.
    pub async fn find_cached(&self, id: Uuid) -> Result<Option<User>, ApiError> {
        if let Some((read_at, user)) = self.cache.get(&id)
            && !self.changed_since(id, read_at)
        {
            return Ok(user);
        }
        let read_at = self.generation.load(Ordering::SeqCst);
        let user = self.store.find_user(id).await?;
        if !self.changed_since(id, read_at) {
            self.cache.insert(id, (read_at, user.clone()));
        }
        Ok(user)
    }

    /// Forgets a user after a change, so this instance sees it at once, and tells the other instances (at once
    /// with Redis, else they see it within the cache lifetime).
    pub fn forget(&self, id: Uuid) {
        self.forget_locally(id);
        if let Some(publisher) = &self.publisher {
            publisher.publish(id);
        }
    }

    /// Forgets a user in this instance's cache only (another instance announced the change).
    pub fn forget_locally(&self, id: Uuid) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.forgotten.insert(id, generation);
        self.cache.invalidate(&id);
    }

    /// Forgets every user in this instance's cache (changes may have been missed), outranking reads in flight as
    /// [`Self::forget_locally`] does.
    pub fn forget_all_locally(&self) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.all_forgotten.fetch_max(generation, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// Whether the user was forgotten after a read that began at `generation`.
    fn changed_since(&self, id: Uuid, generation: u64) -> bool {
        self.all_forgotten.load(Ordering::SeqCst) > generation
            || self.forgotten.get(&id).is_some_and(|forgotten| forgotten > generation)
    }
}

/// A validated request to create a user.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Username.
    pub username: String,
    /// Lower-case email.
    pub email: String,
    /// Plain password, hashed before storing.
    pub password: String,
    /// Role.
    pub role: Role,
}

impl Registration {
    /// Checks every field, reporting all invalid ones at once.
    pub fn parse(
        username: Option<&str>,
        email: Option<&str>,
        password: Option<&str>,
        role: Option<&str>,
    ) -> Result<Self, CoreError> {
        let mut v = Validation::new();
        let username = v.check("username", required(username).and_then(user::parse_username));
        let email = v.check("email", required(email).and_then(user::parse_email));
        let password = v.check("password", required(password).and_then(user::parse_password));
        let role = v.check("role", role.map_or(Ok(Role::User), str::parse));
        v.finish()?;
        match (username, email, password, role) {
            (Some(username), Some(email), Some(password), Some(role)) => Ok(Self { username, email, password, role }),
            _ => Err(CoreError::Validation(Vec::new())),
        }
    }
}

/// A present value, or the "is required" message.
pub(crate) fn required(value: Option<&str>) -> Result<&str, String> {
    value.ok_or_else(|| "is required".to_owned())
}

/// Creates a user (hashing the password), with its event and audit entry. The caller decides whether the role is
/// allowed.
pub async fn create(state: &AppState, registration: Registration, audit: &AuditContext) -> Result<User, ApiError> {
    let id = state.ids.user(&registration.email);
    create_with_id(state, id, registration, audit).await
}

async fn create_with_id(
    state: &AppState,
    id: Uuid,
    registration: Registration,
    audit: &AuditContext,
) -> Result<User, ApiError> {
    let password_hash = state.passwords.hash(registration.password).await?;
    let user = state
        .store
        .create_user(
            NewUser {
                id,
                username: registration.username,
                email: registration.email,
                password_hash,
                role: registration.role,
                now: state.clock.now(),
            },
            audit,
        )
        .await?;
    tracing::info!(user.id = %user.id, user.role = %user.role, "user created");
    Ok(user)
}

/// One page of users.
pub async fn list(state: &AppState, query: UserListQuery) -> Result<UserPage, ApiError> {
    Ok(state.store.list_users(query).await?)
}

/// The user with this id, or `user_not_found`.
pub async fn get(state: &AppState, id: Uuid) -> Result<User, ApiError> {
    state.store.find_user(id).await?.ok_or_else(|| ErrorCode::UserNotFound.into())
}

/// Applies an admin's changes to a user (the last active admin is protected by the store), with its event and
/// audit entry.
pub async fn update(state: &AppState, id: Uuid, changes: UserChanges, audit: &AuditContext) -> Result<User, ApiError> {
    // A deactivation ends the sessions on the clock their tokens were issued on: the wall clock.
    let changes = UserChanges { sessions_end_at: Some(crate::auth::wall_now()), ..changes };
    let user = state.store.update_user(id, changes, state.clock.now(), audit).await.map_err(not_found_is_user)?;
    state.users.forget(id);
    tracing::info!(user.id = %id, user.active = user.is_active, user.role = %user.role, "user updated");
    Ok(user)
}

/// Deactivates a user: they can no longer log in, their tokens stop working, their money stays.
pub async fn deactivate(state: &AppState, id: Uuid, audit: &AuditContext) -> Result<User, ApiError> {
    update(state, id, UserChanges { is_active: Some(false), ..UserChanges::default() }, audit).await
}

fn not_found_is_user(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound => ErrorCode::UserNotFound.into(),
        other => other.into(),
    }
}

/// Creates the admin named by `BANKSIM_ADMIN_EMAIL`/`BANKSIM_ADMIN_PASSWORD` when there is no active admin.
pub async fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&state.config.admin_email, &state.config.admin_password) else {
        return Ok(());
    };
    if state.store.count_active_admins().await? > 0 {
        return Ok(());
    }
    let registration = Registration::parse(
        Some(&state.config.admin_username),
        Some(email),
        Some(password.expose_secret()),
        Some("admin"),
    )
    .map_err(|e| {
        anyhow::anyhow!("BANKSIM_ADMIN_EMAIL/BANKSIM_ADMIN_PASSWORD/BANKSIM_ADMIN_USERNAME: {}", describe(&e))
    })?;
    match create(state, registration, &AuditContext::default()).await {
        Ok(admin) => {
            tracing::info!(user.id = %admin.id, "first admin created from BANKSIM_ADMIN_EMAIL");
            Ok(())
        }
        Err(e) if matches!(e.code(), ErrorCode::EmailTaken | ErrorCode::UsernameTaken) => Err(anyhow::anyhow!(
            "BANKSIM_ADMIN_EMAIL: no active admin exists, but that email or username belongs to another user; \
             promote them with PUT /api/v1/users/{{id}} or choose another"
        )),
        Err(e) => Err(anyhow::anyhow!("creating the first admin: {}", e.code().as_str())),
    }
}

/// Every field error of a validation failure, as one line.
pub fn describe(err: &CoreError) -> String {
    match err {
        CoreError::Validation(fields) => {
            fields.iter().map(|f| format!("{} {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
        }
    }
}

/// The demo users that the old API's clients expect, with fixed ids; all have the password `password123`.
pub const DEMO_USERS: [(&str, &str, &str, Role); 3] = [
    ("550e8400-e29b-41d4-a716-446655440001", "sefa", "sefa@example.com", Role::User),
    ("550e8400-e29b-41d4-a716-446655440002", "kerem", "kerem@example.com", Role::User),
    ("550e8400-e29b-41d4-a716-446655440003", "admin", "admin@example.com", Role::Admin),
];
/// The demo users' password.
pub const DEMO_PASSWORD: &str = "password123";

/// Creates the demo users that do not exist yet; refused in production. Returns how many were created.
pub async fn seed_demo(state: &AppState) -> anyhow::Result<usize> {
    if state.config.environment == Environment::Prod {
        anyhow::bail!("ENV=prod: demo users (with a published password) are never created in production");
    }
    let mut created = 0;
    for (id, username, email, role) in DEMO_USERS {
        let id = Uuid::parse_str(id)?;
        if state.store.find_user(id).await?.is_some() {
            continue;
        }
        let registration = Registration {
            username: username.to_owned(),
            email: email.to_owned(),
            password: DEMO_PASSWORD.to_owned(),
            role,
        };
        create_with_id(state, id, registration, &AuditContext::default())
            .await
            .map_err(|e| anyhow::anyhow!("creating demo user {username}: {}", e.code().as_str()))?;
        created += 1;
    }
    Ok(created)
}
