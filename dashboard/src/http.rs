//! Routes: one small handler per view; each loads its data, renders the page,
//! and shows an error state (not a blank page) when ClickHouse fails.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use leptos::prelude::*;

use crate::data::{Db, Source, capacity, matrix, outcomes, overview, sessions};
use crate::filters::Filters;
use crate::views;
use crate::views::layout::{error_view, page};

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
        .with_state(dashboard)
}

fn now(filters: &Filters) -> u32 {
    filters.until.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    })
}

fn respond(
    d: &Dashboard,
    path: &str,
    title: &str,
    filters: &Filters,
    body: anyhow::Result<AnyView>,
) -> Response {
    let now = now(filters);
    match body {
        Ok(body) => Html(page(path, title, filters, now, d.refresh_seconds, body)).into_response(),
        Err(e) => {
            tracing::warn!(path, "{e:#}");
            let html = page(
                path,
                title,
                filters,
                now,
                d.refresh_seconds,
                error_view(format!("{e:#}")),
            );
            (StatusCode::SERVICE_UNAVAILABLE, Html(html)).into_response()
        }
    }
}

async fn overview_page(State(d): State<Arc<Dashboard>>, Query(f): Query<Filters>) -> Response {
    let at = now(&f);
    let body = overview::load(&d.db, &f, at, Source::Rollup)
        .await
        .map(|data| views::overview::view(data, f.window(at)));
    respond(&d, "/", "Overview", &f, body)
}

async fn matrix_page(State(d): State<Arc<Dashboard>>, Query(f): Query<Filters>) -> Response {
    let body = matrix::cells(&d.db, &f, now(&f), Source::Rollup)
        .await
        .map(|cells| views::matrix::view(cells, &f));
    respond(&d, "/matrix", "Region × ISP", &f, body)
}

async fn cell_page(State(d): State<Arc<Dashboard>>, Query(f): Query<Filters>) -> Response {
    let at = now(&f);
    let body = matrix::cell_series(&d.db, &f, at)
        .await
        .map(|series| views::matrix::cell_view(series, &f, f.window(at)));
    respond(&d, "/matrix", "Region × ISP", &f, body)
}

async fn outcomes_page(State(d): State<Arc<Dashboard>>, Query(f): Query<Filters>) -> Response {
    let body = outcomes::load(&d.db, &f, now(&f))
        .await
        .map(views::outcomes::view);
    respond(&d, "/outcomes", "Outcomes", &f, body)
}

async fn capacity_page(State(d): State<Arc<Dashboard>>, Query(f): Query<Filters>) -> Response {
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
    respond(&d, "/capacity", "Capacity", &f, body)
}

async fn sessions_page(State(d): State<Arc<Dashboard>>, Query(f): Query<Filters>) -> Response {
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
    respond(&d, "/sessions", "Sessions", &f, body)
}
