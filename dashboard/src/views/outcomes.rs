//! Outcomes: winning region by ISP and by country, transport share, and why
//! calls moved.

use std::collections::BTreeSet;

use leptos::prelude::*;

use super::columns::{Column, explained, head, number, text};
use crate::charts::{PALETTE, swatch};
use crate::data::outcomes::{Outcomes, Share, fractions};

/// One group's shares as a bar of coloured segments: an SVG, whose widths
/// and colours are attributes the Content-Security-Policy allows (inline
/// `style=` widths would be blocked).
fn share_bar(parts: &[(&str, f64)], color: impl Fn(&str) -> &'static str) -> AnyView {
    let mut x = 0.0;
    let segments = parts
        .iter()
        .map(|(choice, f)| {
            let width = f * 100.0;
            let segment = view! {
                <rect x=format!("{x:.1}") width=format!("{width:.1}") height="1" fill=color(choice)>
                    <title>{format!("{choice}: {width:.1}%")}</title>
                </rect>
            };
            x += width;
            segment
        })
        .collect::<Vec<_>>();
    view! {
        <svg class="bar" viewBox="0 0 100 1" preserveAspectRatio="none" aria-hidden="true">{segments}</svg>
    }
    .into_any()
}

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
            let total: u64 = shares
                .iter()
                .filter(|s| &s.group == group)
                .map(|s| s.elections)
                .sum();
            let bar = share_bar(&parts, color);
            let text = parts
                .iter()
                .map(|(choice, f)| format!("{choice} {:.1}%", f * 100.0))
                .collect::<Vec<_>>()
                .join(", ");
            view! {
                <tr data-group=group.clone()>
                    <th scope="row">{group.clone()}</th>
                    <td>{bar}</td>
                    <td data-shares=text.clone()>{text.clone()}</td>
                    <td class="num">{total}</td>
                </tr>
            }
        })
        .collect::<Vec<_>>();
    let legend = choices
        .iter()
        .map(|c| view! { <li>{swatch(color(c))}{c.clone()}</li> })
        .collect::<Vec<_>>();
    view! {
        <div class="card">
            <h2>{caption.to_owned()}</h2>
            <table data-view=kind.to_owned()>
                {head(SHARES)}
                <tbody>{rows}</tbody>
            </table>
            <ul class="legend">{legend}</ul>
            {explained(SHARES)}
        </div>
    }
    .into_any()
}

const SHARES: &[Column] = &[
    text(
        "Group",
        "The clients' ISP, country or transport, as the table's title says.",
    ),
    text(
        "Share",
        "The group's elections split by what they chose, in the legend's colours.",
    ),
    text("Shares", "The same split in numbers."),
    number("Elections", "The group's elections in the time range."),
];

const REASONS: &[Column] = &[
    text(
        "Trigger",
        "What started the election: the relay was lost (failover), it announced it was going away (drain), a clearly better relay appeared (degradation), or the background re-election after a move.",
    ),
    text(
        "Rule",
        "How it decided: the leader clearly best early, best at the deadline, the only usable candidate, a switch to the warm standby, a sustained improvement, or the first usable answer after losing the relay with no standby.",
    ),
    number(
        "Count",
        "Elections with this trigger and rule in the time range.",
    ),
];

pub fn view(data: Outcomes) -> AnyView {
    let reasons = if data.reasons.is_empty() {
        view! { <p class="empty">"No failovers, drains or switches in this time range."</p> }
            .into_any()
    } else {
        view! {
            <table data-view="reasons">
                {head(REASONS)}
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
            <div class="card"><h2>"Why calls moved"</h2>{reasons}{explained(REASONS)}</div>
        </main>
    }
    .into_any()
}
