//! `rallypoint-static`: serves the browser app and its candidate list in a
//! deployment, the part of `rallypoint up`'s stack server (testkit/src/stack/
//! server.rs) that a cluster needs; relays, tokens and simulated locations
//! stay in the lab. The image `rallypoint-web` (images/web.Containerfile)
//! runs it with the trunk build in `/srv/www`; the chart's candidates
//! ConfigMap (helm/rallypoint/templates/candidates.yaml) is mounted as the
//! candidates file.
//!
//! | path               | answers                                                        |
//! |--------------------|----------------------------------------------------------------|
//! | `/candidates.json` | the `--candidates` file, re-read on every request (a ConfigMap update shows without a restart) and checked to be a valid candidate list; 503 when it is missing or invalid |
//! | `/healthz`         | 200                                                            |
//! | `/` and the rest   | the static files in `--dir` (`index.html` for directories)     |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use rallypoint_client::CandidateList;

/// Serves the rallypoint browser app (static files) and its candidate list.
#[derive(Parser, Debug)]
#[command(name = "rallypoint-static", version)]
struct Args {
    /// Listen address.
    #[arg(
        long,
        env = "RALLYPOINT_STATIC_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Directory of the built browser app (trunk's `dist/`).
    #[arg(long, env = "RALLYPOINT_STATIC_DIR", default_value = "client/web/dist")]
    dir: PathBuf,
    /// The candidate list (client/core's `CandidateList` JSON) served at
    /// `/candidates.json`, e.g. the chart's candidates ConfigMap mounted as a
    /// file. Without it `/candidates.json` is looked up in `--dir` like any file.
    #[arg(long, env = "RALLYPOINT_STATIC_CANDIDATES")]
    candidates: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rallypoint-static: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !args.dir.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html: build the app (scripts/build-web.sh) or pass --dir",
            args.dir.display()
        ));
    }
    let mut app = Router::new().route("/healthz", get(|| async { "ok" }));
    if let Some(path) = args.candidates.clone() {
        app = app.route(
            "/candidates.json",
            get(candidates).with_state(Arc::new(path)),
        );
    }
    let app = app.fallback_service(tower_http::services::ServeDir::new(&args.dir));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; pick another with --listen",
                args.listen
            )
        })?;
    eprintln!(
        "rallypoint-static: serving {} on http://{}{}",
        args.dir.display(),
        listener.local_addr().map_err(|e| e.to_string())?,
        match &args.candidates {
            Some(p) => format!(", /candidates.json from {}", p.display()),
            None => String::new(),
        }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn candidates(State(path): State<Arc<PathBuf>>) -> Response {
    let text = match tokio::fs::read_to_string(path.as_path()).await {
        Ok(text) => text,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the candidate list {}: {e}\n", path.display()),
            )
                .into_response();
        }
    };
    if let Err(e) = CandidateList::parse(&text) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the candidate list {} is not usable: {e}\n", path.display()),
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}
