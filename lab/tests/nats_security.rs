//! The NATS trust model, tried against a real secured super-cluster (two
//! regions, JetStream, TLS on every link, NKey users): who cannot connect,
//! and what each role cannot do even when connected.
//!
//! Every "cannot" is checked twice: the server reports a permissions
//! violation to the offender, and the thing it tried did not happen (the
//! stream still exists, the message was not stored, nothing was received).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use rallypoint_service::nats::NatsArgs;
use rallypoint_testkit::nats::{NatsAccess, NatsRole, SuperCluster, SuperClusterSpec};

/// Small streams: this test stores a handful of messages.
const BOUNDS: rallypoint_collector::streams::StreamBounds =
    rallypoint_collector::streams::StreamBounds {
        duplicate_window: Duration::from_secs(60),
        regional_max_bytes: 64 << 20,
        central_max_bytes: 128 << 20,
        max_msg_size: 80 * 1024,
    };

/// How long a message that would arrive is given to arrive.
const QUIET: Duration = Duration::from_millis(700);

struct Secured {
    _dir: tempfile::TempDir,
    nats: SuperCluster,
}

async fn secured() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let nats = SuperCluster::start(SuperClusterSpec::reference(true), &dir.path().join("nats"))
        .await
        .expect("secured super-cluster starts");
    Secured { _dir: dir, nats }
}

/// A client whose permission violations are collected.
async fn connect_watched(access: &NatsAccess) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let seen = violations.clone();
    let client = access
        .options()
        .unwrap()
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(access.urls())
        .await
        .expect("connects with its own credential");
    (client, violations)
}

