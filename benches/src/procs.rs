//! The two child processes — the upstream MCP server and shadowcat — started
//! on free ports, waited for, measured, and killed when dropped.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use http::Uri;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::cli::Args;
use crate::client::{self, Http};

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

/// Starts shadowcat in front of `upstream`; waits until `/readyz` answers 200.
pub async fn start_shadowcat(
    args: &Args,
    upstream: &Uri,
    http: &Http,
    log_dir: &Path,
) -> anyhow::Result<(Proc, Uri)> {
    let (public, admin) = (free_port()?, free_port()?);
    let mut cmd = Command::new(&args.shadowcat);
    cmd.arg("--upstream")
        .arg(upstream.to_string())
        .args(["--listen", &format!("127.0.0.1:{public}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "text"])
        .args(&args.shadowcat_args);
    let mut proc = Proc::spawn("shadowcat", cmd, log_dir)?;
    let readyz: Uri = format!("http://127.0.0.1:{admin}/readyz").parse()?;
    proc.wait_until("ready", || async {
        client::get_status(http, &readyz)
            .await
            .is_ok_and(|s| s.is_success())
    })
    .await?;
    Ok((proc, format!("http://127.0.0.1:{public}/mcp").parse()?))
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most it was ever resident, KiB.
    pub peak_kib: u64,
}

impl Memory {
    /// Reads `pid`'s figures; `None` when it is gone or not on Linux.
    pub fn of(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}
