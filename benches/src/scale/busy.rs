//! busy-session: every connection calls on ONE session, so its history (one
//! event log per `sse` call) keeps growing. The calls are cut into windows
//! of equal size, each with its own throughput, latency and CPU per call, to
//! show whether the cost stays flat. direct and nginx run one window as the
//! baseline; they keep no history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::client::{Session, Timing};
use crate::conn::Conn;
use crate::error::CallError;
use crate::load::{Stop, Worker, lock, run_slice};
use crate::stats::Sample;
use http::Uri;

use super::cli::Plan;
use super::figures::Window;
use super::fleet::Fleet;
use super::meter::{Pids, Snapshot, Spent};
use super::target::Target;
use super::workload::{McpWorker, SESSION_VERSION, Workload};

/// What the workers of one target share.
struct Windows {
    /// Calls per window.
    size: u64,
    /// Calls completed so far.
    done: AtomicU64,
    /// A snapshot when each window's last call completed: (calls, snapshot).
    marks: Mutex<Vec<(u64, Snapshot)>>,
    /// Each window's calls, gathered from every worker at the end.
    samples: Mutex<Vec<Sample>>,
    pids: Pids,
}

/// A client that files each call under the window it completed in.
struct Windowed {
    inner: McpWorker,
    windows: Arc<Windows>,
    local: Vec<Sample>,
}

impl Worker for Windowed {
    async fn prepare(&mut self) -> Result<(), CallError> {
        self.inner.prepare().await
    }

    async fn step(&mut self) -> Result<Timing, CallError> {
        let result = self.inner.step().await;
        let w = &self.windows;
        let n = w.done.fetch_add(1, Ordering::Relaxed) + 1;
        let index = ((n - 1) / w.size) as usize;
        if self.local.len() <= index {
            self.local.resize_with(index + 1, Sample::default);
        }
        match &result {
            Ok(timing) => self.local[index].record(*timing),
            Err(error) => self.local[index].fail(error),
        }
        if n.is_multiple_of(w.size) {
            let snapshot = w.pids.snapshot();
            lock(&w.marks).push((n, snapshot));
        }
        result
    }

    async fn finish(self) {
        {
            let mut all = lock(&self.windows.samples);
            for (i, sample) in self.local.into_iter().enumerate() {
                if all.len() <= i {
                    all.resize_with(i + 1, Sample::default);
                }
                all[i].merge(sample);
            }
        }
        self.inner.finish().await;
    }
}

/// Runs busy-session against every target, one after another.
pub async fn run(fleet: &Fleet, targets: &[Target], plan: &Plan) -> anyhow::Result<Vec<Window>> {
    let mut windows = Vec::new();
    for &target in targets {
        let calls = match target.is_shadowcat() {
            true => plan.busy_calls,
            false => plan.busy_window,
        };
        eprintln!("busy-session: {calls} calls on one session: {}", target.label());
        let url = fleet.url(target)?;
        windows.extend(one_target(url, target, fleet.pids(target), calls, plan).await?);
    }
    Ok(windows)
}

/// `calls` calls on one fresh session of `target`, cut into windows.
async fn one_target(
    url: &Uri,
    target: Target,
    pids: Pids,
    calls: u64,
    plan: &Plan,
) -> anyhow::Result<Vec<Window>> {
    let opener = Session::open(Conn::new(url)?, url.clone(), SESSION_VERSION).await?;
    let id = opener
        .id()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{} answered initialize without a session", target.label()))?;
    let shared = Arc::new(Windows {
        size: plan.busy_window,
        done: AtomicU64::new(0),
        marks: Mutex::new(Vec::new()),
        samples: Mutex::new(Vec::new()),
        pids,
    });
    let workers = (0..plan.concurrency)
        .map(|i| Windowed {
            inner: McpWorker::new(url, Workload::SharedSse(id.clone()), i, plan.delay_ms),
            windows: shared.clone(),
            local: Vec::new(),
        })
        .collect();
    let measured = run_slice(
        workers,
        Stop::Calls(calls),
        move || async move { pids.snapshot() },
    )
    .await;
    opener.close().await;
    let mut marks = std::mem::take(&mut *lock(&shared.marks));
    marks.sort_by_key(|(n, _)| *n);
    if !calls.is_multiple_of(plan.busy_window) {
        marks.push((calls, measured.after));
    }
    let samples = std::mem::take(&mut *lock(&shared.samples));
    let mut previous = measured.before;
    let mut out = Vec::new();
    for ((calls_end, mark), sample) in marks.into_iter().zip(samples) {
        out.push(Window::new(
            target,
            calls_end,
            sample,
            Spent::between(&previous, &mark),
        ));
        previous = mark;
    }
    Ok(out)
}
