//! Protocol facts: JSON-RPC message shapes, MCP headers and protocol versions.

pub mod headers;
pub mod jsonrpc;
pub mod version;

pub use version::ProtocolVersion;
