//! Election-report budgets, per token and per client address, held across a
//! region's relays.
//!
//! Each relay keeps token buckets per token subject and per client address
//! ([`SubjectRates`]): reconnecting does not refill them. Alone that still
//! let a client spread its reports over every relay of a region and get
//! each relay's budget. So the relays of a region tell each other, about
//! every [`TALLY_INTERVAL`], how many reports they accepted per subject and
//! per address (core NATS, [`subjects::report_budget`]), and each charges
//! its own buckets with what the others accepted ([`SubjectRates::charge`]).
//!
//! What this holds, and what not:
//! * across the region, a subject or an address gets its budget plus at
//!   most what it sent to the other relays within one interval before they
//!   heard (at most a burst per relay, only for reports sent at the same
//!   moment);
//! * core NATS may lose a tally (a reconnect): the error is in the client's
//!   favour and bounded by one interval's reports;
//! * regions keep separate budgets: a client reports through its own
//!   region, and a region must not depend on another's backbone to admit
//!   telemetry.
//!
//! A tally names token subjects (user ids) and never leaves the region's
//! NATS servers. It never holds a client address: addresses are told as a
//! digest keyed with a secret the region's relays share ([`AddressSecret`]),
//! so neither the NATS servers nor anyone reading the subject learns them
//! (a plain hash of an IPv4 address is reversed by trying all 2^32). A
//! relay without that key keeps its per-address budget to itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rallypoint_protocol::prost::Message as _;
use rallypoint_protocol::subjects;
use rallypoint_protocol::v1::{BudgetCharge, ReportsAccepted};
use sha2::Digest as _;

use crate::rate::{SubjectRates, address_bucket};

/// Relays of other secrets warned about at most (each once).
const MAX_WARNED_RELAYS: usize = 1_000;

/// How often a relay tells its region what it accepted (when it accepted
/// anything).
pub const TALLY_INTERVAL: Duration = Duration::from_millis(100);

/// Keys one tally message names at most: a tally of more is sent in
/// several messages, each far below NATS's 1 MB payload limit.
const KEYS_PER_MESSAGE: usize = 1_000;

/// Keys remembered between two tallies, per ledger; past this, reports of
/// new keys are accepted but not told (a relay that sees this many
/// reporting users or addresses in 100 ms is under attack, and its own
/// buckets still hold).
const MAX_UNTOLD_KEYS: usize = 20_000;

/// The secret the relays of a region share to name client addresses in
/// their tallies.
pub struct AddressSecret([u8; 32]);

impl AddressSecret {
    /// Bytes the configured secret must have at least (`openssl rand -hex
    /// 32` gives 64).
    pub const MIN_LEN: usize = 32;

    /// The secret from its configured text; too short a text is refused,
    /// since a guessable secret makes digests as reversible as plain hashes.
    pub fn from_secret(secret: &str) -> anyhow::Result<Self> {
        if secret.len() < Self::MIN_LEN {
            anyhow::bail!(
                "the report address key has {} bytes, fewer than {}: make one with `openssl rand -hex 32` and give every relay of the region the same",
                secret.len(),
                Self::MIN_LEN
            );
        }
        Ok(AddressSecret(
            sha2::Sha256::digest(secret.as_bytes()).into(),
        ))
    }

    /// A name for this secret that tallies carry: 8 bytes of a digest of
    /// it, in hex, so relays can tell they hold the same one without
    /// showing it.
    fn id(&self) -> String {
        let digest = sha2::Sha256::new()
            .chain_update(b"rallypoint report address secret id\0")
            .chain_update(self.0)
            .finalize();
        rallypoint_protocol::hex(&digest[..8])
    }

    /// What `ip` is called in tallies and buckets: 16 bytes of
    /// SHA-256(secret ‖ the address's bucket name), in hex. The same on
    /// every relay holding the secret; without it, not reversible.
    fn digest(&self, ip: IpAddr) -> String {
        let digest = sha2::Sha256::new()
            .chain_update(self.0)
            .chain_update(address_bucket(ip).as_bytes())
            .finalize();
        rallypoint_protocol::hex(&digest[..16])
    }
}

