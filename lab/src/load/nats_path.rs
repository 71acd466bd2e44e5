//! The same load straight over NATS, the relay's ceiling: each participant
//! is one async-nats connection that publishes its frames where a relay
//! publishes them (`rp.room.<room>.media.<sender>`, the encoded `ServerFrame`
//! a relay would publish) and subscribes to its room, so nats-server does
//! the fan-out a relay does for its clients. `no_echo` keeps a participant's
//! own frames from coming back, as the relay skips the sender.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context as _;
use futures_util::StreamExt;
use rallypoint_protocol::v1::{Media, ServerFrame, server_frame};
use rallypoint_protocol::{decode_server_frame, encode, subjects};
use rallypoint_service::nats::{ClientIdentity, NatsArgs};

use super::tally::{Clock, Tally};
use super::{LoadPlan, MediaOut, Participant, Schedule, Summary};

/// Frames a subscriber may buffer before async-nats drops (counted as drops).
const SUBSCRIPTION_CAPACITY: usize = 1 << 16;

/// One participant's publishing side.
struct Publisher {
    client: async_nats::Client,
    subject: String,
    sender: String,
}

impl MediaOut for Publisher {
    async fn send_frame(&mut self, media: Media) -> bool {
        let frame = encode(&ServerFrame::of(server_frame::Kind::Media(Media {
            sender: self.sender.clone(),
            ..media
        })));
        self.client
            .publish(self.subject.clone(), frame)
            .await
            .is_ok()
    }
}

/// Runs `plan` over the NATS servers of `nats`.
pub async fn run(plan: &LoadPlan, nats: &NatsArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let participants = super::connect_all(plan, |room, p| async move {
        let room_name = plan.room_name(room);
        let sender = plan.participant_name(room, p);
        let client = rallypoint_service::nats::options(
            nats,
            &ClientIdentity {
                name: "rallypoint load",
                inbox_prefix: "_INBOX",
                hears_itself: false,
            },
        )?
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connect(nats.urls.clone())
        .await
        .with_context(|| {
            format!(
                "cannot connect to NATS at {} (check --nats-urls, --nats-nkey-file, --nats-ca)",
                nats.redacted_urls()
            )
        })?;
        let subscription = client
            .subscribe(subjects::room_wildcard(&room_name))
            .await
            .with_context(|| format!("cannot subscribe to room {room_name}"))?;
        let publisher = Publisher {
            client,
            subject: subjects::room_media(&room_name, &sender),
            sender,
        };
        anyhow::Ok((publisher, subscription))
    })
    .await?;
    // Every subscription is in place on the server before anyone publishes.
    for (_, (publisher, _)) in &participants {
        publisher
            .client
            .flush()
            .await
            .context("NATS did not confirm the subscriptions")?;
    }
    let connect = super::everyone_in(plan, "subscribed to NATS", started);
    let (schedule, clock) = super::begin(plan);
    let participants = participants
        .into_iter()
        .map(|(room, (publisher, subscription))| Participant {
            room,
            out: publisher,
            receive: receive(subscription, schedule, clock),
            // Nobody asks for keyframes here: NATS drops nothing to repair.
            keyframe_wanted: Arc::new(AtomicBool::new(false)),
        })
        .collect();
    // The publishers (their connections) stay open until everyone is done.
    let (outcome, _publishers) = super::drive(plan, schedule, participants).await?;
    super::summarize("nats", plan, connect, outcome)
}

async fn receive(
    mut subscription: async_nats::Subscriber,
    schedule: Schedule,
    clock: Clock,
) -> Tally {
    let mut tally = Tally::new();
    let end = tokio::time::Instant::from_std(schedule.receive_end);
    while let Ok(Some(message)) = tokio::time::timeout_at(end, subscription.next()).await {
        // Stamped when the subscriber reads it, after async-nats's own queue
        // (the relay path stamps when read off the socket): if anything this
        // makes NATS look slower, and the relay's added latency smaller.
        let at = Instant::now();
        if let Ok(ServerFrame {
            kind: Some(server_frame::Kind::Media(media)),
        }) = decode_server_frame(message.payload)
        {
            tally.record(&media, at, &schedule, &clock);
        }
    }
    tally
}
