//! The stack server: what a client needs before it can elect a relay.
//!
//! | path               | answers                                             |
//! |--------------------|-----------------------------------------------------|
//! | `/candidates.json` | every region's WebSocket and WebTransport relay URLs (with development certificate hashes); through the first simulated location's delay proxies when there is one |
//! | `/candidates/<location>.json` | the same as seen from one simulated client location (`direct`: no proxies) |
//! | `/token`           | a development token (`?room=…&name=…`, optional `&user=…` to keep the user id of an earlier one, `&ttl=<seconds>` for less than 12 h), when the dev issuer is on |
//! | `/healthz`         | 200                                                 |
//! | `/` and the rest   | the browser app (static files built into `client/web/dist`) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rallypoint_client::CandidateList;
use serde::Deserialize;
use tower_http::cors::CorsLayer;

use crate::tokens::DevIssuer;

pub struct StackState {
    /// The built browser app, if any.
    pub web_dist: Option<std::path::PathBuf>,
    pub default: CandidateList,
    /// Per location slug.
    pub lists: Vec<(String, CandidateList)>,
    pub issuer: Option<DevIssuer>,
}

pub async fn start(
    addr: SocketAddr,
    state: StackState,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let web_dist = state.web_dist.clone();
    let mut app = Router::new()
        .route("/candidates.json", get(candidates))
        .route("/candidates/{file}", get(location_candidates))
        .route("/token", get(token))
        .route("/healthz", get(|| async { "ok" }));
    if let Some(dist) = web_dist {
        app = app.fallback_service(tower_http::services::ServeDir::new(dist));
    }
    let app = app
        .layer(CorsLayer::permissive())
        .with_state(Arc::new(state));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the stack server: {e}; pick another with --http"
        )
    })?;
    let bound = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("stack server failed: {e}");
        }
    });
    Ok((bound, server))
}

async fn candidates(State(state): State<Arc<StackState>>) -> impl IntoResponse {
    Json(state.default.clone())
}

async fn location_candidates(
    State(state): State<Arc<StackState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> axum::response::Response {
    let slug = file.trim_end_matches(".json");
    match state.lists.iter().find(|(name, _)| name == slug) {
        Some((_, list)) => Json(list.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no location {slug:?}; known: {}",
                state
                    .lists
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    room: String,
    name: String,
    #[serde(default)]
    user: Option<String>,
    /// Seconds the token lives, at most (and by default) `TOKEN_TTL`: tests
    /// ask for short ones to see a call outlive its token by refreshing it.
    #[serde(default)]
    ttl: Option<u64>,
}

/// How long development tokens live; browsers refresh them well before.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

async fn token(
    State(state): State<Arc<StackState>>,
    request: Result<Query<TokenRequest>, QueryRejection>,
) -> impl IntoResponse {
    let request = match request {
        Ok(Query(request)) => request,
        Err(rejection) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "ask for a token as /token?room=ROOM&name=NAME (and optionally user=ID, \
                     ttl=SECONDS); {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let Some(issuer) = &state.issuer else {
        return (
            StatusCode::NOT_FOUND,
            "the development token issuer is off; start with --dev-tokens".to_owned(),
        );
    };
    if let Err(e) = rallypoint_protocol::subjects::validate_room(&request.room) {
        return (StatusCode::BAD_REQUEST, e.to_string());
    }
    let name = request.name.trim();
    if name.is_empty() || name.len() > 64 {
        return (
            StatusCode::BAD_REQUEST,
            "name must be 1 to 64 characters".to_owned(),
        );
    }
    let ttl = match request.ttl.map(Duration::from_secs) {
        None => TOKEN_TTL,
        Some(ttl) if !ttl.is_zero() && ttl <= TOKEN_TTL => ttl,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("ttl must be 1 to {} seconds", TOKEN_TTL.as_secs()),
            );
        }
    };
    let user = request
        .user
        .unwrap_or_else(|| format!("dev-{:016x}", rand::random::<u64>()));
    (StatusCode::OK, issuer.mint(&request.room, &user, name, ttl))
}
