//! The page around every view: navigation, the filter form (which writes the
//! URL), the data time stamp and the auto-refresh.
//!
//! Pages carry no inline script or style (not even `style=` attributes): the
//! stylesheet and the script are files of the dashboard, so the
//! Content-Security-Policy can allow exactly `'self'` (see `middleware`).

use std::sync::LazyLock;

use leptos::prelude::*;

use crate::filters::{Filters, RANGES};
use crate::middleware::RequestId;

/// Where the pages' stylesheet is served.
pub const STYLESHEET_PATH: &str = "/assets/dashboard.css";
/// Where the pages' script is served.
pub const SCRIPT_PATH: &str = "/assets/refresh.js";

pub const VIEWS: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/matrix", "Region × ISP"),
    ("/outcomes", "Outcomes"),
    ("/capacity", "Capacity"),
    ("/sessions", "Sessions"),
];

const STYLE: &str = r#"
:root { font-family: system-ui, sans-serif; color: #1b1f24; background: #f6f7f9; }
body { margin: 0; }
header { background: #14213d; color: #fff; padding: .5rem 1rem; display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; }
header a { color: #fff; text-decoration: none; padding: .25rem .5rem; border-radius: 4px; }
header a[aria-current] { background: #fca311; color: #14213d; }
header h1 { font-size: 1.1rem; margin: 0 1rem 0 0; }
form.filters { display: flex; flex-wrap: wrap; gap: .75rem; padding: .75rem 1rem; background: #e5e8ee; align-items: end; }
form.filters label { display: flex; flex-direction: column; font-size: .8rem; gap: .2rem; }
main { padding: 1rem; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 560px), 1fr)); }
.wide { grid-column: 1 / -1; }
.card, figure.chart { background: #fff; border-radius: 6px; padding: .75rem; margin: 0; box-shadow: 0 1px 2px #0002; overflow-x: auto; }
figcaption, h2 { font-weight: 600; margin: 0 0 .5rem; font-size: 1rem; }
.empty { color: #5b6270; font-style: italic; }
.kpis { display: flex; gap: 1rem; flex-wrap: wrap; }
.kpi { background: #fff; border-radius: 6px; padding: .75rem 1rem; box-shadow: 0 1px 2px #0002; min-width: 9rem; }
.kpi b { display: block; font-size: 1.6rem; }
svg .grid { stroke: #e3e6eb; } svg .tick, svg .unit { font-size: 13px; fill: #5b6270; }
/* Charts scale as a whole: on a phone a 640-wide chart would shrink its 13 px
   labels to 7 px. Below 32rem it scrolls sideways in its card instead, and
   labels stay above 10 px. */
figure.chart svg[role="img"] { min-width: 32rem; }
ul.legend { list-style: none; display: flex; gap: 1rem; padding: 0; margin: .25rem 0 0; font-size: .85rem; flex-wrap: wrap; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: middle; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #e3e6eb; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.heat a { color: inherit; display: block; text-decoration: none; }
svg.bar { display: block; width: 100%; height: 1rem; min-width: 10rem; border-radius: 3px; }
details.columns { margin-top: .5rem; font-size: .85rem; color: #5b6270; }
details.columns dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .75rem; margin: .5rem 0 0; }
details.columns dt { font-weight: 600; color: #1b1f24; } details.columns dd { margin: 0; }
.error { background: #fde8e8; color: #8a1c1c; padding: 1rem; border-radius: 6px; }
footer { padding: .5rem 1rem; color: #5b6270; font-size: .8rem; }
#refresh[data-loading]::after { content: " · refreshing…"; }
:focus-visible { outline: 3px solid #fca311; outline-offset: 2px; }
"#;

/// The stylesheet every page links: the layout's rules and the heatmap's
/// colour steps.
pub fn stylesheet() -> &'static str {
    static SHEET: LazyLock<String> =
        LazyLock::new(|| format!("{STYLE}{}", crate::views::matrix::heat_rules()));
    &SHEET
}

/// Replaces `<main>` with a fresh copy every `seconds` while the tab is visible;
/// `#refresh` shows the loading state meanwhile.
pub const SCRIPT: &str = r#"
(function () {
  const every = Number(document.body.dataset.refresh) * 1000;
  if (!every) return;
  let busy = false;
  setInterval(async function () {
    if (busy || document.hidden) return;
    busy = true;
    const badge = document.getElementById('refresh');
    badge.setAttribute('data-loading', '');
    try {
      const response = await fetch(location.href);
      if (response.ok) {
        const doc = new DOMParser().parseFromString(await response.text(), 'text/html');
        document.querySelector('main').replaceWith(doc.querySelector('main'));
        badge.textContent = doc.getElementById('refresh').textContent;
      }
    } finally {
      busy = false;
      badge.removeAttribute('data-loading');
    }
  }, every);
})();
"#;

/// The whole page for one view.
pub fn page(
    path: &str,
    title: &str,
    filters: &Filters,
    now: u32,
    refresh_seconds: u32,
    body: AnyView,
) -> String {
    let nav = VIEWS
        .iter()
        .map(|(href, name)| {
            let current = (*href == path).then_some("page");
            view! { <a href=format!("{href}{}", keep(filters)) aria-current=current>{*name}</a> }
        })
        .collect::<Vec<_>>();
    let ranges = RANGES
        .iter()
        .map(|(name, _, _)| view! { <option value=*name selected=*name == filters.range_name()>{*name}</option> })
        .collect::<Vec<_>>();
    let transport = filters.transport.clone().unwrap_or_default();
    let page = view! {
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{format!("{title} · rallypoint")}</title>
                <link rel="stylesheet" href=STYLESHEET_PATH/>
            </head>
            <body data-refresh=refresh_seconds.to_string()>
                <header>
                    <h1>"rallypoint"</h1>
                    <nav aria-label="Views">{nav}</nav>
                </header>
                <form class="filters" method="get" action=path.to_owned() aria-label="Filters">
                    <label>"Time range"<select name="range">{ranges}</select></label>
                    <label>"Country"<input name="country" size="6" placeholder="any" value=filters.country.clone().unwrap_or_default()/></label>
                    <label>"ISP"<input name="isp" size="14" placeholder="any" value=filters.isp.clone().unwrap_or_default()/></label>
                    <label>"Transport"
                        <select name="transport">
                            <option value="" selected=transport.is_empty()>"any"</option>
                            <option value="websocket" selected=transport == "websocket">"WebSocket"</option>
                            <option value="webtransport" selected=transport == "webtransport">"WebTransport"</option>
                        </select>
                    </label>
                    <label>"Synthetic data"
                        <select name="synthetic">
                            <option value="0" selected=!filters.include_synthetic()>"excluded"</option>
                            <option value="1" selected=filters.include_synthetic()>"included"</option>
                        </select>
                    </label>
                    {filters.until.map(|u| view! { <input type="hidden" name="until" value=u.to_string()/> })}
                    <button type="submit">"Apply"</button>
                </form>
                {body}
                <footer><span id="refresh">{format!("Data as of {} UTC", crate::charts::timestamp(now))}</span></footer>
                <script src=SCRIPT_PATH></script>
            </body>
        </html>
    };
    format!("<!doctype html>{}", page.to_html())
}

/// The filters worth keeping when switching views.
fn keep(filters: &Filters) -> String {
    let kept = Filters {
        range: filters.range.clone(),
        until: filters.until,
        country: filters.country.clone(),
        transport: filters.transport.clone(),
        synthetic: filters.synthetic,
        ..Default::default()
    };
    kept.with("", None)
}

/// The error state of a view whose data could not be loaded: what happened
/// in words for people, and the request id under which the detail is logged.
pub fn unavailable_view(id: &RequestId) -> AnyView {
    view! {
        <main>
            <div class="error wide" role="alert">
                <b>"The data could not be loaded. "</b>
                "The page retries on its own; if this lasts, check that ClickHouse is reachable and accepts the dashboard's user. "
                "The dashboard's log has the details under request id "<code>{id.to_string()}</code>"."
            </div>
        </main>
    }
    .into_any()
}

/// A URL no view can answer: why, in words for people, and the request id.
pub fn refused_view(message: &str, id: &RequestId) -> AnyView {
    view! {
        <main>
            <div class="error wide" role="alert">
                <b>"This page cannot be shown for this address. "</b>{message.to_owned()}
                " Change the filters above, or start again from a view. (Request id "<code>{id.to_string()}</code>".)"
            </div>
        </main>
    }
    .into_any()
}

/// A path that is no view.
pub fn not_found_view() -> AnyView {
    view! {
        <main>
            <div class="error wide" role="alert">
                <b>"There is no such page. "</b>"The views are linked above."
            </div>
        </main>
    }
    .into_any()
}
