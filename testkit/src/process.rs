//! Child processes the lab starts: logs go to a file, SIGTERM stops them
//! politely, and dropping the handle never leaves an orphan behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program args…`, appending its stdout and stderr to `log`.
    pub fn spawn(
        name: impl Into<String>,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C in the terminal reaches only the
            // lab, which then stops its children in order (relays drain first).
            .process_group(0)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({}): {e}", program.display()))?;
        Ok(Process {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal (SIGTERM to ask for a graceful stop, SIGKILL to crash it).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} has already exited", self.name))?;
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| anyhow::anyhow!("cannot signal {}: {e}", self.name))
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Crashes the process (SIGKILL), as a machine failure would, and waits
    /// until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        const REAPED_WITHIN: Duration = Duration::from_secs(10);
        self.signal(Signal::SIGKILL)?;
        if self.wait(REAPED_WITHIN).await.is_none() {
            anyhow::bail!("{} outlived SIGKILL by {REAPED_WITHIN:?}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        if self.wait(grace).await.is_none() {
            tracing::warn!(name = %self.name, "did not stop within {grace:?}; killing it");
            let _ = self.child.kill().await;
        }
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn file_tail(path: &Path, lines: usize) -> String {
    file_tail_mentioning(path, "", lines)
}

/// The last `lines` lines of a log file that contain `what` (`""` keeps
/// every line; empty if the file cannot be read).
pub fn file_tail_mentioning(path: &Path, what: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text.lines().filter(|line| line.contains(what)).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}
