//! One slice of load: `concurrency` clients, each with its own session,
//! calling one tool in a loop against one target until the slice ends.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{Plan, Scenario};
use crate::client::{Http, Session};
use crate::error::CallError;
use crate::stats::Sample;

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

/// Runs `scenario` against `url` for `length`: sessions are opened first
/// (not timed), then every client starts at once and calls until the end.
/// Calls in flight at the end finish and count, and so does their time.
pub async fn run_slice(http: &Http, url: &Uri, scenario: Scenario, plan: &Plan, length: Duration) -> Sample {
    let start = Arc::new(Barrier::new(plan.concurrency + 1));
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency {
        let (http, url, start) = (http.clone(), url.clone(), start.clone());
        let (tool, arguments) = tool_call(scenario, plan);
        workers.spawn(async move {
            let session = Session::open(http, url).await;
            start.wait().await;
            let mut sample = Sample::default();
            let mut last_call = Instant::now();
            match session {
                Ok(mut session) => {
                    let end = Instant::now() + length;
                    while Instant::now() < end {
                        match session.call(tool, arguments.clone()).await {
                            Ok(timing) => sample.record(timing),
                            Err(error) => sample.fail(&error),
                        }
                        last_call = Instant::now();
                    }
                    session.close().await;
                }
                Err(error) => sample.fail(&error),
            }
            (sample, last_call)
        });
    }
    start.wait().await;
    let began = Instant::now();
    let mut all = Sample::default();
    // The clock stops when the last call ends, not after the sessions are closed.
    let mut ended = began;
    while let Some(done) = workers.join_next().await {
        match done {
            Ok((sample, last_call)) => {
                all.merge(sample);
                ended = ended.max(last_call);
            }
            Err(died) => all.fail(&CallError::Protocol(format!("worker died: {died}"))),
        }
    }
    all.elapsed = ended - began;
    all
}
