//! Overview: volume, winners' RTT per region, failover rate, decision times.

use leptos::prelude::*;

use crate::charts::{BarChart, LineChart, trim};
use crate::data::overview::Overview;
use crate::filters::Window;

pub fn view(data: Overview, window: Window) -> AnyView {
    let rate = if data.total_elections > 0 {
        data.total_failovers as f64 / data.total_elections as f64
    } else {
        0.0
    };
    let decided: u64 = data.decision_histogram.iter().map(|b| b.1).sum();
    let under_1s: u64 = data
        .decision_histogram
        .iter()
        .filter(|b| b.0 < 1000)
        .map(|b| b.1)
        .sum();
    let bars = data
        .decision_histogram
        .iter()
        .map(|(ms, n)| (format!("{ms}"), *n as f64))
        .collect::<Vec<_>>();
    view! {
        <main>
            <section class="kpis wide" aria-label="Totals">
                <div class="kpi" data-kpi="calls">"Calls started"<b>{data.total_elections}</b></div>
                <div class="kpi" data-kpi="failovers">"Failovers and drains"<b>{data.total_failovers}</b></div>
                <div class="kpi" data-kpi="failover-rate">"Failovers per call"<b>{trim(rate)}</b></div>
                <div class="kpi" data-kpi="decided-under-1s">"Decided within 1 s"
                    <b>{if decided > 0 { format!("{:.0}%", under_1s as f64 * 100.0 / decided as f64) } else { "–".into() }}</b>
                </div>
            </section>
            <LineChart title="Elections per interval, by winning region".into() unit="elections" series=data.elections from=window.from to=window.to/>
            <LineChart title="Winners' median RTT by region".into() unit="ms" series=data.rtt_p50 from=window.from to=window.to/>
            <LineChart title="Winners' p95 RTT by region".into() unit="ms" series=data.rtt_p95 from=window.from to=window.to/>
            <LineChart title="Failover rate (failovers and drains per call started)".into() unit="per call" series=vec![data.failover_rate] from=window.from to=window.to/>
            <BarChart title="How long initial elections took".into() unit="elections" x_unit="decision time, ms (100 ms buckets)" bars=bars/>
        </main>
    }
    .into_any()
}
