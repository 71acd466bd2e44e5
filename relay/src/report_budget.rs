//! A token's election-report budget, held across its region's relays.
//!
//! Each relay keeps a token bucket per token subject ([`SubjectRates`]):
//! reconnecting does not refill it. Alone that still let a client spread its
//! reports over every relay of a region and get each relay's budget. So the
//! relays of a region tell each other, about every [`TALLY_INTERVAL`], how
//! many reports they accepted per subject (core NATS,
//! [`subjects::report_budget`]), and each charges its own buckets with what
//! the others accepted ([`SubjectRates::charge`]).
//!
//! What this holds, and what not:
//! * across the region, a subject gets its budget plus at most what it sent
//!   to the other relays within one interval before they heard (at most a
//!   burst per relay, only for reports sent at the same moment);
//! * core NATS may lose a tally (a reconnect): the error is in the client's
//!   favour and bounded by one interval's reports;
//! * regions keep separate budgets: a client reports through its own
//!   region, and a region must not depend on another's backbone to admit
//!   telemetry.
//!
//! A tally names token subjects (user ids) and never leaves the region's
//! NATS servers; it holds no client address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rallypoint_protocol::prost::Message as _;
use rallypoint_protocol::subjects;
use rallypoint_protocol::v1::{ReportsAccepted, SubjectReports};

use crate::rate::SubjectRates;

/// How often a relay tells its region what it accepted (when it accepted
/// anything).
pub const TALLY_INTERVAL: Duration = Duration::from_millis(100);

/// Subjects one tally message names at most: a tally of more is sent in
/// several messages, each far below NATS's 1 MB payload limit.
const SUBJECTS_PER_MESSAGE: usize = 1_000;

/// Subjects remembered between two tallies; past this, reports of new
/// subjects are accepted but not told (a relay that sees this many
/// reporting users in 100 ms is under attack, and its own buckets still
/// hold).
const MAX_UNTOLD_SUBJECTS: usize = 20_000;

/// The report budget of one relay, kept in step with its region's others.
pub struct RegionalReportBudget {
    rates: SubjectRates,
    untold: Mutex<HashMap<String, u32>>,
}

impl RegionalReportBudget {
    /// `per_minute` reports per subject, bursts of as many.
    pub fn per_minute(per_minute: u32) -> Self {
        RegionalReportBudget {
            rates: SubjectRates::per_minute(per_minute),
            untold: Mutex::default(),
        }
    }

    /// Takes one report from `subject`'s budget, or says when to retry. A
    /// report taken is told to the region at the next tally.
    pub fn try_take(&self, subject: &str, now: Instant) -> Result<(), Duration> {
        self.rates.try_take(subject, now)?;
        let mut untold = self.untold.lock().expect("untold reports lock");
        if untold.len() < MAX_UNTOLD_SUBJECTS || untold.contains_key(subject) {
            *untold.entry(subject.to_owned()).or_default() += 1;
        }
        Ok(())
    }

    /// What was taken since the last tally, as tally messages; forgets it.
    fn tally(&self, relay_id: &str) -> Vec<ReportsAccepted> {
        let untold = std::mem::take(&mut *self.untold.lock().expect("untold reports lock"));
        let subjects: Vec<SubjectReports> = untold
            .into_iter()
            .map(|(subject, reports)| SubjectReports { subject, reports })
            .collect();
        subjects
            .chunks(SUBJECTS_PER_MESSAGE)
            .map(|chunk| ReportsAccepted {
                relay_id: relay_id.to_owned(),
                subjects: chunk.to_vec(),
            })
            .collect()
    }

    /// Charges what another relay of the region accepted; its own tallies
    /// (NATS echoes them back) are skipped.
    fn charge(&self, tally: &ReportsAccepted, own_relay_id: &str, now: Instant) {
        if tally.relay_id == own_relay_id {
            return;
        }
        for told in &tally.subjects {
            self.rates.charge(&told.subject, told.reports, now);
        }
    }
}

/// Tells the region, every [`TALLY_INTERVAL`], what this relay accepted, and
/// charges `budget` with what the others accepted — until the NATS
/// connection closes for good.
pub async fn share(
    budget: Arc<RegionalReportBudget>,
    nats: async_nats::Client,
    region: String,
    relay_id: String,
) {
    let subject = subjects::report_budget(&region);
    let mut told = match nats.subscribe(subject.clone()).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::error!(%subject, error = %e,
                "cannot hear the region's report tallies: each relay holds only its own budget");
            return;
        }
    };
    let mut tick = tokio::time::interval(TALLY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for tally in budget.tally(&relay_id) {
                    if let Err(e) = nats.publish(subject.clone(), tally.encode_to_vec().into()).await {
                        tracing::debug!(%subject, error = %e, "a report tally was not sent");
                    }
                }
            }
            message = told.next() => {
                let Some(message) = message else {
                    tracing::warn!(%subject,
                        "the region's report tallies stopped (NATS closed): this relay now holds only its own budget");
                    return;
                };
                match ReportsAccepted::decode(message.payload) {
                    Ok(tally) => budget.charge(&tally, &relay_id, Instant::now()),
                    Err(e) => tracing::warn!(%subject, error = %e, "ignored an unreadable report tally"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_relay_accepted_is_charged_by_the_others_not_by_itself() {
        let t0 = Instant::now();
        let (east_0, east_1) = (
            RegionalReportBudget::per_minute(3),
            RegionalReportBudget::per_minute(3),
        );
        assert!(east_0.try_take("mallory", t0).is_ok());
        assert!(east_0.try_take("mallory", t0).is_ok());
        let tallies = east_0.tally("us-east-0");
        assert_eq!(tallies.len(), 1);
        assert!(east_0.tally("us-east-0").is_empty(), "told once");
        for tally in &tallies {
            east_0.charge(tally, "us-east-0", t0);
            east_1.charge(tally, "us-east-1", t0);
        }
        assert!(
            east_0.try_take("mallory", t0).is_ok(),
            "its own echo is not charged"
        );
        assert!(east_1.try_take("mallory", t0).is_ok());
        assert!(
            east_1.try_take("mallory", t0).is_err(),
            "3 - 2 told - 1 taken"
        );
    }

    #[test]
    fn a_large_tally_is_split_into_messages_nats_accepts() {
        let budget = RegionalReportBudget::per_minute(10);
        let t0 = Instant::now();
        for user in 0..2_500 {
            budget.try_take(&format!("user-{user}"), t0).unwrap();
        }
        let tallies = budget.tally("r");
        assert_eq!(tallies.len(), 3);
        let named: usize = tallies.iter().map(|t| t.subjects.len()).sum();
        assert_eq!(named, 2_500);
        assert!(tallies.iter().all(|t| t.encoded_len() < 100_000));
    }
}
