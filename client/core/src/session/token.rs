//! Keeping a long call's token fresh.
//!
//! A relay closes a connection with `TokenExpired` when the token it was
//! given expires (plus a short leeway), unless the client sent a `Refresh`
//! with a fresh token for the same user and room before. Only the
//! application can get a fresh token (its issuer, its login), so the session
//! asks for one well ahead of expiry, and sends the one handed in on every
//! open connection; connections opened later say Hello with it.
//!
//! Every connection converges on the newest token: each remembers which
//! token it presented last, and one that says Welcome with an older token (a
//! connect already under way when the fresh token came) is refreshed at once.

use std::time::Duration;

use crate::election::CandidateId;
use crate::time::Micros;

/// However long a token has left, a failed fetch is retried no sooner than
/// this: an issuer that is down is not hammered.
pub const TOKEN_RETRY_MIN: Duration = Duration::from_secs(5);

/// With a token living `remaining` more, when to ask for the next one: at
/// two thirds of what is left or a minute before expiry, whichever is
/// earlier — time for a slow issuer and a retry — but not before half of it
/// has passed, so that short-lived tokens are not fetched in a loop.
pub fn ask_after(remaining: Duration) -> Duration {
    let two_thirds = remaining * 2 / 3;
    let minute_before = remaining.saturating_sub(Duration::from_secs(60));
    (remaining / 2).max(two_thirds.min(minute_before))
}

pub(super) struct TokenKeeper {
    /// The newest token: new connections present it in Hello.
    token: String,
    /// Bumped with each token handed in.
    generation: u64,
    /// Per candidate: the generation of the token its connection presented
    /// last, in Hello or Refresh.
    presented: Vec<Option<u64>>,
    /// When the newest token expires, on the driver's clock and in unix
    /// seconds, once a relay said so.
    expires: Option<(Micros, u64)>,
    /// When to ask the application for a fresh token (again).
    ask_at: Option<Micros>,
}

impl TokenKeeper {
    pub(super) fn new(token: String, candidates: usize) -> Self {
        TokenKeeper {
            token,
            generation: 0,
            presented: vec![None; candidates],
            expires: None,
            ask_at: None,
        }
    }

    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// The candidate's connection presents the current token (a Hello now,
    /// or a Refresh).
    pub(super) fn presenting(&mut self, id: CandidateId) {
        self.presented[id] = Some(self.generation);
    }

    /// A relay said when the token `id` presented expires (Welcome or
    /// TokenRefreshed; `wall_ms` is the wall clock now). `true` when the
    /// connection is on an older token and needs a Refresh with the newest.
    pub(super) fn expiry(
        &mut self,
        id: CandidateId,
        expires_unix: u64,
        wall_ms: u64,
        now: Micros,
    ) -> bool {
        if self.presented[id] != Some(self.generation) {
            return true;
        }
        // 0: a relay that does not say; the newest token's first answer
        // sets the schedule, later ones only repeat it.
        if expires_unix == 0 || self.expires.is_some() {
            return false;
        }
        let remaining = Duration::from_millis((expires_unix * 1000).saturating_sub(wall_ms));
        self.expires = Some((now + remaining, expires_unix));
        self.ask_at = Some(now + ask_after(remaining));
        false
    }

    /// A fresh token from the application: the schedule waits for a relay
    /// to say when it expires.
    pub(super) fn replace(&mut self, token: String) {
        self.token = token;
        self.generation += 1;
        self.expires = None;
        self.ask_at = None;
    }

    pub(super) fn poll_timeout(&self) -> Option<Micros> {
        self.ask_at
    }

    /// The current token's expiry (unix seconds) when it is time to ask for
    /// a fresh one; asks again later if none is handed in by then.
    pub(super) fn handle_timeout(&mut self, now: Micros) -> Option<u64> {
        let ask_at = self.ask_at.filter(|&at| at <= now)?;
        let (expires_at, expires_unix) = self.expires?;
        let retry = (expires_at.since(ask_at) / 4).max(TOKEN_RETRY_MIN);
        self.ask_at = Some(now + retry);
        Some(expires_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tokens_are_renewed_at_two_thirds_short_ones_at_half() {
        let h = |hours: u64| Duration::from_secs(hours * 3600);
        assert_eq!(ask_after(h(12)), h(8));
        assert_eq!(ask_after(Duration::from_secs(150)), Duration::from_secs(90));
        assert_eq!(
            ask_after(Duration::from_secs(3)),
            Duration::from_millis(1500)
        );
        assert_eq!(ask_after(Duration::ZERO), Duration::ZERO);
    }
}
