//! The election, live: every candidate's state and RTT, the winner and why.
//! While the first tournament runs this is the whole screen; in the call it
//! sits beside the video.

use leptos::prelude::*;

use crate::call::{CallState, CandidateRow, Phase};

#[component]
pub fn ElectionPanel(state: CallState) -> impl IntoView {
    let electing = move || state.phase.with(|p| *p == Phase::Electing);
    view! {
        <section class="panel election" aria-labelledby="election-title" data-view="election">
            <h2 id="election-title">
                {move || if electing() { "Choosing the fastest relay…" } else { "Relays" }}
            </h2>
            <div class="table-wrap">
                <table>
                    <caption class="sr-only">"Every relay this browser measured, with its round-trip time"</caption>
                    <thead>
                        <tr>
                            <th scope="col">"Region"</th>
                            <th scope="col">"Transport"</th>
                            <th scope="col">"State"</th>
                            <th scope="col" class="num">"Samples"</th>
                            <th scope="col" class="num">"Median RTT"</th>
                            <th scope="col" class="num">"p95"</th>
                            <th scope="col" class="num">"Lost"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || state.candidates.get().into_iter().map(row).collect_view()}
                    </tbody>
                </table>
            </div>
            <p class="reason" aria-live="polite">
                {move || state.reason.get().map(|why| format!("Decision: {why}"))}
            </p>
        </section>
    }
}

fn row(r: CandidateRow) -> impl IntoView {
    let ms = |v: Option<f64>| {
        v.map(|m| format!("{m:.1} ms"))
            .unwrap_or_else(|| "–".into())
    };
    let transport = match r.transport {
        "wt" => "WebTransport",
        _ => "WebSocket",
    };
    view! {
        <tr
            data-candidate=r.label.clone()
            data-rtt-ms=r.median_ms.map(|m| format!("{m:.1}")).unwrap_or_default()
            data-relay-id=r.relay_id.clone()
            data-winner=r.serving.then_some("true")
            class:winner=r.serving
        >
            <th scope="row">{r.region.clone()}</th>
            <td>{transport}</td>
            <td class="state">{r.state.clone()}</td>
            <td class="num">{r.samples}</td>
            <td class="num">{ms(r.median_ms)}</td>
            <td class="num">{ms(r.p95_ms)}</td>
            <td class="num">{r.lost}</td>
        </tr>
    }
}
