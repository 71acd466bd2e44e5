//! Session explorer: recent sessions, and one session's elections in order.

use leptos::prelude::*;

use super::columns::{Column, explained, head, number, text};
use crate::charts::{timestamp, trim};
use crate::data::sessions::{RecentSession, SessionCandidate, SessionElection};
use crate::filters::Filters;

const RECENT: &[Column] = &[
    text(
        "Session",
        "A client's call session (random; it names no person). Open it for its elections.",
    ),
    text(
        "First seen (UTC)",
        "When its first election report was received.",
    ),
    number(
        "Elections",
        "Elections it reported: the first, and every failover, drain or switch.",
    ),
    text(
        "Country",
        "Where the client was (derived at the relay; no addresses are stored).",
    ),
    text("ISP", "The client's network (from its ASN)."),
];

const CANDIDATES: &[Column] = &[
    text("Region", "The candidate relay's region."),
    text("Transport", "WebTransport (wt) or WebSocket (ws)."),
    number("Samples", "RTT probes answered during the election."),
    number("Lost", "Probes sent that were never answered in time."),
    number(
        "Median ms",
        "Median round-trip time of the answered probes.",
    ),
    number(
        "p95 ms",
        "95th-percentile round-trip time of the answered probes.",
    ),
    text(
        "Outcome",
        "winner (serves the call), standby (kept connected for failover), loser, or failed (could not be used).",
    ),
    text(
        "Error",
        "Why a candidate could not be used, as the client saw it.",
    ),
];

pub fn recent_view(sessions: Vec<RecentSession>, filters: &Filters) -> AnyView {
    let form = view! {
        <form method="get" action="/sessions" aria-label="Find a session">
            <label>"Session id " <input name="session" size="34" placeholder="32 hex characters"/></label>
            " "<button type="submit">"Show"</button>
        </form>
    };
    let body = if sessions.is_empty() {
        view! { <p class="empty">"No sessions in this time range."</p> }.into_any()
    } else {
        let rows = sessions
            .into_iter()
            .map(|s| {
                let href = format!("/sessions{}", Filters { session: Some(s.session.clone()), ..filters.clone() }.with("", None));
                view! {
                    <tr><td><a href=href><code>{s.session}</code></a></td><td>{timestamp(s.first_seen)}</td>
                    <td class="num">{s.elections}</td><td>{s.country}</td><td>{s.isp}</td></tr>
                }
            })
            .collect::<Vec<_>>();
        view! {
            <table data-view="recent-sessions">
                {head(RECENT)}
                <tbody>{rows}</tbody>
            </table>
            {explained(RECENT)}
        }
        .into_any()
    };
    view! { <main><div class="card wide"><h2>"Recent sessions"</h2>{form}{body}</div></main> }
        .into_any()
}

pub fn session_view(
    id: &str,
    elections: Vec<SessionElection>,
    candidates: Vec<SessionCandidate>,
) -> AnyView {
    if elections.is_empty() {
        return view! { <main><div class="card wide"><h2>{format!("Session {id}")}</h2><p class="empty">"No elections stored for this session."</p></div></main> }.into_any();
    }
    let items = elections
        .into_iter()
        .map(|e| {
            let mine = candidates
                .iter()
                .filter(|c| c.report == e.report)
                .map(|c| view! {
                    <tr data-outcome=c.outcome.clone()>
                        <td>{c.region.clone()}</td><td>{c.transport.clone()}</td><td class="num">{c.samples}</td><td class="num">{c.lost}</td>
                        <td class="num">{if c.samples > 0 { trim(c.median_ms) } else { "–".into() }}</td>
                        <td class="num">{if c.samples > 0 { trim(c.p95_ms) } else { "–".into() }}</td>
                        <td>{c.outcome.clone()}</td><td>{c.error.clone()}</td>
                    </tr>
                })
                .collect::<Vec<_>>();
            view! {
                <li data-seq=e.session_seq.to_string() data-trigger=e.trigger.clone()>
                    <p><b>{format!("#{} {} · {}", e.session_seq, e.trigger, e.rule)}</b>
                    {format!(" — {} UTC, decided in {} ms, via {} relay; winner {} / {} at {} ms", timestamp(e.received_at), e.decision_ms, e.relay_region, e.winner_region, e.winner_transport, trim(e.winner_rtt_ms))}
                    {(!e.previous_region.is_empty()).then(|| format!(" (moved from {})", e.previous_region))}</p>
                    <p><small>{e.reason.clone()}</small></p>
                    <table>
                        {head(CANDIDATES)}
                        <tbody>{mine}</tbody>
                    </table>
                </li>
            }
        })
        .collect::<Vec<_>>();
    view! { <main><div class="card wide"><h2>{format!("Session {id}")}</h2><ol data-view="session">{items}</ol>{explained(CANDIDATES)}</div></main> }.into_any()
}
