//! The pod-local MCP server Shadowcat forwards to.

mod credential;
mod http;

pub use self::credential::Credential;

pub use self::http::{
    Upstream, UpstreamRequest, client_headers_for_upstream, describe, upstream_headers_for_client,
};
