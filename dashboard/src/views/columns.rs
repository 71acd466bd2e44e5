//! Table headers that explain themselves. Every column's header carries
//! what it means as a tooltip, and the table is followed by the same words
//! in a fold-out list — a tooltip needs a mouse, and a phone has none. One
//! place per table says what its columns mean, so the tooltip and the list
//! never disagree.

use leptos::prelude::*;

/// One column: its header, what it means, and whether it holds numbers
/// (right-aligned).
pub struct Column {
    pub label: &'static str,
    pub means: &'static str,
    pub numeric: bool,
}

/// A column of text.
pub const fn text(label: &'static str, means: &'static str) -> Column {
    Column {
        label,
        means,
        numeric: false,
    }
}

/// A column of numbers.
pub const fn number(label: &'static str, means: &'static str) -> Column {
    Column {
        label,
        means,
        numeric: true,
    }
}

/// The header row, each header with its meaning as a tooltip.
pub fn head(columns: &'static [Column]) -> impl IntoView {
    let cells = columns
        .iter()
        .map(|c| view! { <th scope="col" class:num=c.numeric title=c.means>{c.label}</th> })
        .collect::<Vec<_>>();
    view! { <thead><tr>{cells}</tr></thead> }
}

/// The columns' meanings, folded under the table.
pub fn explained(columns: &'static [Column]) -> impl IntoView {
    let items = columns
        .iter()
        .map(|c| view! { <dt>{c.label}</dt><dd>{c.means}</dd> })
        .collect::<Vec<_>>();
    view! {
        <details class="columns">
            <summary>"What the columns mean"</summary>
            <dl>{items}</dl>
        </details>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        text("Region", "Where the relay is."),
        number("Count", "How many."),
    ];

    #[test]
    fn every_header_carries_its_meaning_and_the_list_repeats_it() {
        let head = view! { <table>{head(COLUMNS)}</table> }.to_html();
        assert!(head.contains(r#"title="Where the relay is.""#), "{head}");
        assert!(head.contains(r#"title="How many." class="num""#), "{head}");
        let list = explained(COLUMNS).to_html();
        assert!(list.contains("<dt>Count</dt><dd>How many.</dd>"), "{list}");
    }
}
