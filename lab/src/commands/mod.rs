//! `rallypoint` subcommands that act as clients of a running deployment.

pub mod join;
pub mod nats_users;
pub mod probe;
pub mod simulate;
mod source;
