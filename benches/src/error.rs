//! Why a call failed, with a short label to count failures by.

use std::time::Duration;

use http::StatusCode;

/// A failed MCP call (or session setup).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection failed or broke mid-body.
    #[error("transport: {0}")]
    Transport(String),
    /// A non-2xx status.
    #[error("HTTP status {0}")]
    Status(StatusCode),
    /// The server answered with a JSON-RPC error.
    #[error("JSON-RPC error: {0}")]
    JsonRpc(String),
    /// The answer was not what MCP says it should be.
    #[error("protocol: {0}")]
    Protocol(String),
    /// One step of the exchange took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl CallError {
    /// Wraps a client or body error, with its source chain.
    pub fn transport(error: impl std::error::Error) -> Self {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        CallError::Transport(text)
    }

    /// A bounded label for counting failures.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Transport(_) => "transport",
            CallError::Status(_) => "status",
            CallError::JsonRpc(_) => "jsonrpc",
            CallError::Protocol(_) => "protocol",
            CallError::Timeout(_) => "timeout",
        }
    }
}
