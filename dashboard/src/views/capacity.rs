//! Capacity planning: sessions per region by hour and day, growth, and the
//! what-if of removing or adding a region.

use leptos::prelude::*;

use super::columns::{Column, explained, head, number, text};
use crate::charts::{LineChart, timestamp, trim};
use crate::data::Series;
use crate::data::capacity::{
    DailyLoad, HourlySessions, PARTICIPANTS_PER_RELAY_CORE, WhatIfResult, relay_cores_needed,
};
use crate::filters::{Filters, Window};

const DAILY_LOAD: &[Column] = &[
    text("Region", "The region whose relays the sessions elected."),
    number(
        "Latest day: peak hour",
        "Sessions active in the busiest hour of the latest day with data.",
    ),
    number(
        "Latest day: p95 hour",
        "The 95th percentile of that day's 24 hourly counts (quiet hours count as 0): in practice its second-busiest hour, the load to plan for without sizing for a single spike. 0 when only one hour had sessions.",
    ),
    number(
        "Relay cores at p95 hour",
        "Relay CPU cores that hour's sessions need: sessions ÷ participants per relay core (the figure under this table). A session here is one participant's connection.",
    ),
    number(
        "Highest peak",
        "The busiest hour of any day in the last 14 days.",
    ),
    number(
        "Week over week",
        "The mean daily peak of the last 7 days against the 7 before; – until both weeks have data.",
    ),
];

const WHAT_IF_REGIONS: &[Column] = &[
    text(
        "Region",
        "A region of the deployment (or the shadow region asked about).",
    ),
    number(
        "Elections won now",
        "Initial elections in the time range that this region won.",
    ),
    number(
        "Would win",
        "How many of the same elections it would win with the change, each client taking its fastest measured candidate of the regions left.",
    ),
];

const WHAT_IF_GROUPS: &[Column] = &[
    text(
        "Country",
        "Where the clients were (derived at the relay; no addresses are stored).",
    ),
    text("ISP", "The clients' network (from their ASN)."),
    number(
        "Elections",
        "Initial elections of this group in the time range.",
    ),
    number(
        "Would move",
        "Elections whose winner would be another region with the change.",
    ),
    number(
        "Left without relay",
        "Elections where no region would be left that the client measured.",
    ),
    number(
        "Median RTT now, ms",
        "Median RTT to the region each election chose.",
    ),
    number(
        "Median RTT then, ms",
        "Median RTT to the region each would choose with the change.",
    ),
    number(
        "Δ p50, ms",
        "Median of the per-election change in RTT (positive: slower).",
    ),
    number(
        "Δ p95, ms",
        "95th percentile of the per-election change: what the worst-served 5% would feel.",
    ),
];

