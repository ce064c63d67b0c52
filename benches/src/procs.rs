//! The child processes — an upstream MCP server, shadowcats, nginx and
//! private redis-servers — started on free ports, waited for, measured, and
//! killed when dropped.

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use http::Uri;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

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
    /// Kill its own children first (nginx's workers outlive a killed master).
    with_children: bool,
}

impl Proc {
    /// Starts `cmd`, its stdout and stderr appended to `<log_dir>/<name>.log`
    /// (a restarted process adds to its predecessor's log).
    pub fn spawn(name: &'static str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name,
            child,
            log,
            with_children: false,
        })
    }

    /// Kills the process's own children too when it is stopped or dropped.
    pub fn with_children(mut self) -> Proc {
        self.with_children = true;
        self
    }

    /// SIGKILLs the process's children, when asked to.
    fn kill_children(&self) {
        let Some(pid) = self.child.id().filter(|_| self.with_children) else {
            return;
        };
        for child in children(pid) {
            if let Ok(child) = i32::try_from(child) {
                let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
            }
        }
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
    pub async fn wait_until<F, Fut>(&mut self, what: &str, mut ready: F) -> anyhow::Result<()>
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

    /// Waits until `url` answers HTTP with any status (a bare GET may be a 4xx).
    pub async fn wait_until_http(&mut self, http: &Http, url: &Uri) -> anyhow::Result<()> {
        self.wait_until("answering", || async {
            client::get_status(http, url).await.is_ok()
        })
        .await
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Kills the process and reaps it.
    pub async fn stop(mut self) {
        self.kill_children();
        let _ = self.child.kill().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The child itself is killed by `kill_on_drop`.
        self.kill_children();
    }
}

/// A port nobody listens on right now (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A fresh directory for the children's logs (and nginx's files).
pub fn log_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Starts server-everything (`node script streamableHttp`); waits until it answers HTTP.
pub async fn start_node_upstream(
    node: &Path,
    script: &Path,
    http: &Http,
    log_dir: &Path,
) -> anyhow::Result<(Proc, Uri)> {
    anyhow::ensure!(
        script.exists(),
        "{} is missing: run tests/peers/install.sh",
        script.display()
    );
    let port = free_port()?;
    let mut cmd = Command::new(node);
    cmd.arg(script)
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    let mut proc = Proc::spawn("upstream", cmd, log_dir)?;
    let url: Uri = format!("http://127.0.0.1:{port}/mcp").parse()?;
    proc.wait_until_http(http, &url).await?;
    Ok((proc, url))
}

/// Starts a private, non-persistent redis-server on a free port; waits until
/// it answers `PING`. Returns the process and its port.
pub async fn start_redis(redis_server: &Path, log_dir: &Path) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new(redis_server);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"]);
    let mut proc = Proc::spawn("redis", cmd, log_dir)?;
    proc.wait_until("answering PING", || redis::ping(port)).await?;
    Ok((proc, port))
}

/// How to start one shadowcat.
#[derive(Clone, Copy, Debug)]
pub struct ShadowcatSpec<'a> {
    /// The binary.
    pub binary: &'a Path,
    /// Its name in logs and errors, e.g. `shadowcat-memory`.
    pub name: &'static str,
    /// The `--store` value.
    pub store: &'a str,
    /// The upstream MCP endpoint.
    pub upstream: &'a Uri,
    /// `--log-format`, or shadowcat's default (JSON).
    pub log_format: Option<&'a str>,
    /// Further flags, after the bench's own.
    pub extra_args: &'a [String],
}

/// Starts shadowcat as `spec` says on free ports; waits until `/readyz`
/// answers 200. Returns the process and its public MCP endpoint.
pub async fn start_shadowcat(
    spec: ShadowcatSpec<'_>,
    http: &Http,
    log_dir: &Path,
) -> anyhow::Result<(Proc, Uri)> {
    let (public, admin) = (free_port()?, free_port()?);
    let mut cmd = Command::new(spec.binary);
    cmd.arg("--upstream")
        .arg(spec.upstream.to_string())
        .args(["--store", spec.store])
        .args(["--listen", &format!("127.0.0.1:{public}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    if let Some(format) = spec.log_format {
        cmd.args(["--log-format", format]);
    }
    cmd.args(spec.extra_args);
    let mut proc = Proc::spawn(spec.name, cmd, log_dir)?;
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
        let stat = stat_fields(pid)?;
        let ticks = |i: usize| stat_field(&stat, i)?.parse::<u64>().ok();
        Some(Usage {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            cpu_s: (ticks(14)? + ticks(15)?) as f64 / USER_HZ,
        })
    }

    /// `pid` and its children together, e.g. nginx's master and workers
    /// (resident figures are summed, so pages they share count once each).
    pub fn of_tree(pid: u32) -> Option<Usage> {
        let mut total = Usage::of(pid)?;
        for child in children(pid) {
            if let Some(u) = Usage::of(child) {
                total.rss_kib += u.rss_kib;
                total.peak_kib += u.peak_kib;
                total.cpu_s += u.cpu_s;
            }
        }
        Some(total)
    }
}

/// The fields of `/proc/PID/stat` after the `(comm)` field, which may hold
/// spaces; field 3 (state) is the first.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` (1-based, as in proc(5)) of [`stat_fields`]' output.
fn stat_field(fields: &[String], n: usize) -> Option<&str> {
    fields.get(n.checked_sub(3)?).map(String::as_str)
}

/// The processes whose parent is `pid` (field 4 of their `stat`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = pid.to_string();
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_fields(child).is_some_and(|f| stat_field(&f, 4) == Some(parent.as_str())))
        .collect()
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

    #[tokio::test]
    async fn finds_children_and_adds_them_up() {
        let mut child = Command::new("sleep")
            .arg("5")
            .kill_on_drop(true)
            .spawn()
            .expect("sleep");
        let id = child.id().expect("running");
        assert!(children(std::process::id()).contains(&id));
        let own = Usage::of(std::process::id()).expect("on Linux");
        let tree = Usage::of_tree(std::process::id()).expect("on Linux");
        assert!(tree.rss_kib > own.rss_kib);
        let _ = child.kill().await;
    }
}
