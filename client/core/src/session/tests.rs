//! The session with virtual time and a scripted network: what goes on the
//! wire for each election step, and what the application hears.

use super::*;
use crate::TransportKind;
use rallypoint_protocol::v1::{Drain, Media, ProbeAck, Welcome};

const ROOM: &str = "standup";

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
/// the candidate's RTT.
struct Net {
    session: Session,
    now: Micros,
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
        let mut next_id = 0u8;
        let stamp: Stamp = Box::new(move || {
            next_id += 1;
            ([next_id; 16], 1_790_000_000_000)
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
            stamp,
        );
        Net {
            session,
            now: Micros::ZERO,
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
                    if self.reachable[id] {
                        self.session.connected(id, self.now);
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
                    self.sent.push((id, frame));
                }
                Transmit::Close(id) => self.closed.push(id),
            }
        }
        while let Some(update) = self.session.poll_update() {
            self.updates.push(update);
        }
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
            let next = [next_answer, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = until;
                return;
            };
            self.now = next;
            if next_answer == Some(next) {
                let (_, id, frame) = self.in_flight.remove(0);
                self.deliver(id, frame);
            } else {
                self.session.handle_timeout(self.now);
                self.carry_out();
            }
        }
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
