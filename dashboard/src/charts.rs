//! Charts as plain SVG rendered on the server: axes with units, a legend,
//! and an explicit empty state. No JavaScript needed to read them.
//!
//! Layout rules that keep labels readable at any width (the SVG scales as a
//! whole): the unit sits in a strip above the plot, never in the tick
//! column; the first and last time labels are anchored inward, so neither
//! is clipped; lines join contiguous buckets only and break where data is
//! missing; and every point has a hover target larger than its dot, whose
//! tooltip says the series, value, unit and time.

use leptos::prelude::*;

use crate::data::Series;

/// Colours for series, in order (colour-blind friendly, Okabe–Ito).
pub const PALETTE: &[&str] = &[
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
/// Room above the plot for the unit label.
const TOP: f64 = 26.0;
const BOTTOM: f64 = 28.0;
/// Room below a bar chart's plot: its labels and, under them, its x unit.
const BAR_BOTTOM: f64 = 46.0;

/// A rounded-up axis maximum and tick step.
fn nice_max(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let magnitude = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|s| s * magnitude)
        .find(|s| max / s <= 5.0)
        .unwrap_or(magnitude * 10.0);
    ((max / step).ceil() * step, step)
}

fn time_label(t: u32, span: u32) -> String {
    let (h, m) = ((t % 86_400) / 3600, (t % 3600) / 60);
    if span > 2 * 86_400 {
        let (_, mo, d) = civil_from_days((t / 86_400) as i64);
        format!("{mo:02}-{d:02}")
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A legend's colour sample: an SVG square whose colour is an attribute,
/// which the Content-Security-Policy allows, where a `style=` would not be.
pub fn swatch(color: &'static str) -> impl IntoView {
    view! {
        <svg class="swatch" viewBox="0 0 1 1" aria-hidden="true">
            <rect width="1" height="1" rx="0.15" fill=color/>
        </svg>
    }
}

/// Formats a unix time as `YYYY-MM-DD HH:MM` UTC.
pub fn timestamp(t: u32) -> String {
    let (y, mo, d) = civil_from_days((t / 86_400) as i64);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}",
        (t % 86_400) / 3600,
        (t % 3600) / 60
    )
}

/// A time-series line chart.
#[component]
pub fn LineChart(
    title: String,
    unit: &'static str,
    series: Vec<Series>,
    from: u32,
    to: u32,
) -> impl IntoView {
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    if points == 0 {
        return view! { <figure class="chart"><figcaption>{title}</figcaption><p class="empty">"No data in this time range."</p></figure> }.into_any();
    }
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_max, step) = nice_max(max);
    let span = to.saturating_sub(from).max(1);
    let x =
        move |t: u32| LEFT + (t.saturating_sub(from)) as f64 / span as f64 * (WIDTH - LEFT - RIGHT);
    let y = move |v: f64| TOP + (1.0 - v / y_max) * (HEIGHT - TOP - BOTTOM);
    let ticks: Vec<f64> = (0..=((y_max / step).round() as usize))
        .map(|i| i as f64 * step)
        .collect();
    let x_ticks: Vec<(u32, &'static str)> = (0..=4)
        .map(|i| {
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            (from + span / 4 * i, anchor)
        })
        .collect();
    let bucket = bucket_width(&series);
    let lines = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let color = PALETTE[i % PALETTE.len()];
            let dots = s
                .points
                .iter()
                .map(|(t, v)| {
                    let (cx, cy) = (format!("{:.1}", x(*t)), format!("{:.1}", y(*v)));
                    let tip = format!("{}: {} {} at {} UTC", s.name, trim(*v), unit, timestamp(*t));
                    view! { <g class="point">
                        <circle cx=cx.clone() cy=cy.clone() r="2.5" fill=color/>
                        <circle cx=cx cy=cy r="8" fill="transparent" class="hover"><title>{tip}</title></circle>
                    </g> }
                })
                .collect::<Vec<_>>();
            let d = path(&s.points, bucket, x, y);
            view! { <g><path d=d fill="none" stroke=color stroke-width="2"/>{dots}</g> }
        })
        .collect::<Vec<_>>();
    let legend = series
        .iter()
        .enumerate()
        .map(|(i, s)| view! { <li>{swatch(PALETTE[i % PALETTE.len()])}{s.name.clone()}</li> })
        .collect::<Vec<_>>();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" width="100%">
                {ticks.into_iter().map(|v| view! {
                    <g>
                        <line x1=LEFT x2=WIDTH - RIGHT y1=format!("{:.1}", y(v)) y2=format!("{:.1}", y(v)) class="grid"/>
                        <text x=LEFT - 6.0 y=format!("{:.1}", y(v) + 4.0) text-anchor="end" class="tick">{trim(v)}</text>
                    </g>
                }).collect::<Vec<_>>()}
                {x_ticks.into_iter().map(|(t, anchor)| view! {
                    <text x=format!("{:.1}", x(t)) y=HEIGHT - 8.0 text-anchor=anchor class="tick">{time_label(t, span)}</text>
                }).collect::<Vec<_>>()}
                <text x=LEFT y=TOP - 10.0 class="unit">{unit}</text>
                {lines}
            </svg>
            <ul class="legend">{legend}</ul>
        </figure>
    }
    .into_any()
}

