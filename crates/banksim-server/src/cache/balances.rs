//! The balance cache: a wallet's current balance without a database round trip, never older than a write the reader
//! could know of.
//!
//! - The writer puts each wallet a batch changed into the cache right after the commit (it knows the new balances and
//!   their versions), so the instance that wrote never serves an older balance.
//! - Entries are versioned (a wallet's version counts its postings): a slower fill or a late update never replaces a
//!   newer entry, and a fill older than a version the change bus announced is not kept.
//! - Other instances' writes: on PostgreSQL every batch announces the wallets it changed on the change bus (`NOTIFY`
//!   in the batch's own transaction, delivered in commit order), and every instance drops the entries it hears of.
//!   Hearing is asynchronous, so a read first waits for a *marker*: this instance announces a marker on the bus after
//!   the read began and waits (bounded) until it comes back, by which time every change committed before the read
//!   began has been delivered and applied. One marker serves every read waiting for it, so the database sees one
//!   small query per marker, not per read. A read that cannot get a marker in time goes to the database.
//! - The balance read lease (PostgreSQL) spares those waits while one instance is the only one writing: its holder
//!   renews it every [`LEASE_RENEW_EVERY`], and a database trigger makes every other connection's change to a
//!   wallet wait until the lease has run out (and keeps it from being taken again while others write). So while
//!   the lease holds, nothing but the holder's own writes, which update its cache before they are answered, changes
//!   a wallet, and the holder answers reads straight from the cache. A lease taken anew is trusted only once a
//!   marker sent after it has come back (changes committed before it may still be on their way).
//! - On SQLite (no bus) a read first asks `PRAGMA data_version`, which moves with every commit of any other
//!   connection; when it moved, the cache is emptied (our own writer's commits move it too: under writes the cache
//!   helps little there, and is never stale).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use banksim_core::currency::Currency;
use banksim_store::{Store, StoreError, Wallet, WalletChange, WalletState, WalletVersion};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// Most wallets kept.
const CAPACITY: u64 = 200_000;

/// How long a wallet's floor (the newest version written or announced) is kept: longer than any read of the
/// database that a fill could still be waiting for.
const FLOOR_TTL: Duration = Duration::from_secs(60);

/// Longest a read waits for its marker before it goes to the database instead.
const MARKER_WAIT: Duration = Duration::from_millis(50);

/// How long a balance read lease runs from the start of its renewal: the longest another instance's write waits
/// for it once.
const LEASE_PERIOD: Duration = Duration::from_millis(500);

/// How often the lease is renewed.
const LEASE_RENEW_EVERY: Duration = Duration::from_millis(125);

/// The holder stops trusting its lease this long before the database's end of it (clocks that tick at slightly
/// different rates).
const LEASE_MARGIN: Duration = Duration::from_millis(50);

type Key = (Uuid, Currency);

/// How reads make sure the cache has heard of every earlier commit.
#[derive(Debug)]
enum Freshness {
    /// The change bus and markers (PostgreSQL).
    Bus(Markers),
    /// `PRAGMA data_version` (SQLite): the last value seen.
    DataVersion(AtomicI64),
}

/// The markers of this instance on the change bus.
#[derive(Debug)]
struct Markers {
    /// Names this instance's markers (the bus carries every instance's).
    instance: Uuid,
    /// The last marker whose announcement has begun.
    issued: AtomicU64,
    /// The highest marker a read is waiting for.
    wanted: AtomicU64,
    /// The last marker that came back.
    heard: watch::Sender<u64>,
    /// Wakes the announcer.
    wake: Notify,
    /// Whether the bus is listened to now (else reads go to the database).
    listening: AtomicBool,
    /// Whether this instance takes the balance read lease when it can.
    lease: bool,
    /// Until when reads need no marker (the lease holds, and everything committed before it was taken has been
    /// heard): nanoseconds after `epoch`, 0 for never.
    leased_until: AtomicU64,
    epoch: Instant,
    /// Counts the bus's connections: a lease is trusted only on the connection its marker came back on (a lost one
    /// may have lost changes; after a failover the new primary may not have the last renewals).
    connection: std::sync::Mutex<u64>,
}

impl Markers {
    /// Whether reads need no marker now.
    fn leased(&self) -> bool {
        nanos_since(self.epoch, Instant::now()) < self.leased_until.load(Ordering::SeqCst)
    }

