//! Outcomes: winning region by ISP and by country, transport share, and why
//! calls moved.

use std::collections::BTreeSet;

use leptos::prelude::*;

use crate::charts::PALETTE;
use crate::data::outcomes::{Outcomes, Share, fractions};

fn share_table(caption: &str, kind: &str, shares: &[Share]) -> AnyView {
    if shares.is_empty() {
        return view! { <div class="card"><h2>{caption.to_owned()}</h2><p class="empty">"No elections in this time range."</p></div> }.into_any();
    }
    let choices: Vec<String> = shares
        .iter()
        .map(|s| s.choice.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let groups: Vec<String> = shares
        .iter()
        .map(|s| s.group.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let color = |choice: &str| {
        PALETTE[choices.iter().position(|c| c == choice).unwrap_or(0) % PALETTE.len()]
    };
    let rows = groups
        .iter()
        .map(|group| {
            let parts = fractions(shares, group);
            let total: u64 = shares.iter().filter(|s| &s.group == group).map(|s| s.elections).sum();
            let bar = parts
                .iter()
                .map(|(choice, f)| view! { <span style=format!("width:{:.1}%;background:{}", f * 100.0, color(choice)) title=format!("{choice}: {:.1}%", f * 100.0)></span> })
                .collect::<Vec<_>>();
            let text = parts
                .iter()
                .map(|(choice, f)| format!("{choice} {:.1}%", f * 100.0))
                .collect::<Vec<_>>()
                .join(", ");
            view! {
                <tr data-group=group.clone()>
                    <th scope="row">{group.clone()}</th>
                    <td><div class="bar" aria-hidden="true">{bar}</div></td>
                    <td data-shares=text.clone()>{text.clone()}</td>
                    <td class="num">{total}</td>
                </tr>
            }
        })
        .collect::<Vec<_>>();
    let legend = choices
        .iter()
        .map(|c| view! { <li><span class="swatch" style=format!("background:{}", color(c))></span>{c.clone()}</li> })
        .collect::<Vec<_>>();
    view! {
        <div class="card">
            <h2>{caption.to_owned()}</h2>
            <table data-view=kind.to_owned()>
                <thead><tr><th scope="col">"Group"</th><th scope="col">"Share"</th><th scope="col">"Shares"</th><th scope="col" class="num">"Elections"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
            <ul class="legend">{legend}</ul>
        </div>
    }
    .into_any()
}

pub fn view(data: Outcomes) -> AnyView {
    let reasons = if data.reasons.is_empty() {
        view! { <p class="empty">"No failovers, drains or switches in this time range."</p> }
            .into_any()
    } else {
        view! {
            <table data-view="reasons">
                <thead><tr><th scope="col">"Trigger"</th><th scope="col">"Rule"</th><th scope="col" class="num">"Count"</th></tr></thead>
                <tbody>{data.reasons.into_iter().map(|r| view! { <tr><td>{r.trigger}</td><td>{r.rule}</td><td class="num">{r.count}</td></tr> }).collect::<Vec<_>>()}</tbody>
            </table>
        }
        .into_any()
    };
    view! {
        <main>
            {share_table("Winning region by ISP", "by-isp", &data.by_isp)}
            {share_table("Winning region by country", "by-country", &data.by_country)}
            {share_table("WebTransport versus WebSocket (winners)", "transports", &data.transports)}
            <div class="card"><h2>"Why calls moved"</h2>{reasons}</div>
        </main>
    }
    .into_any()
}
