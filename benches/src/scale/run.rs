//! One run: start the fleet, warm every target up, run each scenario, and
//! stop everything whether it succeeded or not.

use std::time::{Duration, Instant};

use crate::client;
use crate::load::{Stop, run_slice};

use super::cli::{Args, Plan, Scenario};
use super::figures::{Accum, Findings, Table};
use super::fleet::Fleet;
use super::report::Report;
use super::target::Target;
use super::workload::{McpWorker, Workload};
use super::{busy, held};

/// Runs the whole benchmark with the open-file limit `nofile`.
pub async fn run(args: &Args, nofile: u64) -> anyhow::Result<Report> {
    let started = Instant::now();
    let plan = args.plan(nofile)?;
    let http = client::http(8);
    let mut fleet = Fleet::start(args, &plan, nofile, &http).await?;
    let findings = scenarios(&plan, &mut fleet, &http).await;
    let skipped = std::mem::take(&mut fleet.skipped);
    let log_dir = fleet.log_dir().to_owned();
    fleet.stop().await;
    Ok(Report {
        plan,
        nofile,
        findings: findings?,
        skipped,
        log_dir,
        wall: started.elapsed(),
    })
}

/// Every scenario in order, checking between them that nothing died.
async fn scenarios(plan: &Plan, fleet: &mut Fleet, http: &client::Http) -> anyhow::Result<Findings> {
    let targets = fleet.targets();
    warm_up(fleet, &targets, plan).await?;
    let mut findings = Findings::default();
    for (i, &scenario) in plan.scenarios.iter().enumerate() {
        run_scenario(scenario, plan, fleet, &targets, http, &mut findings).await?;
        fleet.check_running()?;
        // held restarts the proxies: warm the new ones up for what follows.
        if scenario == Scenario::Held && i + 1 < plan.scenarios.len() {
            warm_up(fleet, &targets, plan).await?;
        }
    }
    Ok(findings)
}

/// Unmeasured `session-json` load on every target (connection pools, allocator, caches).
async fn warm_up(fleet: &Fleet, targets: &[Target], plan: &Plan) -> anyhow::Result<()> {
    if plan.warmup.is_zero() {
        return Ok(());
    }
    eprintln!("warming up for {:?} per target", plan.warmup);
    for &target in targets {
        let workers = McpWorker::many(fleet.url(target)?, &Workload::SessionJson, plan.concurrency, 0);
        run_slice(workers, Stop::After(plan.warmup), || std::future::ready(())).await;
    }
    Ok(())
}

/// Runs one scenario against every target and files its figures.
async fn run_scenario(
    scenario: Scenario,
    plan: &Plan,
    fleet: &mut Fleet,
    targets: &[Target],
    http: &client::Http,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let slices = |workload| Load {
        scenario,
        workload,
        concurrency: plan.concurrency,
        slice: plan.slice,
        rounds: plan.rounds,
        delay_ms: plan.delay_ms,
    };
    match scenario {
        Scenario::StatelessJson => {
            let load = slices(Workload::StatelessJson);
            findings.tables.push(compare(fleet, targets, &load).await?);
        }
        Scenario::SessionJson => {
            let load = slices(Workload::SessionJson);
            findings.tables.push(compare(fleet, targets, &load).await?);
        }
        Scenario::SessionSse => {
            let load = slices(Workload::SessionSse);
            findings.tables.push(compare(fleet, targets, &load).await?);
        }
        Scenario::Setup => findings
            .tables
            .push(compare(fleet, targets, &slices(Workload::Setup)).await?),
        Scenario::BusySession => findings.busy = busy::run(fleet, targets, plan).await?,
        Scenario::Held => findings.held = held::run(fleet, targets, plan, http).await?,
        Scenario::Sweep => {
            for &concurrency in &plan.sweep {
                let load = Load {
                    concurrency,
                    slice: plan.sweep_slice,
                    rounds: 1,
                    ..slices(Workload::SessionJson)
                };
                findings.sweep.push(compare(fleet, targets, &load).await?);
            }
        }
    }
    Ok(())
}

/// One slice scenario's shape.
struct Load {
    scenario: Scenario,
    workload: Workload,
    concurrency: usize,
    slice: Duration,
    rounds: u32,
    delay_ms: u64,
}

/// Runs `load` against every target, `rounds` times; the order reverses
/// every round (A B C D, then D C B A) so drift and warm-up hit all alike.
async fn compare(fleet: &Fleet, targets: &[Target], load: &Load) -> anyhow::Result<Table> {
    let mut accums: Vec<Accum> = targets.iter().map(|_| Accum::default()).collect();
    for round in 0..load.rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let target = targets[i];
            eprintln!(
                "{} c={} round {}/{}: {}",
                load.scenario.name(),
                load.concurrency,
                round + 1,
                load.rounds,
                target.label()
            );
            let pids = fleet.pids(target);
            let url = fleet.url(target)?;
            let workers = McpWorker::many(url, &load.workload, load.concurrency, load.delay_ms);
            let measured = run_slice(workers, Stop::After(load.slice), move || async move {
                pids.reading().await
            })
            .await;
            let settled = pids.reading().await;
            accums[i].add(measured.sample, measured.before, measured.after, settled);
        }
    }
    Ok(Table {
        scenario: load.scenario,
        concurrency: load.concurrency,
        rows: targets
            .iter()
            .zip(accums)
            .map(|(&target, accum)| accum.into_row(target))
            .collect(),
    })
}
