//! Report ids a worker of this process is storing right now.
//!
//! The store's check-then-insert is exact only if no one else stores a copy
//! of the same report between the check and the insert. Two copies can sit in
//! the batches of two workers at once (a resend through another region after
//! the duplicate window, while the collector catches up on a backlog): the
//! second worker waits here until the first has written, then finds the
//! report stored. Only batches that share a report wait; the others are
//! stored side by side as before.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Longest wait for another worker's write of the same reports (it is one
/// ClickHouse round trip or a failure; a retry comes back here).
const WAIT_MAX: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct InFlight {
    ids: Mutex<HashSet<[u8; 16]>>,
    released: Notify,
}

/// Held while a batch is written; releases its ids when dropped.
pub struct Reservation<'a> {
    owner: &'a InFlight,
    ids: Vec<[u8; 16]>,
}

impl InFlight {
    /// Reserves `ids`, after any other worker holding one of them has
    /// finished; an error after [`WAIT_MAX`].
    pub async fn reserve(
        &self,
        ids: impl IntoIterator<Item = [u8; 16]>,
    ) -> anyhow::Result<Reservation<'_>> {
        let ids: Vec<[u8; 16]> = ids
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            // Registered before looking, so a release in between still wakes us.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut held = self.ids.lock().expect("in-flight ids poisoned");
                if !ids.iter().any(|id| held.contains(id)) {
                    held.extend(ids.iter().copied());
                    return Ok(Reservation { owner: self, ids });
                }
            }
            tokio::time::timeout_at(deadline, released)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "another worker has been storing copies of these reports for {WAIT_MAX:?}"
                    )
                })?;
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = self.owner.ids.lock().expect("in-flight ids poisoned");
        for id in &self.ids {
            held.remove(id);
        }
        drop(held);
        self.owner.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_batches_sharing_a_report_wait_for_each_other() {
        let in_flight = InFlight::default();
        let first = in_flight.reserve([[1; 16], [2; 16]]).await.unwrap();
        let other = in_flight.reserve([[3; 16]]).await.unwrap();
        let shared = in_flight.reserve([[2; 16], [4; 16]]);
        tokio::pin!(shared);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), shared.as_mut())
                .await
                .is_err(),
            "a batch sharing report 2 went ahead"
        );
        drop(other);
        drop(first);
        let shared = tokio::time::timeout(Duration::from_secs(1), shared)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(shared.ids.len(), 2);
        drop(shared);
        assert!(in_flight.ids.lock().unwrap().is_empty());
    }
}
