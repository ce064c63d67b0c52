//! One slice of load: `concurrency` clients, each with its own session,
//! calling one tool in a loop against one target until the slice ends.

use std::time::Duration;

use http::Uri;
use serde_json::{Value, json};
use shadowcat_bench::client::{Http, Session, Timing, Version};
use shadowcat_bench::error::CallError;
use shadowcat_bench::load::{self, Stop, Worker};
use shadowcat_bench::stats::Sample;

use crate::cli::{Plan, Scenario};

/// The tool call a scenario repeats.
fn tool_call(scenario: Scenario, plan: &Plan) -> (&'static str, Value) {
    match scenario {
        Scenario::Json => ("echo", json!({"message": "shadowcat-bench"})),
        Scenario::Sse => (
            "trigger-long-running-operation",
            json!({"duration": plan.sse_seconds, "steps": plan.sse_steps}),
        ),
    }
}

/// One client: its own session, calling one tool.
struct Client {
    http: Http,
    url: Uri,
    tool: &'static str,
    arguments: Value,
    session: Option<Session<Http>>,
}

impl Worker for Client {
    async fn prepare(&mut self) -> Result<(), CallError> {
        let session = Session::open(self.http.clone(), self.url.clone(), Version::V2025_11_25).await?;
        self.session = Some(session);
        Ok(())
    }

    async fn step(&mut self) -> Result<Timing, CallError> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| CallError::Protocol("no session".into()))?;
        session.call(self.tool, self.arguments.clone()).await
    }

    async fn finish(self) {
        if let Some(session) = self.session {
            session.close().await;
        }
    }
}

/// Runs `scenario` against `url` for `length`: sessions are opened first
/// (not timed), then every client starts at once and calls until the end.
/// Calls in flight at the end finish and count, and so does their time.
pub async fn run_slice(http: &Http, url: &Uri, scenario: Scenario, plan: &Plan, length: Duration) -> Sample {
    let workers = (0..plan.concurrency)
        .map(|_| {
            let (tool, arguments) = tool_call(scenario, plan);
            Client {
                http: http.clone(),
                url: url.clone(),
                tool,
                arguments,
                session: None,
            }
        })
        .collect();
    load::run_slice(workers, Stop::After(length), || std::future::ready(()))
        .await
        .sample
}