    /// The bus's connection now.
    fn connection(&self) -> u64 {
        *self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection of the bus (or none): the lease is no longer trusted.
    fn reconnected(&self) {
        let mut connection = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *connection += 1;
        self.leased_until.store(0, Ordering::SeqCst);
    }

    /// Trusts the lease until `until` if the bus is still on `connection`; false if it is not.
    fn trust_lease(&self, connection: u64, until: Instant) -> bool {
        let current = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != connection {
            return false;
        }
        self.leased_until.fetch_max(nanos_since(self.epoch, until), Ordering::SeqCst);
        true
    }
}

/// `at` as nanoseconds after `epoch` (0 before it).
fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Hits, misses and reads that went around the cache.
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    /// Answered from the cache.
    pub hits: Counter,
    /// Read from the database, then kept.
    pub misses: Counter,
    /// Read from the database because freshness could not be shown in time (or the cache is off).
    pub bypassed: Counter,
    /// Markers announced on the change bus.
    pub markers: Counter,
    /// 1 while this instance holds the balance read lease and trusts it, else 0.
    pub lease_held: Gauge,
}

/// Current balances by wallet.
#[derive(Debug)]
pub struct BalanceCache {
    enabled: bool,
    entries: moka::sync::Cache<Key, Wallet>,
    /// The newest version per wallet that this instance wrote or the bus announced, for [`FLOOR_TTL`].
    floors: moka::sync::Cache<Key, i64>,
    freshness: Freshness,
    /// Moves each time the whole cache is emptied: a fill that read the database before cannot be kept after.
    generation: AtomicU64,
    counters: CacheCounters,
}

impl BalanceCache {
    /// A cache for `store` (bus on PostgreSQL, data version on SQLite), or one that passes every read through when
    /// `enabled` is false. `lease`: whether it takes the balance read lease when it can (PostgreSQL).
    pub fn new(store: &dyn Store, enabled: bool, lease: bool, counters: CacheCounters) -> Self {
        let freshness = match store.backend() {
            banksim_store::Backend::Postgres => Freshness::Bus(Markers {
                instance: Uuid::new_v4(),
                issued: AtomicU64::new(0),
                wanted: AtomicU64::new(0),
                heard: watch::Sender::new(0),
                wake: Notify::new(),
                listening: AtomicBool::new(false),
                lease,
                leased_until: AtomicU64::new(0),
                epoch: Instant::now(),
                connection: std::sync::Mutex::new(0),
            }),
            banksim_store::Backend::Sqlite => Freshness::DataVersion(AtomicI64::new(i64::MIN)),
        };
        Self {
            enabled,
            entries: moka::sync::Cache::builder().max_capacity(CAPACITY).build(),
            // No size bound: a bounded cache may turn a new floor away (moka admits by frequency when full), and a
            // floor turned away lets an older fill be kept. Bounded instead by the wallets written in `FLOOR_TTL`.
            floors: moka::sync::Cache::builder().time_to_live(FLOOR_TTL).build(),
            freshness,
            generation: AtomicU64::new(0),
            counters,
        }
    }

    /// The wallet's current state (`None`: it never moved), from the cache when it is known fresh.
    pub async fn current(
        &self,
        store: &dyn Store,
        user_id: Uuid,
        currency: Currency,
    ) -> Result<Option<Wallet>, StoreError> {
        if !self.enabled || !self.freshen(store).await? {
            self.counters.bypassed.inc();
            return Ok(store.wallets(user_id, Some(currency)).await?.pop());
        }
        let key = (user_id, currency);
        if let Some(wallet) = self.entries.get(&key) {
            self.counters.hits.inc();
            return Ok(Some(wallet));
        }
        self.counters.misses.inc();
        let generation = self.generation.load(Ordering::SeqCst);
        let wallet = store.wallets(user_id, Some(currency)).await?.pop();
        if let Some(wallet) = &wallet {
            self.keep(key, wallet.clone(), Some(generation));
        }
        Ok(wallet)
    }

