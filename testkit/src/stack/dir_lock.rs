//! One stack per directory.
//!
//! A second `rallypoint up` on a running stack's directory used to rewrite
//! that stack's ClickHouse users, certificates and NATS credentials before
//! its own ClickHouse refused to start on the locked data directory: it
//! exited, and left the running stack's dashboard and collector unable to
//! log in. So a stack takes this lock before it touches anything in its
//! directory and holds it while it runs; the kernel releases it when the
//! process ends, however it ends (`flock`: a crash leaves no stale lock).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::Context;

/// Held while a stack runs on a directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes `dir`'s lock (creating `dir`), or says which process holds it
    /// and what to do.
    pub fn take(dir: &Path) -> anyhow::Result<DirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the stack's directory {}", dir.display()))?;
        let path = dir.join("stack.lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (process {holder})")
                };
                anyhow::bail!(
                    "another stack is running on {}{by}: stop it first (Ctrl-C where it runs), \
                     or start this one elsewhere with --dir",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message above; the lock is what counts.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_holds_one_stack_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::take(dir.path()).unwrap();
        let error = DirLock::take(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("another stack is running")
                && error.contains(&format!("process {}", std::process::id()))
                && error.contains("--dir"),
            "{error}"
        );
        drop(first);
        DirLock::take(dir.path()).expect("free again once the first stack is gone");
    }
}
