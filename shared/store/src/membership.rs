//! Durable membership: which users had an event in each (hour, source partition), kept in
//! PostgreSQL so that the number of distinct users over any set of hours is exact, long
//! after the processor has let those hours go.
//!
//! Users are numbered per source partition by a dictionary (`membership_users`: the 128-bit
//! user hashes of the processor's changelog deltas, in the order the partition's changelog
//! first names them), and each (hour, partition) is a roaring bitmap of those numbers
//! (`membership_hours`), with the union of each UTC day beside it (`membership_days`) so
//! that a month is some 30 unions, not 720. The distinct users of a set of hours are the
//! sum over partitions of the size of each partition's union: a user's events all land in
//! one partition (events are keyed by user), so no user is counted in two partitions.
//!
//! Written by the materializer (`materializer/src/membership.rs`) one transaction per batch
//! of a changelog partition, under the lock of that partition's `membership_progress` row,
//! which holds the next changelog offset to apply: a replay (or a second instance, a
//! zombie) finds the offsets already applied and skips them, so every record is applied
//! once and the numbering is the same whoever applies it.
//!
//! **Format.** A stored set is one byte, [`SET_FORMAT`] (now 1), then roaring's portable
//! serialization; a set of another format is an error, never guessed at. The dictionary
//! is a sequence of 16-byte little-endian hashes. `shared/store/fixtures/` holds a set as
//! format 1 wrote it.

use crate::pg::{PgError, PgStore};
use analytics_model::hour::{HourStart, Millis, HOUR_MS};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// A UTC day.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The format of a stored set (its first byte).
pub const SET_FORMAT: u8 = 1;

/// How long membership is kept (a flag of the materializer, which deletes it, and of the
/// query, which refuses ranges reaching past it).
#[derive(Debug, Clone, clap::Args)]
pub struct MembershipArgs {
    /// How long the users of each hour are kept for exact unique users over ranges
    /// (`/analytics/total`, `interval=day|week|month`); older membership is deleted, and a
    /// range reaching past it is refused. The hour counts are kept regardless.
    #[arg(long, env = "MEMBERSHIP_RETENTION", default_value = "400d", value_parser = analytics_model::duration::parse_duration)]
    pub membership_retention: std::time::Duration,
}

impl MembershipArgs {
    /// The oldest instant whose membership is still kept at `now`.
    pub fn horizon(&self, now: Millis) -> Millis {
        now.plus(-(self.membership_retention.as_millis() as i64))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("membership set of format {0}, newer than this build reads ({SET_FORMAT})")]
    UnknownFormat(u8),
    #[error("membership set that does not decode")]
    Malformed,
}

pub fn encode_set(set: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + set.serialized_size());
    out.push(SET_FORMAT);
    set.serialize_into(&mut out).expect("writing to a Vec");
    out
}

pub fn decode_set(bytes: &[u8]) -> Result<RoaringBitmap, SetError> {
    match bytes.split_first() {
        Some((&SET_FORMAT, rest)) => {
            RoaringBitmap::deserialize_from(rest).map_err(|_| SetError::Malformed)
        }
        Some((&other, _)) => Err(SetError::UnknownFormat(other)),
        None => Err(SetError::Malformed),
    }
}

/// The UTC day of `hour`.
pub fn day_of(hour: HourStart) -> i64 {
    hour.ms().div_euclid(DAY_MS) * DAY_MS
}

/// The stored sets whose union is exactly the users of the hours `[start, end)`: each whole
/// UTC day inside as its day set, the other hours one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cover {
    pub days: Vec<i64>,
    pub hours: Vec<i64>,
}

pub fn cover(start: HourStart, end: HourStart) -> Cover {
    let mut c = Cover::default();
    let mut t = start.ms();
    while t < end.ms() {
        if t % DAY_MS == 0 && t + DAY_MS <= end.ms() {
            c.days.push(t);
            t += DAY_MS;
        } else {
            c.hours.push(t);
            t += HOUR_MS;
        }
    }
    c
}

