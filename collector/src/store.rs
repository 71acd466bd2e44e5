//! Writing to ClickHouse, exactly once per report id — whatever relay, region
//! or time a copy arrives through.
//!
//! JetStream delivers at least once, and a report can arrive as several
//! messages: a collector that crashes after its insert but before its
//! acknowledgement sees the same message again, and a client that lost its
//! acks resends through another region, which after JetStream's duplicate
//! window is a new message with a new receive time. A write therefore:
//!
//! 1. looks the batch's report ids up in the key table (`keys`), which is
//!    filed by the report's own clock, not by when a copy arrived;
//! 2. claims the ids it did not find, with this copy's receive second;
//! 3. files every report under its *first* copy's receive second;
//! 4. asks which of the batch's report ids each base table already holds at
//!    those seconds and inserts only the rest — per table, candidates first,
//!    so a batch whose candidate insert succeeded and election insert failed
//!    is completed, not doubled, on retry.
//!
//! The materialized rollups count inserts, not rows that survive merging, so
//! only rows that passed this check ever reach them: every rollup counts each
//! report once. Except after an insert that failed half-way: ClickHouse
//! writes a table's rows, then pushes them into its views one by one, and
//! keeps the rows when a view fails. The retry finds them stored and skips
//! them, so the views after the one that failed never count them; which
//! views did cannot be told from here. The collector says so (`ingest`:
//! counted, and logged with the days to rebuild) and `rebuild-rollups`
//! repairs those days from the raw tables. The base tables are also `ReplacingMergeTree`s on
//! (first receive second, report id) for the one case the check cannot see:
//! two writers storing copies of the same report at the same instant.
//! Within one process the workers never do (`in_flight`), and only one
//! process stores at a time (`lease`: ClickHouse has no lock to do it
//! with). What is left is stated in `lease`: a write already under way when
//! its process's lease lapses.
//!
//! Why a key table and not another sorting key for the base tables: the
//! rollups' views and the dashboards read the base tables by receive time, a
//! deployment's existing tables would have to be copied to change their key,
//! and the key table is small (three columns) and filled from the existing
//! elections by a migration, so copies of reports stored before the upgrade
//! are recognised too. (Stop the collectors of the old version before
//! starting the new one: reports an old collector stores after the migration
//! have no key.)
//!
//! The base-table check is most of what a write costs ClickHouse if done
//! naively (a list of thousands of ids to parse, a function applied to every
//! scanned row), so it asks by the seconds the batch was received in — the
//! sorting key's prefix — and intersects in Rust. A live batch spans a second
//! or two; a batch spread over many seconds (a replayed, interleaved backlog,
//! or late copies filed at their first copies' seconds) asks for its ids at
//! their seconds instead.

use std::collections::{BTreeSet, HashSet};

use clickhouse::{Client, Row};
use rallypoint_service::clickhouse::ClickHouseArgs;
use serde::Deserialize;

use crate::in_flight::InFlight;
use crate::keys::{self, KeyRow};
use crate::layout::Layout;
use crate::rows::{CandidateRow, DeadLetterRow, ElectionRow, ReportRows};
use crate::schema::{self, ServerVersion};

/// Reports per explicit existence query (about 80 bytes of SQL each).
const ID_CHECK_CHUNK: usize = 2000;
/// Batches received over more distinct seconds than this are checked by id.
const SECONDS_CHECK_MAX: usize = 16;

#[derive(Row, Deserialize)]
struct StoredId {
    report_id: [u8; 16],
}

pub struct Store {
    client: Client,
    pub version: ServerVersion,
    pub layout: Layout,
    in_flight: InFlight,
}

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub elections: usize,
    pub candidates: usize,
    pub dead_letters: usize,
    /// Reports already stored (a redelivery): acknowledged, not inserted.
    pub duplicates: usize,
    /// Reports whose candidate rows, and whose election row, the base
    /// tables already held: the duplicates, and reports an earlier attempt
    /// at this write stored before it failed (see [`InsertFailed`]).
    pub found_candidates: usize,
    pub found_elections: usize,
}

