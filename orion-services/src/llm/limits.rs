//! The provider's rate limits, in requests and in tokens a minute, kept for every caller of one
//! provider key and model: in this process (embedded mode) or in Redis, shared by every node
//! of a cluster.
//!
//! Both keep the same account, a generic cell rate (GCRA) per limit: a theoretical arrival
//! time `tat` that each admitted call moves on by its cost times the limit's interval, and a
//! window of a twentieth of the minute's allowance (3 s of it) that may be spent at once, so
//! that a provider which allows a burst of a tenth still has room for calls that reach it
//! closer together than they were sent. A call larger than the window goes on an idle
//! account at once, and later calls wait for what it took. A call reserves its
//! turn (one request, and the tokens it may use: its prompt at 4 characters a token and its
//! whole answer allowance) and then waits for it, so callers go in order and none sends before
//! its turn; a turn further away than the longest wait is not taken, and the call fails with
//! `rate_limited`. Once answered, the reservation is corrected by the tokens really used. A
//! provider's `Retry-After` pauses every caller of the account until it has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_redis::redis;

/// One account's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
}

impl Limits {
    /// Microseconds between two units of `per_minute`, and the window of a twentieth of the
    /// minute's allowance (at least one unit).
    fn cell(per_minute: u32) -> (f64, f64) {
        let per_minute = f64::from(per_minute.max(1));
        let interval = 60_000_000.0 / per_minute;
        (interval, interval * (per_minute / 20.0).floor().max(1.0))
    }
}

/// Why a call was not given a turn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the next turn under the rate limit is {0:?} away, past the longest wait")]
    TooFar(Duration),
    #[error("the shared rate limiter is unavailable: {0}")]
    Unavailable(String),
}

/// Where model calls take their turns.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Reserves one request and `tokens` tokens of `account` and waits for the turn; refused
    /// (reserving nothing) when the turn is more than `max_wait` away.
    async fn admit(
        &self,
        account: &str,
        limits: Limits,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<(), Refusal>;

    /// Corrects the last reservation by the tokens really used (`used - reserved`).
    async fn correct(&self, account: &str, limits: Limits, delta_tokens: i64);

    /// No call of `account` goes before `pause` from now (a provider's `Retry-After`), not
    /// even one whose turn was given before (a pause that cannot be shared is logged).
    async fn pause(&self, account: &str, pause: Duration);
}

/// Sleeps until the turn `wait` away, then for as long as the account is paused (a pause set
/// while the call waited for its turn holds it too); refused when a pause outlasts `max_wait`.
async fn wait_for_turn<F, Fut>(
    wait: Duration,
    max_wait: Duration,
    pause_left: F,
) -> Result<(), Refusal>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    tokio::time::sleep(wait).await;
    loop {
        let left = pause_left().await;
        if left.is_zero() {
            return Ok(());
        }
        if left > max_wait {
            return Err(Refusal::TooFar(left));
        }
        tokio::time::sleep(left).await;
    }
}

/// One account's cells: the theoretical arrival times of requests and tokens, and the end of
/// a pause, in microseconds since the epoch.
#[derive(Clone, Copy, Debug, Default)]
struct Cells {
    requests: f64,
    tokens: f64,
    paused_until: f64,
}

/// The turn of a call of `tokens` at `now` under `limits`, and the cells it leaves; `None`
/// when the turn is more than `max_wait` (µs) away. The Redis script is the same account.
fn reserve(
    cells: Cells,
    now: f64,
    limits: Limits,
    tokens: u64,
    max_wait: f64,
) -> Option<(f64, Cells)> {
    let (r_interval, r_window) = Limits::cell(limits.requests_per_minute);
    let (t_interval, t_window) = Limits::cell(limits.tokens_per_minute);
    let start_of = |tat: f64, cost: f64, interval: f64, window: f64| {
        (tat.max(now) + (cost * interval).min(window) - window).max(now)
    };
    let tokens = tokens as f64;
    let start = start_of(cells.requests, 1.0, r_interval, r_window)
        .max(start_of(cells.tokens, tokens, t_interval, t_window))
        .max(cells.paused_until);
    if start - now > max_wait {
        return None;
    }
    Some((
        start,
        Cells {
            requests: cells.requests.max(start) + r_interval,
            tokens: cells.tokens.max(start) + tokens * t_interval,
            paused_until: cells.paused_until,
        },
    ))
}

fn epoch_micros() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_micros() as f64)
}

/// The account in this process only (embedded mode, or no Redis configured).
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    accounts: Mutex<HashMap<String, Cells>>,
}