    /// Where the cache stands: a writer takes it before its batch, for [`BalanceCache::apply`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The wallets a committed batch changed (called by the writer before it answers), unless the cache was emptied
    /// since `generation` (taken before the batch began): another process's commit may then have followed this
    /// one, and only the database knows which came last. Their versions become floors either way, so that a fill
    /// that read the database before this commit is never kept (under the lease no marker would drop it).
    pub fn apply(&self, wallets: &[WalletState], generation: u64) {
        if !self.enabled {
            return;
        }
        for state in wallets {
            let key = (state.user_id, state.wallet.currency);
            self.raise_floor(key, state.wallet.version);
            self.keep(key, state.wallet.clone(), Some(generation));
        }
    }

    /// Keeps `wallet` unless a newer version is cached or was announced, or (for a fill that read the database
    /// during `generation`) the cache was emptied since. Each rule is checked again after the insert, so that an
    /// announcement or an emptying that raced the insert still wins.
    fn keep(&self, key: Key, wallet: Wallet, generation: Option<u64>) {
        let version = wallet.version;
        let stale = || {
            self.floors.get(&key).is_some_and(|floor| version < floor)
                || generation.is_some_and(|g| g != self.generation.load(Ordering::SeqCst))
        };
        if stale() {
            return;
        }
        self.entries.entry(key).and_upsert_with(|existing| match existing {
            Some(entry) if entry.value().version > version => entry.into_value(),
            _ => wallet,
        });
        if stale() {
            self.entries.invalidate(&key);
        }
    }