impl Store {
    /// Connects as an administrator, applies migrations and (where the
    /// server has TTL) the retention period: what `rallypoint-collector setup`
    /// and tests do. The store keeps the administrator's long I/O deadline
    /// ([`crate::for_long_statements`]) for whatever it runs next — a
    /// cluster's `ON CLUSTER` mutation answers only once every replica has
    /// taken it, which a replica that has just restarted can delay past the
    /// running collector's deadline.
    pub async fn open(login: &ClickHouseArgs, retention_days: u32) -> anyhow::Result<Store> {
        let store = Self::client_for(&crate::for_long_statements(login)).await?;
        schema::migrate(&store.client, &store.layout).await?;
        if store.version.has_ttl() {
            let retained = schema::RETAINED_TABLES
                .iter()
                .chain(schema::RETAINED_UNPARTITIONED);
            for (table, column) in retained {
                let table = store.layout.local_table(table);
                let ttl = format!("TTL {column} + toIntervalDay({retention_days})");
                // MODIFY TTL makes current servers rewrite every part to
                // apply it: only when the period changed, not on each daily
                // setup run.
                let engine: String = store
                    .client
                    .query(
                        "SELECT engine_full FROM system.tables \
                         WHERE database = currentDatabase() AND name = ?",
                    )
                    .bind(&table)
                    .fetch_one()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read the definition of {table}: {e}"))?;
                if engine.contains(&ttl) {
                    continue;
                }
                let on_cluster = store.layout.on_cluster();
                store
                    .client
                    .query(&format!("ALTER TABLE {table}{on_cluster} MODIFY {ttl}"))
                    .execute()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot set the retention TTL of {table}: {e}"))?;
            }
        }
        tracing::info!(version = ?store.version, url = %login.redacted_url(), database = %login.database, "ClickHouse schema ready");
        Ok(store)
    }

    /// Connects as the collector, whose user may read and insert but not
    /// change the schema: fails, saying to run `setup`, unless the database
    /// has exactly the schema this build writes.
    pub async fn connect(login: &ClickHouseArgs) -> anyhow::Result<Store> {
        let store = Self::client_for(login).await?;
        let applied = schema::applied_version(&store.client)
            .await
            .unwrap_or_default();
        let latest = schema::latest_version();
        if applied != latest {
            anyhow::bail!(
                "the ClickHouse schema is at version {applied}, this collector writes {latest}: \
                 run `rallypoint-collector setup` with the ClickHouse administrator first"
            );
        }
        tracing::info!(version = ?store.version, url = %login.redacted_url(), database = %login.database, "ClickHouse schema is current");
        Ok(store)
    }

