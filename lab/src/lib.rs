//! The `rallypoint` developer/operator CLI: `up` (a local multi-region
//! stack), `join`, `probe`, `simulate`, the user-file commands and the
//! benchmarks. What it runs on — NATS clusters, processes, proxies, tokens —
//! is `rallypoint-testkit`, shared with every crate's tests.
//!
//! * [`cli`] — the command line;
//! * [`commands`] — one module per command;
//! * [`bench`] — the benchmarks, each against a baseline measured in the
//!   same run;
//! * [`call`] — participants in a call, for the failover benchmark and test;
//! * [`load`] — call-rate load of many rooms (`rallypoint load`, `bench capacity`).

pub mod bench;
pub mod call;
pub mod cli;
pub mod commands;
pub mod load;
