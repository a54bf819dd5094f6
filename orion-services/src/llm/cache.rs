//! Response caches: in memory (embedded mode) and Redis (cluster mode).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use deadpool_redis::redis;

/// The name of the model response cache in `orion_cache_*` metrics.
pub const MODEL_RESPONSES: &str = "model_responses";

/// A cache of model answers by key. A cache that fails is a miss, never an error: the
/// call is then simply made.
#[async_trait]
pub trait ResponseCache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<String>;
    async fn put(&self, key: &str, value: &str);
}

/// An in-process cache, bounded: past `capacity` entries it starts over.
#[derive(Debug)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, String>>,
    capacity: usize,
}

impl MemoryCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            capacity: capacity.max(1),
        }
    }
}

#[async_trait]
impl ResponseCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<String> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    async fn put(&self, key: &str, value: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            crate::metrics::metrics()
                .cache_evictions
                .with_label_values(&[MODEL_RESPONSES])
                .inc_by(entries.len() as u64);
            entries.clear();
        }
        entries.insert(key.to_owned(), value.to_owned());
    }
}

/// A cache in Redis, shared by every node; entries expire after `ttl_secs`.
pub struct RedisCache {
    pool: deadpool_redis::Pool,
    prefix: String,
    ttl_secs: u64,
}

/// A connection pool on the Redis at `url` (`redis://host:port`): the model layer's one way
/// to Redis (the response cache, the rate limits).
pub(crate) fn redis_pool(url: &str) -> Result<deadpool_redis::Pool, String> {
    deadpool_redis::Config::from_url(url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .map_err(|e| e.to_string())
}

impl RedisCache {
    /// A pool on `url` (`redis://host:port`); keys are `<prefix>:llm:<key>`.
    pub fn connect(url: &str, prefix: &str, ttl_secs: u64) -> Result<Self, String> {
        let pool = redis_pool(url)?;
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            ttl_secs,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:llm:{key}", self.prefix)
    }
}

#[async_trait]
impl ResponseCache for RedisCache {
    async fn get(&self, key: &str) -> Option<String> {
        let mut connection = self
            .pool
            .get()
            .await
            .map_err(|e| tracing::warn!(error = %e, "cache unavailable"))
            .ok()?;
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async::<Option<String>>(&mut connection)
            .await
            .ok()
            .flatten()
    }

    async fn put(&self, key: &str, value: &str) {
        let Ok(mut connection) = self.pool.get().await else {
            return;
        };
        let stored: Result<(), _> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("EX")
            .arg(self.ttl_secs)
            .query_async(&mut connection)
            .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "could not cache a model response");
        }
    }
}
