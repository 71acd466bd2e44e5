//! Who else is in the call, as this client knows it: pure state with explicit
//! times, so it is tested in virtual time. The application keeps its tiles
//! and decoders in step with the answers.
//!
//! The serving relay's presence frames are the truth: the participants its
//! `Joined` lists, then `PeerJoined`, `PeerMoved`, `PeerState` and
//! `PeerLeft`. Two things reach the client outside that stream, and either
//! could leave a **ghost**, a tile of someone who left that nothing ever
//! removes:
//!
//! * **Media from someone unknown.** Media can overtake its sender's
//!   `PeerJoined`, and while a standby is prepared the room's media comes
//!   through the standby too, later than the serving relay's `PeerLeft` when
//!   the standby is across a gateway. So a sender who left within
//!   [`QUIET_AFTER_LEAVING`] is not brought back by a late frame, and any
//!   other unknown sender is shown at once but only *unconfirmed*.
//! * **A move.** The new relay's `Joined` may not list everyone yet (it
//!   learns the room from roster beats, a second apart by default), and the
//!   old relay's `PeerLeft` for someone who left during the move is never
//!   read (presence is read from the serving relay only). So participants the
//!   `Joined` does not list stay, unconfirmed.
//!
//! An unconfirmed participant is confirmed by the serving relay naming it
//! (the relay tells its clients of every participant its roster learns of;
//! one it serves media for only on another relay's word, a listener's
//! grace, is not in its roster and not named) and is dropped when
//! [`CONFIRM_WITHIN`] passes without that.

use std::collections::HashMap;
use std::time::Duration;

use crate::time::Micros;

/// How long a participant shown without the serving relay's word waits for
/// it. The relay learns another relay's participants from the reply to its
/// join announcement (one gateway round trip) or else from the next roster
/// beat (1 s apart by default): five beats covers a lost beat or two and a
/// loaded machine, and a ghost goes within seconds.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// How long after a participant left its media is ignored: a standby across
/// a gateway forwards its last frames tens to hundreds of milliseconds after
/// the serving relay said it left. The relay naming it again (a rejoin)
/// lifts this at once.
pub const QUIET_AFTER_LEAVING: Duration = Duration::from_secs(5);

/// Where a participant stands with the serving relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// The serving relay named it.
    Named,
    /// Seen only through media or an earlier relay's word, since then.
    Unconfirmed { since: Micros },
}

/// What to do with a media frame, by its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A participant the client shows already.
    Known,
    /// Someone new: show it (unconfirmed) and play the frame.
    New,
    /// Someone who just left: drop the frame.
    Departed,
}

/// The other participants of the call.
#[derive(Debug, Default)]
pub struct Roster {
    peers: HashMap<String, Standing>,
    /// Participants that left, and until when their media is ignored.
    departed: HashMap<String, Micros>,
}

impl Roster {
    pub fn new() -> Self {
        Roster::default()
    }

