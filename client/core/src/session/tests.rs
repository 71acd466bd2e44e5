//! The session with virtual time and a scripted network: what goes on the
//! wire for each election step, and what the application hears.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::TransportKind;
use rallypoint_protocol::v1::{Drain, Media, ProbeAck, TokenRefreshed, Welcome};

const ROOM: &str = "standup";
/// The wall clock (unix ms) at virtual time zero.
const WALL_AT_ZERO_MS: u64 = 1_790_000_000_000;
/// How long after its expiry a relay still serves a token.
const LEEWAY_S: u64 = 5;

fn candidate(region: &str, transport: TransportKind) -> Candidate {
    Candidate {
        region: region.into(),
        relay_id: format!("{region}-{transport:?}"),
        transport,
        url: format!("wss://{region}.invalid/"),
        cert_hash: None,
        shadow: false,
    }
}

/// A session over two relays, 20 ms and 120 ms away, with its own network:
/// connects succeed (or fail, per candidate) and probes are answered after
/// the candidate's RTT. Tokens are `exp:<unix seconds>`; the relays end a
/// connection with `TokenExpired` when its token is `LEEWAY_S` past expiry,
/// and answer Refresh with TokenRefreshed.
struct Net {
    session: Session,
    now: Micros,
    /// The virtual time (µs) the session's stamp reads its wall clock from.
    clock: Arc<AtomicU64>,
    /// The expiry of the token each open connection lives on.
    token_exp: Vec<Option<u64>>,
    /// The token each Hello presented.
    hellos: Vec<(CandidateId, String)>,
    /// The application's issuer: the lifetime (s) of the tokens it hands in
    /// when asked; `None` has none.
    issuer: Option<u64>,
    /// When the session asked for a fresh token.
    asks: Vec<Micros>,
    rtt_ms: Vec<u64>,
    reachable: Vec<bool>,
    /// (arrives at, candidate, frame) answers in flight.
    in_flight: Vec<(Micros, CandidateId, ServerFrame)>,
    sent: Vec<(CandidateId, ClientFrame)>,
    closed: Vec<CandidateId>,
    updates: Vec<Update>,
    room_frames: usize,
    /// A relay that lies in its probe answers: it echoes a send time 1 ms
    /// before its answer arrives and claims to have held the probe for all
    /// but 1 ms of the round trip.
    liar: Option<CandidateId>,
}

impl Net {
    fn new(room: Option<&str>, reachable: Vec<bool>) -> Net {
        Net::with_token(room, reachable, 3600)
    }

    /// A session whose first token lives `token_life_s`.
    fn with_token(room: Option<&str>, reachable: Vec<bool>, token_life_s: u64) -> Net {
        let mut next_id = 0u8;
        let clock = Arc::new(AtomicU64::new(0));
        let wall = clock.clone();
        let stamp: Stamp = Box::new(move || {
            next_id += 1;
            let wall_ms = WALL_AT_ZERO_MS + wall.load(Ordering::Relaxed) / 1000;
            ([next_id; 16], wall_ms)
        });
        let session = Session::new(
            vec![
                candidate("singapore", TransportKind::WebSocket),
                candidate("us-east", TransportKind::WebSocket),
            ],
            ElectionConfig::default(),
            bytes::Bytes::from_static(&[7; 16]),
            ClientContext::default(),
            room.map(str::to_owned),
            token_expiring(Micros::ZERO, token_life_s),
            stamp,
        );
        Net {
            session,
            now: Micros::ZERO,
            clock,
            token_exp: vec![None; 2],
            hellos: Vec::new(),
            issuer: None,
            asks: Vec::new(),
            rtt_ms: vec![20, 120],
            reachable,
            in_flight: Vec::new(),
            sent: Vec::new(),
            closed: Vec::new(),
            updates: Vec::new(),
            room_frames: 0,
            liar: None,
        }
    }

