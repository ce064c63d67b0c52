//! One run: start the upstream, a shadowcat per store (and a private
//! redis-server for the Redis store), warm up, run every scenario against
//! every target in interleaved order, and collect the report.

use http::Uri;
use shadowcat_bench::client::{self, Http};
use shadowcat_bench::procs::{self, Proc, ShadowcatSpec, Usage};
use shadowcat_bench::redis::RedisStats;
use shadowcat_bench::stats::Sample;

use crate::cli::{Args, Plan, Scenario, Store};
use crate::report::{Outcome, ProxyUsage, RedisReport, Report};
use crate::scenario::run_slice;

/// Where the load goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Straight to the upstream.
    Direct,
    /// Through a shadowcat with this store.
    Proxy(Store),
}

impl Target {
    /// The name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Proxy(Store::Memory) => "shadowcat+memory",
            Target::Proxy(Store::Redis) => "shadowcat+redis",
        }
    }

    /// The key in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Proxy(Store::Memory) => "shadowcat_memory",
            Target::Proxy(Store::Redis) => "shadowcat_redis",
        }
    }
}

/// A running shadowcat and what it measured idle.
struct Proxy {
    store: Store,
    proc: Proc,
    url: Uri,
    idle: Option<Usage>,
}

/// Runs the whole benchmark; every child is killed when it returns, whether
/// it succeeded or not.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let plan = args.plan()?;
    let log_dir = procs::log_dir("shadowcat-bench")?;
    // One pooled client for every target, so none gets a better one.
    let http = client::http(plan.concurrency);
    let (mut upstream, direct) =
        procs::start_node_upstream(&args.node, &args.server_script, &http, &log_dir).await?;
    let mut redis = match args.stores.contains(&Store::Redis) {
        true => Some(procs::start_redis(&args.redis_server, &log_dir).await?),
        false => None,
    };
    let mut proxies = Vec::new();
    for &store in &args.stores {
        let store_arg = match (store, &redis) {
            (Store::Redis, Some((_, port))) => format!("redis://127.0.0.1:{port}"),
            _ => "memory".to_owned(),
        };
        let spec = ShadowcatSpec {
            binary: &args.shadowcat,
            name: match store {
                Store::Memory => "shadowcat-memory",
                Store::Redis => "shadowcat-redis",
            },
            store: &store_arg,
            upstream: &direct,
            log_format: Some("text"),
            extra_args: &args.shadowcat_args,
        };
        let (proc, url) = procs::start_shadowcat(spec, &http, &log_dir).await?;
        eprintln!("shadowcat --store {store_arg}: {url}");
        proxies.push(Proxy {
            store,
            proc,
            url,
            idle: None,
        });
    }
    eprintln!("upstream {direct}; logs in {}", log_dir.display());
    for proxy in &mut proxies {
        proxy.idle = proxy.proc.pid().and_then(Usage::of);
    }
    let redis_idle = redis
        .as_ref()
        .and_then(|(proc, _)| proc.pid())
        .and_then(Usage::of);

    let targets: Vec<(Target, Uri)> = std::iter::once((Target::Direct, direct.clone()))
        .chain(proxies.iter().map(|p| (Target::Proxy(p.store), p.url.clone())))
        .collect();
    // Calls (and failures) per target, warm-up included, to divide CPU time by.
    let mut calls = vec![0u64; targets.len()];
    if !plan.warmup.is_zero() {
        eprintln!("warming up for {:?} per target", plan.warmup);
        for ((_, url), calls) in targets.iter().zip(&mut calls) {
            let warmup = run_slice(&http, url, Scenario::Json, &plan, plan.warmup).await;
            *calls += warmup.latency_us.len() as u64 + warmup.errors.values().sum::<u64>();
        }
    }
    let mut outcomes = Vec::new();
    for &scenario in &args.scenarios {
        let outcome = compare(&http, &targets, scenario, &plan).await;
        for ((_, s), calls) in outcome.results.iter().zip(&mut calls) {
            *calls += s.requests + s.errors;
        }
        outcomes.push(outcome);
        for proxy in &mut proxies {
            proxy.proc.check_running()?;
        }
        if let Some((proc, _)) = &mut redis {
            proc.check_running()?;
        }
        upstream.check_running()?;
    }

    // targets[0] is direct; proxies[i] is targets[i + 1].
    let proxy_usage: Vec<ProxyUsage> = proxies
        .iter()
        .zip(&calls[1..])
        .map(|(p, &calls)| ProxyUsage {
            target: Target::Proxy(p.store),
            idle: p.idle,
            after: p.proc.pid().and_then(Usage::of),
            calls,
        })
        .collect();
    let redis_report = match &redis {
        Some((proc, port)) => Some(RedisReport {
            idle: redis_idle,
            after: proc.pid().and_then(Usage::of),
            stats: RedisStats::of(*port).await,
            calls: proxy_usage
                .iter()
                .find(|u| u.target == Target::Proxy(Store::Redis))
                .map_or(0, |u| u.calls),
        }),
        None => None,
    };
    for proxy in proxies {
        proxy.proc.stop().await;
    }
    if let Some((proc, _)) = redis {
        proc.stop().await;
    }
    upstream.stop().await;
    Ok(Report {
        plan,
        stores: args.stores.clone(),
        outcomes,
        proxy_usage,
        redis: redis_report,
    })
}

/// Runs `scenario` against every target, `plan.rounds` times; the order
/// reverses every round (A B C, then C B A) so drift and warm-up hit all alike.
async fn compare(http: &Http, targets: &[(Target, Uri)], scenario: Scenario, plan: &Plan) -> Outcome {
    let mut samples: Vec<Sample> = targets.iter().map(|_| Sample::default()).collect();
    for round in 0..plan.rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (target, url) = &targets[i];
            eprintln!(
                "{} round {}/{}: {}",
                scenario.name(),
                round + 1,
                plan.rounds,
                target.label()
            );
            samples[i].merge(run_slice(http, url, scenario, plan, plan.slice).await);
        }
    }
    Outcome {
        scenario,
        results: targets
            .iter()
            .zip(samples)
            .map(|(&(target, _), sample)| (target, sample.summarize()))
            .collect(),
    }
}
