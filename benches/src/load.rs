//! A slice of load: workers that each prepare (untimed), start together,
//! repeat one timed step until the slice ends, stop together and clean up
//! (untimed). A probe runs at the start and at the stop, so what it measures
//! (CPU time, counters) covers exactly the timed part. Also [`pooled`]: a
//! batch of jobs at bounded concurrency, for setting up and tearing down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Timing;
use crate::error::CallError;
use crate::stats::Sample;

/// Pause after a failed step, so a target that refuses at once is not
/// hammered in a tight loop.
const AFTER_FAILURE: Duration = Duration::from_millis(5);

/// One client of a slice.
pub trait Worker: Send + 'static {
    /// Untimed set-up before the start (open a connection, a session).
    fn prepare(&mut self) -> impl Future<Output = Result<(), CallError>> + Send;
    /// One timed operation.
    fn step(&mut self) -> impl Future<Output = Result<Timing, CallError>> + Send;
    /// Untimed clean-up after the stop (end the session).
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// When the workers stop.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many steps in all.
    Calls(u64),
}

/// A slice's calls and the probe's readings at its start and stop.
#[derive(Debug)]
pub struct Measured<R> {
    /// Every worker's calls; `elapsed` is start to stop.
    pub sample: Sample,
    /// The probe at the start.
    pub before: R,
    /// The probe at the stop.
    pub after: R,
}

/// Runs `workers` until `stop`, probing at the start and the stop.
pub async fn run_slice<W, P, Fut, R>(workers: Vec<W>, stop: Stop, mut probe: P) -> Measured<R>
where
    W: Worker,
    P: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let start = Arc::new(Barrier::new(workers.len() + 1));
    let done = Arc::new(Barrier::new(workers.len() + 1));
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for mut worker in workers {
        let (start, done, issued) = (start.clone(), done.clone(), issued.clone());
        tasks.spawn(async move {
            let mut sample = Sample::default();
            let ready = worker.prepare().await;
            start.wait().await;
            match ready {
                Ok(()) => {
                    let began = Instant::now();
                    while go_on(stop, began, &issued) {
                        match worker.step().await {
                            Ok(timing) => sample.record(timing),
                            Err(error) => {
                                sample.fail(&error);
                                tokio::time::sleep(AFTER_FAILURE).await;
                            }
                        }
                    }
                }
                Err(error) => sample.fail(&error),
            }
            done.wait().await;
            worker.finish().await;
            sample
        });
    }
    start.wait().await;
    let before = probe().await;
    let began = Instant::now();
    done.wait().await;
    let elapsed = began.elapsed();
    let after = probe().await;
    let mut sample = Sample::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(worker_sample) => sample.merge(worker_sample),
            Err(died) => sample.fail(&CallError::Protocol(format!("worker died: {died}"))),
        }
    }
    sample.elapsed = elapsed;
    Measured {
        sample,
        before,
        after,
    }
}

/// Whether a worker starts another step.
fn go_on(stop: Stop, began: Instant, issued: &AtomicU64) -> bool {
    match stop {
        Stop::After(length) => began.elapsed() < length,
        Stop::Calls(total) => issued.fetch_add(1, Ordering::Relaxed) < total,
    }
}

/// Runs `job` over `items` with `concurrency` workers on this task, each
/// with its own state from `state` (e.g. a connection). Returns what
/// succeeded and the failures.
pub async fn pooled<T, S, R>(
    items: Vec<T>,
    concurrency: usize,
    state: impl Fn() -> S,
    job: impl AsyncFn(&mut S, T) -> Result<R, CallError>,
) -> (Vec<R>, Sample) {
    let queue = Mutex::new(items.into_iter());
    let workers = (0..concurrency).map(|_| async {
        let mut state = state();
        let mut done = Vec::new();
        let mut sample = Sample::default();
        loop {
            // Taken in its own statement, so the lock is not held across the job.
            let next = lock(&queue).next();
            let Some(item) = next else { break };
            match job(&mut state, item).await {
                Ok(r) => done.push(r),
                Err(e) => sample.fail(&e),
            }
        }
        (done, sample)
    });
    let mut all = (Vec::new(), Sample::default());
    for (done, sample) in futures::future::join_all(workers).await {
        all.0.extend(done);
        all.1.merge(sample);
    }
    all
}

/// A std mutex's guard, poisoned or not (what it guards stays usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        fail_prepare: bool,
    }

    impl Worker for Counting {
        async fn prepare(&mut self) -> Result<(), CallError> {
            match self.fail_prepare {
                true => Err(CallError::Protocol("no".into())),
                false => Ok(()),
            }
        }
        async fn step(&mut self) -> Result<Timing, CallError> {
            tokio::task::yield_now().await;
            Ok(Timing {
                first_event: None,
                response: Duration::from_micros(10),
                notifications: 0,
            })
        }
        async fn finish(self) {}
    }

    #[tokio::test]
    async fn a_call_budget_is_met_exactly_and_failed_preparations_count() {
        let workers = vec![
            Counting { fail_prepare: false },
            Counting { fail_prepare: false },
            Counting { fail_prepare: true },
        ];
        let mut probes = 0;
        let m = run_slice(workers, Stop::Calls(1000), || {
            probes += 1;
            std::future::ready(probes)
        })
        .await;
        assert_eq!((m.before, m.after), (1, 2));
        let s = m.sample.summarize();
        assert_eq!((s.requests, s.errors), (1000, 1));
    }

    #[tokio::test]
    async fn pooled_runs_every_job_once_with_its_workers_state() {
        let (done, failed) = pooled(
            (0..100u32).collect(),
            7,
            || 0u32,
            async |seen: &mut u32, item: u32| {
                *seen += 1;
                tokio::task::yield_now().await;
                match item % 10 {
                    0 => Err(CallError::Protocol(format!("{item} after {seen}"))),
                    _ => Ok(item),
                }
            },
        )
        .await;
        let mut done = done;
        done.sort_unstable();
        assert_eq!(done.len(), 90);
        assert!(done.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(failed.errors.get("protocol"), Some(&10));
    }
}