/// Stored sets read for some covers, by start and partition.
#[derive(Debug, Default)]
pub struct Sets {
    hours: HashMap<i64, Vec<(i32, RoaringBitmap)>>,
    days: HashMap<i64, Vec<(i32, RoaringBitmap)>>,
}

impl Sets {
    /// The distinct users of `cover`: per partition the size of the union, summed.
    pub fn distinct(&self, cover: &Cover) -> u64 {
        let mut per: BTreeMap<i32, RoaringBitmap> = BTreeMap::new();
        let days = cover.days.iter().filter_map(|d| self.days.get(d));
        let hours = cover.hours.iter().filter_map(|h| self.hours.get(h));
        for (partition, set) in days.chain(hours).flatten() {
            *per.entry(*partition).or_default() |= set;
        }
        per.values().map(RoaringBitmap::len).sum()
    }
}

const SELECT_HOURS: &str =
    "SELECT hour_ms, source_partition, users FROM membership_hours WHERE hour_ms = ANY($1)";
const SELECT_DAYS: &str =
    "SELECT day_ms, source_partition, users FROM membership_days WHERE day_ms = ANY($1)";

impl PgStore {
    /// Reads every set of `covers` in two queries.
    pub async fn membership(&self, covers: &[Cover]) -> Result<Sets, PgError> {
        let hours: Vec<i64> = covers
            .iter()
            .flat_map(|c| c.hours.iter().copied())
            .collect();
        let days: Vec<i64> = covers.iter().flat_map(|c| c.days.iter().copied()).collect();
        let (hp, dp): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) = (&[&hours], &[&days]);
        let (h, d) = tokio::join!(self.select(SELECT_HOURS, hp), self.select(SELECT_DAYS, dp));
        let mut sets = Sets::default();
        for (rows, into) in [(h?, &mut sets.hours), (d?, &mut sets.days)] {
            for row in rows {
                let set = decode_set(row.get::<_, &[u8]>(2))?;
                into.entry(row.get(0)).or_default().push((row.get(1), set));
            }
        }
        Ok(sets)
    }

    /// Deletes the membership of hours (and days) that start before `horizon`.
    pub async fn forget_membership_before(&self, horizon: Millis) -> Result<u64, PgError> {
        let client = self.client().await?;
        let hours = client
            .execute(
                "DELETE FROM membership_hours WHERE hour_ms < $1",
                &[&horizon.0],
            )
            .await?;
        let days = client
            .execute(
                "DELETE FROM membership_days WHERE day_ms < $1",
                &[&horizon.0],
            )
            .await?;
        Ok(hours + days)
    }

    /// Starts a transaction on this store's connection, which must then serve nothing
    /// else until it ends (the materializer gives membership a store of its own).
    pub async fn begin_membership(&self) -> Result<MembershipTx, PgError> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await?;
        Ok(MembershipTx { client })
    }
}

/// Where a partition's membership stands: the next changelog offset to apply and how many
/// users its dictionary numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub next_offset: i64,
    pub users: u32,
}

/// One transaction of membership writes ([`PgStore::begin_membership`]).
pub struct MembershipTx {
    client: Arc<Client>,
}

impl MembershipTx {
    /// Locks the partition's progress row (created at offset 0 when missing) and reads it.
    pub async fn lock(&self, partition: i32) -> Result<Progress, PgError> {
        self.client
            .execute(
                "INSERT INTO membership_progress (source_partition, next_offset, users) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING",
                &[&partition],
            )
            .await?;
        let row = self
            .client
            .query_one(
                "SELECT next_offset, users FROM membership_progress WHERE source_partition = $1 FOR UPDATE",
                &[&partition],
            )
            .await?;
        Ok(Progress {
            next_offset: row.get(0),
            users: row.get::<_, i32>(1) as u32,
        })
    }

