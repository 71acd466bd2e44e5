//! How decisions read for people: the reason shown on the decision line and
//! stored in every ElectionReport. The election supplies the numbers; this
//! module alone chooses the words, so the UI, the CLI and the dashboards read
//! the same sentence.

use std::time::Duration;

use rallypoint_protocol::v1::DecisionRule;

use super::config::ElectionConfig;
use super::rule::Comparison;

/// A candidate's RTT estimate (µs) and loss rate, as measured.
pub(super) type Measure = (Option<f64>, f64);

/// Why the pick is not its region's fastest candidate: WebTransport is
/// preferred over the region's faster WebSocket within a margin (µs).
pub(super) struct TransportPreference {
    pub faster: (String, Measure),
    pub margin_us: f64,
}

/// A tournament's pick: `label` at its RTT (and loss), why, and the best
/// candidate of another region, for comparison.
///
/// The election compares *regions* first (each by its best candidate), then
/// picks the transport within the winning region; the sentence says so, so
/// a close call never reads as a contradiction (a WebTransport pick slower
/// than the next region's WebSocket names the faster candidate of its own
/// region that won the region the comparison).
pub(super) fn picked(
    (label, region, measure): (&str, &str, Measure),
    rule: DecisionRule,
    took: Duration,
    preference: Option<TransportPreference>,
    next_region: Option<(String, Measure)>,
) -> String {
    let rtt = measured(measure);
    let how = match rule {
        DecisionRule::Early => format!(
            "region {region} clearly best after {:.2} s",
            took.as_secs_f64()
        ),
        DecisionRule::Deadline => format!("region {region} best at the deadline"),
        DecisionRule::SoleCandidate => "the only usable candidate".to_owned(),
        DecisionRule::FirstAnswer => "first usable answer after losing the relay".to_owned(),
        _ => "chosen".to_owned(),
    };
    let preference = preference
        .map(|p| {
            format!(
                " (by {} at {}; WebTransport preferred within {})",
                p.faster.0,
                measured(p.faster.1),
                ms(p.margin_us)
            )
        })
        .unwrap_or_default();
    let next_region = next_region
        .map(|(label, measure)| format!("; next region {label} at {}", measured(measure)))
        .unwrap_or_default();
    format!("{label} at {rtt}: {how}{preference}{next_region}")
}

/// `20.0 ms`, or `20.0 ms with 4% loss` when loss weighed in (1% or more).
fn measured((rtt, loss): Measure) -> String {
    let rtt = rtt.map(ms).unwrap_or_else(|| "?".into());
    if loss >= 0.01 {
        format!("{rtt} with {:.0}% loss", loss * 100.0)
    } else {
        rtt
    }
}

/// A background re-election that keeps the serving relay: the pick was not
/// better by the switching margins.
pub(super) fn kept(
    (current, current_rtt): (&str, f64),
    (pick, pick_rtt): (&str, f64),
    config: &ElectionConfig,
) -> String {
    format!(
        "kept {current} ({}): {pick} ({}) is not better by {} ms and {:.0}%",
        ms(current_rtt),
        ms(pick_rtt),
        config.switch_min_abs.as_millis(),
        config.switch_min_rel * 100.0
    )
}

/// A switch to a challenger that stayed better for `held`. The numbers
/// are what the rule compared: 99% bounds on each RTT (the challenger's at
/// most, the serving one's at least), plus what loss cost each.
pub(super) fn switched(
    challenger: &str,
    current: &str,
    compared: Comparison,
    config: &ElectionConfig,
    held: Duration,
    recent_moves: u32,
) -> String {
    let loss = |label: &str, cost: f64| {
        if cost > 0.0 {
            format!("; {label}'s loss counted as {}", ms(cost))
        } else {
            String::new()
        }
    };
    format!(
        "{challenger} beat {current} for {:.1} s: RTT at most {} against at least {} (99% bounds){}{}; \
         a switch needs {} ms and {:.0}% better",
        held.as_secs_f64(),
        ms(compared.challenger_ucb),
        ms(compared.current_lcb),
        loss(current, compared.current_loss_cost),
        loss(challenger, compared.challenger_loss_cost),
        config.switch_min_abs.as_millis(),
        config.switch_min_rel * 100.0,
    ) + &damped(recent_moves)
}