/// One kind of budget (per subject or per address): the buckets, and what
/// was taken since the last tally.
struct Ledger {
    rates: SubjectRates,
    untold: Mutex<HashMap<String, u32>>,
}

impl Ledger {
    fn per_minute(per_minute: u32) -> Self {
        Ledger {
            rates: SubjectRates::per_minute(per_minute),
            untold: Mutex::default(),
        }
    }

    fn try_take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.rates.try_take(key, now)
    }

    /// Remembers a report accepted under `key` for the next tally.
    fn tell(&self, key: &str) {
        let mut untold = self.untold.lock().expect("untold reports lock");
        if untold.len() < MAX_UNTOLD_KEYS || untold.contains_key(key) {
            *untold.entry(key.to_owned()).or_default() += 1;
        }
    }

    /// What was taken since the last tally; forgets it.
    fn take_untold(&self) -> Vec<BudgetCharge> {
        std::mem::take(&mut *self.untold.lock().expect("untold reports lock"))
            .into_iter()
            .map(|(key, reports)| BudgetCharge { key, reports })
            .collect()
    }

    fn charge(&self, told: &[BudgetCharge], now: Instant) {
        for charge in told {
            self.rates.charge(&charge.key, charge.reports, now);
        }
    }
}

/// What a tally from the region did to this relay's budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tallied {
    /// This relay's own tally, heard back (not from NATS, which does not
    /// echo a relay's publications to it; from another process using the
    /// relay's id): nothing.
    Own,
    /// Its subjects and addresses were charged.
    Charged,
    /// Its subjects were charged; its addresses are named under another
    /// shared secret (or none), so they were not.
    OtherSecret,
}

/// The report budgets of one relay, kept in step with its region's others.
pub struct RegionalReportBudget {
    subjects: Ledger,
    addresses: Ledger,
    address_secret: Option<AddressSecret>,
    /// [`AddressSecret::id`] of `address_secret` (empty without one), as
    /// every tally carries it.
    secret_id: String,
}

impl RegionalReportBudget {
    /// `per_subject` reports per token subject and `per_address` per client
    /// address a minute, bursts of as many; addresses are shared with the
    /// region only under an `address_secret`.
    pub fn per_minute(
        per_subject: u32,
        per_address: u32,
        address_secret: Option<AddressSecret>,
    ) -> Self {
        RegionalReportBudget {
            subjects: Ledger::per_minute(per_subject),
            addresses: Ledger::per_minute(per_address),
            secret_id: address_secret
                .as_ref()
                .map(AddressSecret::id)
                .unwrap_or_default(),
            address_secret,
        }
    }

    /// Takes one report from its subject's budget, then from the budget of
    /// the client's address (when known: many tokens from one machine share
    /// it), or says when to retry. The subject comes first: a client over
    /// its own budget must not use up its address's, which its neighbours
    /// behind the same NAT share. A report accepted is told to the region
    /// at the next tally (its address only under a shared secret).
    pub fn try_take(
        &self,
        address: Option<IpAddr>,
        subject: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        self.subjects.try_take(subject, now)?;
        let address = address.map(|ip| match &self.address_secret {
            Some(secret) => (secret.digest(ip), true),
            None => (address_bucket(ip), false),
        });
        if let Some((bucket, _)) = &address {
            self.addresses.try_take(bucket, now)?;
        }
        self.subjects.tell(subject);
        if let Some((bucket, true)) = &address {
            self.addresses.tell(bucket);
        }
        Ok(())
    }

    /// What was taken since the last tally, as tally messages; forgets it.
    fn tally(&self, relay_id: &str) -> Vec<ReportsAccepted> {
        let message = |subjects: &[BudgetCharge], addresses: &[BudgetCharge]| ReportsAccepted {
            relay_id: relay_id.to_owned(),
            subjects: subjects.to_vec(),
            addresses: addresses.to_vec(),
            address_secret_id: self.secret_id.clone(),
        };
        let subjects = self.subjects.take_untold();
        let addresses = self.addresses.take_untold();
        let by_subject = subjects.chunks(KEYS_PER_MESSAGE).map(|c| message(c, &[]));
        let by_address = addresses.chunks(KEYS_PER_MESSAGE).map(|c| message(&[], c));
        by_subject.chain(by_address).collect()
    }