    /// Carries out everything the session asked for.
    fn carry_out(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            match transmit {
                Transmit::Connect(id) => {
                    let token = self.session.token().to_owned();
                    let exp = expiry_of(&token);
                    let expired = (exp + LEEWAY_S) * 1000 <= WALL_AT_ZERO_MS + self.now.as_millis();
                    if expired {
                        self.session.connect_failed(
                            id,
                            "relay refused: token expired".into(),
                            self.now,
                        );
                    } else if self.reachable[id] {
                        self.hellos.push((id, token));
                        self.token_exp[id] = Some(exp);
                        let welcome = Welcome {
                            token_expires_unix: exp,
                            ..Default::default()
                        };
                        self.session.connected(id, &welcome, self.now);
                    } else {
                        self.session
                            .connect_failed(id, "connection refused".into(), self.now);
                    }
                }
                Transmit::Send(id, frame) => {
                    if let Some(client_frame::Kind::Probe(probe)) = &frame.kind {
                        let at = Micros(self.now.0 + self.rtt_ms[id] * 1000);
                        let ack = if self.liar == Some(id) {
                            ProbeAck {
                                seq: probe.seq,
                                client_send_us: at.0 - 1_000,
                                relay_recv_us: 0,
                                relay_send_us: (self.rtt_ms[id] - 1) * 1000,
                                ..Default::default()
                            }
                        } else {
                            ProbeAck {
                                seq: probe.seq,
                                client_send_us: probe.client_send_us,
                                ..Default::default()
                            }
                        };
                        let ack = ServerFrame::of(server_frame::Kind::ProbeAck(ack));
                        self.in_flight.push((at, id, ack));
                    }
                    if let Some(client_frame::Kind::Refresh(refresh)) = &frame.kind {
                        self.refresh(id, &refresh.token);
                    }
                    self.sent.push((id, frame));
                }
                Transmit::Close(id) => {
                    self.token_exp[id] = None;
                    self.closed.push(id);
                }
                Transmit::FetchToken { .. } => {
                    self.asks.push(self.now);
                    if let Some(life) = self.issuer {
                        let token = token_expiring(self.now, life);
                        self.session.refresh_token(token);
                    }
                }
            }
        }
        while let Some(update) = self.session.poll_update() {
            self.updates.push(update);
        }
    }

    /// The relay takes the fresh token at once and says so after a round trip.
    fn refresh(&mut self, id: CandidateId, token: &str) {
        let exp = expiry_of(token);
        self.token_exp[id] = Some(exp);
        let refreshed = ServerFrame::of(server_frame::Kind::TokenRefreshed(TokenRefreshed {
            token_expires_unix: exp,
        }));
        let at = Micros(self.now.0 + self.rtt_ms[id] * 1000);
        self.in_flight.push((at, id, refreshed));
    }

    /// The next connection a relay ends for its expired token, and when.
    fn next_expiry(&self) -> Option<(Micros, CandidateId)> {
        self.token_exp
            .iter()
            .enumerate()
            .filter_map(|(id, exp)| {
                let ends_ms = (exp.as_ref()? + LEEWAY_S) * 1000 - WALL_AT_ZERO_MS;
                Some((Micros::from_millis(ends_ms), id))
            })
            .min()
    }

    fn deliver(&mut self, id: CandidateId, frame: ServerFrame) -> FrameUse {
        let used = self.session.frame(id, &frame, self.now, self.now);
        if used == FrameUse::Room {
            self.room_frames += 1;
        }
        self.carry_out();
        used
    }

    /// Runs the network until `until` (ms), answers arriving in order.
    fn run_until(&mut self, until_ms: u64) {
        self.carry_out();
        let until = Micros(until_ms * 1000);
        loop {
            self.in_flight.sort_by_key(|(at, _, _)| at.0);
            let next_answer = self.in_flight.first().map(|(at, _, _)| *at);
            let next_timer = self.session.poll_timeout();
            let next_expiry = self.next_expiry();
            let next = [next_answer, next_timer, next_expiry.map(|(at, _)| at)]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.set_now(until);
                return;
            };
            self.set_now(next);
            if let Some((at, id)) = next_expiry
                && at == next
            {
                self.token_exp[id] = None;
                self.deliver(
                    id,
                    ServerFrame::error(ErrorCode::TokenExpired, "token expired"),
                );
            } else if next_answer == Some(next) {
                let (_, id, frame) = self.in_flight.remove(0);
                self.deliver(id, frame);
            } else {
                self.session.handle_timeout(self.now);
                self.carry_out();
            }
        }
    }

    fn set_now(&mut self, now: Micros) {
        self.now = now;
        self.clock.store(now.0, Ordering::Relaxed);
    }

    fn refusals(&self) -> Vec<ErrorCode> {
        self.updates
            .iter()
            .filter_map(|u| match u {
                Update::Refused { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }

    /// The tokens sent in Refresh frames to `to`.
    fn refreshes_to(&self, to: CandidateId) -> Vec<&str> {
        self.sent
            .iter()
            .filter_map(|(id, f)| match &f.kind {
                Some(client_frame::Kind::Refresh(r)) if *id == to => Some(r.token.as_str()),
                _ => None,
            })
            .collect()
    }

    fn decisions(&self) -> Vec<&Candidate> {
        self.updates
            .iter()
            .filter_map(|u| match u {
                Update::Decided { candidate, .. } => Some(candidate),
                _ => None,
            })
            .collect()
    }

    fn joins(&self) -> Vec<(CandidateId, &Join)> {
        self.sent
            .iter()
            .filter_map(|(id, f)| match &f.kind {
                Some(client_frame::Kind::Join(join)) => Some((*id, join)),
                _ => None,
            })
            .collect()
    }

    fn reports_sent_to(&self, to: CandidateId) -> usize {
        self.sent
            .iter()
            .filter(|(id, f)| *id == to && matches!(f.kind, Some(client_frame::Kind::Telemetry(_))))
            .count()
    }
}

/// A call started with a token living `token_life_s`; the application
/// hands in tokens living `issuer` when asked (none without).
fn call_with_tokens(token_life_s: u64, issuer: Option<u64>) -> Net {
    let mut net = Net::with_token(Some(ROOM), vec![true, true], token_life_s);
    net.issuer = issuer;
    net.session.start(Micros::ZERO);
    net
}

/// A token minted at virtual time `now`, living `life_s`.
fn token_expiring(now: Micros, life_s: u64) -> String {
    format!(
        "exp:{}",
        (WALL_AT_ZERO_MS + now.as_millis()) / 1000 + life_s
    )
}

fn expiry_of(token: &str) -> u64 {
    token
        .strip_prefix("exp:")
        .and_then(|exp| exp.parse().ok())
        .expect("a test token")
}

#[test]
fn every_candidate_is_connected_and_probed_and_only_the_winner_joins() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);

    let probed: std::collections::BTreeSet<CandidateId> = net
        .sent
        .iter()
        .filter(|(_, f)| matches!(f.kind, Some(client_frame::Kind::Probe(_))))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(probed.len(), 2, "both candidates probed");
    assert_eq!(net.decisions().len(), 1);
    assert_eq!(
        net.decisions()[0].region,
        "singapore",
        "the 20 ms relay wins"
    );
    let joins = net.joins();
    assert_eq!(joins.len(), 1, "only the winner joins: {joins:?}");
    assert_eq!((joins[0].0, joins[0].1.room.as_str()), (0, ROOM));
    assert_eq!(net.session.serving(), Some(0));
    assert_eq!(
        net.reports_sent_to(0),
        1,
        "the election report goes to the winner"
    );
    assert_eq!(net.reports_sent_to(1), 0);
}

