//! What rallypoint's tests, benchmarks and local stacks stand on: real
//! parts on loopback, started as processes and stopped cleanly.
//!
//! * [`nats`] — `nats-server` super-clusters (clusters, gateways, JetStream,
//!   accounts and users per role);
//! * [`relays`], [`collector`], [`clickhouse`], [`zookeeper`] — the
//!   processes of a deployment; [`stack`] — all of them as two or more
//!   regions, the way `rallypoint up` runs them;
//! * [`proxy`] — delay proxies that give loopback a region's latency, loss
//!   and outages;
//! * [`tokens`], [`pki`] — development tokens and certificates;
//! * [`reports`] — realistic synthetic election reports and their delivery;
//! * [`chdb`] — statements checked on current ClickHouse in-process;
//! * [`process`], [`ports`], [`bins`], [`usage`] — child processes, free
//!   ports, where binaries are, what a process costs.
//!
//! It links none of the services' libraries (they run as processes), so a
//! crate's tests that use it compile only what they test.

pub mod bins;
pub mod chdb;
pub mod clickhouse;
pub mod collector;
pub mod media_age;
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
