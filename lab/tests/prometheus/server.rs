//! A real Prometheus server (Debian's 2.42) for the tests: scrapes the given
//! targets every second on loopback, evaluates the project's alert rules, and
//! answers queries over its HTTP API.

use std::path::Path;
use std::time::{Duration, Instant};

use rallypoint_testkit::bins;
use rallypoint_testkit::ports::free_tcp;
use rallypoint_testkit::process::Process;
use serde_json::Value as Json;

pub struct Prometheus {
    pub url: String,
    process: Process,
    http: reqwest::Client,
}

/// A scrape job: its name and `host:port` targets (path `/metrics`).
pub struct Job<'a> {
    pub name: &'a str,
    pub targets: Vec<String>,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port and waits until it is ready.
    pub async fn start(dir: &Path, jobs: &[Job<'_>], rule_files: &[&Path]) -> anyhow::Result<Self> {
        let binary = bins::external(
            "prometheus",
            "PROMETHEUS",
            "install Debian's prometheus package (scripts/setup.sh test does)",
        )?;
        std::fs::create_dir_all(dir)?;
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "scrape_configs": jobs.iter().map(|job| serde_json::json!({
                "job_name": job.name,
                "static_configs": [{"targets": job.targets}],
            })).collect::<Vec<_>>(),
        });
        let config_file = dir.join("prometheus.yml");
        // JSON is YAML.
        std::fs::write(&config_file, config.to_string())?;
        let port = free_tcp();
        let process = Process::spawn(
            "prometheus",
            &binary,
            &[
                format!("--config.file={}", config_file.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ],
            &[],
            &dir.join("prometheus.log"),
        )?;
        let mut prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            process,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        prometheus.wait_ready(Duration::from_secs(30)).await?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.process.is_running() {
                anyhow::bail!("prometheus exited:\n{}", self.process.log_tail(20));
            }
            if let Ok(r) = self.http.get(format!("{}/-/ready", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "prometheus not ready after {timeout:?}:\n{}",
            self.process.log_tail(20)
        )
    }

    /// `GET /api/v1/<path>`: its `data`, or the API's error.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Json> {
        let body: Json = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await?
            .json()
            .await?;
        if body["status"] != "success" {
            anyhow::bail!("{path} {query:?}: {}", body);
        }
        Ok(body["data"].clone())
    }

    /// An instant query's result vector.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Json>> {
        let data = self.api("query", &[("query", promql)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the single value of `promql` satisfies `ok`, or fails with
    /// the last answer after `timeout`.
    pub async fn until(
        &self,
        promql: &str,
        ok: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.query(promql).await {
                Ok(result) if result.len() == 1 => {
                    let value = sample(&result[0]);
                    if ok(value) {
                        return Ok(value);
                    }
                    last = format!("{value}");
                }
                Ok(result) => last = format!("{} series: {result:?}", result.len()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("{promql}: still {last} after {timeout:?}")
    }

    /// Waits until `promql` returns at least one series, or fails with the
    /// last answer (an error for invalid PromQL) after `timeout`.
    pub async fn until_series(&self, promql: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.query(promql).await {
                Ok(result) if !result.is_empty() => return Ok(()),
                Ok(_) => last = "no series".into(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("{promql}: {last} after {timeout:?}")
    }

    pub async fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5)).await;
    }
}

/// The value of one sample of an instant vector.
pub fn sample(series: &Json) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
