//! Stable lower-case names of the protocol's enums, as stored in ClickHouse,
//! printed in JSON and shown in dashboards. Never renamed: they are data.

use crate::v1::{CandidateOutcome, DecisionRule, ElectionTrigger, Transport};

pub fn transport(value: i32) -> &'static str {
    match Transport::try_from(value) {
        Ok(Transport::Websocket) => "websocket",
        Ok(Transport::Webtransport) => "webtransport",
        _ => "unspecified",
    }
}

pub fn trigger(value: i32) -> &'static str {
    match ElectionTrigger::try_from(value) {
        Ok(ElectionTrigger::Initial) => "initial",
        Ok(ElectionTrigger::Failover) => "failover",
        Ok(ElectionTrigger::Degradation) => "degradation",
        Ok(ElectionTrigger::Drain) => "drain",
        Ok(ElectionTrigger::Reelection) => "reelection",
        _ => "unspecified",
    }
}

pub fn rule(value: i32) -> &'static str {
    match DecisionRule::try_from(value) {
        Ok(DecisionRule::Early) => "early",
        Ok(DecisionRule::Deadline) => "deadline",
        Ok(DecisionRule::SoleCandidate) => "sole_candidate",
        Ok(DecisionRule::Standby) => "standby",
        Ok(DecisionRule::SustainedImprovement) => "sustained_improvement",
        Ok(DecisionRule::FirstAnswer) => "first_answer",
        _ => "unspecified",
    }
}

pub fn outcome(value: i32) -> &'static str {
    match CandidateOutcome::try_from(value) {
        Ok(CandidateOutcome::Winner) => "winner",
        Ok(CandidateOutcome::Standby) => "standby",
        Ok(CandidateOutcome::Loser) => "loser",
        Ok(CandidateOutcome::Failed) => "failed",
        _ => "unspecified",
    }
}
