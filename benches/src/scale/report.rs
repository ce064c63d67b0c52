//! The results: Markdown tables for people, JSON for machines.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::stats::{Summary, finite};
use serde_json::{Value, json};

use super::cli::{FD_HEADROOM, Plan};
use super::figures::{Findings, HeldRow, Row, Table, Window};
use super::fleet::shadowcat_flags;
use super::target::Target;

/// Everything one run produced.
#[derive(Debug)]
pub struct Report {
    /// The load applied.
    pub plan: Plan,
    /// The open-file limit every process ran with.
    pub nofile: u64,
    /// The figures.
    pub findings: Findings,
    /// Targets asked for but not run, and why.
    pub skipped: Vec<(Target, String)>,
    /// Where the processes' logs are.
    pub log_dir: PathBuf,
    /// How long the run took.
    pub wall: Duration,
}

/// `a / b`, when both exist and the quotient is a number.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?).filter(|r| r.is_finite())
}

/// A figure with `digits` decimals, or `-`.
fn num(v: Option<f64>, digits: usize) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

/// A KiB figure as MiB, or `-`.
fn mib(kib: Option<u64>) -> String {
    num(kib.map(|k| k as f64 / 1024.0), 1)
}

/// `×nginx` of one figure of `row`.
fn vs_nginx(table: &Table, row: &Row, figure: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    ratio(figure(row), table.get(Target::Nginx).and_then(&figure))
}

fn p50(row: &Row) -> Option<f64> {
    Some(row.summary.latency_ms.p50)
}

fn rps(row: &Row) -> Option<f64> {
    Some(row.summary.rps)
}

fn proxy_cpu(row: &Row) -> Option<f64> {
    row.proxy_cpu_us
}

impl Report {
    /// The most held streams the open-file limit allows.
    fn most_streams(&self) -> u64 {
        self.nofile.saturating_sub(FD_HEADROOM) / 2
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_intro(&mut out);
        self.render_calls(&mut out);
        self.render_redis(&mut out);
        self.render_busy(&mut out);
        self.render_held(&mut out);
        self.render_sweep(&mut out);
        self.render_problems(&mut out);
        out
    }

    fn render_intro(&self, out: &mut String) {
        let p = &self.plan;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut flags = shadowcat_flags(self.nofile);
        flags.extend(p.shadowcat_args.iter().cloned());
        let _ = writeln!(
            out,
            "# Shadowcat and nginx on a fast upstream\n\n\
             {} connections (one client each, plain HTTP/1.1); {:.1} s per scenario and target in {} \
             rounds, the target order reversing every round; {:.1} s warm-up per target; {cores} cores \
             shared by the load generator, the upstream and the proxies; open-file limit {}; wall time \
             {:.0} s.\n\n\
             shadowcat: release build, default settings but `{}` (the default admission limits \
             are a sidecar's); nginx: `worker_processes {}`, keep-alive pool of 256 to the upstream, \
             no buffering.\n",
            p.concurrency,
            p.slice.as_secs_f64() * f64::from(p.rounds),
            p.rounds,
            p.warmup.as_secs_f64(),
            self.nofile,
            self.wall.as_secs_f64(),
            flags.join(" "),
            p.nginx_workers,
        );
        let _ = writeln!(
            out,
            "proxy CPU µs/req: user + system CPU of the proxy (nginx: master + workers; direct: the \
             upstream itself) over the measured slice, per successful request; upstream CPU µs/req \
             likewise for the upstream; upstream req/req: MCP requests the upstream served per \
             request (setup: per initialize + initialized + DELETE). ×nginx: the figure divided by \
             nginx's in the same table.\n"
        );
    }