impl LocalRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, account: &str, f: impl FnOnce(&mut Cells) -> T) -> T {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        f(accounts.entry(account.to_owned()).or_default())
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn admit(
        &self,
        account: &str,
        limits: Limits,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<(), Refusal> {
        let now = epoch_micros();
        let longest = max_wait.as_micros() as f64;
        let start = self.with(account, |cells| {
            let (start, next) = reserve(*cells, now, limits, tokens, longest)?;
            *cells = next;
            Some(start)
        });
        let Some(start) = start else {
            let (start, _) = self
                .with(account, |cells| {
                    reserve(*cells, now, limits, tokens, f64::MAX)
                })
                .unwrap_or_default();
            return Err(Refusal::TooFar(Duration::from_micros((start - now) as u64)));
        };
        let wait = Duration::from_micros((start - now).max(0.0) as u64);
        wait_for_turn(wait, max_wait, || async {
            let until = self.with(account, |cells| cells.paused_until);
            Duration::from_micros((until - epoch_micros()).max(0.0) as u64)
        })
        .await
    }

    async fn correct(&self, account: &str, limits: Limits, delta_tokens: i64) {
        let (interval, _) = Limits::cell(limits.tokens_per_minute);
        self.with(account, |cells| {
            cells.tokens += delta_tokens as f64 * interval
        });
    }

    async fn pause(&self, account: &str, pause: Duration) {
        let until = epoch_micros() + pause.as_micros() as f64;
        self.with(account, |cells| {
            cells.paused_until = cells.paused_until.max(until)
        });
    }
}

/// The account in Redis, shared by every node: one script reads and moves the cells at the
/// server's clock, so nodes whose clocks differ still take turns in one order.
pub struct RedisRateLimiter {
    pool: deadpool_redis::Pool,
    prefix: String,
}

/// KEYS: requests, tokens, pause. ARGV: request interval, request window, token interval,
/// token window (µs), tokens, longest wait (µs). Returns the wait in µs, or -1 and the wait
/// when refused. The same account as [`reserve`].
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function start_of(key, cost, interval, window)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local start = tat + math.min(cost * interval, window) - window
  if start < now then start = now end
  return start, tat
end
local ri, rw, ti, tw = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
local rs, rtat = start_of(KEYS[1], 1, ri, rw)
local ts, ttat = start_of(KEYS[2], tokens, ti, tw)
local start = math.max(rs, ts)
local paused = tonumber(redis.call('GET', KEYS[3]) or 0)
if paused > start then start = paused end
local wait = start - now
if wait > max_wait then return {-1, string.format('%.0f', wait)} end
local function keep(key, tat)
  local ttl = math.ceil((tat - now) / 1000) + 60000
  redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
end
keep(KEYS[1], math.max(rtat, start) + ri)
keep(KEYS[2], math.max(ttat, start) + tokens * ti)
return {0, string.format('%.0f', wait)}
";

/// KEYS: tokens. ARGV: the correction in µs. The key lives a minute past its new `tat`.
const CORRECT: &str = r"
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local moved = tat + tonumber(ARGV[1])
local ttl = math.ceil((moved - now) / 1000) + 60000
if ttl < 60000 then ttl = 60000 end
redis.call('SET', KEYS[1], string.format('%.0f', moved), 'PX', ttl)
return 1
";

/// KEYS: pause. Returns the µs the pause has left (0 when none).
const PAUSE_LEFT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[1]) or 0)
if paused <= now then return '0' end
return string.format('%.0f', paused - now)
";

/// KEYS: pause. ARGV: the pause in µs.
const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or 0)
if paused < until_ then
  redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
";

