//! Session explorer: recent sessions, and one session's elections in order.

use leptos::prelude::*;

use crate::charts::{timestamp, trim};
use crate::data::sessions::{RecentSession, SessionCandidate, SessionElection};
use crate::filters::Filters;

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
                <thead><tr><th scope="col">"Session"</th><th scope="col">"First seen (UTC)"</th><th scope="col" class="num">"Elections"</th><th scope="col">"Country"</th><th scope="col">"ISP"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
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
                        <thead><tr><th scope="col">"Region"</th><th scope="col">"Transport"</th><th scope="col" class="num">"Samples"</th><th scope="col" class="num">"Lost"</th>
                        <th scope="col" class="num">"Median ms"</th><th scope="col" class="num">"p95 ms"</th><th scope="col">"Outcome"</th><th scope="col">"Error"</th></tr></thead>
                        <tbody>{mine}</tbody>
                    </table>
                </li>
            }
        })
        .collect::<Vec<_>>();
    view! { <main><div class="card wide"><h2>{format!("Session {id}")}</h2><ol data-view="session">{items}</ol></div></main> }.into_any()
}
