//! Capacity planning: sessions per region by hour and day, growth, and the
//! what-if of removing or adding a region.

use leptos::prelude::*;

use crate::charts::{LineChart, timestamp, trim};
use crate::data::Series;
use crate::data::capacity::{DailyLoad, HourlySessions, WhatIfResult};
use crate::filters::{Filters, Window};

pub fn view(
    hourly: Vec<HourlySessions>,
    daily: Vec<DailyLoad>,
    what_if: Option<WhatIfResult>,
    filters: &Filters,
    window: Window,
    regions: Vec<String>,
) -> AnyView {
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
                            <thead><tr>
                                <th scope="col">"Region"</th><th scope="col" class="num">"Latest day: peak hour"</th>
                                <th scope="col" class="num">"Latest day: p95 hour"</th><th scope="col" class="num">"Highest peak"</th>
                                <th scope="col" class="num">"Week over week"</th>
                            </tr></thead>
                            <tbody>{load_rows}</tbody>
                        </table>
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
                <thead><tr><th scope="col">"Region"</th><th scope="col" class="num">"Elections won now"</th><th scope="col" class="num">"Would win"</th></tr></thead>
                <tbody>{regions}</tbody>
            </table>
            <table data-view="what-if-groups">
                <thead><tr>
                    <th scope="col">"Country"</th><th scope="col">"ISP"</th><th scope="col" class="num">"Elections"</th>
                    <th scope="col" class="num">"Would move"</th><th scope="col" class="num">"Left without relay"</th>
                    <th scope="col" class="num">"Median RTT now, ms"</th><th scope="col" class="num">"Median RTT then, ms"</th>
                    <th scope="col" class="num">"Δ p50, ms"</th><th scope="col" class="num">"Δ p95, ms"</th>
                </tr></thead>
                <tbody>{groups}</tbody>
            </table>
        </div>
    }
    .into_any()
}
