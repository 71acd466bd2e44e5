//! The lab: everything needed to run rallypoint on one machine as if it were
//! spread over the world, and the `rallypoint` developer/operator CLI built on it.
//!
//! * [`nats`] — real `nats-server` super-clusters on loopback (clusters,
//!   gateways, JetStream), used by `rallypoint up` and by every integration test;
//! * [`relays`] — `rallypoint-relay` processes;
//! * [`process`] — child processes that stop cleanly and log to files;
//! * [`tokens`] — the development token issuer.

pub mod bench;
pub mod bins;
pub mod call;
pub mod chdb;
pub mod cli;
pub mod clickhouse;
pub mod collector;
pub mod commands;
pub mod nats;
pub mod pki;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod relays;
pub mod reports;
pub mod stack;
pub mod tokens;
pub mod usage;
pub mod zookeeper;
