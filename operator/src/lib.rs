//! Shadowcat's operator: turns `McpProxy` resources into the sidecar's
//! config, a Service and a NetworkPolicy, and injects the sidecar into the
//! pods that opt in through a mutating admission webhook.
#![forbid(unsafe_code)]

pub mod certs;
pub mod controller;
pub mod crdgen;
pub mod error;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod status;
pub mod webhook;

#[cfg(test)]
mod fixtures;