#[test]
fn a_relay_cannot_look_closer_than_it_is() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.liar = Some(1);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.decisions().len(), 1);
    assert_eq!(
        net.decisions()[0].region,
        "singapore",
        "the honest 20 ms relay wins over the 120 ms one claiming 1 ms"
    );
}

#[test]
fn without_a_room_the_session_only_measures() {
    let mut net = Net::new(None, vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.decisions().len(), 1);
    assert!(net.joins().is_empty());
    assert_eq!(net.session.hang_up(), None, "nothing to leave");
}

#[test]
fn room_traffic_is_the_applications_only_from_the_serving_relay() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    let media = ServerFrame::of(server_frame::Kind::Media(Media::default()));
    assert_eq!(net.deliver(0, media.clone()), FrameUse::Room);
    assert_eq!(
        net.deliver(1, media),
        FrameUse::Consumed(false),
        "a standby's media is not the room's"
    );
    let welcome = ServerFrame::of(server_frame::Kind::Welcome(Welcome::default()));
    assert_eq!(net.deliver(0, welcome), FrameUse::Consumed(false));

    net.session
        .send_to_room(client_frame::Kind::Media(Media::default()));
    assert!(matches!(
        net.session.poll_transmit(),
        Some(Transmit::Send(0, _))
    ));
}

