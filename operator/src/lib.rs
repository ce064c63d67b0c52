//! Shadowcat's operator: turns `McpProxy` resources into a sidecar in the
//! target workload's pods, the sidecar's config, and a Service.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crdgen;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod status;

#[cfg(test)]
mod fixtures;