/// Vertical bars over labelled buckets (distributions).
#[component]
pub fn BarChart(
    title: String,
    unit: &'static str,
    x_unit: &'static str,
    bars: Vec<(String, f64)>,
) -> impl IntoView {
    if bars.is_empty() {
        return view! { <figure class="chart"><figcaption>{title}</figcaption><p class="empty">"No data in this time range."</p></figure> }.into_any();
    }
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (y_max, step) = nice_max(max);
    let slot = (WIDTH - LEFT - RIGHT) / bars.len() as f64;
    // Below the plot: the bars' labels, then the x axis' unit on a line of
    // its own (at the labels' height it ran into the last ones).
    let plot_bottom = HEIGHT - BAR_BOTTOM;
    let y = move |v: f64| TOP + (1.0 - v / y_max) * (plot_bottom - TOP);
    let label_every = (bars.len() / 10).max(1);
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" width="100%">
                {(0..=((y_max / step).round() as usize)).map(|i| {
                    let v = i as f64 * step;
                    view! { <g>
                        <line x1=LEFT x2=WIDTH - RIGHT y1=format!("{:.1}", y(v)) y2=format!("{:.1}", y(v)) class="grid"/>
                        <text x=LEFT - 6.0 y=format!("{:.1}", y(v) + 4.0) text-anchor="end" class="tick">{trim(v)}</text>
                    </g> }
                }).collect::<Vec<_>>()}
                <text x=LEFT y=TOP - 10.0 class="unit">{unit}</text>
                <text x=WIDTH - RIGHT y=HEIGHT - 5.0 text-anchor="end" class="unit">{x_unit}</text>
                {bars.iter().enumerate().map(|(i, (label, v))| {
                    let x0 = LEFT + i as f64 * slot;
                    view! { <g>
                        <rect x=format!("{:.1}", x0 + 1.0) y=format!("{:.1}", y(*v)) width=format!("{:.1}", (slot - 2.0).max(1.0))
                            height=format!("{:.1}", (plot_bottom - y(*v)).max(0.0)) fill=PALETTE[0]>
                            <title>{format!("{label}: {}", trim(*v))}</title>
                        </rect>
                        {(i % label_every == 0).then(|| view! {
                            <text x=format!("{:.1}", x0 + slot / 2.0) y=plot_bottom + 17.0 text-anchor="middle" class="tick">{label.clone()}</text>
                        })}
                    </g> }
                }).collect::<Vec<_>>()}
            </svg>
        </figure>
    }
    .into_any()
}

/// The spacing of a chart's buckets: the smallest gap between two
/// consecutive points of any series (a series of one point has none).
fn bucket_width(series: &[Series]) -> Option<u32> {
    series
        .iter()
        .flat_map(|s| s.points.windows(2).map(|w| w[1].0.saturating_sub(w[0].0)))
        .filter(|gap| *gap > 0)
        .min()
}

/// An SVG path through `points` that breaks where a bucket is missing (a
/// gap longer than one and a half buckets), so lines never bridge an hour
/// without data.
fn path(
    points: &[(u32, f64)],
    bucket: Option<u32>,
    x: impl Fn(u32) -> f64,
    y: impl Fn(f64) -> f64,
) -> String {
    let mut d = String::new();
    let mut previous: Option<u32> = None;
    for (t, v) in points {
        let joined = match (previous, bucket) {
            (Some(p), Some(b)) => u64::from(t.saturating_sub(p)) * 2 <= u64::from(b) * 3,
            _ => false,
        };
        d.push_str(&format!(
            "{}{:.1},{:.1}",
            if joined { "L" } else { "M" },
            x(*t),
            y(*v)
        ));
        previous = Some(*t);
    }
    d
}

/// A number without pointless decimals.
pub fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(87.0), (100.0, 20.0));
        assert_eq!(nice_max(0.0), (1.0, 0.25));
        assert_eq!(nice_max(4.2), (5.0, 1.0));
    }

    fn rendered(points: Vec<(u32, f64)>) -> String {
        let series = vec![Series {
            name: "us-east".into(),
            points,
        }];
        view! { <LineChart title="t".into() unit="ms" series=series from=0 to=4 * 3600/> }.to_html()
    }

    #[test]
    fn lines_break_where_buckets_are_missing() {
        let hour = 3600;
        let html = rendered(vec![
            (0, 1.0),
            (hour, 2.0),
            (3 * hour, 3.0),
            (4 * hour, 1.0),
        ]);
        let d = html
            .split("<path d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 2, "{d}");
    }

    #[test]
    fn the_unit_sits_above_the_plot_and_the_edge_labels_inside_it() {
        let html = rendered(vec![(0, 1250.0), (3600, 80.0)]);
        // The unit's baseline is above the top gridline, whose tick label
        // sits at the plot's top.
        let unit_y: f64 = html
            .split("class=\"unit\"")
            .next()
            .unwrap()
            .rsplit("y=\"")
            .next()
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(unit_y + 4.0 < TOP, "unit at y={unit_y}, plot from {TOP}");
        assert!(html.contains("text-anchor=\"start\" class=\"tick\">00:00"));
        assert!(html.contains("text-anchor=\"end\" class=\"tick\">04:00"));
        assert!(html.contains("us-east: 1250 ms at 1970-01-01 00:00 UTC"));
    }

    #[test]
    fn dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00");
        assert_eq!(timestamp(1_795_430_400), "2026-11-23 10:40");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00");
    }
}
