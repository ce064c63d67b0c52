//! Shadowcat's load generators and what they share: an MCP client over a
//! pooled or a dedicated HTTP/1.1 connection, child processes measured from
//! `/proc`, a private redis-server, and latency samples.
//!
//! Binaries: `shadowcat-bench` (against the Node reference server),
//! `shadowcat-scale` ([`scale`]: against nginx on a fast upstream),
//! `shadowcat-bench-upstream` ([`upstream`]: that fast upstream) and
//! `shadowcat-flood` (memory under floods).
#![forbid(unsafe_code)]

pub mod client;
pub mod conn;
pub mod error;
pub mod exchange;
pub mod load;
pub mod procs;
pub mod redis;
pub mod scale;
pub mod stats;
pub mod upstream;