    fn render_calls(&self, out: &mut String) {
        if self.findings.tables.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## Calls\n\n(setup: one request is initialize + notifications/initialized + DELETE)\n\n\
             | scenario | target | requests | errors | req/s | p50 ms | p99 ms | proxy CPU µs/req \
             | upstream CPU µs/req | upstream req/req | CPU ×nginx | p50 ×nginx | req/s ×nginx |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for table in &self.findings.tables {
            for row in &table.rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    table.scenario.name(),
                    row.target.label(),
                    latency_cells(&row.summary),
                    num(row.proxy_cpu_us, 1),
                    num(row.upstream_cpu_us, 1),
                    num(row.upstream_requests, 2),
                    num(vs_nginx(table, row, proxy_cpu), 2),
                    num(vs_nginx(table, row, p50), 2),
                    num(vs_nginx(table, row, rps), 2),
                );
            }
        }
        out.push('\n');
    }

    fn render_redis(&self, out: &mut String) {
        let rows: Vec<_> = (self.findings.tables.iter())
            .chain(&self.findings.sweep)
            .filter_map(|t| Some((t, t.get(Target::ShadowcatRedis)?.redis?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## Redis behind shadowcat+redis\n\n\
             bytes retained/call: `used_memory` once the scenario's sessions were ended, minus before \
             it, per call; keys: `DBSIZE` then.\n\n\
             | scenario | connections | commands/call | redis CPU µs/call | bytes retained/call | keys after |\n\
             |---|--:|--:|--:|--:|--:|"
        );
        for (table, r) in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                table.scenario.name(),
                table.concurrency,
                num(r.commands_per_call, 2),
                num(r.cpu_us, 1),
                num(r.bytes_per_call.map(|b| if b.abs() < 0.5 { 0.0 } else { b }), 0),
                r.keys.map_or("-".into(), |k| k.to_string()),
            );
        }
        out.push('\n');
    }

    fn render_busy(&self, out: &mut String) {
        if self.findings.busy.is_empty() {
            return;
        }
        let p = &self.plan;
        let _ = writeln!(
            out,
            "## busy-session\n\nOne session shared by all {} connections, tool `sse`, {} calls per \
             shadowcat target in windows of {} (direct and nginx: one window, as the baseline). \
             A flat line means the session's growing history costs nothing per call.\n\n\
             | target | calls so far | errors | req/s | p50 ms | p99 ms | proxy CPU µs/req \
             | upstream CPU µs/req | redis CPU µs/req |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|",
            p.concurrency, p.busy_calls, p.busy_window
        );
        for w in &self.findings.busy {
            let s = &w.summary;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                w.target.label(),
                w.calls_end,
                s.errors,
                s.rps,
                s.latency_ms.p50,
                s.latency_ms.p99,
                num(w.proxy_cpu_us, 1),
                num(w.upstream_cpu_us, 1),
                num(w.redis_cpu_us, 1),
            );
        }
        out.push('\n');
    }

    fn render_held(&self, out: &mut String) {
        if self.findings.held.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## held streams\n\nEach session holds one GET stream on its own connection; each count \
             runs on a freshly started proxy (direct: the same upstream throughout). A held \
             stream costs a proxy two descriptors (the client's connection and its own to the \
             upstream): with the open-file limit of {} the most is about {}. RSS: the proxy's VmRSS \
             (nginx: master + workers; direct: the upstream). Then {} broadcasts {:.1} s apart; \
             fan-out: receive time − send time per client and event.\n\n\
             | target | streams | opened | open s | RSS before MiB | RSS with streams MiB | KiB/stream \
             | events received/expected | fan-out p50 ms | p99 ms | max ms |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            self.nofile,
            self.most_streams(),
            self.plan.broadcasts,
            self.plan.broadcast_interval.as_secs_f64(),
        );
        for h in &self.findings.held {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} | {} | {}/{} | {} | {} | {} |",
                h.target.label(),
                h.streams,
                h.opened,
                h.open_time.as_secs_f64(),
                mib(h.rss_before_kib),
                mib(h.rss_after_kib),
                num(h.kib_per_stream(), 1),
                h.received,
                h.expected,
                num(Some(h.fanout_ms.p50), 2),
                num(Some(h.fanout_ms.p99), 2),
                num(Some(h.fanout_ms.max), 2),
            );
        }
        out.push('\n');
    }

    fn render_sweep(&self, out: &mut String) {
        if self.findings.sweep.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## sweep: session-json latency vs concurrency ({:.0} s per level and target)\n\n\
             | connections | target | requests | errors | req/s | p50 ms | p99 ms | proxy CPU µs/req \
             | p50 ×nginx | req/s ×nginx |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
            self.plan.sweep_slice.as_secs_f64()
        );
        for table in &self.findings.sweep {
            for row in &table.rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    table.concurrency,
                    row.target.label(),
                    latency_cells(&row.summary),
                    num(row.proxy_cpu_us, 1),
                    num(vs_nginx(table, row, p50), 2),
                    num(vs_nginx(table, row, rps), 2),
                );
            }
        }
        out.push('\n');
    }

    fn render_problems(&self, out: &mut String) {
        for (target, why) in &self.skipped {
            let _ = writeln!(out, "skipped {}: {why}", target.label());
        }
        let tables = self.findings.tables.iter().chain(&self.findings.sweep);
        for table in tables {
            for row in &table.rows {
                errors_line(
                    out,
                    table.scenario.name(),
                    table.concurrency,
                    row.target,
                    &row.summary,
                );
            }
        }
        for w in &self.findings.busy {
            errors_line(out, "busy-session", w.calls_end as usize, w.target, &w.summary);
        }
        for h in &self.findings.held {
            if let Some(first) = &h.errors.first_error {
                let _ = writeln!(
                    out,
                    "errors in held {} / {}: {:?}; first: {first}",
                    h.streams,
                    h.target.label(),
                    h.errors.errors
                );
            }
            if let Some(n) = h.leftover_upstream_streams.filter(|&n| n > 0) {
                let _ = writeln!(
                    out,
                    "held {} / {}: the upstream still held {n} streams after every session was ended",
                    h.streams,
                    h.target.label()
                );
            }
        }
        let _ = writeln!(out, "logs: {}", self.log_dir.display());
    }

    /// The machine-readable form.
    pub fn to_json(&self) -> Value {
        let p = &self.plan;
        json!({
            "plan": {
                "targets": p.targets.iter().map(|t| t.key()).collect::<Vec<_>>(),
                "scenarios": p.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "concurrency": p.concurrency,
                "seconds_per_target": p.slice.as_secs_f64() * f64::from(p.rounds),
                "rounds": p.rounds,
                "warmup_seconds": p.warmup.as_secs_f64(),
                "delay_ms": p.delay_ms,
                "busy_calls": p.busy_calls,
                "busy_window": p.busy_window,
                "held": p.held,
                "broadcasts": p.broadcasts,
                "broadcast_interval_seconds": p.broadcast_interval.as_secs_f64(),
                "sweep": p.sweep,
                "sweep_seconds": p.sweep_slice.as_secs_f64(),
                "open_file_limit": self.nofile,
            },
            "wall_seconds": self.wall.as_secs_f64(),
            "skipped": self.skipped.iter().map(|(t, why)| json!({"target": t.key(), "why": why})).collect::<Vec<_>>(),
            "scenarios": self.findings.tables.iter().map(table_json).collect::<Vec<_>>(),
            "busy_session": self.findings.busy.iter().map(window_json).collect::<Vec<_>>(),
            "held": self.findings.held.iter().map(held_json).collect::<Vec<_>>(),
            "sweep": self.findings.sweep.iter().map(table_json).collect::<Vec<_>>(),
        })
    }
}

