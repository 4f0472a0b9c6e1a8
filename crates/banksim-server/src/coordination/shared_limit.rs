//! Rate limits that every instance counts together, in Redis, with one atomic Lua script.
//!
//! # The algorithm: GCRA
//!
//! The script is the generic cell rate algorithm (GCRA), the token bucket written as one timestamp per client:
//! its *theoretical arrival time* (TAT), the instant at which the client's budget would be whole again. With a
//! limit of `L` requests per period `P`, each request costs an *emission interval* `I = P / L`; a request at `now`
//! is allowed when `max(TAT, now) + I − now ≤ L·I` (the debt it would leave fits in the budget), and then moves
//! the TAT to `max(TAT, now) + I`. So a client may make `L` requests at once, and then one more every `I`: its
//! budget comes back gradually, not all at once at a window's edge.
//!
//! Why GCRA rather than a sliding window:
//! - **One small key per client.** The whole state is one integer; a sliding *log* keeps a timestamp per request
//!   (a sorted set of up to `L` members per client: 600 entries for a 600-a-minute read limit), and a sliding
//!   window *counter* keeps two counters and only approximates.
//! - **Idle clients cost nothing.** The key's TTL is the time until its TAT: once a client's budget is whole
//!   again the key is gone, and a missing key means exactly that.
//! - **Exact and smooth.** Integer microseconds throughout (no floating point decides), `L` at once and no more,
//!   and no burst of `2·L` across a fixed window's edge.
//! - **One round trip, one clock.** The script reads `TIME` from Redis, so instances with skewed clocks still
//!   agree, and runs atomically, so concurrent requests of one client on several instances cannot both take the
//!   last request of its budget.
//!
//! # The script's keys
//!
//! `KEYS[1]` is `banksim:rate:<group>:<subject>` (`banksim:rate:auth:ip:203.0.113.9`,
//! `banksim:rate:read:user:<uuid>`), holding the TAT in microseconds since the epoch (Redis's clock), with a
//! millisecond TTL of `TAT − now`, rounded up. `ARGV[1]` is `I` in microseconds, `ARGV[2]` is `L`. A refused
//! request writes nothing. It answers `{allowed, remaining, reset_us, retry_after_us}`.
//!
//! The script is run with `EVALSHA` (its SHA-1 is computed once here); Redis answers `NOSCRIPT` when its script
//! cache does not hold it (a restarted Redis, a `SCRIPT FLUSH`), and the call is made again with `EVAL`, which
//! also caches it for the next `EVALSHA`.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{ErrorKind, RedisResult, ServerErrorKind};

use crate::coordination::{Redis, Unavailable};
use crate::http::rate_limit::Decision;

/// The GCRA script (see the module's documentation).
pub const GCRA_SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = interval * limit
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return {0, 0, tat - now, new_tat - period - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((period - (new_tat - now)) / interval), new_tat - now, 0}
"#;

/// A rate limiter whose counts live in Redis, shared by every instance.
#[derive(Debug)]
pub struct SharedLimiter {
    redis: std::sync::Arc<Redis>,
    sha: String,
}

impl SharedLimiter {
    /// A limiter counting in `redis`.
    pub fn new(redis: std::sync::Arc<Redis>) -> Self {
        Self { redis, sha: ::redis::Script::new(GCRA_SCRIPT).get_hash().to_owned() }
    }

    /// Counts one request against `key`'s budget of `limit` per `period` and says whether it may go ahead; an
    /// error when Redis gave no answer (the caller then decides in-process).
    pub async fn check(&self, key: &str, limit: u32, period: Duration) -> Result<Decision, Unavailable> {
        let interval = interval_us(limit, period);
        let sha = self.sha.as_str();
        let reply =
            self.redis
                .call("rate_limit", |mut connection| async move {
                    run_script(&mut connection, sha, key, interval, limit).await
                })
                .await?;
        Ok(decision(reply))
    }
}

/// `EVALSHA`, and `EVAL` when Redis does not know the script.
async fn run_script(
    connection: &mut ConnectionManager,
    sha: &str,
    key: &str,
    interval_us: u64,
    limit: u32,
) -> RedisResult<[i64; 4]> {
    type Reply = (i64, i64, i64, i64);
    let evalsha = ::redis::cmd("EVALSHA").arg(sha).arg(1).arg(key).arg(interval_us).arg(limit).clone();
    let reply: Reply = match evalsha.query_async(connection).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            let eval = ::redis::cmd("EVAL").arg(GCRA_SCRIPT).arg(1).arg(key).arg(interval_us).arg(limit).clone();
            eval.query_async(connection).await?
        }
        other => other?,
    };
    Ok([reply.0, reply.1, reply.2, reply.3])
}

