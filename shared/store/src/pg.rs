//! The PostgreSQL side of the read model: table `hourly_partials`, one row per
//! (hour, source partition), written with an offset guard so that replays, duplicates and
//! reordering never move a number backwards. The schema is created by embedded migrations,
//! applied under an advisory lock on every (re)connection by a [`Role::Writer`].
//!
//! The migrations are hand-written rather than `refinery`'s: one table, applied in one
//! transaction under a PostgreSQL advisory lock so that materializers starting together
//! apply each migration once (refinery's tokio-postgres driver takes no lock: it would have to
//! be wrapped in one), in some forty lines, where
//! `refinery` would bring a TOML parser, regex and a proc-macro into the materializer's build.
//!
//! The query service connects as a [`Role::Reader`] (the `analytics_reader` role of
//! `deploy/postgres/roles.sql`, SELECT only): it applies no migration, and until the writer
//! has created the table, every hour simply has no rows there.

use analytics_model::event::Partial;
use analytics_model::hour::{HourStart, Millis, NotAnHour};
use clap::Args;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// PostgreSQL connection.
#[derive(Debug, Clone, Args)]
pub struct PostgresArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/analytics"
    )]
    pub postgres_url: String,
}

impl PostgresArgs {
    /// The store these flags name (connected on first use), as `role`; `service` names the
    /// connection.
    pub fn store(&self, role: Role, service: &str) -> anyhow::Result<std::sync::Arc<PgStore>> {
        use anyhow::Context;
        let store =
            PgStore::new(&self.postgres_url, role, service).context("parsing --postgres-url")?;
        Ok(std::sync::Arc::new(store))
    }
}

/// Migrations, applied in order; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS hourly_partials (
    hour_ms            BIGINT      NOT NULL,
    source_partition   INTEGER     NOT NULL,
    clicks             BIGINT      NOT NULL,
    impressions        BIGINT      NOT NULL,
    unique_users       BIGINT      NOT NULL,
    source_offset      BIGINT      NOT NULL,
    newest_received_at BIGINT      NOT NULL DEFAULT 0,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (hour_ms, source_partition)
)"#,
    crate::membership::MIGRATION,
];

/// Arbitrary constant naming the migration advisory lock.
const MIGRATION_LOCK: i64 = 0x616e_616c_7974_6963;

const UPSERT: &str = r#"
INSERT INTO hourly_partials
    (hour_ms, source_partition, clicks, impressions, unique_users, source_offset, newest_received_at)
SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
ON CONFLICT (hour_ms, source_partition) DO UPDATE SET
    clicks = EXCLUDED.clicks,
    impressions = EXCLUDED.impressions,
    unique_users = EXCLUDED.unique_users,
    source_offset = EXCLUDED.source_offset,
    newest_received_at = EXCLUDED.newest_received_at,
    updated_at = now()
WHERE hourly_partials.source_offset < EXCLUDED.source_offset
"#;

const SELECT_HOURS: &str = "SELECT hour_ms, source_partition, clicks, impressions, unique_users, source_offset, newest_received_at \
     FROM hourly_partials WHERE hour_ms = ANY($1)";

const SELECT_HOUR: &str = "SELECT source_partition, clicks, impressions, unique_users, source_offset, newest_received_at \
     FROM hourly_partials WHERE hour_ms = $1";

const SELECT_SUMS: &str = "SELECT hour_ms, sum(clicks)::bigint, sum(impressions)::bigint \
     FROM hourly_partials WHERE hour_ms >= $1 AND hour_ms < $2 GROUP BY hour_ms";

