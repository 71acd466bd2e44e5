//! Plumbing shared by the relay, the collector, the dashboard and the
//! `rallypoint` CLI, so each binary's `main` stays a few lines long.

pub mod clickhouse;
pub mod clock;
pub mod duration;
pub mod exposition;
pub mod instruments;
pub mod nats;
pub mod observability;
pub mod secret;
pub mod shutdown;

pub use duration::parse_duration;