    /// The dictionary's hashes from number `first` on, in order.
    pub async fn users_since(&self, partition: i32, first: u32) -> Result<Vec<u128>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT first_id, hashes FROM membership_users WHERE source_partition = $1 AND first_id + length(hashes) / 16 > $2 ORDER BY first_id",
                &[&partition, &(first as i32)],
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let first_id = row.get::<_, i32>(0) as u32;
            let hashes: &[u8] = row.get(1);
            let skip = first.saturating_sub(first_id) as usize;
            out.extend(
                hashes
                    .chunks_exact(16)
                    .skip(skip)
                    .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes"))),
            );
        }
        Ok(out)
    }

    /// Appends hashes numbered from `first` to the dictionary.
    pub async fn append_users(
        &self,
        partition: i32,
        first: u32,
        users: &[u128],
    ) -> Result<(), PgError> {
        if users.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = users.iter().flat_map(|u| u.to_le_bytes()).collect();
        self.client
            .execute(
                "INSERT INTO membership_users (source_partition, first_id, hashes) VALUES ($1, $2, $3)",
                &[&partition, &(first as i32), &bytes],
            )
            .await?;
        Ok(())
    }

    /// Adds `users` to the sets of their hours and of those hours' days.
    pub async fn merge(
        &self,
        partition: i32,
        users: &BTreeMap<HourStart, RoaringBitmap>,
    ) -> Result<(), PgError> {
        let mut days: BTreeMap<i64, RoaringBitmap> = BTreeMap::new();
        for (hour, set) in users {
            *days.entry(day_of(*hour)).or_default() |= set;
        }
        let hours = users.iter().map(|(h, s)| (h.ms(), s.clone())).collect();
        self.merge_into("membership_hours", "hour_ms", partition, hours)
            .await?;
        self.merge_into("membership_days", "day_ms", partition, days)
            .await
    }

    async fn merge_into(
        &self,
        table: &str,
        key: &str,
        partition: i32,
        mut sets: BTreeMap<i64, RoaringBitmap>,
    ) -> Result<(), PgError> {
        let starts: Vec<i64> = sets.keys().copied().collect();
        let select = format!(
            "SELECT {key}, users FROM {table} WHERE source_partition = $1 AND {key} = ANY($2)"
        );
        for row in self.client.query(&select, &[&partition, &starts]).await? {
            let stored = decode_set(row.get::<_, &[u8]>(1))?;
            if let Some(set) = sets.get_mut(&row.get::<_, i64>(0)) {
                *set |= stored;
            }
        }
        let blobs: Vec<Vec<u8>> = sets.values().map(encode_set).collect();
        let upsert = format!(
            "INSERT INTO {table} ({key}, source_partition, users) \
             SELECT t.s, $1, t.u FROM unnest($2::bigint[], $3::bytea[]) AS t(s, u) \
             ON CONFLICT ({key}, source_partition) DO UPDATE SET users = EXCLUDED.users"
        );
        self.client
            .execute(&upsert, &[&partition, &starts, &blobs])
            .await?;
        Ok(())
    }

    /// Moves the partition's progress to `progress`.
    pub async fn advance(&self, partition: i32, progress: Progress) -> Result<(), PgError> {
        self.client
            .execute(
                "UPDATE membership_progress SET next_offset = $2, users = $3, updated_at = now() WHERE source_partition = $1",
                &[&partition, &progress.next_offset, &(progress.users as i32)],
            )
            .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), PgError> {
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }

    /// Ends the transaction without its writes (best effort: a broken connection has
    /// ended it already).
    pub async fn rollback(self) {
        let _ = self.client.batch_execute("ROLLBACK").await;
    }
}