    /// Empties the cache: a fill in flight is not kept. (The writer calls it when a commit's outcome is unknown: the
    /// batch may have moved balances it cannot name.)
    pub fn empty(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// Forgets the entries older than the versions the bus announced.
    fn heard_of(&self, changes: &[WalletVersion]) {
        for &(user_id, currency, version) in changes {
            self.raise_floor((user_id, currency), version);
        }
    }

    /// Makes `version` the wallet's floor unless a higher one is set, and drops an older entry.
    fn raise_floor(&self, key: Key, version: i64) {
        let floor = self
            .floors
            .entry(key)
            .and_upsert_with(|existing| existing.map_or(version, |floor| floor.into_value().max(version)))
            .into_value();
        if self.entries.get(&key).is_some_and(|entry| entry.version < floor) {
            self.entries.invalidate(&key);
        }
    }

    /// Makes sure the cache holds nothing older than the commits made before now; false when that cannot be shown
    /// in time (the read then goes to the database).
    async fn freshen(&self, store: &dyn Store) -> Result<bool, StoreError> {
        match &self.freshness {
            Freshness::DataVersion(seen) => {
                let Some(now) = store.foreign_change_marker().await? else { return Ok(false) };
                if seen.swap(now, Ordering::SeqCst) != now {
                    self.empty();
                }
                Ok(true)
            }
            Freshness::Bus(markers) => Ok(markers.leased() || marker_round_trip(markers).await),
        }
    }

    /// Keeps the cache in step with the change bus until `stopped` (PostgreSQL; returns at once elsewhere): listens,
    /// and announces the markers reads wait for.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut stopped: watch::Receiver<bool>) {
        let Freshness::Bus(markers) = &self.freshness else { return };
        if !self.enabled {
            return;
        }
        let announcer = {
            let (cache, store, stopped) = (self.clone(), store.clone(), stopped.clone());
            tokio::spawn(async move { cache.announce(store, stopped).await })
        };
        let holder = markers.lease.then(|| {
            let (cache, store, stopped) = (self.clone(), store.clone(), stopped.clone());
            tokio::spawn(async move { cache.hold_lease(store, stopped).await })
        });
        while !*stopped.borrow() {
            let mut feed = match store.wallet_changes().await {
                Ok(Some(feed)) => feed,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "balance cache: cannot listen to the change bus; reading through");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stopped.changed() => break,
                    }
                }
            };
            // Whatever happened while nobody listened is unknown: start from an empty cache.
            markers.reconnected();
            self.empty();
            markers.listening.store(true, Ordering::SeqCst);
            loop {
                let next = tokio::select! {
                    next = feed.next() => next,
                    _ = stopped.changed() => break,
                };
                match next {
                    Ok(WalletChange::Changed(changes)) => self.heard_of(&changes),
                    Ok(WalletChange::Marker(marker)) => {
                        if let Some(n) = own_marker(&marker, markers.instance) {
                            markers.heard.send_if_modified(|heard| {
                                let moved = n > *heard;
                                *heard = (*heard).max(n);
                                moved
                            });
                        }
                    }
                    Ok(WalletChange::Lost) | Err(_) => {
                        markers.listening.store(false, Ordering::SeqCst);
                        markers.reconnected();
                        self.empty();
                        break;
                    }
                }
            }
            markers.listening.store(false, Ordering::SeqCst);
        }
        markers.listening.store(false, Ordering::SeqCst);
        announcer.abort();
        if let Some(holder) = holder {
            // It gives the lease back as it stops, so that other instances' writes need not wait for it.
            let _ = tokio::time::timeout(Duration::from_secs(1), holder).await;
        }
    }

    /// Takes and renews the balance read lease until `stopped`, then gives it back. Reads skip their marker only
    /// while the lease holds and a marker sent after it was taken has come back.
    async fn hold_lease(&self, store: Arc<dyn Store>, mut stopped: watch::Receiver<bool>) {
        let Freshness::Bus(markers) = &self.freshness else { return };
        // The bus connection on which everything committed before the lease (as held now) was taken has been heard.
        let mut caught_up_on: Option<u64> = None;
        loop {
            if markers.listening.load(Ordering::SeqCst) {
                let connection = markers.connection();
                let started = Instant::now();
                let caught_up = match store.renew_balance_lease(LEASE_PERIOD).await {
                    Ok(Some(renewal)) => {
                        (renewal.continuous && caught_up_on == Some(connection)) || marker_round_trip(markers).await
                    }
                    Ok(None) => false,
                    Err(err) => {
                        tracing::debug!(error = %err, "balance cache: lease not renewed");
                        false
                    }
                };
                let trusted = caught_up && markers.trust_lease(connection, started + LEASE_PERIOD - LEASE_MARGIN);
                caught_up_on = trusted.then_some(connection);
            } else {
                caught_up_on = None;
            }
            self.counters.lease_held.set(i64::from(markers.leased()));
            tokio::select! {
                _ = tokio::time::sleep(LEASE_RENEW_EVERY) => {}
                _ = stopped.changed() => break,
            }
        }
        markers.leased_until.store(0, Ordering::SeqCst);
        self.counters.lease_held.set(0);
        if let Err(err) = store.release_balance_lease().await {
            tracing::debug!(error = %err, "balance cache: lease not given back");
        }
    }

    /// Announces a marker whenever a read waits for one newer than the last announced.
    async fn announce(&self, store: Arc<dyn Store>, mut stopped: watch::Receiver<bool>) {
        let Freshness::Bus(markers) = &self.freshness else { return };
        loop {
            let wanted = markers.wanted.load(Ordering::SeqCst);
            let issued = markers.issued.load(Ordering::SeqCst);
            if wanted <= issued {
                tokio::select! {
                    _ = markers.wake.notified() => continue,
                    _ = stopped.changed() => return,
                }
            }
            let n = issued + 1;
            markers.issued.store(n, Ordering::SeqCst);
            self.counters.markers.inc();
            if let Err(err) = store.announce_wallet_marker(&format!("{}:{n}", markers.instance)).await {
                tracing::debug!(error = %err, "balance cache: marker not announced");
                continue;
            }
            // One marker on the bus at a time: the reads that begin meanwhile share the next one, so a busy
            // instance sends one marker per round trip of the bus, not one per read (bounded, as a marker can be
            // lost with the listener).
            let mut heard = markers.heard.subscribe();
            let _ = tokio::time::timeout(MARKER_WAIT, heard.wait_for(|heard| *heard >= n)).await;
        }
    }

    /// Its counters.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// `postgres-bus`, `sqlite-data-version` or `off`, for the basic metrics.
    pub fn kind(&self) -> &'static str {
        match (&self.freshness, self.enabled) {
            (_, false) => "off",
            (Freshness::Bus(_), true) => "in-process, PostgreSQL change bus",
            (Freshness::DataVersion(_), true) => "in-process, SQLite data version",
        }
    }
}

/// Waits for a marker whose announcement begins after this call began (the last one begun may predate it); false
/// when the bus is not listened to or the marker does not come back in time.
async fn marker_round_trip(markers: &Markers) -> bool {
    if !markers.listening.load(Ordering::SeqCst) {
        return false;
    }
    let wanted = markers.issued.load(Ordering::SeqCst) + 1;
    markers.wanted.fetch_max(wanted, Ordering::SeqCst);
    markers.wake.notify_one();
    let mut heard = markers.heard.subscribe();
    let back = tokio::time::timeout(MARKER_WAIT, heard.wait_for(|heard| *heard >= wanted)).await;
    matches!(back, Ok(Ok(_)))
}

