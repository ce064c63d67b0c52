//! The child processes — the upstream MCP server, a shadowcat per store and,
//! for the Redis store, a private redis-server — started on free ports, waited
//! for, measured, and killed when dropped.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use http::Uri;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::cli::{Args, Store};
use crate::client::{self, Http};
use crate::redis;

/// How long a child may take to come up.
const STARTUP: Duration = Duration::from_secs(30);

/// A child process whose output goes to a log file; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, its stdout and stderr going to `<log_dir>/<name>.log`.
    fn spawn(name: &'static str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { name, child, log })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails, pointing at the log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); see {}", self.name, self.log.display());
        }
        Ok(())
    }

    /// Polls `ready` until it holds, failing if the process exits or [`STARTUP`] passes.
    async fn wait_until<F, Fut>(&mut self, what: &str, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + STARTUP;
        while !ready().await {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} not {what} after {STARTUP:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills the process and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A port nobody listens on right now (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts server-everything in Streamable HTTP mode; waits until it answers HTTP.
pub async fn start_upstream(args: &Args, http: &Http, log_dir: &Path) -> anyhow::Result<(Proc, Uri)> {
    anyhow::ensure!(
        args.server_script.exists(),
        "{} is missing: run tests/peers/install.sh",
        args.server_script.display()
    );
    let port = free_port()?;
    let mut cmd = Command::new(&args.node);
    cmd.arg(&args.server_script)
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    let mut proc = Proc::spawn("upstream", cmd, log_dir)?;
    let url: Uri = format!("http://127.0.0.1:{port}/mcp").parse()?;
    // Any HTTP status means it is serving (a bare GET is a 4xx there).
    proc.wait_until("answering", || async {
        client::get_status(http, &url).await.is_ok()
    })
    .await?;
    Ok((proc, url))
}

/// Starts a private, non-persistent redis-server on a free port; waits until
/// it answers `PING`. Returns the process and its port.
pub async fn start_redis(args: &Args, log_dir: &Path) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new(&args.redis_server);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"]);
    let mut proc = Proc::spawn("redis", cmd, log_dir)?;
    proc.wait_until("answering PING", || redis::ping(port)).await?;
    Ok((proc, port))
}

/// Starts shadowcat with `store` (a `--store` value) in front of `upstream`;
/// waits until `/readyz` answers 200.
pub async fn start_shadowcat(
    args: &Args,
    kind: Store,
    store: &str,
    upstream: &Uri,
    http: &Http,
    log_dir: &Path,
) -> anyhow::Result<(Proc, Uri)> {
    let (public, admin) = (free_port()?, free_port()?);
    let mut cmd = Command::new(&args.shadowcat);
    cmd.arg("--upstream")
        .arg(upstream.to_string())
        .args(["--store", store])
        .args(["--listen", &format!("127.0.0.1:{public}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "text"])
        .args(&args.shadowcat_args);
    let name = match kind {
        Store::Memory => "shadowcat-memory",
        Store::Redis => "shadowcat-redis",
    };
    let mut proc = Proc::spawn(name, cmd, log_dir)?;
    let readyz: Uri = format!("http://127.0.0.1:{admin}/readyz").parse()?;
    proc.wait_until("ready", || async {
        client::get_status(http, &readyz)
            .await
            .is_ok_and(|s| s.is_success())
    })
    .await?;
    Ok((proc, format!("http://127.0.0.1:{public}/mcp").parse()?))
}

/// Resident memory and CPU time of a process, from `/proc/PID/{status,stat}`.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most it was ever resident, KiB.
    pub peak_kib: u64,
    /// User + system CPU time so far, all threads, in seconds.
    pub cpu_s: f64,
}

/// `/proc/PID/stat` counts CPU time in clock ticks of 1/`USER_HZ` s; Linux
/// fixes `USER_HZ` at 100 on every architecture it exports it to user space.
const USER_HZ: f64 = 100.0;

impl Usage {
    /// Reads `pid`'s figures; `None` when it is gone or not on Linux.
    pub fn of(pid: u32) -> Option<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        // After the `(comm)` field, which may hold spaces: state is field 3,
        // utime and stime are fields 14 and 15.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        let ticks = |i: usize| rest.get(i - 3)?.parse::<u64>().ok();
        Some(Usage {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            cpu_s: (ticks(14)? + ticks(15)?) as f64 / USER_HZ,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let busy: u64 = (0..20_000_000u64).fold(0, |a, x| a.wrapping_add(x * x));
        assert_ne!(busy, 1);
        let u = Usage::of(std::process::id()).expect("on Linux");
        assert!(u.rss_kib > 0 && u.peak_kib >= u.rss_kib);
        assert!(u.cpu_s >= 0.0);
    }
}