async fn violation_mentions(violations: &Mutex<Vec<String>>, subject: &str) -> bool {
    for _ in 0..30 {
        if violations
            .lock()
            .unwrap()
            .iter()
            .any(|v| v.to_lowercase().contains("permissions violation") && v.contains(subject))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// True when a subscriber on `subject` with `access` receives what an
/// administrator publishes there.
async fn receives(access: &NatsAccess, admin: &async_nats::Client, subject: &str) -> bool {
    let (client, _) = connect_watched(access).await;
    let mut sub = client.subscribe(subject.to_owned()).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let concrete = subject.replace(['>', '*'], "x");
    admin.publish(concrete, "secret".into()).await.unwrap();
    admin.flush().await.unwrap();
    tokio::time::timeout(QUIET, sub.next())
        .await
        .is_ok_and(|m| m.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_connects_without_a_credential_and_the_ca() {
    let lab = secured().await;
    let relay = lab
        .nats
        .access(NatsRole::Relay("us-east".into()), "us-east");

    // No credential: refused, and the error names the flag.
    let mut anonymous = relay.args.clone();
    anonymous.nkey_file = None;
    let error = rallypoint_service::nats::connect(&anonymous, identity())
        .await
        .expect_err("anonymous clients are refused");
    assert!(
        format!("{error:#}").contains("--nats-nkey-file"),
        "the error says what to fix: {error:#}"
    );

    // A CA that did not sign the servers: refused, and the error names the flag.
    let other_ca = tempfile::tempdir().unwrap();
    let stranger = rallypoint_testkit::pki::DevCa::create(other_ca.path(), "stranger").unwrap();
    let mut wrong_ca = relay.args.clone();
    wrong_ca.ca = Some(stranger.cert.clone());
    let error = rallypoint_service::nats::connect(&wrong_ca, identity())
        .await
        .expect_err("a server certificate from another CA is refused");
    assert!(
        format!("{error:#}").contains("--nats-ca"),
        "the error says what to fix: {error:#}"
    );

    // Plain TCP to a TLS port (no CA given, nats:// URLs): never authenticated.
    let plain = NatsArgs::plain(
        relay
            .urls()
            .iter()
            .map(|u| u.replace("tls://", "nats://"))
            .collect(),
    );
    assert!(
        rallypoint_service::nats::connect(&plain, identity())
            .await
            .is_err(),
        "a plaintext, anonymous client is refused"
    );

    // The credential and the CA together: in.
    relay.connect().await.expect("the relay's credential works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_can_serve_rooms_and_its_own_telemetry_and_nothing_more() {
    let lab = secured().await;
    let admin_access = lab.nats.access(NatsRole::Admin, "us-east");
    let admin = admin_access.connect().await.unwrap();
    let js = async_nats::jetstream::new(admin.clone());
    let regions = [("us-east".to_owned(), 3), ("singapore".to_owned(), 1)];
    rallypoint_collector::streams::ensure(&js, &regions, "us-east", 3, &BOUNDS)
        .await
        .expect("the administrator creates the streams");

    let us_relay = lab
        .nats
        .access(NatsRole::Relay("us-east".into()), "us-east");
    let (relay, violations) = connect_watched(&us_relay).await;
    let relay_js = async_nats::jetstream::new(relay.clone());

    // What it needs: its region's telemetry is stored and acknowledged.
    relay_js
        .publish("telemetry.election.us-east", "ok".into())
        .await
        .expect("publishes its own region's telemetry")
        .await
        .expect("JetStream acknowledges it");
    // Rooms: both ways.
    assert!(receives(&us_relay, &admin, "rp.room.r1.ctl").await);

    // Another region's telemetry: refused, nothing stored.
    let before = stream_messages(&js, "TELEMETRY_SINGAPORE").await;
    let forged = relay_js
        .publish("telemetry.election.singapore", "forged".into())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), forged)
            .await
            .map(|ack| ack.is_err())
            .unwrap_or(true),
        "no acknowledgement for another region's subject"
    );
    assert!(violation_mentions(&violations, "telemetry.election.singapore").await);
    assert_eq!(stream_messages(&js, "TELEMETRY_SINGAPORE").await, before);

    // The JetStream API: not even a stream's info; deleting the streams fails.
    let mut api = relay.subscribe("$JS.API.>").await.unwrap();
    relay.flush().await.unwrap();
    assert!(violation_mentions(&violations, "$JS.API.>").await);
    assert!(relay_js.delete_stream("TELEMETRY").await.is_err());
    assert!(violation_mentions(&violations, "$JS.API.STREAM.DELETE.TELEMETRY").await);
    assert!(
        js.get_stream("TELEMETRY").await.is_ok(),
        "the stream survived"
    );
    admin.publish("$JS.API.INFO", "".into()).await.unwrap();
    assert!(tokio::time::timeout(QUIET, api.next()).await.is_err());

    // Reading telemetry or what JetStream delivers to collectors: nothing.
    assert!(!receives(&us_relay, &admin, "telemetry.election.singapore").await);
    assert!(!receives(&us_relay, &admin, "_INBOX_collector.>").await);
    assert!(!receives(&us_relay, &admin, "_INBOX.>").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_reads_its_consumer_and_never_touches_rooms() {
    let lab = secured().await;
    let admin = lab
        .nats
        .access(NatsRole::Admin, "us-east")
        .connect()
        .await
        .unwrap();
    let js = async_nats::jetstream::new(admin.clone());
    let regions = [("us-east".to_owned(), 3), ("singapore".to_owned(), 1)];
    let stream = rallypoint_collector::streams::ensure(&js, &regions, "us-east", 3, &BOUNDS)
        .await
        .unwrap();
    rallypoint_collector::streams::consumer(&stream, "collector")
        .await
        .unwrap();

    let collector = lab.nats.access(NatsRole::Collector, "us-east");
    let (client, violations) = connect_watched(&collector).await;
    let collector_js = async_nats::jetstream::new(client.clone());
    // What it needs: its consumer.
    rallypoint_collector::streams::open_consumer(&collector_js, "collector")
        .await
        .expect("the collector opens the consumer setup made");

    // Rooms: neither way.
    assert!(!receives(&collector, &admin, "rp.room.r1.media.p1").await);
    client
        .publish("rp.room.r1.ctl", "forged presence".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert!(violation_mentions(&violations, "rp.room.r1.ctl").await);
    // Nor stream administration.
    assert!(collector_js.delete_stream("TELEMETRY").await.is_err());
    assert!(
        js.get_stream("TELEMETRY").await.is_ok(),
        "the stream survived"
    );
    assert!(
        collector_js
            .publish("telemetry.election.us-east", "forged".into())
            .await
            .unwrap()
            .await
            .is_err(),
        "a collector cannot publish telemetry"
    );
}

fn identity() -> rallypoint_service::nats::ClientIdentity<'static> {
    rallypoint_service::nats::ClientIdentity {
        name: "nats security test",
        inbox_prefix: "_INBOX_relay",
        hears_itself: true,
    }
}

async fn stream_messages(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.unwrap();
    stream.info().await.unwrap().state.messages
}