#[test]
fn drain_moves_the_call_to_the_standby_at_once() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    net.deliver(
        0,
        ServerFrame::of(server_frame::Kind::Drain(Drain::default())),
    );
    let joins = net.joins();
    assert_eq!(
        joins.last().map(|(id, _)| *id),
        Some(1),
        "re-joined through the standby: {joins:?}"
    );
    // The new Join carries a higher join_seq: the room sees a move, not a
    // leave; the draining relay's connection is let go.
    assert!(joins.last().unwrap().1.join_seq > joins[0].1.join_seq);
    assert!(net.closed.contains(&0));
    assert_eq!(net.decisions().len(), 2);
    assert_eq!(net.session.serving(), Some(1));
}

#[test]
fn a_refusal_is_reported_and_its_connection_closed() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(100);
    let refusal = ServerFrame::error(ErrorCode::TokenExpired, "token expired");
    net.deliver(1, refusal);
    assert!(net.closed.contains(&1));
    assert!(net.updates.iter().any(|u| matches!(
        u,
        Update::Refused { code: ErrorCode::TokenExpired, message, .. } if message == "token expired"
    )));
}

#[test]
fn reports_made_while_no_relay_was_reachable_are_sent_once_one_is() {
    let mut net = Net::new(Some(ROOM), vec![false, false]);
    net.session.start(Micros::ZERO);
    net.run_until(500);
    assert!(
        net.updates
            .iter()
            .any(|u| matches!(u, Update::NoRelayReachable { attempt: 1, .. }))
    );
    assert_eq!(
        net.session.reports_pending(),
        1,
        "the failed election's report is kept"
    );

    // The network comes back before the retry.
    net.reachable = vec![true, true];
    net.run_until(20_000);
    assert_eq!(net.decisions().len(), 1);
    assert_eq!(
        net.reports_sent_to(0),
        2,
        "the kept report and the new one go to the relay that now serves"
    );

    // The relay accepts one: it is settled, the other stays kept.
    let first = net
        .sent
        .iter()
        .find_map(|(_, f)| match &f.kind {
            Some(client_frame::Kind::Telemetry(TelemetryReport {
                kind: Some(telemetry_report::Kind::Election(report)),
            })) => Some(report.report_id.clone()),
            _ => None,
        })
        .expect("a report was sent");
    net.deliver(
        0,
        ServerFrame::of(server_frame::Kind::TelemetryAck(TelemetryAck {
            report_id: first,
            accepted: true,
            reason: String::new(),
            ..Default::default()
        })),
    );
    assert_eq!(net.session.reports_pending(), 1);
    assert!(matches!(
        net.updates.last(),
        Some(Update::Reports {
            delivered: 1,
            pending: 1,
            ack: Some(_)
        })
    ));
}

#[test]
fn hanging_up_leaves_through_the_serving_relay() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    let (id, frame) = net.session.hang_up().expect("serving");
    assert_eq!(id, 0);
    assert!(matches!(
        frame.kind,
        Some(client_frame::Kind::Leave(Leave { moving: false }))
    ));
    assert_eq!(net.session.serving(), None);
}