impl RedisRateLimiter {
    /// A pool on `url` (`redis://host:port`); keys are `<prefix>:llm:limit:{<account>}:…`.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, String> {
        let pool = super::cache::redis_pool(url)?;
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
        })
    }

    /// The keys of `account`, in one hash slot (a Redis cluster runs the script on one node).
    fn key(&self, account: &str, cell: &str) -> String {
        format!("{}:llm:limit:{{{account}}}:{cell}", self.prefix)
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<T, String> {
        let mut connection = self.pool.get().await.map_err(|e| e.to_string())?;
        let mut command = redis::cmd("EVAL");
        command.arg(script).arg(keys.len());
        for key in keys {
            command.arg(key);
        }
        for arg in args {
            command.arg(arg);
        }
        command
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn admit(
        &self,
        account: &str,
        limits: Limits,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<(), Refusal> {
        let (ri, rw) = Limits::cell(limits.requests_per_minute);
        let (ti, tw) = Limits::cell(limits.tokens_per_minute);
        let keys = ["requests", "tokens", "pause"].map(|cell| self.key(account, cell));
        let args = [
            format!("{ri:.3}"),
            format!("{rw:.3}"),
            format!("{ti:.3}"),
            format!("{tw:.3}"),
            tokens.to_string(),
            max_wait.as_micros().to_string(),
        ];
        let (refused, wait): (i64, String) = self
            .eval(ADMIT, &keys, &args)
            .await
            .map_err(Refusal::Unavailable)?;
        let wait = Duration::from_micros(wait.parse::<f64>().unwrap_or(0.0).max(0.0) as u64);
        if refused < 0 {
            return Err(Refusal::TooFar(wait));
        }
        let pause = self.key(account, "pause");
        wait_for_turn(wait, max_wait, || async {
            // A pause that cannot be read holds nothing more: the turn was given.
            let left: String = self
                .eval(PAUSE_LEFT, std::slice::from_ref(&pause), &[])
                .await
                .unwrap_or_else(|_| "0".into());
            Duration::from_micros(left.parse::<f64>().unwrap_or(0.0).max(0.0) as u64)
        })
        .await
    }

    async fn correct(&self, account: &str, limits: Limits, delta_tokens: i64) {
        let (interval, _) = Limits::cell(limits.tokens_per_minute);
        let shift = format!("{:.0}", delta_tokens as f64 * interval);
        if let Err(e) = self
            .eval::<i64>(CORRECT, &[self.key(account, "tokens")], &[shift])
            .await
        {
            tracing::warn!(error = %e, "could not correct a rate limit reservation");
        }
    }

    async fn pause(&self, account: &str, pause: Duration) {
        let micros = pause.as_micros().to_string();
        if let Err(e) = self
            .eval::<i64>(PAUSE, &[self.key(account, "pause")], &[micros])
            .await
        {
            tracing::warn!(error = %e, "could not share a provider's pause");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        requests_per_minute: 600,
        tokens_per_minute: 60_000,
    };

    /// Turns of calls made all at once at `now`: the first twentieth of the minute goes at
    /// once, the rest one interval apart.
    #[test]
    fn turns_follow_the_window_then_the_rate() {
        let now = 1e15;
        let mut cells = Cells::default();
        let mut starts = Vec::new();
        for _ in 0..40 {
            let (start, next) = reserve(cells, now, LIMITS, 10, f64::MAX).unwrap();
            cells = next;
            starts.push(start - now);
        }
        assert!(starts[..30].iter().all(|s| *s == 0.0), "{starts:?}");
        // 600 a minute: 100 ms apart after the window.
        assert_eq!(starts[30], 100_000.0);
        assert_eq!(starts[39], 1_000_000.0);
    }

    #[test]
    fn tokens_bind_when_they_run_out_first_and_a_far_turn_is_refused_unreserved() {
        let now = 1e15;
        // 3,000 tokens at once: the window; the next 1,000 tokens take a second.
        let (start, cells) = reserve(Cells::default(), now, LIMITS, 3_000, f64::MAX).unwrap();
        assert_eq!(start, now);
        let (start, _) = reserve(cells, now, LIMITS, 1_000, f64::MAX).unwrap();
        assert_eq!(start - now, 1_000_000.0);
        assert!(reserve(cells, now, LIMITS, 1_000, 999_999.0).is_none());
        // Larger than the window, on an idle account: at once; the next waits for all of it.
        let (start, cells) = reserve(Cells::default(), now, LIMITS, 6_000, f64::MAX).unwrap();
        assert_eq!(start, now);
        let (start, _) = reserve(cells, now, LIMITS, 1_000, f64::MAX).unwrap();
        assert_eq!(start - now, 4_000_000.0);
    }

    /// A pause set while a call waited for its turn holds it too; one past the longest wait
    /// refuses it.
    #[test]
    fn a_pause_set_during_the_wait_holds_a_turn_already_given() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = LocalRateLimiter::new();
            let limits = Limits {
                requests_per_minute: 6_000,
                tokens_per_minute: 1_000_000,
            };
            let max = Duration::from_secs(5);
            // The window's turns, then one 10 ms away.
            for _ in 0..300 {
                limiter.admit("a", limits, 1, max).await.unwrap();
            }
            let start = std::time::Instant::now();
            let (turn, ()) = tokio::join!(limiter.admit("a", limits, 1, max), async {
                limiter.pause("a", Duration::from_millis(300)).await;
            });
            turn.unwrap();
            assert!(
                start.elapsed() >= Duration::from_millis(280),
                "{:?}",
                start.elapsed()
            );
            limiter.pause("a", Duration::from_secs(60)).await;
            assert!(
                matches!(limiter.admit("b", limits, 1, max).await, Ok(())),
                "another account is not paused"
            );
            let refused = limiter.admit("a", limits, 1, max).await;
            assert!(matches!(refused, Err(Refusal::TooFar(_))), "{refused:?}");
        });
    }

    #[test]
    fn a_pause_holds_every_turn() {
        let now = 1e15;
        let cells = Cells {
            paused_until: now + 2e6,
            ..Cells::default()
        };
        let (start, _) = reserve(cells, now, LIMITS, 1, f64::MAX).unwrap();
        assert_eq!(start - now, 2e6);
    }
}
