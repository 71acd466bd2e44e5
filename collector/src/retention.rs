//! Retention on servers without TTL: drop daily partitions older than the
//! retention period. (Servers with TTL get `MODIFY TTL` at start instead.)

use std::time::Duration;

use crate::schema::RETAINED_TABLES;
use crate::store::Store;

/// Drops partitions older than `days`; returns how many were dropped.
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
    Ok(dropped)
}

/// Runs [`drop_expired`] hourly until the task is dropped.
pub async fn run(store: std::sync::Arc<Store>, days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if let Err(e) = drop_expired(&store, days).await {
            tracing::warn!("retention: {e:#}");
        }
    }
}
