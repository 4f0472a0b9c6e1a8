//! Multi-host URLs and following the primary through a failover.
//!
//! `postgres://user@h1:5432,h2:5433/banksim?target_session_attrs=read-write` names every server of a high
//! availability formation (pg_auto_failover, Patroni, …); libpq picks the one that accepts writes, and so does
//! banksim, which connects through sqlx (single-host). A watcher checks once a second that the server the pool
//! connects to is still a primary (`pg_is_in_recovery()` is false) on a connection of its own; when it is not, or
//! does not answer, it asks every server and points the pool at the one that is. Connections opened before the
//! switch are dropped when next acquired (the old primary may still be up, demoted to a read-only standby), so
//! every transaction after the switch runs on the new primary. Meanwhile, writes fail as the primary's outage
//! they are (503 through the breaker), never half-applied.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection};

use crate::StoreError;

/// How often the watcher checks that the pool's server is still the primary.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long one check may wait for a server.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The servers of a multi-host URL, each as single-host connect options; `None` for a single-host URL.
pub(crate) fn candidates(url: &str) -> Result<Option<Vec<PgConnectOptions>>, StoreError> {
    let (scheme, rest) = url.split_once("://").ok_or(StoreError::InvalidUrl)?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    if !hosts.contains(',') {
        return Ok(None);
    }
    let tail = without_target_session_attrs(tail);
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                return Err(StoreError::InvalidUrl);
            }
            PgConnectOptions::from_str(&format!("{scheme}://{userinfo}{host}{tail}"))
                .map_err(|_| StoreError::InvalidUrl)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `tail` (path and query) without `target_session_attrs`: banksim always follows the server that accepts writes.
fn without_target_session_attrs(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else { return tail.to_owned() };
    let kept: Vec<&str> = query.split('&').filter(|pair| !pair.starts_with("target_session_attrs=")).collect();
    if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) }
}

/// When the pool last moved to another server; connections older than that are dropped on acquire.
#[derive(Debug, Default, Clone)]
pub(crate) struct Switched(Arc<Mutex<Option<Instant>>>);

impl Switched {
    /// Whether a connection opened `age` ago was opened after the last switch.
    pub(crate) fn is_current(&self, age: Duration) -> bool {
        self.0.lock().map(|at| at.is_none_or(|at| age < at.elapsed())).unwrap_or(true)
    }

    fn now(&self) {
        if let Ok(mut at) = self.0.lock() {
            *at = Some(Instant::now());
        }
    }
}

/// Whether the server of `options` answers and accepts writes.
async fn is_primary(options: &PgConnectOptions) -> bool {
    let check = async {
        let mut connection = options.connect().await.ok()?;
        let in_recovery: bool =
            sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut connection).await.ok()?;
        let _ = connection.close().await;
        Some(!in_recovery)
    };
    tokio::time::timeout(CHECK_TIMEOUT, check).await.ok().flatten().unwrap_or(false)
}

/// The index of the first candidate that is a primary now, if any.
pub(crate) async fn find_primary(candidates: &[PgConnectOptions]) -> Option<usize> {
    for (index, options) in candidates.iter().enumerate() {
        if is_primary(options).await {
            return Some(index);
        }
    }
    None
}

fn describe(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Keeps `pool` pointed at the primary among `candidates` until the pool is closed.
pub(crate) async fn watch(pool: PgPool, candidates: Vec<PgConnectOptions>, mut current: usize, switched: Switched) {
    while !pool.is_closed() {
        tokio::time::sleep(CHECK_INTERVAL).await;
        if pool.is_closed() || is_primary(&candidates[current]).await {
            continue;
        }
        let Some(primary) = find_primary(&candidates).await else {
            tracing::warn!(server = describe(&candidates[current]), "no server of DATABASE_URL accepts writes");
            continue;
        };
        if primary != current {
            tracing::warn!(
                from = describe(&candidates[current]),
                to = describe(&candidates[primary]),
                "the primary moved: new connections go to the new primary"
            );
            pool.set_connect_options(candidates[primary].clone());
            switched.now();
            current = primary;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_host_url_has_no_candidates() {
        assert!(candidates("postgres://postgres@127.0.0.1:5432/banksim").expect("valid").is_none());
    }

    #[test]
    fn each_host_of_a_multi_host_url_becomes_a_candidate_with_the_same_user_database_and_options() {
        let url =
            "postgres://app:secret@10.0.0.1:5432,10.0.0.2:5433/banksim?target_session_attrs=read-write&sslmode=disable";
        let hosts = candidates(url).expect("valid").expect("multi-host");
        let described: Vec<String> = hosts.iter().map(describe).collect();
        assert_eq!(described, ["10.0.0.1:5432", "10.0.0.2:5433"]);
        for host in &hosts {
            assert_eq!(host.get_username(), "app");
            assert_eq!(host.get_database(), Some("banksim"));
        }
    }

    #[test]
    fn an_empty_host_in_the_list_is_refused() {
        assert!(candidates("postgres://postgres@10.0.0.1:5432,/banksim").is_err());
    }

    #[test]
    fn target_session_attrs_is_taken_out_and_the_rest_kept() {
        assert_eq!(without_target_session_attrs("/db?target_session_attrs=read-write"), "/db");
        assert_eq!(without_target_session_attrs("/db?a=1&target_session_attrs=any&b=2"), "/db?a=1&b=2");
        assert_eq!(without_target_session_attrs("/db"), "/db");
    }

    #[test]
    fn connections_opened_before_a_switch_are_not_current() {
        let switched = Switched::default();
        assert!(switched.is_current(Duration::from_secs(3600)), "no switch yet");
        switched.now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!switched.is_current(Duration::from_secs(1)), "opened before the switch");
        assert!(switched.is_current(Duration::from_millis(1)), "opened after it");
    }
}