/// The partial of `hour` in `row`, whose columns from `first` on are source_partition, clicks,
/// impressions, unique_users, source_offset, newest_received_at.
fn partial(hour: HourStart, row: &tokio_postgres::Row, first: usize) -> Partial {
    Partial {
        hour,
        partition: row.get(first),
        clicks: row.get::<_, i64>(first + 1) as u64,
        impressions: row.get::<_, i64>(first + 2) as u64,
        unique_users: row.get::<_, i64>(first + 3) as u64,
        offset: row.get(first + 4),
        newest_received_at: Millis(row.get(first + 5)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres connection timed out")]
    Timeout,
    #[error("postgres holds a row whose hour_ms {0}")]
    NotAnHour(#[from] NotAnHour),
    #[error("postgres holds a {0}")]
    Set(#[from] crate::membership::SetError),
}

/// What a service does with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Applies the migrations and writes partials (the materializer).
    Writer,
    /// Only reads (the query service); may connect as a role without any write privilege.
    Reader,
}

/// A single multiplexed connection (tokio-postgres pipelines concurrent queries on it),
/// re-established on demand after it breaks.
pub struct PgStore {
    config: tokio_postgres::Config,
    role: Role,
    client: Mutex<Option<Arc<Client>>>,
}

impl PgStore {
    /// A store for `url`; `service` names the connection (`application_name`).
    pub fn new(url: &str, role: Role, service: &str) -> Result<Self, PgError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(Duration::from_secs(2));
        config.application_name(format!("analytics-{service}"));
        Ok(Self {
            config,
            role,
            client: Mutex::new(None),
        })
    }

    pub(crate) async fn client(&self) -> Result<Arc<Client>, PgError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, connection) =
            tokio::time::timeout(Duration::from_secs(3), self.config.connect(NoTls))
                .await
                .map_err(|_| PgError::Timeout)??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        if self.role == Role::Writer {
            migrate(&client).await?;
        }
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Upserts partials with the offset guard, in one statement. The batch must hold at most
    /// one partial per (hour, partition) (the materializer deduplicates its batches). Returns rows changed.
    pub async fn upsert(&self, partials: &[Partial]) -> Result<u64, PgError> {
        if partials.is_empty() {
            return Ok(0);
        }
        let col = |f: fn(&Partial) -> i64| partials.iter().map(f).collect::<Vec<i64>>();
        let hours = col(|p| p.hour.ms());
        let parts: Vec<i32> = partials.iter().map(|p| p.partition).collect();
        let clicks = col(|p| p.clicks as i64);
        let imps = col(|p| p.impressions as i64);
        let users = col(|p| p.unique_users as i64);
        let offsets = col(|p| p.offset);
        let newest = col(|p| p.newest_received_at.0);
        let client = self.client().await?;
        let n = client
            .execute(
                UPSERT,
                &[&hours, &parts, &clicks, &imps, &users, &offsets, &newest],
            )
            .await?;
        Ok(n)
    }

    /// Every partial stored for `hour` (empty when the hour has no data).
    pub async fn partials(&self, hour: HourStart) -> Result<Vec<Partial>, PgError> {
        let rows = self.select(SELECT_HOUR, &[&hour.ms()]).await?;
        Ok(rows.iter().map(|r| partial(hour, r, 0)).collect())
    }

    /// Every partial stored for each of `hours`, in one query (hours without data are absent).
    pub async fn partials_many(
        &self,
        hours: &[HourStart],
    ) -> Result<std::collections::HashMap<HourStart, Vec<Partial>>, PgError> {
        let mut out: std::collections::HashMap<HourStart, Vec<Partial>> = Default::default();
        if hours.is_empty() {
            return Ok(out);
        }
        let hours: Vec<i64> = hours.iter().map(|h| h.ms()).collect();
        for r in &self.select(SELECT_HOURS, &[&hours]).await? {
            let hour = HourStart::new(r.get(0))?;
            out.entry(hour).or_default().push(partial(hour, r, 1));
        }
        Ok(out)
    }

    /// The clicks and impressions of each hour in `[start, end)` that has any, summed over
    /// partitions, in one query.
    pub async fn hour_sums(
        &self,
        start: HourStart,
        end: HourStart,
    ) -> Result<Vec<(HourStart, u64, u64)>, PgError> {
        let rows = self.select(SELECT_SUMS, &[&start.ms(), &end.ms()]).await?;
        rows.iter()
            .map(|r| {
                let (clicks, impressions): (i64, i64) = (r.get(1), r.get(2));
                Ok((HourStart::new(r.get(0))?, clicks as u64, impressions as u64))
            })
            .collect()
    }

    /// Runs a SELECT of partials. A reader started before the writer ever ran finds no
    /// table: that is no rows, not an error.
    pub(crate) async fn select(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, PgError> {
        let client = self.client().await?;
        match client.query(sql, params).await {
            Ok(rows) => Ok(rows),
            Err(e)
                if self.role == Role::Reader
                    && e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `SELECT 1`, for readiness (also applies migrations on first contact).
    pub async fn ping(&self) -> Result<(), PgError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

async fn migrate(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .or_else(|e| {
            // Two instances racing on the very first CREATE TABLE IF NOT EXISTS.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await?
        .get(0);
    if applied as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    client.batch_execute("BEGIN").await?;
    let result = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            let done = client
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[&version],
                )
                .await?
                .is_some();
            if !done {
                client.batch_execute(sql).await?;
                client
                    .execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        &[&version],
                    )
                    .await?;
                tracing::info!(version, "applied migration");
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await?,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
    }
    Ok(())
}
