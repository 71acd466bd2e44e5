//! The session with virtual time and a scripted network: what goes on the
//! wire for each election step, and what the application hears.

use super::*;
use crate::TransportKind;
use rallypoint_protocol::prost::Message;
use rallypoint_protocol::v1::{Drain, Hello, Media, ProbeAck, TokenRefreshed, Welcome};

const ROOM: &str = "standup";
/// The wall clock (unix ms) at virtual time zero.
const WALL_AT_ZERO_MS: u64 = 1_790_000_000_000;
/// How long after its expiry a relay still serves a token.
const LEEWAY_S: u64 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Each candidate's current connection, as the driver knows it.
    conns: Vec<Option<ConnectionId>>,
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
    /// Relays that open the transport but never answer Hello.
    silent: Vec<bool>,
    /// Relays that refuse every Hello as unauthenticated.
    refusing: Vec<bool>,
    /// Relays that died (SIGKILL under a WebTransport connection: nothing
    /// more arrives, nothing says so).
    dead: Vec<bool>,
    /// A rough path for probes: per-direction loss and normal jitter (ms)
    /// on the round trip, drawn from a seeded generator.
    path: Option<(f64, f64, crate::sim::Rng)>,
    /// When each live-table snapshot came.
    snapshots: Vec<Micros>,
    /// When each Join left, and through which candidate.
    join_times: Vec<(Micros, CandidateId)>,
    /// When `Join{prepare}` went to each (make-before-break).
    prepare_times: Vec<(Micros, CandidateId)>,
    /// When media went to each live relay.
    media_times: Vec<(Micros, CandidateId)>,
    /// (arrives at, connection, frame) answers in flight.
    in_flight: Vec<(Micros, ConnectionId, ServerFrame)>,
    sent: Vec<(CandidateId, ClientFrame)>,
    routes: Vec<(CandidateId, Route)>,
    closed: Vec<CandidateId>,
    updates: Vec<Update>,
    room_frames: usize,
    /// A relay that lies in its probe answers: it echoes a send time 1 ms
    /// before its answer arrives and claims to have held the probe for all
    /// but 1 ms of the round trip.
    liar: Option<CandidateId>,
    /// A relay's uplink that queues what it cannot carry (see [`Uplink`]);
    /// with it, that relay's answers carry its read time on a clock of its
    /// own.
    uplink: Option<Uplink>,
}

/// A FIFO uplink to one relay at a fixed rate, never dropping: a browser's
/// WebSocket or datagram queue in front of a slow line. A probe waits
/// behind the media queued before it.
#[derive(Debug, Clone, Copy)]
struct Uplink {
    to: CandidateId,
    bytes_per_sec: f64,
    backlog: f64,
    drained_at: Micros,
    /// The longest a probe waited in it.
    worst: Duration,
}

impl Uplink {
    /// Drains what the line carried until `now`; the wait of a frame sent
    /// now.
    fn wait(&mut self, now: Micros) -> Duration {
        let carried = now.since(self.drained_at).as_secs_f64() * self.bytes_per_sec;
        self.backlog = (self.backlog - carried).max(0.0);
        self.drained_at = now;
        Duration::from_secs_f64(self.backlog / self.bytes_per_sec)
    }
}

/// The relays' clock, unix microseconds, when the simulated one starts.
const RELAY_CLOCK_AT_ZERO_US: u64 = 1_764_000_000_000_000;

fn config(room: Option<&str>, token: String) -> SessionConfig {
    SessionConfig {
        election: ElectionConfig::default(),
        identity: Identity {
            token,
            session_id: bytes::Bytes::from_static(&[7; 16]),
            info: Default::default(),
        },
        room: room.map(str::to_owned),
        connect_timeout: CONNECT_TIMEOUT,
        report_seed: [0; 16],
        wall_at_zero_ms: WALL_AT_ZERO_MS,
    }
}

impl Net {
    fn new(room: Option<&str>, reachable: Vec<bool>) -> Net {
        Net::with_token(room, reachable, 3600)
    }

    /// A session joining [`ROOM`] over WebTransport to Singapore and
    /// us-east, both reachable, with an hour's token.
    fn webtransport_pair() -> Net {
        let wt = |region| candidate(region, TransportKind::WebTransport);
        Net::with_candidates(
            vec![wt("singapore"), wt("us-east")],
            config(Some(ROOM), token_expiring(Micros::ZERO, 3600)),
            vec![true, true],
        )
    }

    /// A session whose first token lives `token_life_s`.
    fn with_token(room: Option<&str>, reachable: Vec<bool>, token_life_s: u64) -> Net {
        Net::with_candidates(
            vec![
                candidate("singapore", TransportKind::WebSocket),
                candidate("us-east", TransportKind::WebSocket),
            ],
            config(room, token_expiring(Micros::ZERO, token_life_s)),
            reachable,
        )
    }

    fn with_candidates(
        candidates: Vec<Candidate>,
        config: SessionConfig,
        reachable: Vec<bool>,
    ) -> Net {
        let n = candidates.len();
        Net {
            session: Session::new(candidates, config),
            now: Micros::ZERO,
            conns: vec![None; n],
            token_exp: vec![None; n],
            hellos: Vec::new(),
            issuer: None,
            asks: Vec::new(),
            rtt_ms: [20, 120].into_iter().cycle().take(n).collect(),
            reachable,
            silent: vec![false; n],
            refusing: vec![false; n],
            dead: vec![false; n],
            path: None,
            snapshots: Vec::new(),
            join_times: Vec::new(),
            prepare_times: Vec::new(),
            media_times: Vec::new(),
            in_flight: Vec::new(),
            sent: Vec::new(),
            routes: Vec::new(),
            closed: Vec::new(),
            updates: Vec::new(),
            room_frames: 0,
            liar: None,
            uplink: None,
        }
    }