    /// A relay answered a join (the first, or one after a move) listing
    /// `listed`: they are named; whoever else is shown becomes unconfirmed
    /// (one unconfirmed already keeps its earlier deadline). Returns the
    /// listed participants that are new.
    pub fn joined<'a>(
        &mut self,
        listed: impl IntoIterator<Item = &'a str>,
        now: Micros,
    ) -> Vec<String> {
        let listed: Vec<&str> = listed.into_iter().collect();
        for (peer_id, standing) in &mut self.peers {
            if *standing == Standing::Named && !listed.contains(&peer_id.as_str()) {
                *standing = Standing::Unconfirmed { since: now };
            }
        }
        listed
            .into_iter()
            .filter(|peer_id| self.named(peer_id))
            .map(str::to_owned)
            .collect()
    }

    /// The serving relay named a participant (`PeerJoined`, `PeerMoved`).
    /// Returns whether it is new to the client.
    pub fn named(&mut self, peer_id: &str) -> bool {
        self.departed.remove(peer_id);
        self.peers
            .insert(peer_id.to_owned(), Standing::Named)
            .is_none()
    }

    /// The serving relay told a participant's microphone or camera
    /// (`PeerState`): it knows the participant, so the client may too.
    /// Returns whether the client shows it (a state for someone unknown is
    /// not a join: the relay's `PeerJoined` carries the state again).
    pub fn confirmed(&mut self, peer_id: &str) -> bool {
        match self.peers.get_mut(peer_id) {
            Some(standing) => {
                *standing = Standing::Named;
                true
            }
            None => false,
        }
    }

    /// The serving relay said a participant left. Returns whether it was shown.
    pub fn left(&mut self, peer_id: &str, now: Micros) -> bool {
        self.departed
            .insert(peer_id.to_owned(), now + QUIET_AFTER_LEAVING);
        self.peers.remove(peer_id).is_some()
    }

    /// A media frame came from `peer_id`.
    pub fn media_from(&mut self, peer_id: &str, now: Micros) -> Sender {
        if self.peers.contains_key(peer_id) {
            return Sender::Known;
        }
        if self.departed.get(peer_id).is_some_and(|until| now < *until) {
            return Sender::Departed;
        }
        self.departed.remove(peer_id);
        self.peers
            .insert(peer_id.to_owned(), Standing::Unconfirmed { since: now });
        Sender::New
    }

    /// Drops the participants left unconfirmed for [`CONFIRM_WITHIN`] (they
    /// count as departed: their late media is ignored too) and forgets
    /// departures whose quiet ended. Returns who is dropped.
    pub fn expire(&mut self, now: Micros) -> Vec<String> {
        self.departed.retain(|_, until| now < *until);
        let dropped: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, standing)| {
                matches!(standing, Standing::Unconfirmed { since } if now.since(*since) >= CONFIRM_WITHIN)
            })
            .map(|(peer_id, _)| peer_id.clone())
            .collect();
        for peer_id in &dropped {
            self.left(peer_id, now);
        }
        dropped
    }

    /// Whether the client shows `peer_id`.
    pub fn contains(&self, peer_id: &str) -> bool {
        self.peers.contains_key(peer_id)
    }

    /// How many participants the client shows.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Micros {
        Micros::from_millis(ms)
    }

    /// A roster after a first join listing `peers`.
    fn roster_with(peers: &[&str]) -> Roster {
        let mut roster = Roster::new();
        roster.joined(peers.iter().copied(), at(0));
        roster
    }

    #[test]
    fn a_late_frame_through_the_standby_does_not_bring_back_who_left() {
        let mut roster = roster_with(&["ann", "bob"]);
        assert!(roster.left("bob", at(10_000)));
        // Bob's last frames, forwarded by a standby across a gateway.
        assert_eq!(roster.media_from("bob", at(10_300)), Sender::Departed);
        assert_eq!(roster.media_from("bob", at(14_999)), Sender::Departed);
        assert!(!roster.contains("bob"));
        assert_eq!(roster.len(), 1);
        assert!(roster.expire(at(20_000)).is_empty());
    }

    #[test]
    fn a_sender_the_relay_never_names_is_dropped() {
        let mut roster = roster_with(&["ann"]);
        assert_eq!(roster.media_from("ghost", at(1_000)), Sender::New);
        assert_eq!(roster.media_from("ghost", at(1_020)), Sender::Known);
        assert!(roster.expire(at(5_999)).is_empty());
        assert_eq!(roster.expire(at(6_000)), vec!["ghost".to_owned()]);
        assert!(!roster.contains("ghost"));
        // Its later frames do not bring it back either.
        assert_eq!(roster.media_from("ghost", at(6_100)), Sender::Departed);
    }

    #[test]
    fn media_that_overtakes_its_senders_join_stays_once_the_relay_names_it() {
        let mut roster = roster_with(&["ann"]);
        assert_eq!(roster.media_from("cat", at(1_000)), Sender::New);
        assert!(!roster.named("cat"), "already shown");
        assert!(roster.expire(at(60_000)).is_empty());
        assert!(roster.contains("cat"));
    }

    #[test]
    fn who_left_during_a_move_is_dropped_and_who_the_new_relay_learns_of_stays() {
        let mut roster = roster_with(&["ann", "bob", "cat"]);
        // The new relay knows Ann; Bob left during the move (the old relay's
        // PeerLeft was never read); Cat is on a relay the new one has not
        // heard from yet.
        assert_eq!(roster.joined(["ann"], at(30_000)), Vec::<String>::new());
        assert_eq!(
            roster.len(),
            3,
            "nobody is dropped on the relay's first word"
        );
        // Its next roster beat names Cat.
        assert!(!roster.named("cat"));
        assert_eq!(roster.expire(at(35_000)), vec!["bob".to_owned()]);
        assert!(roster.contains("ann") && roster.contains("cat"));
        assert_eq!(roster.len(), 2);
    }

    #[test]
    fn a_state_change_confirms_but_does_not_add() {
        let mut roster = roster_with(&["ann"]);
        roster.joined(std::iter::empty(), at(1_000));
        assert!(roster.confirmed("ann"));
        assert!(!roster.confirmed("zed"));
        assert!(!roster.contains("zed"));
        assert!(roster.expire(at(10_000)).is_empty());
        assert!(roster.contains("ann"));
    }

    #[test]
    fn a_rejoin_is_shown_at_once_and_its_media_played() {
        let mut roster = roster_with(&["ann"]);
        roster.left("ann", at(1_000));
        assert!(roster.named("ann"), "back as a new participant");
        assert_eq!(roster.media_from("ann", at(1_500)), Sender::Known);
        // A join listing someone who had left shows it again too.
        roster.left("ann", at(2_000));
        assert_eq!(roster.joined(["ann"], at(2_500)), vec!["ann".to_owned()]);
        assert_eq!(roster.media_from("ann", at(2_600)), Sender::Known);
    }

    #[test]
    fn media_after_the_quiet_shows_the_sender_again_unconfirmed() {
        let mut roster = roster_with(&["ann"]);
        roster.left("ann", at(1_000));
        assert_eq!(roster.media_from("ann", at(6_000)), Sender::New);
        assert_eq!(roster.expire(at(11_000)), vec!["ann".to_owned()]);
    }

    #[test]
    fn an_unconfirmed_participant_keeps_its_first_deadline_across_joins() {
        let mut roster = roster_with(&["ann"]);
        roster.joined(std::iter::empty(), at(1_000));
        // A second move before Ann is named again does not extend her wait.
        roster.joined(std::iter::empty(), at(4_000));
        assert_eq!(roster.expire(at(6_000)), vec!["ann".to_owned()]);
    }
}