pub fn view(
    hourly: Vec<HourlySessions>,
    daily: Vec<DailyLoad>,
    what_if: Option<WhatIfResult>,
    filters: &Filters,
    window: Window,
    regions: Vec<String>,
    per_core_set: Option<u64>,
) -> AnyView {
    let per_core = per_core_set.unwrap_or(PARTICIPANTS_PER_RELAY_CORE);
    let series: Vec<Series> = crate::data::series(
        hourly
            .iter()
            .map(|h| (h.hour, h.region.clone(), h.sessions as f64)),
    );
    let from = hourly.first().map(|h| h.hour).unwrap_or(window.from);
    let load_rows = daily
        .iter()
        .map(|d| {
            let last = d.days.last().copied().unwrap_or((0, 0, 0));
            let peak = d.days.iter().map(|x| x.1).max().unwrap_or(0);
            view! {
                <tr data-region=d.region.clone()>
                    <th scope="row">{d.region.clone()}</th>
                    <td class="num" data-latest-peak=last.1.to_string()>{last.1}</td>
                    <td class="num" data-latest-p95=last.2.to_string()>{last.2}</td>
                    <td class="num" data-relay-cores=relay_cores_needed(last.2, per_core).to_string()>{relay_cores_needed(last.2, per_core)}</td>
                    <td class="num">{peak}</td>
                    <td class="num" data-growth=d.week_over_week.map(|g| format!("{:.3}", g)).unwrap_or_default()>
                        {d.week_over_week.map(|g| format!("{:+.1}%", g * 100.0)).unwrap_or_else(|| "–".into())}
                    </td>
                </tr>
            }
        })
        .collect::<Vec<_>>();
    let options = |selected: &Option<String>| {
        std::iter::once(view! { <option value="" selected=selected.is_none()>"—"</option> }.into_any())
            .chain(regions.iter().map(|r| {
                view! { <option value=r.clone() selected=selected.as_deref() == Some(r.as_str())>{r.clone()}</option> }.into_any()
            }))
            .collect::<Vec<_>>()
    };
    view! {
        <main>
            <LineChart title="Active sessions per region, by hour".into() unit="sessions" series=series from=from to=window.to/>
            <div class="card">
                <h2>"Daily load per region"</h2>
                {if daily.is_empty() {
                    view! { <p class="empty">"No sessions in the last 14 days."</p> }.into_any()
                } else {
                    view! {
                        <table data-view="daily-load">
                            {head(DAILY_LOAD)}
                            <tbody>{load_rows}</tbody>
                        </table>
                        {explained(DAILY_LOAD)}
                        {planning_note(per_core, per_core_set.is_some())}
                    }.into_any()
                }}
                <p><small>"Sessions active in an hour: client sessions whose elections chose the region in that hour."</small></p>
            </div>
            <div class="card wide">
                <h2>"What if…"</h2>
                <form method="get" action="/capacity" aria-label="What-if question">
                    <label>"Remove region " <select name="remove">{options(&filters.remove)}</select></label>
                    " "
                    <label>"Add shadow region " <input name="add" size="12" placeholder="e.g. frankfurt" value=filters.add.clone().unwrap_or_default()/></label>
                    <input type="hidden" name="range" value=filters.range_name().to_owned()/>
                    {filters.until.map(|u| view! { <input type="hidden" name="until" value=u.to_string()/> })}
                    " "<button type="submit">"Recompute"</button>
                </form>
                {what_if.map(what_if_view)}
                <p><small>{format!("Recomputed from every candidate RTT measured in initial elections between {} and {} UTC.", timestamp(window.from), timestamp(window.to))}</small></p>
            </div>
        </main>
    }
    .into_any()
}

fn what_if_view(result: WhatIfResult) -> AnyView {
    if result.groups.is_empty() {
        return view! { <p class="empty">"No elections with measurements in this time range."</p> }
            .into_any();
    }
    let regions = result
        .regions
        .into_iter()
        .map(|r| view! { <tr data-region=r.region.clone()><th scope="row">{r.region.clone()}</th><td class="num" data-before=r.before.to_string()>{r.before}</td><td class="num" data-after=r.after.to_string()>{r.after}</td></tr> })
        .collect::<Vec<_>>();
    let groups = result
        .groups
        .into_iter()
        .map(|g| view! {
            <tr data-country=g.country.clone() data-isp=g.isp.clone()>
                <td>{g.country.clone()}</td><td>{g.isp.clone()}</td>
                <td class="num">{g.elections}</td>
                <td class="num" data-moved=g.moved.to_string()>{g.moved}</td>
                <td class="num" data-stranded=g.stranded.to_string()>{g.stranded}</td>
                <td class="num">{trim(g.old_p50_ms)}</td>
                <td class="num" data-new-p50=trim(g.new_p50_ms)>{trim(g.new_p50_ms)}</td>
                <td class="num" data-delta-p50=trim(g.delta_p50_ms)>{format!("{:+}", trim(g.delta_p50_ms))}</td>
                <td class="num">{format!("{:+}", trim(g.delta_p95_ms))}</td>
            </tr>
        })
        .collect::<Vec<_>>();
    view! {
        <div>
            <table data-view="what-if-regions">
                {head(WHAT_IF_REGIONS)}
                <tbody>{regions}</tbody>
            </table>
            {explained(WHAT_IF_REGIONS)}
            <table data-view="what-if-groups">
                {head(WHAT_IF_GROUPS)}
                <tbody>{groups}</tbody>
            </table>
            {explained(WHAT_IF_GROUPS)}
        </div>
    }
    .into_any()
}

/// Which figure the relay-cores column divides by, and where it comes from:
/// the default is this repository's measurement, not the deployment's.
fn planning_note(per_core: u64, set_by_deployment: bool) -> impl IntoView {
    let source = if set_by_deployment {
        "set by --participants-per-relay-core for this deployment"
    } else {
        "the default: `rallypoint bench capacity --transport wt --relays 2` on a 2-core test machine, video calls in rooms of five spread over two relays (BENCHMARKS.md); measure the relays' own hardware and set --participants-per-relay-core"
    };
    view! {
        <p data-participants-per-relay-core=per_core.to_string()>
            <small>{format!("Relay cores are planned at {per_core} participants per relay core — {source}.")}</small>
        </p>
    }
}