    /// Charges what another relay of the region accepted; tallies under its
    /// own id are skipped (its connection has no echo, so only a relay
    /// misconfigured with a duplicate id sends them), and so are addresses
    /// named under another secret than this relay's.
    fn charge(&self, tally: &ReportsAccepted, own_relay_id: &str, now: Instant) -> Tallied {
        if tally.relay_id == own_relay_id {
            return Tallied::Own;
        }
        self.subjects.charge(&tally.subjects, now);
        if tally.address_secret_id != self.secret_id {
            return Tallied::OtherSecret;
        }
        if self.address_secret.is_some() {
            self.addresses.charge(&tally.addresses, now);
        }
        Tallied::Charged
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
    // Relays already warned about for holding another address secret (a
    // warning each, not one per tally).
    let mut warned: std::collections::HashSet<String> = std::collections::HashSet::new();
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
                    Ok(tally) => {
                        let charged = budget.charge(&tally, &relay_id, Instant::now());
                        if charged == Tallied::OtherSecret
                            && warned.len() < MAX_WARNED_RELAYS
                            && warned.insert(tally.relay_id.clone())
                        {
                            tracing::warn!(%subject, other_relay = %tally.relay_id,
                                "a relay of this region holds another --report-address-key (or none): \
                                 per-address report budgets are not shared with it; give every relay \
                                 of the region the same secret");
                        }
                    }
                    Err(e) => tracing::warn!(%subject, error = %e, "ignored an unreadable report tally"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a test key of at least thirty-two characters";

    fn subject_budget(per_minute: u32) -> RegionalReportBudget {
        RegionalReportBudget::per_minute(per_minute, 1_000, None)
    }

    #[test]
    fn what_one_relay_accepted_is_charged_by_the_others_not_by_itself() {
        let t0 = Instant::now();
        let (east_0, east_1) = (subject_budget(3), subject_budget(3));
        assert!(east_0.try_take(None, "mallory", t0).is_ok());
        assert!(east_0.try_take(None, "mallory", t0).is_ok());
        let tallies = east_0.tally("us-east-0");
        assert_eq!(tallies.len(), 1);
        assert!(east_0.tally("us-east-0").is_empty(), "told once");
        for tally in &tallies {
            east_0.charge(tally, "us-east-0", t0);
            east_1.charge(tally, "us-east-1", t0);
        }
        assert!(
            east_0.try_take(None, "mallory", t0).is_ok(),
            "its own echo is not charged"
        );
        assert!(east_1.try_take(None, "mallory", t0).is_ok());
        assert!(
            east_1.try_take(None, "mallory", t0).is_err(),
            "3 - 2 told - 1 taken"
        );
    }

    #[test]
    fn an_address_budget_spans_the_relays_that_share_the_key_and_never_names_the_address() {
        let t0 = Instant::now();
        let budget = |key: Option<&str>| {
            RegionalReportBudget::per_minute(
                1_000,
                3,
                key.map(|k| AddressSecret::from_secret(k).unwrap()),
            )
        };
        let (east_0, east_1) = (budget(Some(KEY)), budget(Some(KEY)));
        let machine: IpAddr = "203.0.113.7".parse().unwrap();
        // Two tokens from one machine through relay 0.
        assert!(east_0.try_take(Some(machine), "alice", t0).is_ok());
        assert!(east_0.try_take(Some(machine), "bob", t0).is_ok());
        let tallies = east_0.tally("us-east-0");
        let told: Vec<&str> = tallies
            .iter()
            .flat_map(|t| &t.addresses)
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(told.len(), 1);
        assert!(
            !told[0].contains("203.0.113"),
            "the address itself is told: {told:?}"
        );
        let encoded: Vec<u8> = tallies.iter().flat_map(|t| t.encode_to_vec()).collect();
        assert!(!encoded.windows(11).any(|w| w == b"203.0.113.7"));
        for tally in &tallies {
            assert_eq!(east_1.charge(tally, "us-east-1", t0), Tallied::Charged);
        }
        // A third token through relay 1: the machine's third report.
        assert!(east_1.try_take(Some(machine), "carol", t0).is_ok());
        assert!(
            east_1.try_take(Some(machine), "dave", t0).is_err(),
            "3 - 2 told - 1 taken"
        );
        assert!(
            east_1
                .try_take(Some("203.0.113.8".parse().unwrap()), "erin", t0)
                .is_ok(),
            "another machine has its own budget"
        );

        // A relay with another key (or none) charges none of the addresses
        // and says so.
        let (other_key, no_key) = (
            budget(Some("another key of at least thirty-two chars")),
            budget(None),
        );
        for tally in &tallies {
            assert_eq!(
                other_key.charge(tally, "us-east-2", t0),
                Tallied::OtherSecret
            );
            assert_eq!(no_key.charge(tally, "us-east-3", t0), Tallied::OtherSecret);
        }
        for tally in &no_key.tally("us-east-3") {
            assert_eq!(
                east_1.charge(tally, "us-east-1", t0),
                Tallied::OtherSecret,
                "nor the other way"
            );
        }
        assert!(
            tallies
                .iter()
                .all(|t| t.address_secret_id.len() == 16 && !KEY.contains(&t.address_secret_id))
        );
        for relay in [&other_key, &no_key] {
            for user in ["a", "b", "c"] {
                assert!(relay.try_take(Some(machine), user, t0).is_ok());
            }
            assert!(
                relay.try_take(Some(machine), "d", t0).is_err(),
                "its own budget holds"
            );
        }
        assert!(
            no_key
                .tally("us-east-3")
                .iter()
                .all(|t| t.addresses.is_empty()),
            "without a key, addresses are not told"
        );
    }

    #[test]
    fn a_report_over_its_subjects_budget_leaves_its_address_budget_alone() {
        let t0 = Instant::now();
        let secret = AddressSecret::from_secret(KEY).unwrap();
        let (east_0, east_1) = (
            RegionalReportBudget::per_minute(1, 3, Some(secret)),
            RegionalReportBudget::per_minute(1, 3, Some(AddressSecret::from_secret(KEY).unwrap())),
        );
        let nat: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(east_0.try_take(Some(nat), "noisy", t0).is_ok());
        for _ in 0..10 {
            assert!(
                east_0.try_take(Some(nat), "noisy", t0).is_err(),
                "over its own budget"
            );
        }
        let tallies = east_0.tally("us-east-0");
        let told = |f: fn(&ReportsAccepted) -> usize| tallies.iter().map(f).sum::<usize>();
        assert_eq!(told(|t| t.subjects.len()), 1);
        assert_eq!(
            told(|t| t.addresses.iter().map(|c| c.reports as usize).sum()),
            1,
            "only what was accepted is told"
        );
        for tally in &tallies {
            east_1.charge(tally, "us-east-1", t0);
        }
        // Its neighbours behind the same NAT still have 3 - 1 here and there.
        for relay in [&east_0, &east_1] {
            assert!(relay.try_take(Some(nat), "neighbour-a", t0).is_ok());
            assert!(relay.try_take(Some(nat), "neighbour-b", t0).is_ok());
        }
    }

    #[test]
    fn a_short_address_key_is_refused_with_how_to_make_one() {
        let refused = AddressSecret::from_secret("short")
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("openssl rand -hex 32"), "{refused}");
    }

    #[test]
    fn a_large_tally_is_split_into_messages_nats_accepts() {
        let budget = RegionalReportBudget::per_minute(
            10,
            10,
            Some(AddressSecret::from_secret(KEY).unwrap()),
        );
        let t0 = Instant::now();
        for user in 0..2_500u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + user));
            budget
                .try_take(Some(ip), &format!("user-{user}"), t0)
                .unwrap();
        }
        let tallies = budget.tally("r");
        assert_eq!(tallies.len(), 6);
        let subjects: usize = tallies.iter().map(|t| t.subjects.len()).sum();
        let addresses: usize = tallies.iter().map(|t| t.addresses.len()).sum();
        assert_eq!((subjects, addresses), (2_500, 2_500));
        assert!(tallies.iter().all(|t| t.encoded_len() < 100_000));
    }
}
