//! Region × ISP heatmap: median RTT (colour), p95 and sample counts; a cell
//! links to its time series.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::*;

use crate::charts::{LineChart, trim};
use crate::data::Series;
use crate::data::matrix::Cell;
use crate::filters::{Filters, Window};

/// Heat steps past green: a cell's colour is one of `HEAT_STEPS + 1` hues,
/// 10° apart, each a class in the stylesheet (the Content-Security-Policy
/// allows no inline `style=`).
const HEAT_STEPS: u32 = 12;

/// Green under 50 ms, through yellow, to red at 300 ms and above: the step
/// whose hue is `10° × step`.
fn heat_step(p50_ms: f64) -> u32 {
    let t = ((p50_ms - 50.0) / 250.0).clamp(0.0, 1.0);
    ((1.0 - t) * f64::from(HEAT_STEPS)).round() as u32
}

/// The stylesheet rules for every heat step.
pub fn heat_rules() -> String {
    (0..=HEAT_STEPS)
        .map(|step| {
            format!(
                "td.heat-{step} {{ background: hsl({} 70% 80%); }}\n",
                step * 10
            )
        })
        .collect()
}

pub fn view(cells: Vec<Cell>, filters: &Filters) -> AnyView {
    if cells.is_empty() {
        return view! { <main><div class="card wide"><h2>"Region × ISP"</h2><p class="empty">"No measurements in this time range."</p></div></main> }.into_any();
    }
    let regions: BTreeSet<String> = cells.iter().map(|c| c.region.clone()).collect();
    let mut by_isp: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
    for cell in cells {
        by_isp
            .entry(cell.isp.clone())
            .or_default()
            .insert(cell.region.clone(), cell);
    }
    let header = regions
        .iter()
        .map(|r| {
            let means = format!(
                "To {r}: the median of the RTTs (each a candidate's median in one election) that clients of the row's ISP measured to this region (bold), their p95, and n, how many such measurements"
            );
            view! { <th scope="col" class="num" title=means>{r.clone()}</th> }
        })
        .collect::<Vec<_>>();
    let rows = by_isp
        .into_iter()
        .map(|(isp, row)| {
            let cells = regions
                .iter()
                .map(|region| match row.get(region) {
                    Some(cell) => {
                        let href = format!(
                            "/matrix/cell{}",
                            Filters { region: Some(region.clone()), isp: Some(isp.clone()), ..filters.clone() }.with("", None)
                        );
                        view! {
                            <td class=format!("num heat heat-{}", heat_step(cell.p50_ms)) data-region=region.clone() data-isp=isp.clone()
                                data-p50-ms=trim(cell.p50_ms) data-p95-ms=trim(cell.p95_ms) data-samples=cell.samples.to_string()
                                data-loss-pct=trim(cell.loss_pct)>
                                <a href=href title=format!("{isp} to {region}: time series")>
                                    <b>{format!("{} ms", trim(cell.p50_ms))}</b><br/>
                                    <small>{format!("p95 {} ms · n={}", trim(cell.p95_ms), cell.samples)}</small>
                                    {(cell.loss_pct >= 1.0).then(|| view! {
                                        <br/><small class="loss">{format!("{}% of probes lost", trim(cell.loss_pct))}</small>
                                    })}
                                </a>
                            </td>
                        }
                        .into_any()
                    }
                    None => view! { <td class="num">"–"</td> }.into_any(),
                })
                .collect::<Vec<_>>();
            view! { <tr><th scope="row">{isp}</th>{cells}</tr> }
        })
        .collect::<Vec<_>>();
    view! {
        <main>
            <div class="card wide">
                <h2>"Median RTT from each ISP to each region (all measured candidates)"</h2>
                <table data-view="matrix">
                    <thead><tr><th scope="col" title="The clients' network (from their ASN, derived at the relay)">"ISP"</th>{header}</tr></thead>
                    <tbody>{rows}</tbody>
                </table>
                <p><small>"Rows: the clients' ISP. Columns: regions; each cell is the median RTT its clients measured to that region's relays (bold), the p95, and n, the candidate measurements it comes from. Colour: median RTT, green under 50 ms to red at 300 ms. Probe loss is shown from 1% on: a lossy path hurts a call more than a slower one, and clients weigh it when they elect. Click a cell for its time series."</small></p>
            </div>
        </main>
    }
    .into_any()
}

pub fn cell_view(series: Vec<Series>, filters: &Filters, window: Window) -> AnyView {
    let title = format!(
        "RTT from {} to {}",
        filters.isp.clone().unwrap_or_else(|| "every ISP".into()),
        filters
            .region
            .clone()
            .unwrap_or_else(|| "every region".into())
    );
    view! {
        <main>
            <LineChart title=title unit="ms" series=series from=window.from to=window.to/>
            <div class="card"><a href=format!("/matrix{}", Filters { region: None, isp: None, ..filters.clone() }.with("", None))>"← back to the matrix"</a></div>
        </main>
    }
    .into_any()
}
