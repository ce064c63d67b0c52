//! Running the upstream MCP server as a child process (`shadowcat -- CMD`).

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::upstream::Upstream;

/// How long the child gets to exit after SIGTERM before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(10);

/// Starts `command` with inherited stdio.
pub fn spawn(command: &[String]) -> std::io::Result<Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    Command::new(program).args(args).kill_on_drop(true).spawn()
}

/// Waits until the upstream answers, failing if the child exits first or
/// `limit` passes.
pub async fn wait_until_up(child: &mut Child, upstream: &Upstream, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if upstream.probe().await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the upstream command exited before answering ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("the upstream did not answer within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM and waits for the child, killing it after a grace period.
pub async fn terminate(child: &mut Child) -> std::io::Result<ExitStatus> {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(CHILD_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!("upstream command ignored SIGTERM; killing it");
            child.kill().await?;
            child.wait().await
        }
    }
}
