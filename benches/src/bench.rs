//! One run: start both processes, warm up, run every scenario against both
//! targets in alternating order, and collect the report.

use std::path::PathBuf;

use http::Uri;

use crate::cli::{Args, Plan, Scenario};
use crate::client::{self, Http};
use crate::procs::{self, Memory};
use crate::report::{Outcome, Report};
use crate::scenario::run_slice;
use crate::stats::Sample;

/// The two targets under comparison.
#[derive(Clone, Copy, Debug)]
enum Target {
    Direct,
    Proxy,
}

/// Runs the whole benchmark; both children are killed when it returns,
/// whether it succeeded or not.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let plan = args.plan()?;
    let log_dir = log_dir()?;
    // One pooled client for both targets, so neither gets a better one.
    let http = client::http(plan.concurrency);
    let (mut upstream, direct) = procs::start_upstream(args, &http, &log_dir).await?;
    let (mut shadowcat, proxied) = procs::start_shadowcat(args, &direct, &http, &log_dir).await?;
    eprintln!(
        "upstream {direct}, shadowcat {proxied}; logs in {}",
        log_dir.display()
    );
    let pid = shadowcat.pid();
    let memory_before = pid.and_then(Memory::of);

    if !plan.warmup.is_zero() {
        eprintln!("warming up for {:?} per target", plan.warmup);
        for url in [&direct, &proxied] {
            run_slice(&http, url, Scenario::Json, &plan, plan.warmup).await;
        }
    }
    let mut outcomes = Vec::new();
    for &scenario in &args.scenarios {
        outcomes.push(compare(&http, [&direct, &proxied], scenario, &plan).await);
        shadowcat.check_running()?;
        upstream.check_running()?;
    }
    let memory_after = pid.and_then(Memory::of);
    shadowcat.stop().await;
    upstream.stop().await;
    Ok(Report {
        plan,
        outcomes,
        memory_before,
        memory_after,
    })
}

/// Runs `scenario` against both targets, `plan.rounds` times, alternating
/// which goes first (ABBA) so drift and warm-up hit both alike.
async fn compare(http: &Http, [direct, proxied]: [&Uri; 2], scenario: Scenario, plan: &Plan) -> Outcome {
    let (mut d, mut p) = (Sample::default(), Sample::default());
    for round in 0..plan.rounds {
        let order = match round % 2 {
            0 => [Target::Direct, Target::Proxy],
            _ => [Target::Proxy, Target::Direct],
        };
        for target in order {
            let (url, into) = match target {
                Target::Direct => (direct, &mut d),
                Target::Proxy => (proxied, &mut p),
            };
            eprintln!(
                "{} round {}/{}: {target:?}",
                scenario.name(),
                round + 1,
                plan.rounds
            );
            into.merge(run_slice(http, url, scenario, plan, plan.slice).await);
        }
    }
    Outcome {
        scenario,
        direct: d.summarize(),
        proxy: p.summarize(),
    }
}

/// A fresh directory for the children's logs.
fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("shadowcat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