/// Why a switch had to hold longer than `switch_sustain` (see
/// [`super::damping`]).
fn damped(recent_moves: u32) -> String {
    match recent_moves {
        0 => String::new(),
        1 => "; held longer after a recent move".into(),
        n => format!("; held longer after {n} recent moves"),
    }
}

fn ms(us: f64) -> String {
    format!("{:.1} ms", us / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_names_its_rtt_its_loss_its_reason_and_the_next_region() {
        let reason = picked(
            ("singapore/ws", "singapore", (Some(20_000.0), 0.0)),
            DecisionRule::Early,
            Duration::from_millis(420),
            None,
            Some(("us-east/ws".into(), (Some(120_000.0), 0.08))),
        );
        assert_eq!(
            reason,
            "singapore/ws at 20.0 ms: region singapore clearly best after 0.42 s; \
             next region us-east/ws at 120.0 ms with 8% loss"
        );
        assert_eq!(
            picked(
                ("a/ws", "a", (None, 0.0)),
                DecisionRule::SoleCandidate,
                Duration::ZERO,
                None,
                None
            ),
            "a/ws at ?: the only usable candidate"
        );
    }

    #[test]
    fn a_switch_names_bounds_and_loss_not_bare_scores() {
        let reason = switched(
            "us-east/wt",
            "singapore/wt",
            Comparison {
                current_lcb: 118_000.0,
                current_loss_cost: 80_000.0,
                challenger_ucb: 130_000.0,
                challenger_loss_cost: 0.0,
            },
            &ElectionConfig::default(),
            Duration::from_secs(5),
            0,
        );
        assert!(
            !reason.contains("held longer"),
            "an undamped switch says nothing of damping: {reason}"
        );
        assert!(
            reason.starts_with(
                "us-east/wt beat singapore/wt for 5.0 s: RTT at most 130.0 ms against at least \
                 118.0 ms (99% bounds); singapore/wt's loss counted as 80.0 ms; a switch needs"
            ),
            "{reason}"
        );
    }

    #[test]
    fn a_damped_switch_says_why_it_waited() {
        let comparison = Comparison {
            current_lcb: 340_000.0,
            current_loss_cost: 0.0,
            challenger_ucb: 45_000.0,
            challenger_loss_cost: 0.0,
        };
        let config = ElectionConfig::default();
        let held = Duration::from_secs(32);
        let once = switched("a/wt", "a/ws", comparison, &config, held, 1);
        let thrice = switched("a/wt", "a/ws", comparison, &config, held, 3);
        assert!(
            once.ends_with("; held longer after a recent move"),
            "{once}"
        );
        assert!(
            thrice.ends_with("; held longer after 3 recent moves"),
            "{thrice}"
        );
    }

    #[test]
    fn a_close_call_says_what_was_compared() {
        // The example: a WebTransport pick slower than the next
        // region's WebSocket read as a contradiction.
        let reason = picked(
            ("singapore/wt", "singapore", (Some(1_800.0), 0.0)),
            DecisionRule::Early,
            Duration::from_millis(300),
            Some(TransportPreference {
                faster: ("singapore/ws".into(), (Some(1_400.0), 0.0)),
                margin_us: 1_000.0,
            }),
            Some(("us-east/ws".into(), (Some(1_500.0), 0.0))),
        );
        assert_eq!(
            reason,
            "singapore/wt at 1.8 ms: region singapore clearly best after 0.30 s \
             (by singapore/ws at 1.4 ms; WebTransport preferred within 1.0 ms); \
             next region us-east/ws at 1.5 ms"
        );
    }
}
