//! The Redis side of the read model: one hash per hour, `{prefix}:hour:{hour_ms}`, mapping
//! source partition → `offset:clicks:impressions:unique_users:newest_received_at`.
//!
//! Writes go through one Lua script that applies each partial only if its offset is newer
//! than the stored one, and that, in `update` mode, refuses to touch a key that does not
//! exist: a key is only ever created whole (from PostgreSQL), never from a few changed
//! partitions, so Redis never holds an incomplete set of an hour's partials.

use analytics_model::event::Partial;
use analytics_model::hour::{HourStart, Millis};
use clap::Args;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, Script};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Redis connection.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL. Run Redis as a cache without persistence: after a restart it must be empty,
    /// never an older snapshot (it is rebuilt from PostgreSQL).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Prefix of every Redis key written or read.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "analytics")]
    pub redis_key_prefix: String,
}

impl RedisArgs {
    /// The store these flags name (connected on first use).
    pub fn store(&self) -> anyhow::Result<std::sync::Arc<RedisStore>> {
        use anyhow::Context;
        let store = RedisStore::new(&self.redis_url, &self.redis_key_prefix)
            .context("parsing --redis-url")?;
        Ok(std::sync::Arc::new(store))
    }
}

/// After a failed connection attempt, fail fast for this long instead of making every
/// caller wait for its own attempt.
const RECONNECT_HOLD_OFF: Duration = Duration::from_millis(500);

const MERGE_SCRIPT: &str = r#"
-- KEYS[1]: hour key. ARGV[1]: 'update' (only if the key exists) or 'create'.
-- ARGV[2]: minimum TTL in seconds. Then field, value pairs; a value starts with its offset.
if ARGV[1] == 'update' and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local applied = 0
for i = 3, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local new_off = tonumber(string.match(ARGV[i + 1], '^%-?%d+'))
  if (not cur) or tonumber(string.match(cur, '^%-?%d+')) < new_off then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    applied = applied + 1
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local ttl = tonumber(ARGV[2])
  local cur_ttl = redis.call('TTL', KEYS[1])
  if cur_ttl < ttl then
    redis.call('EXPIRE', KEYS[1], ttl)
  end
end
return applied
"#;

/// How a merge should treat a missing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    /// Apply only if the hour's key exists (incremental update).
    Update,
    /// Create the key if missing; the caller passes every partial of the hour.
    Create,
}

/// Result of a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The key did not exist (update mode): rebuild it whole.
    Missing,
    /// Number of partials that were newer than what Redis held.
    Applied(u32),
}

/// A lazily connected, self-reconnecting Redis handle.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    script: Script,
    last_connect_failure: Mutex<Option<Instant>>,
}

/// Encodes a partial as the hash field value.
pub fn encode(p: &Partial) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        p.offset, p.clicks, p.impressions, p.unique_users, p.newest_received_at
    )
}

/// Decodes a hash field (partition) and value back into a partial of `hour`.
pub fn decode(hour: HourStart, field: &str, value: &str) -> Option<Partial> {
    let mut it = value.split(':');
    let mut next = || it.next().and_then(|s| s.parse::<i64>().ok());
    let offset = next()?;
    let clicks = next()?;
    let impressions = next()?;
    let unique_users = next()?;
    let newest_received_at = next().unwrap_or(0);
    Some(Partial {
        hour,
        partition: field.parse().ok()?,
        clicks: u64::try_from(clicks).ok()?,
        impressions: u64::try_from(impressions).ok()?,
        unique_users: u64::try_from(unique_users).ok()?,
        offset,
        newest_received_at: Millis(newest_received_at),
    })
}

impl RedisStore {
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            prefix: prefix.to_owned(),
            script: Script::new(MERGE_SCRIPT),
            last_connect_failure: Mutex::new(None),
        })
    }

    pub fn key(&self, hour: HourStart) -> String {
        format!("{}:hour:{hour}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let failed_recently = self
            .last_connect_failure
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| t.elapsed() < RECONNECT_HOLD_OFF);
        if failed_recently {
            return Err(RedisError::from((
                redis::ErrorKind::IoError,
                "redis unreachable (holding off reconnect)",
            )));
        }
        let c = self
            .conn
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(Duration::from_secs(2))
                    .set_number_of_retries(1)
                    .set_max_delay(500);
                ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await
            .inspect_err(|_| {
                *self.last_connect_failure.lock().expect("not poisoned") = Some(Instant::now());
            })?;
        Ok(c.clone())
    }

    /// Every partial stored for `hour`; `None` when the key does not exist.
    pub async fn partials(&self, hour: HourStart) -> Result<Option<Vec<Partial>>, RedisError> {
        let mut c = self.conn().await?;
        let fields: Vec<(String, String)> = c.hgetall(self.key(hour)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            fields
                .iter()
                .filter_map(|(f, v)| decode(hour, f, v))
                .collect(),
        ))
    }

    /// The partials of every hour of `hours`, in one pipelined round trip; `None` for an
    /// hour whose key does not exist.
    pub async fn partials_many(
        &self,
        hours: &[HourStart],
    ) -> Result<Vec<Option<Vec<Partial>>>, RedisError> {
        if hours.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for &h in hours {
            pipe.hgetall(self.key(h));
        }
        let replies: Vec<Vec<(String, String)>> = pipe.query_async(&mut c).await?;
        Ok(hours
            .iter()
            .zip(replies)
            .map(|(&hour, fields)| {
                (!fields.is_empty()).then(|| {
                    fields
                        .iter()
                        .filter_map(|(f, v)| decode(hour, f, v))
                        .collect()
                })
            })
            .collect())
    }

    /// Applies partials of one hour with the offset guard; see [`MergeMode`].
    pub async fn merge(
        &self,
        hour: HourStart,
        partials: &[Partial],
        mode: MergeMode,
        min_ttl: Duration,
    ) -> Result<MergeOutcome, RedisError> {
        let mut c = self.conn().await?;
        let mut inv = self.script.prepare_invoke();
        inv.key(self.key(hour))
            .arg(match mode {
                MergeMode::Update => "update",
                MergeMode::Create => "create",
            })
            .arg(min_ttl.as_secs().max(1));
        for p in partials {
            debug_assert_eq!(p.hour, hour);
            inv.arg(p.partition).arg(encode(p));
        }
        let n: i64 = inv.invoke_async(&mut c).await?;
        Ok(if n < 0 {
            MergeOutcome::Missing
        } else {
            MergeOutcome::Applied(n as u32)
        })
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let p = Partial {
            hour: HourStart::new(3_600_000).unwrap(),
            partition: 7,
            clicks: 1,
            impressions: 2,
            unique_users: 3,
            offset: 12345,
            newest_received_at: Millis(99),
        };
        assert_eq!(decode(p.hour, "7", &encode(&p)), Some(p));
        assert_eq!(decode(p.hour, "x", "1:2:3:4"), None);
        assert_eq!(decode(p.hour, "1", "1:2:3"), None);
        assert_eq!(decode(p.hour, "1", "1:-2:3:4"), None);
    }
}
