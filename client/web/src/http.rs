//! What the page fetches from the stack server before a call: the candidate
//! list and a token.

use rallypoint_client::CandidateList;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// How long a fetch (answer and body) may take: a server that accepts and
/// never answers must not leave the lobby spinning, or a call's token refresh
/// pending for ever.
const FETCH_TIMEOUT_MS: u32 = 10_000;

/// Fetches `path` and returns its body, or a message for people.
async fn get_text(path: &str) -> Result<(u16, String), String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    // The signal covers the body too: a stalled answer times out as well.
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(
        FETCH_TIMEOUT_MS,
    )));
    let failed = |error: JsValue, what: &str| {
        let timed_out = error
            .dyn_ref::<web_sys::DomException>()
            .is_some_and(|e| e.name() == "TimeoutError");
        if timed_out {
            format!(
                "the server did not answer {path} within {} s: it may be overloaded; try again",
                FETCH_TIMEOUT_MS / 1_000
            )
        } else {
            format!("{what} ({path})")
        }
    };
    let response = JsFuture::from(window.fetch_with_str_and_init(path, &init))
        .await
        .map_err(|e| failed(e, "cannot reach the server: is it running?"))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| "not a response")?;
    let body = JsFuture::from(response.text().map_err(|_| "unreadable response")?)
        .await
        .map_err(|e| failed(e, "the server's answer was cut short"))?
        .as_string()
        .unwrap_or_default();
    Ok((response.status(), body))
}

/// The candidate list at `path`.
pub async fn candidates(path: &str) -> Result<CandidateList, String> {
    let (status, body) = get_text(path).await?;
    if status != 200 {
        return Err(format!(
            "The relay list ({path}) is unavailable: {} {}",
            status,
            body.trim()
        ));
    }
    CandidateList::parse(&body).map_err(|e| format!("The relay list is unusable: {e}"))
}

/// A fresh token for the same user, room and name as `current` from the
/// development issuer, so a long call outlives its first token.
pub async fn fresh_token(current: &str) -> Result<String, String> {
    let path = crate::params::refresh_path(current)
        .ok_or("the current token names no user and room to refresh")?;
    let (status, body) = get_text(&path).await?;
    match status {
        200 => Ok(body.trim().to_owned()),
        _ => Err(format!("no fresh token from the issuer: {}", body.trim())),
    }
}

/// A token for `room` and `name` from the development issuer.
pub async fn token(room: &str, name: &str) -> Result<String, String> {
    let (status, body) = get_text(&crate::params::token_path(room, name)).await?;
    match status {
        200 => Ok(body.trim().to_owned()),
        _ => Err(format!("Token rejected by the issuer: {}", body.trim())),
    }
}
