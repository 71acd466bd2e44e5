//! How a client command's election fails, in words for the person running
//! it: what each relay answered, and when to stop trying.

use std::collections::BTreeMap;

use rallypoint_client::Candidate;
use rallypoint_client::session::handshake;
use rallypoint_protocol::v1::ErrorCode;

/// What each candidate answered last, for the message when none could be
/// elected.
#[derive(Debug, Default)]
pub struct Failures {
    by_candidate: BTreeMap<String, String>,
}

impl Failures {
    /// `candidate` failed or refused, saying `why`.
    pub fn record(&mut self, candidate: &Candidate, why: &str) {
        let key = format!("{} ({})", candidate.label(), candidate.url);
        self.by_candidate.insert(key, why.to_owned());
    }

    /// The error for an election that reached no relay.
    pub fn none_reachable(&self) -> anyhow::Error {
        let lines: Vec<String> = self
            .by_candidate
            .iter()
            // A connection's own error may name the candidate already.
            .map(
                |(candidate, why)| match why.starts_with(candidate.as_str()) {
                    true => format!("  {why}"),
                    false => format!("  {candidate}: {why}"),
                },
            )
            .collect();
        anyhow::anyhow!(
            "no relay could be elected; what each answered:\n{}",
            lines.join("\n")
        )
    }
}

/// The error that ends a command when `candidate` refused it for a reason
/// every relay would repeat (the token, the room: see
/// [`handshake::ends_the_call`]); `None` when another relay may do.
pub fn refusal_that_ends(
    candidate: &Candidate,
    code: ErrorCode,
    message: &str,
) -> Option<anyhow::Error> {
    handshake::ends_the_call(code)
        .then(|| anyhow::anyhow!("{} refused: {message}", candidate.label()))
}
