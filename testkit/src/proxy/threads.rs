//! The threads of one proxy, so that stopping it can wait for every one.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Default)]
pub(crate) struct Threads(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Threads {
    /// Starts a named thread (names show up in `top -H` and panics).
    pub(crate) fn spawn(
        &self,
        name: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(work)?;
        let mut handles = self.0.lock().expect("thread list lock");
        // Long-lived proxies see many short connections: forget finished ones.
        handles.retain(|handle| !handle.is_finished());
        handles.push(handle);
        Ok(())
    }

    /// Waits for every thread, including threads started while waiting. Must
    /// not be called from one of these threads.
    pub(crate) fn join_all(&self) {
        loop {
            let batch = std::mem::take(&mut *self.0.lock().expect("thread list lock"));
            if batch.is_empty() {
                return;
            }
            for handle in batch {
                let _ = handle.join();
            }
        }
    }
}