#[test]
fn a_long_call_outlives_its_tokens_on_every_connection() {
    let mut net = call_with_tokens(600, Some(600));
    net.run_until(30 * 60_000);

    assert_eq!(net.refusals(), vec![], "no relay ended the call");
    assert_eq!(
        net.session.serving(),
        Some(0),
        "still served by the first winner"
    );
    assert_eq!(net.decisions().len(), 1, "never re-elected");
    assert_eq!(
        net.asks.first(),
        Some(&Micros::from_millis(400_000)),
        "asked at two thirds of a 10-minute token"
    );
    assert!(
        net.asks.len() >= 4,
        "asked again for each new token: {:?}",
        net.asks
    );
    // The serving relay and the standby alike get every fresh token.
    for id in [0, 1] {
        assert_eq!(net.refreshes_to(id).len(), net.asks.len(), "candidate {id}");
    }
}

#[test]
fn without_a_fresh_token_the_relays_end_the_call_after_asking_again() {
    let mut net = call_with_tokens(600, None);
    net.run_until(600_000);
    assert_eq!(net.asks.first(), Some(&Micros::from_millis(400_000)));
    assert!(
        net.asks.len() >= 3,
        "asked again while none came: {:?}",
        net.asks
    );
    assert_eq!(net.refusals(), vec![], "the token is still good");

    net.run_until(600_000 + LEEWAY_S * 1000 + 1);
    assert_eq!(
        net.refusals(),
        vec![ErrorCode::TokenExpired, ErrorCode::TokenExpired],
        "both connections ended with the token"
    );
}

#[test]
fn short_lived_tokens_are_not_fetched_in_a_loop() {
    let mut net = call_with_tokens(3, Some(3));
    net.run_until(60_000);
    assert_eq!(net.refusals(), vec![]);
    assert_eq!(net.session.serving(), Some(0));
    // One ask per token, at half of its 2–3 s life.
    assert!(
        (20..=60).contains(&net.asks.len()),
        "{} asks in a minute",
        net.asks.len()
    );
}

#[test]
fn new_connections_present_the_newest_token_and_ones_under_way_are_refreshed() {
    let mut net = call_with_tokens(600, None);
    let connects: Vec<Transmit> = std::iter::from_fn(|| net.session.poll_transmit()).collect();
    assert_eq!(connects, vec![Transmit::Connect(0), Transmit::Connect(1)]);
    let old_exp = expiry_of(net.session.token());

    // A fresh token comes while both Hellos with the old one are under way.
    let fresh = token_expiring(Micros::ZERO, 1200);
    net.session.refresh_token(fresh.clone());
    assert_eq!(
        net.session.poll_transmit(),
        None,
        "nothing open to refresh yet"
    );
    assert_eq!(net.session.token(), fresh, "new connections present it");
    let old_welcome = Welcome {
        token_expires_unix: old_exp,
        ..Default::default()
    };
    net.session.connected(0, &old_welcome, Micros::ZERO);
    assert_eq!(
        net.session.poll_transmit(),
        Some(Transmit::Send(
            0,
            ClientFrame::of(client_frame::Kind::Refresh(Refresh { token: fresh })),
        )),
        "a connection that said Hello with the old token is refreshed at once"
    );
}

#[test]
fn a_connection_opened_after_a_refresh_needs_none() {
    let mut net = call_with_tokens(600, Some(600));
    net.run_until(500_000);
    assert_eq!(net.asks.len(), 1);
    let fresh = net.session.token().to_owned();

    // The standby drops; the election connects it again later, with the
    // fresh token in Hello and no Refresh after.
    net.session.closed(1, net.now);
    net.token_exp[1] = None;
    let refreshes_before = net.refreshes_to(1).len();
    net.run_until(600_000);
    let (_, hello) = net.hellos.iter().rfind(|(id, _)| *id == 1).unwrap();
    assert_eq!(
        net.hellos.iter().filter(|(id, _)| *id == 1).count(),
        2,
        "reconnected"
    );
    assert_eq!(hello, &fresh);
    assert_eq!(net.refreshes_to(1).len(), refreshes_before);
    assert_eq!(net.refusals(), vec![]);
}
