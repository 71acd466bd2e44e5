//! What wraps every answer, whatever route (or none) it came from: a request
//! id, and the security headers.
//!
//! The request id is logged with everything the request logs, returned in
//! `X-Request-Id` and shown on error pages, so that a person who reports an
//! error page gives the operator the key to its log lines — the page itself
//! never shows the query or ClickHouse's words.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// One request's id: 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh id: a counter (so ids never repeat within a process) hashed
    /// with a key the standard library draws at random for each process (so
    /// they do not repeat across restarts or replicas either, with
    /// overwhelming likelihood). Nothing more is needed to find log lines,
    /// and it costs no dependency.
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{:016x}", KEY.hash_one(n)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Gives the request an id (in its extensions, for handlers), runs it inside
/// a `request` span carrying the id and the user (recorded by
/// [`crate::auth::require_identity`]; `-` when no one signed in), logs one
/// line per answer, and returns the id in `X-Request-Id`.
pub async fn with_request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId::next();
    request.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", id = %id, user = tracing::field::Empty);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if path != "/healthz" {
        span.in_scope(|| {
            tracing::info!(
                %method,
                path,
                status = response.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "answered"
            );
        });
    }
    let value = HeaderValue::from_str(id.as_str()).expect("hex digits are a header value");
    response.headers_mut().insert("x-request-id", value);
    response
}

/// The pages load only the dashboard's own stylesheet and script (no inline
/// code or styles, so an injected `<script>` or `style=` would not run),
/// fetch only the dashboard (the auto-refresh), submit forms only to it, and
/// may not be framed (clickjacking).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Adds the security headers to every answer: the policy above, no MIME
/// sniffing, no referrer (URLs carry filters such as ISP names), and no
/// framing for browsers that predate `frame-ancestors`.
pub async fn with_security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