    /// Carries out everything the session asked for, as a driver and the
    /// relays would: transports open at once (or fail), relays answer Hello
    /// at once and probes after the candidate's RTT.
    fn carry_out(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            match transmit {
                Transmit::Open { connection, .. } => {
                    let id = connection.candidate;
                    if self.reachable[id] {
                        self.conns[id] = Some(connection);
                        assert!(self.session.opened(connection, 1200, self.now));
                    } else {
                        self.session
                            .open_failed(connection, "connection refused".into(), self.now);
                    }
                }
                Transmit::Send {
                    connection,
                    frame,
                    route,
                } => {
                    let id = connection.candidate;
                    match &frame.kind {
                        _ if self.dead[id] => {}
                        Some(client_frame::Kind::Hello(hello)) => self.hello(connection, hello),
                        Some(client_frame::Kind::Probe(_)) if self.path_drops() => {}
                        Some(client_frame::Kind::Probe(probe)) => {
                            let rtt = self.path_delay(id);
                            let now = self.now;
                            let up_wait = match &mut self.uplink {
                                Some(uplink) if uplink.to == id => {
                                    let wait = uplink.wait(now);
                                    uplink.worst = uplink.worst.max(wait);
                                    uplink.backlog += frame.encoded_len() as f64;
                                    Some(wait)
                                }
                                _ => None,
                            };
                            let at = self.now + rtt + up_wait.unwrap_or_default();
                            let ack = if let Some(wait) = up_wait {
                                let read = self.now + rtt / 2 + wait;
                                ProbeAck {
                                    seq: probe.seq,
                                    client_send_us: probe.client_send_us,
                                    relay_recv_us: RELAY_CLOCK_AT_ZERO_US + read.0,
                                    relay_send_us: RELAY_CLOCK_AT_ZERO_US + read.0,
                                    ..Default::default()
                                }
                            } else if self.liar == Some(id) {
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
                            self.in_flight.push((at, connection, ack));
                        }
                        Some(client_frame::Kind::Refresh(refresh)) => {
                            self.refresh(connection, &refresh.token)
                        }
                        Some(client_frame::Kind::Join(join)) if join.prepare => {
                            self.prepare_times.push((self.now, id))
                        }
                        Some(client_frame::Kind::Join(_)) => self.join_times.push((self.now, id)),
                        Some(client_frame::Kind::Media(_)) => {
                            let now = self.now;
                            if let Some(uplink) = self.uplink.as_mut().filter(|u| u.to == id) {
                                uplink.wait(now);
                                uplink.backlog += frame.encoded_len() as f64;
                            }
                            self.media_times.push((self.now, id))
                        }
                        _ => {}
                    }
                    self.routes.push((id, route));
                    self.sent.push((id, frame));
                }
                Transmit::Close(connection) => {
                    let id = connection.candidate;
                    if self.conns[id] == Some(connection) {
                        self.conns[id] = None;
                    }
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
            if matches!(update, Update::Snapshot(_)) {
                self.snapshots.push(self.now);
            }
            self.updates.push(update);
        }
    }

    /// Whether the rough path loses this round trip (either leg).
    fn path_drops(&mut self) -> bool {
        let Some((loss, _, rng)) = &mut self.path else {
            return false;
        };
        rng.unit() < 1.0 - (1.0 - *loss) * (1.0 - *loss)
    }

    /// This round trip's delay to `id`: its RTT, plus jitter on a rough
    /// path (never under 30% of the RTT).
    fn path_delay(&mut self, id: CandidateId) -> Duration {
        let rtt = self.rtt_ms[id] as f64;
        let ms = match &mut self.path {
            Some((_, jitter, rng)) => (rtt + *jitter * rng.normal()).max(0.3 * rtt),
            None => rtt,
        };
        Duration::from_micros((ms * 1000.0) as u64)
    }

    /// The relay's answer to Hello: Welcome, or TokenExpired for a token
    /// past its expiry and the relay's leeway.
    fn hello(&mut self, connection: ConnectionId, hello: &Hello) {
        let id = connection.candidate;
        self.hellos.push((id, hello.token.clone()));
        if self.silent[id] {
            return;
        }
        let exp = expiry_of(&hello.token);
        let expired = (exp + LEEWAY_S) * 1000 <= WALL_AT_ZERO_MS + self.now.as_millis();
        let answer = if self.refusing[id] {
            ServerFrame::error(ErrorCode::Unauthenticated, "bad token")
        } else if expired {
            ServerFrame::error(ErrorCode::TokenExpired, "token expired")
        } else {
            self.token_exp[id] = Some(exp);
            ServerFrame::of(server_frame::Kind::Welcome(Welcome {
                token_expires_unix: exp,
                ..Default::default()
            }))
        };
        self.in_flight.push((self.now, connection, answer));
    }

    /// The relay takes the fresh token at once and says so after a round trip.
    fn refresh(&mut self, connection: ConnectionId, token: &str) {
        let id = connection.candidate;
        let exp = expiry_of(token);
        self.token_exp[id] = Some(exp);
        let refreshed = ServerFrame::of(server_frame::Kind::TokenRefreshed(TokenRefreshed {
            token_expires_unix: exp,
        }));
        let at = Micros(self.now.0 + self.rtt_ms[id] * 1000);
        self.in_flight.push((at, connection, refreshed));
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

    /// A frame from the candidate's current connection.
    fn deliver(&mut self, id: CandidateId, frame: ServerFrame) -> FrameUse {
        let connection = self.conns[id].expect("the candidate has a connection");
        self.deliver_on(connection, frame)
    }

    fn deliver_on(&mut self, connection: ConnectionId, frame: ServerFrame) -> FrameUse {
        let used = self.session.frame(connection, &frame, self.now, self.now);
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
                let (_, connection, frame) = self.in_flight.remove(0);
                self.deliver_on(connection, frame);
            } else {
                self.session.handle_timeout(self.now);
                self.carry_out();
            }
        }
    }

    /// Runs the network an audio frame's time (20 ms) at a time from now
    /// until `until_ms`, calling `each` after every step (what the call
    /// does then: talk, deliver the room's frames, break a path).
    fn every_frame_until(&mut self, until_ms: u64, mut each: impl FnMut(&mut Self)) {
        let mut t = self.now.as_millis();
        while t < until_ms {
            t += 20;
            self.run_until(t);
            each(self);
        }
    }

    /// The serving relay (candidate 0) delivers `audio` every 20 ms from
    /// 4 s to 6 s, then its path loses everything (probes and their answers
    /// too); returns the time, 6 s.
    fn steady_audio_then_a_dead_path(&mut self, audio: &ServerFrame) -> u64 {
        assert_eq!(self.now.as_millis(), 4_000);
        self.every_frame_until(6_000, |net| {
            net.deliver(0, audio.clone());
        });
        self.dead[0] = true;
        self.in_flight.retain(|(_, c, _)| c.candidate != 0);
        self.now.as_millis()
    }

    fn set_now(&mut self, now: Micros) {
        self.now = now;
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

    fn decided_reports(&self) -> Vec<&ElectionReport> {
        self.updates
            .iter()
            .filter_map(|u| match u {
                Update::Decided { report, .. } => Some(report),
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
    let next = ServerFrame::of(server_frame::Kind::Media(Media {
        seq: 1,
        ..Media::default()
    }));
    assert_eq!(
        net.deliver(1, next),
        FrameUse::Consumed,
        "a standby's media is not the room's"
    );
    let welcome = ServerFrame::of(server_frame::Kind::Welcome(Welcome::default()));
    assert_eq!(net.deliver(0, welcome), FrameUse::Consumed);

    net.session
        .send_to_room(client_frame::Kind::Media(Media::default()), net.now);
    assert!(matches!(
        net.session.poll_transmit(),
        Some(Transmit::Send { connection, .. }) if connection.candidate == 0
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
    assert_eq!(id.candidate, 0);
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
    let refusals = net.refusals();
    assert!(
        refusals.len() >= 3 && refusals.iter().all(|&c| c == ErrorCode::TokenExpired),
        "both connections ended with the token, and the Hello of a new one \
         presenting it is refused too: {refusals:?}"
    );
    assert_eq!(net.session.serving(), None);
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
    let opens: Vec<ConnectionId> = std::iter::from_fn(|| net.session.poll_transmit())
        .map(|t| match t {
            Transmit::Open { connection, .. } => connection,
            other => panic!("only opens at first: {other:?}"),
        })
        .collect();
    assert_eq!(
        opens.iter().map(|c| c.candidate).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let old = net.session.token().to_owned();
    let old_exp = expiry_of(&old);

    // Both transports open: the session says Hello with the token it has.
    for &connection in &opens {
        assert!(net.session.opened(connection, 0, Micros::ZERO));
        match net.session.poll_transmit() {
            Some(Transmit::Send {
                frame:
                    ClientFrame {
                        kind: Some(client_frame::Kind::Hello(hello)),
                    },
                route: Route::Control,
                ..
            }) => assert_eq!(hello.token, old),
            other => panic!("a Hello: {other:?}"),
        }
    }

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
    net.session.frame(
        opens[0],
        &ServerFrame::of(server_frame::Kind::Welcome(old_welcome)),
        Micros::ZERO,
        Micros::ZERO,
    );
    assert_eq!(
        net.session.poll_transmit(),
        Some(Transmit::Send {
            connection: opens[0],
            frame: ClientFrame::of(client_frame::Kind::Refresh(Refresh { token: fresh })),
            route: Route::Control,
        }),
        "a connection that said Hello with the old token is refreshed at once"
    );
}

/// The probe budget a relay says in its Welcome reaches the election,
/// which paces the connection's probes below it; a relay that says nothing
/// is taken to answer 25 a second, as relays did before they said.
#[test]
fn the_election_learns_each_relays_probe_budget_from_its_welcome() {
    let mut net = call_with_tokens(600, None);
    let opens: Vec<ConnectionId> = std::iter::from_fn(|| net.session.poll_transmit())
        .filter_map(|t| match t {
            Transmit::Open { connection, .. } => Some(connection),
            _ => None,
        })
        .collect();
    for (&connection, said) in opens.iter().zip([40, 0]) {
        assert!(net.session.opened(connection, 0, Micros::ZERO));
        let welcome = Welcome {
            token_expires_unix: expiry_of(net.session.token()),
            probes_per_second: said,
            ..Default::default()
        };
        net.session.frame(
            connection,
            &ServerFrame::of(server_frame::Kind::Welcome(welcome)),
            Micros::ZERO,
            Micros::ZERO,
        );
    }
    let budgets: Vec<u32> = net
        .session
        .snapshot()
        .iter()
        .filter(|view| view.connected)
        .map(|view| view.probes_answered)
        .collect();
    assert_eq!(budgets, [40, 25]);
}

#[test]
fn a_connection_opened_after_a_refresh_needs_none() {
    let mut net = call_with_tokens(600, Some(600));
    net.run_until(500_000);
    assert_eq!(net.asks.len(), 1);
    let fresh = net.session.token().to_owned();

    // The standby drops; the election connects it again later, with the
    // fresh token in Hello and no Refresh after.
    net.session.closed(net.conns[1].unwrap(), net.now);
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

#[test]
fn a_refused_hello_is_reported_as_a_refusal_and_the_election_goes_on() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.refusing[0] = true;
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.refusals(), vec![ErrorCode::Unauthenticated]);
    assert!(net.updates.iter().any(|u| matches!(
        u,
        Update::CandidateFailed { candidate, reason }
            if candidate.region == "singapore" && reason == "relay refused: bad token"
    )));
    assert!(
        net.closed.contains(&0),
        "the refusing relay's connection is let go"
    );
    assert_eq!(net.decisions().len(), 1);
    assert_eq!(net.decisions()[0].region, "us-east");
}

#[test]
fn relays_that_never_say_welcome_fail_at_the_connect_deadline() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.silent = vec![true, true];
    net.session.start(Micros::ZERO);
    let deadline_ms = CONNECT_TIMEOUT.as_millis() as u64;
    net.run_until(deadline_ms - 1);
    assert!(net.closed.is_empty(), "still greeting");
    net.run_until(deadline_ms);
    assert_eq!(net.closed, vec![0, 1]);
    let failures: Vec<&str> = net
        .updates
        .iter()
        .filter_map(|u| match u {
            Update::CandidateFailed { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(failures, vec!["no Welcome within 5.0 s"; 2]);
    assert!(
        net.updates
            .iter()
            .any(|u| matches!(u, Update::NoRelayReachable { attempt: 1, .. }))
    );
}

#[test]
fn late_events_of_a_replaced_connection_change_nothing() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    let old = net.conns[1].unwrap();
    net.session.closed(old, net.now);
    net.run_until(60_000);
    let new = net.conns[1].expect("the standby is connected again");
    assert_ne!(new, old);
    assert_eq!(new.candidate, old.candidate);

    let updates = net.updates.len();
    let closed = net.closed.len();
    assert!(
        !net.session.opened(old, 1200, net.now),
        "not wanted any more"
    );
    net.session.closed(old, net.now);
    let refusal = ServerFrame::error(ErrorCode::TokenExpired, "token expired");
    assert_eq!(net.deliver_on(old, refusal), FrameUse::Consumed);
    net.carry_out();
    assert_eq!(net.updates.len(), updates, "{:?}", &net.updates[updates..]);
    assert_eq!(net.closed.len(), closed);
    assert_eq!(net.session.serving(), Some(0));
    assert_eq!(net.conns[1], Some(new));
}

#[test]
fn reports_refused_for_a_passing_reason_are_offered_again_on_the_sessions_timer() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.reports_sent_to(0), 1);
    let report_id = net.decided_reports()[0].report_id.clone();
    net.deliver(
        0,
        ServerFrame::of(server_frame::Kind::TelemetryAck(TelemetryAck {
            report_id,
            accepted: false,
            refusal: rallypoint_protocol::v1::TelemetryRefusal::RateLimited as i32,
            reason: "rate limited".into(),
        })),
    );
    // Kept reports are offered again every REPORT_RETRY, counted from
    // when the first of them was kept.
    let refused_at = net.now;
    net.run_until(refused_at.as_millis() + 1_000);
    assert_eq!(net.reports_sent_to(0), 1, "not at once");
    net.run_until(refused_at.as_millis() + REPORT_RETRY.as_millis() as u64);
    assert_eq!(net.reports_sent_to(0), 2, "offered again");
    net.run_until(refused_at.as_millis() + 3 * REPORT_RETRY.as_millis() as u64);
    assert_eq!(net.reports_sent_to(0), 2, "in flight now: sent once");
}

#[test]
fn reports_are_stamped_from_the_seed_and_the_wall_clock_offset() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    let (decided_at, report) = net
        .updates
        .iter()
        .find_map(|u| match u {
            Update::Decided {
                decision, report, ..
            } => Some((decision.took, report.clone())),
            _ => None,
        })
        .unwrap();
    let mut first_id = [0u8; 16];
    first_id[15] = 1;
    assert_eq!(report.report_id.as_ref(), &first_id, "seed 0, first report");
    assert_eq!(
        report.client_time_ms,
        WALL_AT_ZERO_MS + decided_at.as_millis() as u64,
        "the election started at time zero"
    );
}

#[test]
fn the_live_table_is_redrawn_at_once_on_actions_and_paced_on_measurements() {
    let mut net = Net::new(Some(ROOM), vec![true, true]);
    net.session.start(Micros::ZERO);
    net.run_until(60_000);
    let decided_at = net.snapshots[0];
    assert_eq!(decided_at, Micros::ZERO, "the first connects draw at once");
    let steady: Vec<Micros> = net
        .snapshots
        .iter()
        .copied()
        .filter(|&t| t >= Micros::from_millis(5_000))
        .collect();
    assert!(
        steady.len() >= 50,
        "measurements keep the table live: {}",
        steady.len()
    );
    for pair in steady.windows(2) {
        assert!(
            pair[1].since(pair[0]) >= SNAPSHOT_EVERY,
            "redraws {:?} apart",
            pair[1].since(pair[0])
        );
    }
}

#[test]
fn on_webtransport_probes_go_as_datagrams_and_control_on_the_stream() {
    let mut net = Net::webtransport_pair();
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    net.session.send_to_room(
        client_frame::Kind::Media(Media {
            payload: vec![0; 2000].into(),
            ..Default::default()
        }),
        net.now,
    );
    net.session
        .send_to_room(client_frame::Kind::Media(Media::default()), net.now);
    net.carry_out();
    let route_of = |pick: fn(&client_frame::Kind) -> bool| -> Vec<Route> {
        net.sent
            .iter()
            .zip(&net.routes)
            .filter(|((_, f), _)| f.kind.as_ref().is_some_and(pick))
            .map(|(_, (_, r))| *r)
            .collect()
    };
    let probes = route_of(|k| matches!(k, client_frame::Kind::Probe(_)));
    assert!(!probes.is_empty() && probes.iter().all(|&r| r == Route::Probe));
    for control in [
        route_of(|k| matches!(k, client_frame::Kind::Hello(_))),
        route_of(|k| matches!(k, client_frame::Kind::Join(_))),
        route_of(|k| matches!(k, client_frame::Kind::Telemetry(_))),
    ] {
        assert!(!control.is_empty() && control.iter().all(|&r| r == Route::Control));
    }
    assert_eq!(
        route_of(|k| matches!(k, client_frame::Kind::Media(_))),
        vec![Route::Stream, Route::Datagram],
        "a 2 kB frame on its own stream, a small one as a datagram"
    );
}

/// A WebTransport call from 4 s to 8 s: the other participant's audio
/// (every 20 ms) flows through the serving relay when `listen`, this
/// client's own when `talk`. The serving relay is killed at `kill_at_ms`,
/// or all audio stops at `mute_at_ms`.
fn call_with_audio(
    kill_at_ms: Option<u64>,
    mute_at_ms: Option<u64>,
    (talk, listen): (bool, bool),
) -> Net {
    let mut net = Net::webtransport_pair();
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.session.serving(), Some(0));
    let audio = ServerFrame::of(server_frame::Kind::Media(Media::default()));
    net.every_frame_until(8_000, |net| {
        let t = net.now.as_millis();
        if kill_at_ms.is_some_and(|k| t >= k) {
            net.dead[0] = true;
            net.in_flight.retain(|(_, c, _)| c.candidate != 0);
        }
        if mute_at_ms.is_some_and(|m| t >= m) {
            return;
        }
        if talk {
            let media = client_frame::Kind::Media(Media::default());
            net.session.send_to_room(media, net.now);
            net.carry_out();
        }
        if listen && !net.dead[0] && net.session.serving() == Some(0) {
            net.deliver(0, audio.clone());
        }
    });
    net
}

/// When the call moved to the standby, after the relay died at 6 s.
fn moved_after_kill(net: &Net) -> Duration {
    assert_eq!(net.session.serving(), Some(1), "moved to the standby");
    let (join_at, _) = *net
        .join_times
        .iter()
        .find(|(_, id)| *id == 1)
        .expect("a Join through the standby");
    join_at.since(Micros::from_millis(6_000))
}

#[test]
fn a_listener_leaves_a_relay_that_died_under_webtransport_within_a_few_frames() {
    let net = call_with_audio(Some(6_000), None, (false, true));
    // The last frame arrived at 5 980 ms; 100 ms of silence, then probes
    // with a deadline of twice the 20 ms round trip (at least 50 ms).
    let moved = moved_after_kill(&net);
    eprintln!("listener moved {moved:?} after the kill");
    assert!(moved <= Duration::from_millis(200), "{moved:?}");
}

#[test]
fn a_talker_leaves_a_relay_that_died_under_webtransport_as_fast() {
    // Nobody else talks: the answers to its own probes, sent every 50 ms
    // while it talks, are the traffic that falls silent.
    let net = call_with_audio(Some(6_000), None, (true, false));
    let moved = moved_after_kill(&net);
    eprintln!("talker moved {moved:?} after the kill");
    assert!(moved <= Duration::from_millis(260), "{moved:?}");
}

/// Issue #15, make-before-break: a talker whose relay died sends its media
/// through the standby from the moment the silence makes the relay suspect,
/// not only once the suspicion is confirmed and the call moved — the room's
/// gap is the silence, not the silence plus the deadline.
#[test]
fn a_talker_sends_through_the_standby_from_the_first_silence() {
    let net = call_with_audio(Some(6_000), None, (true, false));
    let kill = Micros::from_millis(6_000);
    let (prepared_at, _) = *net
        .prepare_times
        .iter()
        .find(|(_, id)| *id == 1)
        .expect("the standby was prepared");
    let (first_media_at, _) = *net
        .media_times
        .iter()
        .find(|(at, id)| *id == 1 && *at >= kill)
        .expect("media through the standby");
    let gap = first_media_at.since(kill);
    eprintln!(
        "prepared {:?}, media through the standby {gap:?}, moved {:?} after the kill",
        prepared_at.since(kill),
        moved_after_kill(&net)
    );
    assert!(first_media_at >= prepared_at, "Join{{prepare}} goes first");
    assert!(gap <= Duration::from_millis(140), "{gap:?}");
    // The move that follows is a real Join, the next in the session.
    let joins: Vec<_> = net
        .joins()
        .into_iter()
        .filter(|(id, join)| *id == 1 && !join.prepare)
        .collect();
    assert_eq!(joins.len(), 1, "{joins:?}");
    assert_eq!((joins[0].1.join_seq, joins[0].1.prepare), (1, false));
    assert!(
        net.updates
            .iter()
            .any(|u| matches!(u, Update::Preparing { candidate } if candidate.region == "us-east")),
        "the application heard it, to start pictures afresh"
    );
}

/// A suspicion that an answer clears ends the preparation: the standby is
/// left (Leave) and media goes through the serving relay only again.
#[test]
fn a_cleared_suspicion_stops_sending_through_the_standby() {
    let mut net = Net::webtransport_pair();
    net.rtt_ms = vec![60, 120];
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.session.serving(), Some(0));
    let audio = ServerFrame::of(server_frame::Kind::Media(Media::default()));
    let media = || client_frame::Kind::Media(Media::default());
    // The others' audio every 20 ms; then the path loses everything for
    // 85 ms (probes and their answers too), and the relay is still there.
    let mut t = net.steady_audio_then_a_dead_path(&audio);
    while net.prepare_times.is_empty() && t < 6_200 {
        t += 1;
        if t == 6_085 {
            net.dead[0] = false;
        }
        net.run_until(t);
    }
    assert_eq!(net.prepare_times.len(), 1, "suspect after the silence");
    net.session.send_to_room(media(), net.now);
    net.carry_out();
    let sent_to = |net: &Net| {
        net.media_times
            .iter()
            .filter(|(at, _)| *at == net.now)
            .count()
    };
    assert_eq!(sent_to(&net), 2, "while suspect: serving and standby");
    // The room's media comes through the standby too, each frame once.
    let heard = |seq| {
        ServerFrame::of(server_frame::Kind::Media(Media {
            sender: "bob".into(),
            seq,
            ..Media::default()
        }))
    };
    assert_eq!(net.deliver(1, heard(500)), FrameUse::Room, "standby first");
    assert_eq!(net.deliver(0, heard(500)), FrameUse::Consumed, "the copy");
    assert_eq!(net.deliver(0, heard(501)), FrameUse::Room);
    assert_eq!(net.deliver(1, heard(501)), FrameUse::Consumed);
    net.run_until(t + 70); // the burst's answers (60 ms round trip)
    let left = net
        .sent
        .iter()
        .filter(|(id, f)| *id == 1 && matches!(f.kind, Some(client_frame::Kind::Leave(_))))
        .count();
    assert_eq!(left, 1, "the standby was left");
    net.session.send_to_room(media(), net.now);
    net.carry_out();
    assert_eq!(sent_to(&net), 1, "cleared: the serving relay only");
    assert_eq!(
        net.deliver(1, heard(502)),
        FrameUse::Consumed,
        "a standby no longer prepared is heard no more"
    );
    assert_eq!(net.session.serving(), Some(0));
    assert_eq!(net.decisions().len(), 1, "never re-elected");
    assert!(net.join_times.iter().all(|(_, id)| *id == 0));

    // A second false alarm soon after (the watch now waits for twice the
    // silence, see `election::watch`) prepares again, but asks for no
    // second keyframe within PREPARE_KEYFRAME_EVERY.
    let mut t = net.now.as_millis();
    let stall_from = t + 200;
    while net.prepare_times.len() < 2 && t < stall_from + 400 {
        t += 1;
        if t < stall_from {
            if t.is_multiple_of(20) {
                net.run_until(t);
                net.deliver(0, audio.clone());
            }
            continue;
        }
        if t == stall_from {
            net.dead[0] = true;
            net.in_flight.retain(|(_, c, _)| c.candidate != 0);
        }
        if t == stall_from + 185 {
            net.dead[0] = false;
        }
        net.run_until(t);
    }
    assert_eq!(net.prepare_times.len(), 2, "prepared again");
    let told = net
        .updates
        .iter()
        .filter(|u| matches!(u, Update::Preparing { .. }))
        .count();
    assert_eq!(told, 1, "one keyframe per {PREPARE_KEYFRAME_EVERY:?}");
}

/// A prepared standby whose connection is lost is prepared no longer: when
/// the call has moved elsewhere and the election opens that relay again (a
/// new connection, in no room), the media is not sent there too for the
/// rest of the call.
#[test]
fn a_prepared_standby_that_is_lost_is_prepared_no_longer() {
    let wt = |region| candidate(region, TransportKind::WebTransport);
    let mut net = Net::with_candidates(
        vec![wt("singapore"), wt("us-east"), wt("frankfurt")],
        config(Some(ROOM), token_expiring(Micros::ZERO, 3600)),
        vec![true, true, true],
    );
    net.rtt_ms = vec![60, 120, 180];
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.session.serving(), Some(0));
    let audio = ServerFrame::of(server_frame::Kind::Media(Media::default()));
    // The serving relay dies: suspect, the standby prepared; then the
    // standby's connection ends too, and its relay is out of reach for a
    // while. The call moves to the third relay.
    let mut t = net.steady_audio_then_a_dead_path(&audio);
    while net.prepare_times.is_empty() && t < 6_200 {
        t += 1;
        net.run_until(t);
    }
    assert_eq!(net.prepare_times.len(), 1, "suspect after the silence");
    assert_eq!(net.prepare_times[0].1, 1);
    let standby = net.conns[1].expect("the standby's connection");
    net.reachable[1] = false;
    net.session.closed(standby, net.now);
    net.carry_out();
    net.every_frame_until(12_000, |_| {});
    assert_eq!(net.session.serving(), Some(2), "moved to the third relay");
    // The standby's relay is back, and the election opens it again (it
    // probes every candidate anew every 30 s) while the call goes on.
    net.reachable[1] = true;
    let media = || client_frame::Kind::Media(Media::default());
    net.every_frame_until(50_000, |net| {
        net.deliver(2, audio.clone());
        net.session.send_to_room(media(), net.now);
        net.carry_out();
    });
    assert!(
        net.hellos.iter().filter(|(id, _)| *id == 1).count() >= 2,
        "reopened"
    );
    assert_eq!(net.session.serving(), Some(2));
    let sent = net.media_times.iter().filter(|(at, _)| *at == net.now);
    assert_eq!(
        sent.map(|(_, id)| *id).collect::<Vec<_>>(),
        vec![2],
        "through the serving relay only"
    );
}

#[test]
fn silence_from_a_live_relay_is_not_a_failover() {
    // Everyone mutes: no more audio, but the relay answers its probes.
    let net = call_with_audio(None, Some(6_000), (true, true));
    assert_eq!(net.session.serving(), Some(0));
    assert_eq!(net.decisions().len(), 1, "never re-elected");
}

/// Issue #15: no false failover over a long call on a rough path — 5% loss
/// each way and 30 ms jitter on a 40 ms round trip, both participants
/// talking (their audio lost and delayed like the probes), twenty seeded
/// ten-minute calls.
#[test]
fn a_rough_path_causes_no_false_failover_in_long_calls() {
    let calls = rough_path_calls(0..20, true);
    assert_eq!(calls.failovers, 0, "false failovers in 20 ten-minute calls");
}

/// The same for a talker nobody answers with media: its probe answers (20 a
/// second) are all the traffic its watch hears, so silence by chance comes
/// far more often than with a room's audio. Each false alarm prepares the
/// standby (media sent twice, a keyframe asked for): the watch backs off
/// (see `election::watch`), so they stay rare — they came 1.7 times a
/// second before it did (20 256 in these calls).
#[test]
fn a_rough_path_causes_no_false_failover_for_a_talker_alone() {
    let calls = rough_path_calls(100..120, false);
    assert_eq!(calls.failovers, 0, "false failovers in 20 ten-minute calls");
    let per_minute = calls.prepared as f64 / 200.0;
    assert!(
        per_minute <= 3.0,
        "{} standbys prepared in 200 call minutes: {per_minute:.1} a minute",
        calls.prepared
    );
}

/// What ten-minute talking calls on the rough path did.
struct RoughCalls {
    failovers: usize,
    /// Standbys prepared (false alarms, when nothing failed over).
    prepared: usize,
}

/// Ten-minute talking calls on the rough path, one per seed;
/// `others_talk`: the other participant's audio comes back too.
fn rough_path_calls(seeds: std::ops::Range<u64>, others_talk: bool) -> RoughCalls {
    let mut failovers = 0;
    let mut prepared = 0;
    let seeds_len = seeds.end - seeds.start;
    for seed in seeds {
        let mut net = Net::webtransport_pair();
        net.rtt_ms = vec![40, 120];
        net.path = Some((0.05, 30.0, crate::sim::Rng::new(seed)));
        net.session.start(Micros::ZERO);
        net.run_until(5_000);
        let audio = ServerFrame::of(server_frame::Kind::Media(Media::default()));
        net.every_frame_until(605_000, |net| {
            let media = client_frame::Kind::Media(Media::default());
            net.session.send_to_room(media, net.now);
            net.carry_out();
            // The other participant's frame crosses half the rough path.
            let Some(serving) = net.session.serving() else {
                return;
            };
            if others_talk && !net.path_drops() {
                let delay = net.path_delay(serving) / 2;
                let connection = net.conns[serving].expect("serving is connected");
                net.in_flight
                    .push((net.now + delay, connection, audio.clone()));
            }
        });
        let moves = net
            .updates
            .iter()
            .filter(|u| {
                matches!(u, Update::Decided { decision, .. }
                if decision.trigger == rallypoint_protocol::v1::ElectionTrigger::Failover)
            })
            .count();
        failovers += moves;
        prepared += net.prepare_times.len();
    }
    eprintln!("{prepared} standbys prepared in {seeds_len} calls");
    RoughCalls {
        failovers,
        prepared,
    }
}

#[test]
fn the_media_state_is_sent_once_per_change_and_carried_into_every_join() {
    let mut net = Net::webtransport_pair();
    let muted = MediaState {
        muted: true,
        camera_off: false,
        sharing_screen: false,
    };
    // Set before any relay serves: nothing to send yet, the Join carries it.
    net.session
        .command(Command::SetMediaState(muted), Micros::ZERO);
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.session.serving(), Some(0));
    let states_sent = |net: &Net| -> Vec<(CandidateId, MediaState)> {
        net.sent
            .iter()
            .filter_map(|(id, f)| match &f.kind {
                Some(client_frame::Kind::MediaState(state)) => Some((*id, *state)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(net.joins()[0].1.state, Some(muted));
    assert!(states_sent(&net).is_empty());

    // A change goes to the serving relay once; the same state again is not
    // sent.
    let both_off = MediaState {
        muted: true,
        camera_off: true,
        sharing_screen: false,
    };
    net.session
        .command(Command::SetMediaState(both_off), net.now);
    net.session
        .command(Command::SetMediaState(both_off), net.now);
    net.carry_out();
    assert_eq!(states_sent(&net), [(0, both_off)]);

    // The relay dies: the Join through the standby carries the latest state.
    net.dead[0] = true;
    net.in_flight.retain(|(_, c, _)| c.candidate != 0);
    net.run_until(8_000);
    assert_eq!(net.session.serving(), Some(1), "moved to the standby");
    let (to, join) = *net.joins().last().unwrap();
    assert_eq!((to, join.state), (1, Some(both_off)));
}

/// Toggling faster than the relay's budget (burst 10, 2/s) must not leave the
/// room on a stale state: the session paces itself under the budget and the
/// last state chosen always arrives.
#[test]
fn a_flood_of_toggles_stays_within_the_relays_budget_and_ends_on_the_latest() {
    let mut net = Net::webtransport_pair();
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.session.serving(), Some(0));
    let muted = |muted| MediaState {
        muted,
        ..MediaState::default()
    };
    // 31 toggles 10 ms apart, ending muted.
    for i in 0..31u64 {
        net.session
            .command(Command::SetMediaState(muted(i % 2 == 0)), net.now);
        net.carry_out();
        net.run_until(4_000 + (i + 1) * 10);
    }
    net.run_until(8_000);
    let sent: Vec<MediaState> = net
        .sent
        .iter()
        .filter_map(|(_, f)| match &f.kind {
            Some(client_frame::Kind::MediaState(state)) => Some(*state),
            _ => None,
        })
        .collect();
    assert!(
        sent.len() <= 10,
        "{} changes in a burst the relay caps at 10",
        sent.len()
    );
    assert_eq!(
        sent.last(),
        Some(&muted(true)),
        "the room ends on the latest"
    );
}

/// A runtime's I/O that only records what the driver asked of it.
#[derive(Default)]
struct RecordingIo {
    opened: Vec<ConnectionId>,
    reading: Vec<ConnectionId>,
    sent: Vec<(u32, ClientFrame)>,
    token_fetches: usize,
    room: Vec<u32>,
    hung_up: Vec<(u32, ClientFrame)>,
}

/// A frame as the recording runtime received it, tagged with its number.
struct Tagged(u32, ServerFrame);

impl driver::Arrived for Tagged {
    fn frame(&self) -> &ServerFrame {
        &self.1
    }
}

impl driver::Io for RecordingIo {
    type Opened = u32;
    type Connection = u32;
    type Received = Tagged;

    fn open(&mut self, connection: ConnectionId, _: &Candidate, _: Duration) {
        self.opened.push(connection);
    }
    fn start_reading(&mut self, connection: ConnectionId, opened: u32) -> u32 {
        self.reading.push(connection);
        opened
    }
    fn send(&mut self, connection: &u32, frame: bytes::Bytes, _: Route) {
        let frame =
            rallypoint_protocol::decode_client_frame(frame).expect("the driver sends frames");
        self.sent.push((*connection, frame));
    }
    fn fetch_token(&mut self, _: &str) -> bool {
        self.token_fetches += 1;
        true
    }
    fn output(&mut self, output: Output<Tagged>) {
        if let Output::Room(Tagged(n, _)) = output {
            self.room.push(n);
        }
    }
    fn hang_up(&mut self, connection: u32, leave: ClientFrame) {
        self.hung_up.push((connection, leave));
    }
}

#[test]
fn the_shared_driver_carries_out_transmits_on_its_connections_and_fetches_one_token_at_a_time() {
    use driver::{Driver, Event};

    let session = Session::new(
        vec![candidate("singapore", TransportKind::WebSocket)],
        config(Some(ROOM), token_expiring(Micros::ZERO, 60)),
    );
    let mut driver = Driver::new(session, RecordingIo::default());
    driver.start(Micros::ZERO);
    let connection = driver.io().opened[0];
    // Opened: the driver reads it and the session says Hello on it.
    driver.event(
        Event::Opened {
            connection,
            opened: 7,
            max_datagram: 0,
        },
        Micros::from_millis(10),
    );
    assert_eq!(driver.io().reading, [connection]);
    assert!(matches!(
        driver.io().sent[..],
        [(
            7,
            ClientFrame {
                kind: Some(client_frame::Kind::Hello(_))
            }
        )]
    ));
    // Welcome with a token about to expire: one fetch, however often the
    // session asks before it comes back.
    let welcome = ServerFrame::of(server_frame::Kind::Welcome(Welcome {
        token_expires_unix: expiry_of(&token_expiring(Micros::ZERO, 60)),
        ..Default::default()
    }));
    let at = Micros::from_millis(20);
    driver.event(
        Event::Frame {
            connection,
            received: Tagged(1, welcome),
            at,
        },
        at,
    );
    for second in 1..=60 {
        driver.timeout(Micros::from_millis(second * 1000));
    }
    assert_eq!(driver.io().token_fetches, 1, "one fetch at a time");
    driver.event(
        Event::Token(Err("issuer down".into())),
        Micros::from_millis(60_500),
    );
    for second in 61..=90 {
        driver.timeout(Micros::from_millis(second * 1000));
    }
    assert_eq!(driver.io().token_fetches, 2, "asked again after a failure");
    // Closed: nothing is sent on it any more, and hanging up says nothing.
    driver.event(Event::Closed(connection), Micros::from_millis(91_000));
    let sent = driver.io().sent.len();
    driver.timeout(Micros::from_millis(92_000));
    assert!(driver.io().sent[sent..].iter().all(|(c, _)| *c != 7));
    driver.hang_up();
    assert!(driver.io().hung_up.is_empty());
}

/// A talker whose uplink queues — a browser's WebSocket or datagram queue
/// on a line slower than its media, which never drops — holds its media back
/// while it would wait more than 150 ms on the way up (session::uplink), and
/// sends it all again once the line is fast again. Without the hold every
/// frame went into the queue: it grew to 3.0 s in the first 2 s and 5.2 s in
/// the next, and the call failed over. The browser test's slow sender was
/// heard 2.9–3.3 s late before.
#[test]
fn a_talker_whose_uplink_queues_holds_its_media_back_until_it_drains() {
    let mut net = Net::webtransport_pair();
    net.session.start(Micros::ZERO);
    net.run_until(4_000);
    assert_eq!(net.session.serving(), Some(0));
    // From now on the line carries 10 kB a second; the talker sends 25.
    net.uplink = Some(Uplink {
        to: 0,
        bytes_per_sec: 10_000.0,
        backlog: 0.0,
        drained_at: net.now,
        worst: Duration::ZERO,
    });
    // 500 B of audio every 20 ms until `until_ms`: the frames that went to
    // the serving relay, and the longest a probe waited meanwhile.
    let talk_until = |net: &mut Net, until_ms: u64| {
        let before = net.media_times.iter().filter(|(_, id)| *id == 0).count();
        net.every_frame_until(until_ms, |net| {
            let audio = Media {
                payload: vec![0; 500].into(),
                ..Default::default()
            };
            net.session
                .send_to_room(client_frame::Kind::Media(audio), net.now);
            net.carry_out();
        });
        let sent = net.media_times.iter().filter(|(_, id)| *id == 0).count() - before;
        let worst = std::mem::take(&mut net.uplink.as_mut().expect("set above").worst);
        (sent, worst)
    };
    // The queue overshoots while the first answers that waited are on
    // their way (each comes back its wait late), then stays short.
    let (first_sent, first) = talk_until(&mut net, 6_000);
    let (then_sent, then) = talk_until(&mut net, 8_000);
    // The line is fast again (100 kB/s).
    net.uplink.as_mut().expect("set above").bytes_per_sec = 100_000.0;
    let (fast_sent, fast) = talk_until(&mut net, 10_000);
    eprintln!(
        "talking 2.5 times what the line carries: {first_sent} of 100 frames sent, longest wait \
         {first:?}; the next 2 s {then_sent}, {then:?}; on a fast line again {fast_sent}, {fast:?}; \
         held back {}, serving {:?}",
        net.session.media_held_back(),
        net.session.serving()
    );
    assert_eq!(net.session.serving(), Some(0), "the queue is no dead relay");
    assert!(
        first <= Duration::from_secs(1),
        "the uplink queued {first:?}"
    );
    assert!(
        then <= Duration::from_millis(400),
        "the uplink queued {then:?}"
    );
    // The line carried about what it can (40 frames in 2 s), no less.
    assert!((30..=50).contains(&then_sent), "{then_sent} frames sent");
    assert!(
        fast_sent >= 98,
        "only {fast_sent} of 100 frames once the line was fast again"
    );
}
