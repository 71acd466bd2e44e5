//! Retention on servers without TTL: drop daily partitions older than the
//! retention period, and delete the expired rows of the few tables without
//! such partitions (dead letters): an administrator's DDL that
//! `rallypoint-collector setup` runs (the chart runs it daily on such
//! servers). Servers with TTL get `MODIFY TTL` in the same step instead.

use crate::schema::{RETAINED_TABLES, RETAINED_UNPARTITIONED};
use crate::store::Store;

/// Drops partitions older than `days` and deletes older rows from the
/// unpartitioned tables; returns how many partitions and tables it cleared.
pub async fn drop_expired(store: &Store, days: u32) -> anyhow::Result<usize> {
    let mut dropped = 0;
    for (table, _) in RETAINED_TABLES {
        let partitions: Vec<String> = store
            .client()
            .query(&format!(
                "SELECT DISTINCT partition FROM system.parts \
                 WHERE database = currentDatabase() AND table = '{table}' AND active \
                 AND toUInt32(partition) < toYYYYMMDD(today() - {days})"
            ))
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list partitions of {table}: {e}"))?;
        for partition in partitions {
            store
                .client()
                .query(&format!("ALTER TABLE {table} DROP PARTITION {partition}"))
                .execute()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot drop partition {partition} of {table}: {e}")
                })?;
            tracing::info!(table, partition, "dropped expired partition");
            dropped += 1;
        }
    }
    for (table, column) in RETAINED_UNPARTITIONED {
        let expired = format!("{column} < now() - toIntervalDay({days})");
        let rows: u64 = store
            .client()
            .query(&format!(
                "SELECT toUInt64(count()) FROM {table} WHERE {expired}"
            ))
            .fetch_one()
            .await
            .map_err(|e| anyhow::anyhow!("cannot count expired rows of {table}: {e}"))?;
        if rows == 0 {
            continue;
        }
        // A mutation: ClickHouse rewrites the affected parts in the background.
        store
            .client()
            .query(&format!("ALTER TABLE {table} DELETE WHERE {expired}"))
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("cannot delete expired rows of {table}: {e}"))?;
        tracing::info!(table, rows, "deleting expired rows");
        dropped += 1;
    }
    Ok(dropped)
}
