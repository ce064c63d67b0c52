//! The clients of the slice scenarios: each owns one dedicated connection
//! and repeats one MCP operation on it.

use std::time::Instant;

use crate::client::{Session, Timing, Version};
use crate::conn::Conn;
use crate::error::CallError;
use crate::load::Worker;
use http::{HeaderValue, Uri};
use serde_json::{Value, json};

/// The revision session scenarios speak.
pub const SESSION_VERSION: Version = Version::V2025_06_18;

/// What a client repeats.
#[derive(Clone, Debug)]
pub enum Workload {
    /// 2026-07-28 `tools/call` of `json`, no session.
    StatelessJson,
    /// Its own session, `tools/call` of `json`.
    SessionJson,
    /// Its own session, `tools/call` of `sse`.
    SessionSse,
    /// initialize + notifications/initialized + DELETE, timed as one.
    Setup,
    /// `tools/call` of `sse` on a session every client shares.
    SharedSse(HeaderValue),
}

/// How a client talks once prepared.
enum Caller {
    /// Calls on a session (or statelessly); `owned` sessions are ended after.
    Calls { session: Session<Conn>, owned: bool },
    /// Opens and ends sessions on this connection.
    Setups(Conn),
}

/// One client of a slice.
pub struct McpWorker {
    url: Uri,
    workload: Workload,
    arguments: Value,
    /// The first JSON-RPC id it uses; clients sharing a session need
    /// disjoint ids.
    first_id: u64,
    caller: Option<Caller>,
}

impl McpWorker {
    /// Client number `index` of a slice against `url`; tool calls carry
    /// `delay_ms` when it is not zero.
    pub fn new(url: &Uri, workload: Workload, index: usize, delay_ms: u64) -> McpWorker {
        let arguments = match delay_ms {
            0 => json!({}),
            ms => json!({"delay_ms": ms}),
        };
        McpWorker {
            url: url.clone(),
            workload,
            arguments,
            first_id: (index as u64 + 1) << 40,
            caller: None,
        }
    }

    /// `count` clients.
    pub fn many(url: &Uri, workload: &Workload, count: usize, delay_ms: u64) -> Vec<McpWorker> {
        (0..count)
            .map(|i| McpWorker::new(url, workload.clone(), i, delay_ms))
            .collect()
    }

    fn tool(&self) -> &'static str {
        match self.workload {
            Workload::StatelessJson | Workload::SessionJson | Workload::Setup => "json",
            Workload::SessionSse | Workload::SharedSse(_) => "sse",
        }
    }
}

impl Worker for McpWorker {
    async fn prepare(&mut self) -> Result<(), CallError> {
        let mut conn = Conn::new(&self.url)?;
        conn.connect().await?;
        let url = self.url.clone();
        let caller = match &self.workload {
            Workload::StatelessJson => Caller::Calls {
                session: Session::stateless(conn, url),
                owned: false,
            },
            Workload::SessionJson | Workload::SessionSse => Caller::Calls {
                session: Session::open(conn, url, SESSION_VERSION).await?,
                owned: true,
            },
            Workload::Setup => Caller::Setups(conn),
            Workload::SharedSse(id) => Caller::Calls {
                session: Session::join(conn, url, SESSION_VERSION, Some(id.clone()))
                    .first_request_id(self.first_id),
                owned: false,
            },
        };
        self.caller = Some(caller);
        Ok(())
    }

    async fn step(&mut self) -> Result<Timing, CallError> {
        let tool = self.tool();
        match self.caller.as_mut() {
            Some(Caller::Calls { session, .. }) => session.call(tool, self.arguments.clone()).await,
            Some(Caller::Setups(conn)) => {
                let started = Instant::now();
                let session = Session::open(&mut *conn, self.url.clone(), SESSION_VERSION).await?;
                session.end().await?;
                Ok(Timing {
                    first_event: None,
                    response: started.elapsed(),
                    notifications: 0,
                })
            }
            None => Err(CallError::Protocol("not prepared".into())),
        }
    }

    async fn finish(self) {
        if let Some(Caller::Calls { session, owned: true }) = self.caller {
            session.close().await;
        }
    }
}