    async fn client_for(login: &ClickHouseArgs) -> anyhow::Result<Store> {
        let layout = Layout::of(login)?;
        let mut base = login.client()?;
        if layout.is_clustered() {
            // An insert into a `Distributed` table answers once the rows are
            // in a replica, not queued on this server's disk: an
            // acknowledged report is stored.
            base = base.with_setting("insert_distributed_sync", "1");
        }
        let version = schema::server_version(&base).await?;
        // Typed RowBinary lets the client check rows against the table schema;
        // servers before it (Debian's 18.16) take plain RowBinary.
        let client = base.with_validation(version.has_typed_row_binary());
        Ok(Store {
            client,
            version,
            layout,
            in_flight: InFlight::default(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn ping(&self) -> bool {
        self.client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .is_ok()
    }

    /// Stores reports and dead letters; safe to call again with the same input.
    pub async fn write(
        &self,
        reports: &[ReportRows],
        dead: &[DeadLetterRow],
    ) -> anyhow::Result<Written> {
        let mut written = Written::default();
        if !reports.is_empty() {
            // Copies of these reports other workers of this process are
            // storing right now are waited for, then found stored.
            let _writing = self
                .in_flight
                .reserve(reports.iter().map(|r| r.election.report_id))
                .await?;
            let first_seen = keys::first_seen(&self.client, reports).await?;
            let claims: Vec<KeyRow> = keys::claims(
                reports
                    .iter()
                    .filter(|r| !first_seen.contains_key(&r.election.report_id)),
            );
            self.insert("rp_report_keys", &claims.iter().collect::<Vec<_>>())
                .await?;
            // Later copies are filed where their first copy was.
            let refiled: Vec<ReportRows> = reports
                .iter()
                .filter_map(|r| {
                    let first = *first_seen.get(&r.election.report_id)?;
                    (first != r.election.received_at).then(|| r.received_at(first))
                })
                .collect();
            let reports: Vec<&ReportRows> = reports
                .iter()
                .filter(|r| {
                    first_seen
                        .get(&r.election.report_id)
                        .is_none_or(|first| *first == r.election.received_at)
                })
                .chain(&refiled)
                .collect();

            let have_candidates = self.existing("rp_candidates", &reports).await?;
            let have_elections = self.existing("rp_elections", &reports).await?;

            let candidates: Vec<&CandidateRow> = reports
                .iter()
                .filter(|r| !have_candidates.contains(&r.election.report_id))
                .flat_map(|r| &r.candidates)
                .collect();
            self.insert("rp_candidates", &candidates).await?;
            let elections: Vec<&ElectionRow> = reports
                .iter()
                .map(|r| &r.election)
                .filter(|e| !have_elections.contains(&e.report_id))
                .collect();
            self.insert("rp_elections", &elections).await?;
            written.candidates = candidates.len();
            written.elections = elections.len();
            written.duplicates = reports.len() - elections.len();
            written.found_candidates = have_candidates.len();
            written.found_elections = have_elections.len();
        }
        if !dead.is_empty() {
            let dead: Vec<&DeadLetterRow> = dead.iter().collect();
            self.insert("rp_dead_letters", &dead).await?;
            written.dead_letters = dead.len();
        }
        Ok(written)
    }

    /// Which of `reports` (at their receive seconds) `table` already holds.
    async fn existing(
        &self,
        table: &str,
        reports: &[&ReportRows],
    ) -> anyhow::Result<HashSet<[u8; 16]>> {
        let seconds: BTreeSet<u32> = reports.iter().map(|r| r.election.received_at).collect();
        if seconds.len() > SECONDS_CHECK_MAX {
            return self.existing_by_id(table, reports).await;
        }
        let ids: HashSet<[u8; 16]> = reports.iter().map(|r| r.election.report_id).collect();
        let stored: Vec<StoredId> = self
            .client
            .query(&format!(
                "SELECT DISTINCT report_id FROM {table} WHERE received_at IN ({})",
                keys::seconds_list(seconds)
            ))
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("cannot check {table} for stored reports: {e}"))?;
        Ok(stored
            .into_iter()
            .map(|row| row.report_id)
            .filter(|id| ids.contains(id))
            .collect())
    }

    /// The same, asking for the ids at their own seconds (a backlog spread
    /// over many seconds, or late copies filed at their first copies').
    async fn existing_by_id(
        &self,
        table: &str,
        reports: &[&ReportRows],
    ) -> anyhow::Result<HashSet<[u8; 16]>> {
        let mut found = HashSet::new();
        // Chunks keep each query far below ClickHouse's max_query_size (256 KiB).
        for chunk in reports.chunks(ID_CHECK_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT report_id FROM {table} WHERE {}",
                keys::in_seconds_with_ids(
                    "received_at",
                    chunk
                        .iter()
                        .map(|r| r.election.received_at)
                        .collect::<BTreeSet<_>>(),
                    chunk.iter().map(|r| &r.election.report_id),
                )
            );
            let hits: Vec<StoredId> = self
                .client
                .query(&sql)
                .fetch_all()
                .await
                .map_err(|e| anyhow::anyhow!("cannot check {table} for stored reports: {e}"))?;
            found.extend(hits.into_iter().map(|hit| hit.report_id));
        }
        Ok(found)
    }

    async fn insert<T>(&self, table: &'static str, rows: &[&T]) -> anyhow::Result<()>
    where
        T: clickhouse::RowWrite + for<'a> clickhouse::Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start an insert into {table}: {e}"))?;
        let failed =
            |e: clickhouse::error::Error| anyhow::anyhow!("{e}").context(InsertFailed { table });
        for row in rows {
            insert.write(*row).await.map_err(failed)?;
        }
        insert.end().await.map_err(failed)
    }
}

/// An insert into `table` failed once rows were sent: ClickHouse may have
/// kept them and failed in one of the table's views (module doc). The
/// collector reads it off a failed write (`anyhow`'s `downcast_ref`).
#[derive(Debug, Clone, Copy)]
pub struct InsertFailed {
    pub table: &'static str,
}

impl std::fmt::Display for InsertFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "insert into {} failed", self.table)
    }
}
