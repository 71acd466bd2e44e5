//! Routes: one small handler per view; each loads its data, renders the page,
//! and shows an error state (not a blank page) when it cannot:
//!
//! * a URL no view can answer (an impossible time, an unknown range, a
//!   malformed session id, a value too long) is refused with a 400 that
//!   says why, before any query runs;
//! * a failed query is a 503 that gives people a request id, never the
//!   query or ClickHouse's words: those go to the log, under the same id.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use leptos::prelude::*;

use crate::auth::{Auth, require_identity};
use crate::data::sessions::SessionId;
use crate::data::{Db, Source, capacity, matrix, outcomes, overview, sessions};
use crate::filters::Filters;
use crate::middleware::{RequestId, with_request_id, with_security_headers};
use crate::views;
use crate::views::layout::{
    SCRIPT_PATH, STYLESHEET_PATH, not_found_view, page, refused_view, unavailable_view,
};

pub struct Dashboard {
    pub db: Db,
    pub refresh_seconds: u32,
    /// What the capacity view plans relay cores with, when the deployment
    /// set it (else `data::capacity::PARTICIPANTS_PER_RELAY_CORE`).
    pub participants_per_relay_core: Option<u64>,
    /// Who may see it: every route but `/healthz` asks.
    pub auth: Arc<Auth>,
}

/// The routes, behind (innermost first) authentication, the request id and
/// the security headers, so that 401s and 403s carry both. Serve with
/// `into_make_service_with_connect_info::<SocketAddr>()` for
/// `--trusted-proxies` to match anyone (without it no peer is trusted).
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    let auth = dashboard.auth.clone();
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
        .layer(middleware::from_fn_with_state(auth, require_identity))
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
    render(
        StatusCode::NOT_FOUND,
        "",
        "Not found",
        &Filters::default(),
        0,
        not_found_view(),
    )
}

fn now(filters: &Filters) -> u32 {
    filters
        .until
        .unwrap_or_else(|| rallypoint_service::clock::unix_seconds() as u32)
}

/// What every view handler gets: the request's id and the URL's filters,
/// read and checked. A URL whose filters cannot be read or answered never
/// reaches a handler: it gets a 400 page that says why.
pub struct ViewRequest {
    id: RequestId,
    filters: Filters,
}

impl<S: Send + Sync> FromRequestParts<S> for ViewRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let id = parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .expect("the router gives every request an id");
        match read_filters(&parts.uri) {
            Ok(filters) => Ok(ViewRequest { id, filters }),
            Err(message) => Err(refused(
                parts.uri.path(),
                "Cannot show this",
                &Filters::default(),
                &id,
                &message,
            )),
        }
    }
}

/// The filters in `uri`, or why they cannot be read or answered.
fn read_filters(uri: &Uri) -> Result<Filters, String> {
    let Query(filters) = Query::<Filters>::try_from_uri(uri).map_err(unreadable)?;
    filters.check()?;
    Ok(filters)
}

/// Why a query string cannot be read, in words for people: the parser's
/// own message names the parameter and what is wrong with its value (a
/// negative or too large number, a duplicate).
fn unreadable(rejection: QueryRejection) -> String {
    let detail = std::error::Error::source(&rejection)
        .map_or_else(|| rejection.body_text(), ToString::to_string);
    format!("The address has a value the dashboard cannot read ({detail}).")
}

/// Why a view shows no data.
enum Failure {
    /// The URL asks for what no view can answer: a 400 that says why.
    Refused(String),
    /// Loading the data failed: a 503; the detail goes to the log only.
    Unavailable(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match past_a_limit(&e) {
            Some(message) => {
                tracing::info!(error = ?format!("{e:#}"), "a query went past the dashboard's limits");
                Failure::Refused(message.to_owned())
            }
            None => Failure::Unavailable(e),
        }
    }
}

/// ClickHouse's answer when a query would cost more than the dashboard's
/// read-only user may spend (its profile's `max_rows_to_read`,
/// `max_bytes_to_read`, `max_execution_time`, `max_result_rows`): a
/// question too big to ask, not an outage, so people get a 400 that says
/// what to change instead of a scan or a "retry" page.
fn past_a_limit(error: &anyhow::Error) -> Option<&'static str> {
    const TOO_LARGE: &str = "This range would read more data than the dashboard may in one \
        page. Choose a shorter time range, or filter by country, ISP or transport.";
    // TOO_MANY_ROWS, TIMEOUT_EXCEEDED, TOO_MANY_BYTES, TOO_MANY_ROWS_OR_BYTES.
    rallypoint_service::clickhouse::error_code(error)
        .is_some_and(|code| [158, 159, 307, 396].contains(&code))
        .then_some(TOO_LARGE)
}

/// The page for a view's data, or its error state. A failure's detail
/// (which may hold the query and ClickHouse's message) is logged in the
/// request's span, under its id; the page shows only the id.
fn respond(
    d: &Dashboard,
    path: &str,
    title: &str,
    r: &ViewRequest,
    body: Result<AnyView, impl Into<Failure>>,
) -> Response {
    let body: Result<AnyView, Failure> = body.map_err(Into::into);
    match body {
        Ok(body) => render(
            StatusCode::OK,
            path,
            title,
            &r.filters,
            d.refresh_seconds,
            body,
        ),
        Err(Failure::Refused(message)) => refused(path, title, &r.filters, &r.id, &message),
        Err(Failure::Unavailable(e)) => {
            tracing::warn!(path, error = ?format!("{e:#}"), "a view's data could not be loaded");
            let body = unavailable_view(&r.id);
            render(
                StatusCode::SERVICE_UNAVAILABLE,
                path,
                title,
                &r.filters,
                d.refresh_seconds,
                body,
            )
        }
    }
}

