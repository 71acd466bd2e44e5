//! A queue of items each released at its own time, in release-time order (not
//! arrival order: jitter may reorder datagrams, as it does with netem).
//!
//! One thread runs [`ReleaseQueue::run`]: it blocks on a condition variable
//! while the queue is empty (no CPU when idle), sleeps until [`SPIN_MARGIN`]
//! before the earliest release (woken early if an earlier item arrives) and
//! spins the rest of the way.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::timing::{SPIN_MARGIN, wait_until};

pub(crate) struct ReleaseQueue<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    capacity: usize,
}

struct State<T> {
    pending: BinaryHeap<Pending<T>>,
    /// Breaks ties between equal release times in arrival order.
    next_sequence: u64,
    stopped: bool,
}

struct Pending<T> {
    release_at: Instant,
    sequence: u64,
    item: T,
}

impl<T> ReleaseQueue<T> {
    /// A queue holding at most `capacity` items, like netem's `limit`.
    pub(crate) fn new(capacity: usize) -> ReleaseQueue<T> {
        ReleaseQueue {
            state: Mutex::new(State {
                pending: BinaryHeap::new(),
                next_sequence: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
            capacity,
        }
    }

    /// Queues `item` for `release_at`. Returns false (and drops the item) when
    /// the queue is full or stopped.
    pub(crate) fn push(&self, release_at: Instant, item: T) -> bool {
        let mut state = self.lock();
        if state.stopped || state.pending.len() >= self.capacity {
            return false;
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.pending.push(Pending {
            release_at,
            sequence,
            item,
        });
        drop(state);
        self.changed.notify_one();
        true
    }

    /// Hands each item and its release time to `release` at that time, until
    /// [`stop`](Self::stop).
    pub(crate) fn run(&self, mut release: impl FnMut(Instant, T)) {
        let mut state = self.lock();
        while !state.stopped {
            let Some(next) = state.pending.peek().map(|p| p.release_at) else {
                state = self.changed.wait(state).expect("release queue lock");
                continue;
            };
            let now = Instant::now();
            if next <= now {
                let due = state.pending.pop().expect("peeked above");
                drop(state);
                release(due.release_at, due.item);
                state = self.lock();
            } else if next - now > SPIN_MARGIN {
                let nap = next - now - SPIN_MARGIN;
                state = self.changed.wait_timeout(state, nap).expect("lock").0;
            } else {
                drop(state);
                wait_until(next);
                state = self.lock();
            }
        }
    }

    /// Ends [`run`](Self::run) and drops what is still queued.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        state.pending.clear();
        drop(state);
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().expect("release queue lock")
    }
}

// `BinaryHeap` is a max-heap: the earliest release compares greatest.
impl<T> Ord for Pending<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release_at, other.sequence).cmp(&(self.release_at, self.sequence))
    }
}

impl<T> PartialOrd for Pending<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Pending<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Pending<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn releases_in_release_time_order_never_early() {
        let queue = Arc::new(ReleaseQueue::new(16));
        let start = Instant::now();
        for (label, ms) in [("c", 6), ("a", 2), ("b", 4), ("b2", 4)] {
            assert!(queue.push(start + Duration::from_millis(ms), (label, ms)));
        }
        let runner = Arc::clone(&queue);
        let worker = std::thread::spawn(move || {
            let mut released = Vec::new();
            runner.run(|_, (label, ms)| {
                assert!(start.elapsed() >= Duration::from_millis(ms));
                released.push(label);
                if released.len() == 4 {
                    runner.stop();
                }
            });
            released
        });
        assert_eq!(worker.join().unwrap(), ["a", "b", "b2", "c"]);
        assert!(
            !queue.push(start, ("late", 0)),
            "a stopped queue takes nothing"
        );
    }

    #[test]
    fn drops_beyond_capacity() {
        let queue = ReleaseQueue::new(1);
        assert!(queue.push(Instant::now(), ()));
        assert!(!queue.push(Instant::now(), ()));
    }
}