/// The membership tables (migration 2).
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE membership_progress (
    source_partition INTEGER     PRIMARY KEY,
    next_offset      BIGINT      NOT NULL,
    users            INTEGER     NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE membership_users (
    source_partition INTEGER NOT NULL,
    first_id         INTEGER NOT NULL,
    hashes           BYTEA   NOT NULL,
    PRIMARY KEY (source_partition, first_id)
);
ALTER TABLE membership_users ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE TABLE membership_hours (
    hour_ms          BIGINT  NOT NULL,
    source_partition INTEGER NOT NULL,
    users            BYTEA   NOT NULL,
    PRIMARY KEY (hour_ms, source_partition)
);
CREATE TABLE membership_days (
    day_ms           BIGINT  NOT NULL,
    source_partition INTEGER NOT NULL,
    users            BYTEA   NOT NULL,
    PRIMARY KEY (day_ms, source_partition)
);
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 1_764_979_200_000; // 2025-12-06T00:00:00Z

    fn hour(ms: i64) -> HourStart {
        HourStart::new(ms).unwrap()
    }

    #[test]
    fn a_cover_takes_whole_days_whole() {
        let c = cover(hour(DAY), hour(DAY + 3 * DAY_MS));
        assert_eq!(c.days, [DAY, DAY + DAY_MS, DAY + 2 * DAY_MS]);
        assert!(c.hours.is_empty());
        // 22:00 the day before to 02:00 two days later: 2 hours, a day, 2 hours.
        let c = cover(hour(DAY - 2 * HOUR_MS), hour(DAY + DAY_MS + 2 * HOUR_MS));
        assert_eq!(c.days, [DAY]);
        assert_eq!(
            c.hours,
            [
                DAY - 2 * HOUR_MS,
                DAY - HOUR_MS,
                DAY + DAY_MS,
                DAY + DAY_MS + HOUR_MS
            ]
        );
        // Less than a day: hours only.
        let c = cover(hour(DAY), hour(DAY + 23 * HOUR_MS));
        assert_eq!((c.days.len(), c.hours.len()), (0, 23));
    }

    #[test]
    fn distinct_is_per_partition_unions_summed() {
        let set = |ids: &[u32]| ids.iter().copied().collect::<RoaringBitmap>();
        let mut sets = Sets::default();
        sets.hours
            .insert(DAY, vec![(0, set(&[1, 2, 3])), (1, set(&[1]))]);
        sets.hours
            .insert(DAY + HOUR_MS, vec![(0, set(&[3, 4])), (1, set(&[1, 2]))]);
        sets.days.insert(DAY - DAY_MS, vec![(0, set(&[1, 9]))]);
        let c = Cover {
            days: vec![DAY - DAY_MS],
            hours: vec![DAY, DAY + HOUR_MS, DAY + 2 * HOUR_MS],
        };
        // partition 0: {1,2,3,4,9}; partition 1: {1,2} (the same numbers, other users).
        assert_eq!(sets.distinct(&c), 7);
        assert_eq!(sets.distinct(&Cover::default()), 0);
    }

    #[test]
    fn sets_round_trip_and_refuse_other_formats() {
        let set: RoaringBitmap = (0..5000).step_by(3).chain(70_000..70_010).collect();
        let bytes = encode_set(&set);
        assert_eq!(bytes[0], SET_FORMAT);
        assert_eq!(decode_set(&bytes), Ok(set));
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert_eq!(decode_set(&newer), Err(SetError::UnknownFormat(2)));
        assert_eq!(decode_set(&bytes[..5]), Err(SetError::Malformed));
        assert_eq!(decode_set(&[]), Err(SetError::Malformed));
    }

    /// A set as format 1 wrote it still reads (the fixture is never rewritten).
    #[test]
    fn format_1_fixture_reads() {
        let hex = include_str!("../fixtures/membership-set-format-1.hex");
        let bytes: Vec<u8> = (0..hex.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap())
            .collect();
        let set = decode_set(&bytes).unwrap();
        let expected: RoaringBitmap = [0, 1, 2, 100, 65_535, 65_536, 1_000_000]
            .into_iter()
            .collect();
        assert_eq!(set, expected);
    }
}