/// The 400 page: what cannot be answered and why, without auto-refresh
/// (the same URL would be refused again).
fn refused(path: &str, title: &str, filters: &Filters, id: &RequestId, message: &str) -> Response {
    tracing::info!(path, reason = message, "refused");
    let body = refused_view(message, id);
    render(StatusCode::BAD_REQUEST, path, title, filters, 0, body)
}

fn render(
    status: StatusCode,
    path: &str,
    title: &str,
    filters: &Filters,
    refresh_seconds: u32,
    body: AnyView,
) -> Response {
    let html = page(path, title, filters, now(filters), refresh_seconds, body);
    (status, Html(html)).into_response()
}

async fn overview_page(State(d): State<Arc<Dashboard>>, r: ViewRequest) -> Response {
    let f = &r.filters;
    let at = now(f);
    let body = overview::load(&d.db, f, at, Source::Rollup)
        .await
        .map(|data| views::overview::view(data, f.window(at)));
    respond(&d, "/", "Overview", &r, body)
}

async fn matrix_page(State(d): State<Arc<Dashboard>>, r: ViewRequest) -> Response {
    let f = &r.filters;
    let body = matrix::cells(&d.db, f, now(f), Source::Rollup)
        .await
        .map(|cells| views::matrix::view(cells, f));
    respond(&d, "/matrix", "Region × ISP", &r, body)
}

async fn cell_page(State(d): State<Arc<Dashboard>>, r: ViewRequest) -> Response {
    let f = &r.filters;
    let at = now(f);
    let body = matrix::cell_series(&d.db, f, at)
        .await
        .map(|series| views::matrix::cell_view(series, f, f.window(at)));
    respond(&d, "/matrix", "Region × ISP", &r, body)
}

async fn outcomes_page(State(d): State<Arc<Dashboard>>, r: ViewRequest) -> Response {
    let f = &r.filters;
    let body = outcomes::load(&d.db, f, now(f))
        .await
        .map(views::outcomes::view);
    respond(&d, "/outcomes", "Outcomes", &r, body)
}

async fn capacity_page(State(d): State<Arc<Dashboard>>, r: ViewRequest) -> Response {
    let body = capacity_view(&d.db, &r.filters, d.participants_per_relay_core).await;
    respond(&d, "/capacity", "Capacity", &r, body)
}

/// The capacity view: load by hour and day, and the what-if when asked.
async fn capacity_view(db: &Db, f: &Filters, per_core: Option<u64>) -> anyhow::Result<AnyView> {
    let at = now(f);
    let hourly = capacity::hourly(db, f, at).await?;
    let day_end = at - at % 86_400 + 86_400;
    let daily = capacity::daily(&hourly, day_end);
    let regions: Vec<String> = daily.iter().map(|d| d.region.clone()).collect();
    let question = capacity::WhatIf {
        remove: f.remove.clone().filter(|r| !r.is_empty()),
        add: f.add.clone().filter(|r| !r.is_empty()),
    };
    let what_if = if question.remove.is_some() || question.add.is_some() {
        Some(capacity::what_if(db, f, at, &question).await?)
    } else {
        None
    };
    Ok(views::capacity::view(
        hourly,
        daily,
        what_if,
        f,
        f.window(at),
        regions,
        per_core,
    ))
}

async fn sessions_page(State(d): State<Arc<Dashboard>>, r: ViewRequest) -> Response {
    let f = &r.filters;
    let body = match f.session.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => one_session(&d.db, text).await,
        None => sessions::recent(&d.db, f, now(f))
            .await
            .map(|recent| views::sessions::recent_view(recent, f))
            .map_err(Failure::from),
    };
    respond(&d, "/sessions", "Sessions", &r, body)
}

/// One session's elections, or a 400 for a session id that is none.
async fn one_session(db: &Db, text: &str) -> Result<AnyView, Failure> {
    let id = SessionId::parse(text).map_err(Failure::Refused)?;
    let (elections, candidates) = sessions::session(db, &id).await?;
    Ok(views::sessions::session_view(text, elections, candidates))
}

#[cfg(test)]
mod tests {
    use super::past_a_limit;

    #[test]
    fn a_query_past_the_readers_limits_is_a_question_too_big_not_an_outage() {
        let too_many_rows = anyhow::anyhow!(
            "query failed: bad response: Code: 158, e.displayText() = DB::Exception: Limit for rows to read exceeded"
        );
        let message = past_a_limit(&too_many_rows).expect("a limit");
        assert!(message.contains("shorter time range"), "{message}");
        assert!(!message.contains("Code"), "no ClickHouse text for people");
        let down = anyhow::anyhow!("query failed: error trying to connect: Connection refused");
        assert!(past_a_limit(&down).is_none());
        // A current server words it "Code: 158." (18.16: "Code: 158,").
        let current = anyhow::anyhow!(
            "query failed: bad response: Code: 158. DB::Exception: Limit for rows (controlled by 'max_rows_to_read' setting) exceeded (TOO_MANY_ROWS)"
        );
        assert!(past_a_limit(&current).is_some(), "a current server's limit");
        let other = anyhow::anyhow!("query failed: bad response: Code: 1580. DB::Exception: x");
        assert!(past_a_limit(&other).is_none());
    }
}
