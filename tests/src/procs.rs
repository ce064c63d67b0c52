//! Child processes: shadowcat itself and the Node/Python peers.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{eventually, free_port, root};

/// A child that is killed when dropped, with its output lines kept.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Lines it printed (stdout and stderr), for waiting and for failure messages.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` with piped output.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for reader in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, lines }
    }

    /// Waits for an output line `pick` accepts and returns what it extracted.
    pub async fn wait_line<T>(&self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        self.try_wait_line(Duration::from_secs(30), pick)
            .await
            .unwrap_or_else(|| panic!("timed out waiting for {what}; output:\n{}", self.output()))
    }

    /// The same within `limit`; `None` when no line came.
    pub async fn try_wait_line<T>(&self, limit: Duration, pick: impl Fn(&str) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = self.lines.lock().unwrap().iter().find_map(|l| pick(l)) {
                return Some(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Resident memory in bytes (from `/proc`), while it runs.
    pub fn rss(&self) -> Option<u64> {
        rss_of(self.child.id()?)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}

/// The built `shadowcat` binary (`cargo build` puts it in target/debug).
pub fn shadowcat_bin() -> PathBuf {
    if let Ok(path) = std::env::var("SHADOWCAT_BIN") {
        return path.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let bin = target.join("debug/shadowcat");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p shadowcat-proxy` first",
        bin.display()
    );
    bin
}

/// A running shadowcat.
#[derive(Debug)]
pub struct Shadowcat {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    /// `127.0.0.1:PORT` of the peer listener; empty without one.
    pub peer: String,
}

impl Shadowcat {
    /// Starts shadowcat in front of `upstream` with extra flags, on free ports.
    pub async fn start(upstream: &str, extra: &[&str]) -> Shadowcat {
        Self::start_at(upstream, "127.0.0.1:0", extra).await
    }

    /// Starts shadowcat with its public listener at `listen` (to come back
    /// where a killed one was).
    pub async fn start_at(upstream: &str, listen: &str, extra: &[&str]) -> Shadowcat {
        let mut cmd = Command::new(shadowcat_bin());
        cmd.args([
            "--upstream",
            upstream,
            "--listen",
            listen,
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .args(extra)
        .env("SHADOWCAT_LOG", "info,shadowcat_proxy=debug");
        let proc = Proc::spawn(cmd);
        let (public, admin, peer) = proc
            .wait_line("shadowcat to listen", |line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                if v["message"] != "listening" {
                    return None;
                }
                let field = |k: &str| v[k].as_str().map(str::to_owned);
                Some((
                    field("public")?,
                    field("admin")?,
                    field("peer").unwrap_or_default(),
                ))
            })
            .await;
        Shadowcat {
            proc,
            url: format!("http://{public}/mcp"),
            admin: format!("http://{admin}"),
            peer,
        }
    }
}

/// The scripted upstream as its own process (the `scripted-upstream`
/// binary), so a test can kill, restart or stop it.
#[derive(Debug)]
pub struct UpstreamProc {
    /// The process.
    pub proc: Proc,
    /// Its MCP endpoint.
    pub url: String,
}

impl UpstreamProc {
    /// Starts one on `port` with a standalone stream and strict sessions,
    /// appending what it sees to `log`; `tag` prefixes its session ids.
    pub async fn start(port: u16, log: &std::path::Path, tag: &str) -> UpstreamProc {
        let bin = shadowcat_bin().with_file_name("scripted-upstream");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace`",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--standalone",
            "--strict-sessions",
            "--tag",
            tag,
        ])
        .arg("--log")
        .arg(log);
        let proc = Proc::spawn(cmd);
        let url = proc
            .wait_line("the upstream to listen", |l| {
                l.strip_prefix("listening on ").map(str::to_owned)
            })
            .await;
        UpstreamProc { proc, url }
    }

    /// Sends a signal (`-STOP`, `-CONT`).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.proc.child.id() {
            let _ = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }
}

/// A Node MCP server from `tests/peers`.
#[derive(Debug)]
pub struct NodeServer {
    /// The process.
    pub proc: Proc,
    /// Its MCP endpoint.
    pub url: String,
}

/// The reference server `server-everything` in Streamable HTTP mode.
pub async fn everything() -> NodeServer {
    let port = free_port();
    let script =
        root().join("tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        script.exists(),
        "test peers not installed: run tests/peers/install.sh"
    );
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    let proc = Proc::spawn(cmd);
    let url = format!("http://127.0.0.1:{port}/mcp");
    eventually(
        "server-everything to listen",
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    NodeServer { proc, url }
}

/// The conformance fixture server (TypeScript SDK), which passes every active
/// server scenario of the conformance suite directly.
pub async fn fixture() -> NodeServer {
    let script = root().join("tests/peers/conformance-server.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script).args(["--port", "0"]);
    let proc = Proc::spawn(cmd);
    let url = proc
        .wait_line("fixture to listen", |l| {
            l.strip_prefix("listening on ").map(str::to_owned)
        })
        .await;
    NodeServer { proc, url }
}

/// A redis-server of the test's own, on a free port, so a test can stop and
/// restart it without touching anyone else's.
#[derive(Debug)]
pub struct RedisServer {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl RedisServer {
    /// Starts one on `port`. With `dir`, it keeps its data there (append-only
    /// file), so a restart on the same port and dir comes back with it.
    pub async fn start_on(port: u16, dir: Option<&std::path::Path>) -> RedisServer {
        Self::start_with(port, dir, &[]).await
    }

    /// Starts one on `port` with extra `redis-server` arguments.
    pub async fn start_with(port: u16, dir: Option<&std::path::Path>, extra: &[&str]) -> RedisServer {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(extra);
        match dir {
            None => {
                // Nothing persists, but a replica's full sync still writes an
                // RDB file to its directory: keep it out of the working tree.
                let scratch =
                    std::env::temp_dir().join(format!("shadowcat-redis-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&scratch).unwrap();
                cmd.args(["--appendonly", "no", "--dir"]).arg(scratch)
            }
            Some(dir) => {
                std::fs::create_dir_all(dir).unwrap();
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir)
            }
        };
        let proc = Proc::spawn(cmd);
        eventually("redis-server to listen", Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        RedisServer {
            proc,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    /// Starts one on a free port.
    pub async fn start() -> RedisServer {
        Self::start_on(free_port(), None).await
    }
}

/// Resident memory in bytes of process `pid` (from `/proc`), while it runs.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs `redis-cli` against the Redis at `127.0.0.1:port`; its output,
/// trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