/// requests | errors | req/s | p50 | p99
fn latency_cells(s: &Summary) -> String {
    format!(
        "{} | {} | {:.0} | {:.2} | {:.2}",
        s.requests, s.errors, s.rps, s.latency_ms.p50, s.latency_ms.p99
    )
}

fn errors_line(out: &mut String, scenario: &str, n: usize, target: Target, s: &Summary) {
    if s.errors > 0 {
        let _ = writeln!(
            out,
            "errors in {scenario} ({n}) / {}: {:?}; first: {}",
            target.label(),
            s.error_kinds,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
}

fn table_json(table: &Table) -> Value {
    let rows: Vec<Value> = table
        .rows
        .iter()
        .map(|row| {
            json!({
                "target": row.target.key(),
                "figures": row.summary.to_json(),
                "proxy_cpu_us_per_request": row.proxy_cpu_us.and_then(finite),
                "upstream_cpu_us_per_request": row.upstream_cpu_us.and_then(finite),
                "upstream_requests_per_request": row.upstream_requests.and_then(finite),
                "over_nginx": {
                    "cpu": vs_nginx(table, row, proxy_cpu),
                    "p50": vs_nginx(table, row, p50),
                    "throughput": vs_nginx(table, row, rps),
                },
                "redis": row.redis.map(|r| json!({
                    "commands_per_call": r.commands_per_call,
                    "cpu_us_per_call": r.cpu_us.and_then(finite),
                    "bytes_retained_per_call": r.bytes_per_call.and_then(finite),
                    "keys": r.keys,
                })),
            })
        })
        .collect();
    json!({"scenario": table.scenario.name(), "concurrency": table.concurrency, "targets": rows})
}

fn window_json(w: &Window) -> Value {
    json!({
        "target": w.target.key(),
        "calls_end": w.calls_end,
        "figures": w.summary.to_json(),
        "proxy_cpu_us_per_request": w.proxy_cpu_us.and_then(finite),
        "upstream_cpu_us_per_request": w.upstream_cpu_us.and_then(finite),
        "redis_cpu_us_per_request": w.redis_cpu_us.and_then(finite),
    })
}

fn held_json(h: &HeldRow) -> Value {
    json!({
        "target": h.target.key(),
        "streams": h.streams,
        "opened": h.opened,
        "errors": h.errors.errors,
        "first_error": h.errors.first_error,
        "open_seconds": h.open_time.as_secs_f64(),
        "rss_before_kib": h.rss_before_kib,
        "rss_after_kib": h.rss_after_kib,
        "kib_per_stream": h.kib_per_stream().and_then(finite),
        "broadcasts": h.broadcasts,
        "events_expected": h.expected,
        "events_received": h.received,
        "fanout_ms": h.fanout_ms.to_json(),
        "leftover_upstream_streams": h.leftover_upstream_streams,
    })
}
