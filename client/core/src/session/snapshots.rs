//! When the application redraws its live table of candidates.
//!
//! Whenever the election acts (connects, decides, switches, fails over) the
//! table changes in a way people should see at once; new probe answers only
//! move numbers, several times a second per candidate, so those redraws are
//! paced to one per [`SNAPSHOT_EVERY`].

use std::time::Duration;

use crate::time::Micros;

/// Live tables are redrawn at most this often while only measurements move.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
pub(super) struct SnapshotPacer {
    last: Option<Micros>,
    /// Measurements moved since `last`: redraw then.
    due: Option<Micros>,
}

impl SnapshotPacer {
    /// The election acted: redraw now.
    pub(super) fn acted(&mut self, now: Micros) -> bool {
        self.last = Some(now);
        self.due = None;
        true
    }

    /// Measurements moved: `true` to redraw now, else one is due later.
    pub(super) fn measured(&mut self, now: Micros) -> bool {
        match self.last {
            Some(last) if now.since(last) < SNAPSHOT_EVERY => {
                self.due.get_or_insert(last + SNAPSHOT_EVERY);
                false
            }
            _ => self.acted(now),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Micros> {
        self.due
    }

    /// `true` when a paced redraw is due.
    pub(super) fn handle_timeout(&mut self, now: Micros) -> bool {
        match self.due {
            Some(due) if due <= now => self.acted(now),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_redraw_at_most_every_interval_actions_at_once() {
        let ms = Micros::from_millis;
        let mut pacer = SnapshotPacer::default();
        assert!(pacer.measured(ms(0)), "the first one draws");
        assert!(!pacer.measured(ms(50)));
        assert!(!pacer.measured(ms(120)));
        assert_eq!(pacer.poll_timeout(), Some(ms(200)), "one redraw owed");
        assert!(!pacer.handle_timeout(ms(199)));
        assert!(pacer.handle_timeout(ms(200)));
        assert_eq!(pacer.poll_timeout(), None);
        assert!(pacer.acted(ms(210)), "an action never waits");
        assert!(!pacer.measured(ms(300)));
        assert!(pacer.acted(ms(301)), "and settles what was owed");
        assert_eq!(pacer.poll_timeout(), None);
    }
}