/// The number of one of this instance's markers (`<instance>:<n>`).
fn own_marker(marker: &str, instance: Uuid) -> Option<u64> {
    let (owner, n) = marker.split_once(':')?;
    if owner.parse::<Uuid>().ok()? != instance {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet(balance_minor: i64, version: i64) -> Wallet {
        Wallet {
            currency: Currency::USD,
            balance_minor,
            version,
            updated_at: chrono::Utc::now(),
            limits: banksim_core::ledger::Limits::default(),
            pending_minor: 0,
        }
    }

    fn cache() -> BalanceCache {
        BalanceCache {
            enabled: true,
            entries: moka::sync::Cache::builder().max_capacity(10).build(),
            floors: moka::sync::Cache::builder().max_capacity(10).build(),
            freshness: Freshness::DataVersion(AtomicI64::new(0)),
            generation: AtomicU64::new(0),
            counters: CacheCounters::default(),
        }
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = cache();
        let key = (Uuid::new_v4(), Currency::USD);
        cache.keep(key, wallet(500, 5), None);
        cache.keep(key, wallet(400, 4), None);
        assert_eq!(cache.entries.get(&key).map(|w| w.version), Some(5));
        cache.keep(key, wallet(600, 6), None);
        assert_eq!(cache.entries.get(&key).map(|w| w.balance_minor), Some(600));
    }

    #[test]
    fn a_change_heard_on_the_bus_drops_older_entries_and_refuses_older_fills() {
        let cache = cache();
        let user = Uuid::new_v4();
        let key = (user, Currency::USD);
        cache.keep(key, wallet(500, 5), None);
        cache.heard_of(&[(user, Currency::USD, 7)]);
        assert!(cache.entries.get(&key).is_none(), "version 5 is older than the announced 7");
        cache.keep(key, wallet(550, 6), None);
        assert!(cache.entries.get(&key).is_none(), "a slow fill of version 6 is not kept");
        cache.keep(key, wallet(700, 7), None);
        assert_eq!(cache.entries.get(&key).map(|w| w.balance_minor), Some(700));
        cache.heard_of(&[(user, Currency::USD, 7)]);
        assert!(cache.entries.get(&key).is_some(), "its own version keeps it");
    }

    #[test]
    fn a_fill_that_read_before_the_cache_was_emptied_is_not_kept() {
        let cache = cache();
        let key = (Uuid::new_v4(), Currency::USD);
        let read_during = cache.generation.load(Ordering::SeqCst);
        cache.empty();
        cache.keep(key, wallet(100, 1), Some(read_during));
        assert!(cache.entries.get(&key).is_none());
        cache.keep(key, wallet(100, 1), Some(cache.generation.load(Ordering::SeqCst)));
        assert!(cache.entries.get(&key).is_some());
    }

    #[test]
    fn a_batch_applied_after_an_emptying_still_refuses_a_fill_that_read_before_it() {
        let cache = cache();
        let (user_id, currency) = (Uuid::new_v4(), Currency::USD);
        let batch_began = cache.generation();
        // Emptied while the batch runs (a limits change on this instance, a lost bus)...
        cache.empty();
        // ...and a read that began after that reads the database before the batch commits.
        let read_began = cache.generation();
        cache.apply(&[WalletState { user_id, wallet: wallet(200, 2) }], batch_began);
        cache.keep((user_id, currency), wallet(100, 1), Some(read_began));
        assert!(cache.entries.get(&(user_id, currency)).is_none(), "the older fill is not kept");
        cache.keep((user_id, currency), wallet(200, 2), Some(read_began));
        assert_eq!(cache.entries.get(&(user_id, currency)).map(|w| w.balance_minor), Some(200));
    }

    #[test]
    fn only_this_instances_markers_count() {
        let instance = Uuid::new_v4();
        assert_eq!(own_marker(&format!("{instance}:42"), instance), Some(42));
        assert_eq!(own_marker(&format!("{}:42", Uuid::new_v4()), instance), None);
        assert_eq!(own_marker("garbage", instance), None);
    }
}