/// The emission interval `period / limit` in whole microseconds, at least 1 (the script multiplies it back by
/// the limit, so the budget is exactly `limit` requests at once).
pub fn interval_us(limit: u32, period: Duration) -> u64 {
    let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
    (period_us / u64::from(limit.max(1))).max(1)
}

/// The script's answer `{allowed, remaining, reset_us, retry_after_us}` as a decision, with the headers' whole
/// seconds rounded up (a client told to wait 0.2 s waits 1 s, never 0).
pub fn decision([allowed, remaining, reset_us, retry_after_us]: [i64; 4]) -> Decision {
    let seconds = |us: i64| u64::try_from(us).unwrap_or(0).div_ceil(1_000_000);
    if allowed == 1 {
        Decision::Allowed {
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_secs: seconds(reset_us),
        }
    } else {
        Decision::Limited { retry_after_secs: seconds(retry_after_us).max(1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_divides_the_period_and_never_reaches_zero() {
        assert_eq!(interval_us(5, Duration::from_secs(60)), 12_000_000);
        assert_eq!(interval_us(7, Duration::from_secs(60)), 8_571_428, "rounded down: 7 still fit in the period");
        assert!(7 * interval_us(7, Duration::from_secs(60)) <= 60_000_000);
        assert_eq!(interval_us(u32::MAX, Duration::from_secs(60)), 1);
        assert_eq!(interval_us(0, Duration::from_secs(60)), 60_000_000, "a limit of 0 never reaches the script");
    }

    #[test]
    fn an_allowed_answer_rounds_the_reset_up_to_whole_seconds() {
        assert_eq!(decision([1, 4, 12_000_000, 0]), Decision::Allowed { remaining: 4, reset_secs: 12 });
        assert_eq!(decision([1, 0, 59_000_001, 0]), Decision::Allowed { remaining: 0, reset_secs: 60 });
        assert_eq!(decision([1, -1, -5, 0]), Decision::Allowed { remaining: 0, reset_secs: 0 }, "never negative");
    }

    #[test]
    fn a_refusal_asks_to_wait_at_least_a_second() {
        assert_eq!(decision([0, 0, 60_000_000, 11_999_999]), Decision::Limited { retry_after_secs: 12 });
        assert_eq!(decision([0, 0, 60_000_000, 200_000]), Decision::Limited { retry_after_secs: 1 });
        assert_eq!(decision([0, 0, 60_000_000, 0]), Decision::Limited { retry_after_secs: 1 });
    }

    /// The script's arithmetic, written again in Rust, agrees with the budget the module promises: `limit` at
    /// once, then one per interval.
    #[test]
    fn the_gcra_arithmetic_allows_the_limit_at_once_then_one_per_interval() {
        fn step(tat: &mut Option<i64>, now: i64, interval: i64, limit: i64) -> [i64; 4] {
            let period = interval * limit;
            let base = tat.unwrap_or(now).max(now);
            let new_tat = base + interval;
            if new_tat - now > period {
                return [0, 0, base - now, new_tat - period - now];
            }
            *tat = Some(new_tat);
            [1, (period - (new_tat - now)) / interval, new_tat - now, 0]
        }
        let interval = i64::try_from(interval_us(5, Duration::from_secs(60))).expect("fits");
        let mut tat = None;
        let answers: Vec<[i64; 4]> = (0..6).map(|_| step(&mut tat, 0, interval, 5)).collect();
        let remaining: Vec<i64> = answers.iter().map(|a| a[1]).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0, 0]);
        assert_eq!(answers[5][0], 0, "the sixth at once is refused");
        assert_eq!(decision(answers[5]), Decision::Limited { retry_after_secs: 12 });
        assert_eq!(decision(answers[4]), Decision::Allowed { remaining: 0, reset_secs: 60 });
        assert_eq!(step(&mut tat, interval - 1, interval, 5)[0], 0, "not before one interval has passed");
        assert_eq!(step(&mut tat, interval, interval, 5)[..2], [1, 0], "one more after one interval");
        assert_eq!(step(&mut tat, 10 * interval, interval, 5)[..2], [1, 4], "idle long enough: whole again");
    }
}
