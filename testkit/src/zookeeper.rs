//! A real ZooKeeper (Debian's 3.8) for a ClickHouse cluster's replication
//! and `ON CLUSTER` DDL: one standalone server with its own data directory
//! and a free loopback port.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bins;
use crate::ports::free_tcp;
use crate::process::Process;

/// Debian's `zookeeper` package puts the server here; its manifest names
/// the jars it needs.
const DEBIAN_JAR: &str = "/usr/share/java/zookeeper.jar";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// ClickHouse's sessions time out after a few ticks: short ticks make a
/// stopped replica's session expire quickly.
const TICK_MS: u32 = 500;

pub struct ZooKeeper {
    dir: PathBuf,
    pub port: u16,
    process: Option<Process>,
}

impl ZooKeeper {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let port = free_tcp();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime={TICK_MS}\ndataDir={data}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=srvr\n",
                data = dir.join("data").display()
            ),
        )?;
        let mut zookeeper = ZooKeeper {
            dir: dir.to_path_buf(),
            port,
            process: None,
        };
        zookeeper.launch().await?;
        Ok(zookeeper)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let java = bins::external(
            "java",
            "RALLYPOINT_JAVA",
            "install it with `apt-get install zookeeper` (scripts/setup.sh test does)",
        )?;
        if !Path::new(DEBIAN_JAR).is_file() {
            anyhow::bail!(
                "{DEBIAN_JAR} is missing: install ZooKeeper with `apt-get install zookeeper` \
                 (scripts/setup.sh test does)"
            );
        }
        let args: Vec<String> = vec![
            "-Xmx256m".into(),
            format!("-Dzookeeper.log.dir={}", self.dir.display()),
            "-cp".into(),
            DEBIAN_JAR.into(),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
            self.dir.join("zoo.cfg").display().to_string(),
        ];
        self.process = Some(Process::spawn(
            "zookeeper",
            &java,
            &args,
            &[],
            &self.dir.join("stdout.log"),
        )?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let process = self.process.as_mut().expect("launched above");
            if !process.is_running() {
                anyhow::bail!("ZooKeeper exited during start-up: {}", process.log_tail(20));
            }
            if Self::serves(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "ZooKeeper not answering on 127.0.0.1:{} after {READY_TIMEOUT:?}: {}",
                    self.port,
                    process.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether ZooKeeper serves sessions: its `srvr` status says which mode
    /// it runs in only then (`ruok` answers earlier, and a ClickHouse
    /// connecting in between fails its handshake and, on 18.16, crashes).
    fn serves(port: u16) -> bool {
        let address = ([127, 0, 0, 1], port).into();
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = String::new();
        stream.write_all(b"srvr").is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.contains("Mode: standalone")
    }

    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(10)).await;
        }
    }
}
