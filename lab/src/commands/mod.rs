//! `rallypoint` subcommands that act on a deployment: as its clients, or
//! making its credentials.

pub mod clickhouse_users;
pub mod join;
pub mod load;
pub mod nats_users;
mod outcome;
pub mod probe;
pub mod simulate;
mod source;
