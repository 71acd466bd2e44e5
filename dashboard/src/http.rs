//! Routes: one small handler per view; each loads its data, renders the page,
//! and shows an error state (not a blank page) when ClickHouse fails. The
//! error state gives people a request id, never the query or ClickHouse's
//! words: those go to the log, under the same id.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router, middleware};
use leptos::prelude::*;

use crate::data::{Db, Source, capacity, matrix, outcomes, overview, sessions};
use crate::filters::Filters;
use crate::middleware::{RequestId, with_request_id, with_security_headers};
use crate::views;
use crate::views::layout::{SCRIPT_PATH, STYLESHEET_PATH, not_found_view, page, unavailable_view};

pub struct Dashboard {
    pub db: Db,
    pub refresh_seconds: u32,
}

pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/matrix", get(matrix_page))
        .route("/matrix/cell", get(cell_page))
        .route("/outcomes", get(outcomes_page))
        .route("/capacity", get(capacity_page))
        .route("/sessions", get(sessions_page))
        .route("/healthz", get(|| async { "ok" }))
        .route(STYLESHEET_PATH, get(stylesheet))
        .route(SCRIPT_PATH, get(script))
        .fallback(not_found)
        .with_state(dashboard)
        .layer(middleware::from_fn(with_request_id))
        .layer(middleware::from_fn(with_security_headers))
}

/// The pages' stylesheet (a file, not inline: see the CSP in `middleware`).
async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", views::layout::stylesheet())
}

/// The pages' auto-refresh script (a file, not inline, likewise).
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", views::layout::SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "max-age=300")],
        body,
    )
        .into_response()
}

/// Any other path: a page that says so, with the navigation to go on.
async fn not_found() -> Response {
    let filters = Filters::default();
    let html = page(
        "",
        "Not found",
        &filters,
        now(&filters),
        0,
        not_found_view(),
    );
    (StatusCode::NOT_FOUND, Html(html)).into_response()
}

fn now(filters: &Filters) -> u32 {
    filters.until.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    })
}

/// The page for a view's data, or its error state: the error's detail
/// (which may hold the query and ClickHouse's message) is logged under the
/// request id; the page shows only the id.
fn respond(
    d: &Dashboard,
    path: &str,
    title: &str,
    filters: &Filters,
    id: &RequestId,
    body: anyhow::Result<AnyView>,
) -> Response {
    let (status, body) = match body {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => {
            tracing::warn!(request_id = %id, path, error = ?format!("{e:#}"), "a view's data could not be loaded");
            (StatusCode::SERVICE_UNAVAILABLE, unavailable_view(id))
        }
    };
    let html = page(path, title, filters, now(filters), d.refresh_seconds, body);
    (status, Html(html)).into_response()
}

async fn overview_page(
    State(d): State<Arc<Dashboard>>,
    Extension(id): Extension<RequestId>,
    Query(f): Query<Filters>,
) -> Response {
    let at = now(&f);
    let body = overview::load(&d.db, &f, at, Source::Rollup)
        .await
        .map(|data| views::overview::view(data, f.window(at)));
    respond(&d, "/", "Overview", &f, &id, body)
}

async fn matrix_page(
    State(d): State<Arc<Dashboard>>,
    Extension(id): Extension<RequestId>,
    Query(f): Query<Filters>,
) -> Response {
    let body = matrix::cells(&d.db, &f, now(&f), Source::Rollup)
        .await
        .map(|cells| views::matrix::view(cells, &f));
    respond(&d, "/matrix", "Region × ISP", &f, &id, body)
}

async fn cell_page(
    State(d): State<Arc<Dashboard>>,
    Extension(id): Extension<RequestId>,
    Query(f): Query<Filters>,
) -> Response {
    let at = now(&f);
    let body = matrix::cell_series(&d.db, &f, at)
        .await
        .map(|series| views::matrix::cell_view(series, &f, f.window(at)));
    respond(&d, "/matrix", "Region × ISP", &f, &id, body)
}

async fn outcomes_page(
    State(d): State<Arc<Dashboard>>,
    Extension(id): Extension<RequestId>,
    Query(f): Query<Filters>,
) -> Response {
    let body = outcomes::load(&d.db, &f, now(&f))
        .await
        .map(views::outcomes::view);
    respond(&d, "/outcomes", "Outcomes", &f, &id, body)
}

async fn capacity_page(
    State(d): State<Arc<Dashboard>>,
    Extension(id): Extension<RequestId>,
    Query(f): Query<Filters>,
) -> Response {
    let at = now(&f);
    let body = async {
        let hourly = capacity::hourly(&d.db, &f, at).await?;
        let day_end = at - at % 86_400 + 86_400;
        let daily = capacity::daily(&hourly, day_end);
        let regions: Vec<String> = daily.iter().map(|d| d.region.clone()).collect();
        let question = capacity::WhatIf {
            remove: f.remove.clone().filter(|r| !r.is_empty()),
            add: f.add.clone().filter(|r| !r.is_empty()),
        };
        let what_if = if question.remove.is_some() || question.add.is_some() {
            Some(capacity::what_if(&d.db, &f, at, &question).await?)
        } else {
            None
        };
        anyhow::Ok(views::capacity::view(
            hourly,
            daily,
            what_if,
            &f,
            f.window(at),
            regions,
        ))
    }
    .await;
    respond(&d, "/capacity", "Capacity", &f, &id, body)
}

async fn sessions_page(
    State(d): State<Arc<Dashboard>>,
    Extension(id): Extension<RequestId>,
    Query(f): Query<Filters>,
) -> Response {
    let body = match f.session.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => sessions::session(&d.db, id)
            .await
            .map(|(elections, candidates)| {
                views::sessions::session_view(id, elections, candidates)
            }),
        None => sessions::recent(&d.db, &f, now(&f))
            .await
            .map(|recent| views::sessions::recent_view(recent, &f)),
    };
    respond(&d, "/sessions", "Sessions", &f, &id, body)
}
