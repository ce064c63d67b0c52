//! Every process of a run: the fast upstream, nginx, a shadowcat per store
//! and the private redis-server — started, looked up by target, checked
//! between scenarios and stopped.

use std::path::{Path, PathBuf};

use crate::client::Http;
use crate::procs::{self, Proc, ShadowcatSpec};
use anyhow::Context;
use http::Uri;
use tokio::process::Command;

use super::cli::{Args, Plan};
use super::meter::Pids;
use super::nginx::{self, NginxConf};
use super::target::Target;

/// A running target.
struct Entry {
    target: Target,
    url: Uri,
    /// The proxy; `None` for direct.
    proc: Option<Proc>,
}

/// The running processes.
pub struct Fleet {
    args: Args,
    nofile: u64,
    upstream: Proc,
    upstream_port: u16,
    entries: Vec<Entry>,
    redis: Option<(Proc, u16)>,
    /// The authorization server of the auth target, and its issuer.
    auth: Option<(Proc, String)>,
    /// The policy hook the hook target calls.
    hook: Option<String>,
    /// Where every log (and nginx's files) goes.
    log_dir: PathBuf,
    /// Targets asked for but not run, and why.
    pub skipped: Vec<(Target, String)>,
}

/// Flags every shadowcat gets: the default admission limits are a sidecar's
/// (100 new sessions/s, 10 000 sessions and connections), which the setup
/// loop and ~9 900 held streams would run into.
pub fn shadowcat_flags(nofile: u64) -> Vec<String> {
    [
        "--session-rate=1000000".to_owned(),
        "--max-sessions=100000".to_owned(),
        format!("--max-connections={nofile}"),
    ]
    .into()
}

impl Fleet {
    /// Starts everything `plan` needs; `nofile` is the open-file limit.
    pub async fn start(args: &Args, plan: &Plan, nofile: u64, http: &Http) -> anyhow::Result<Fleet> {
        let log_dir = procs::log_dir("shadowcat-scale")?;
        let upstream_port = procs::free_port()?;
        let mut cmd = Command::new(&args.upstream);
        cmd.args(["--port", &upstream_port.to_string()])
            .args(["--sse-notifications", &args.sse_notifications.to_string()]);
        let mut upstream = Proc::spawn("upstream", cmd, &log_dir)?;
        let direct: Uri = format!("http://127.0.0.1:{upstream_port}/mcp").parse()?;
        upstream.wait_until_http(http, &direct).await?;
        let mut fleet = Fleet {
            args: args.clone(),
            nofile,
            upstream,
            upstream_port,
            entries: Vec::new(),
            redis: None,
            auth: None,
            hook: None,
            log_dir,
            skipped: Vec::new(),
        };
        for &target in &plan.targets {
            if target == Target::ShadowcatAuth {
                fleet.auth = Some(start_authorization_server(&fleet.log_dir, http).await?);
            }
            if target == Target::ShadowcatHook {
                fleet.hook = Some(start_hook().await?);
            }
            if target == Target::ShadowcatRedis {
                let (proc, port) = procs::start_redis(&args.redis_server, &fleet.log_dir).await?;
                fleet.redis = Some((proc, port));
            }
            let started = match target {
                Target::Direct => Some((None, direct.clone())),
                _ => fleet.start_proxy(target, http).await?,
            };
            if let Some((proc, url)) = started {
                eprintln!("{}: {url}", target.label());
                fleet.entries.push(Entry { target, url, proc });
            }
        }
        eprintln!("upstream {direct}; logs in {}", fleet.log_dir.display());
        Ok(fleet)
    }

    /// Starts `target`'s proxy; `None` when there is none to start (direct,
    /// or nginx missing).
    async fn start_proxy(
        &mut self,
        target: Target,
        http: &Http,
    ) -> anyhow::Result<Option<(Option<Proc>, Uri)>> {
        let store = match target {
            Target::Direct => return Ok(None),
            Target::Nginx => return self.start_nginx(http).await,
            Target::ShadowcatMemory
            | Target::ShadowcatAuth
            | Target::ShadowcatPolicy1
            | Target::ShadowcatPolicy10
            | Target::ShadowcatPolicy100
            | Target::ShadowcatHook => "memory".to_owned(),
            Target::ShadowcatRedis => {
                let port = self
                    .redis
                    .as_ref()
                    .map(|(_, port)| *port)
                    .context("no redis-server")?;
                format!("redis://127.0.0.1:{port}")
            }
        };
        Ok(Some(self.start_shadowcat(target, store, http).await?))
    }

    /// Replaces `target`'s proxy with a freshly started one (direct: nothing
    /// to do), so memory it freed earlier cannot hide what comes next.
    pub async fn restart(&mut self, target: Target, http: &Http) -> anyhow::Result<()> {
        let Some(i) = self.entries.iter().position(|e| e.target == target) else {
            return Ok(());
        };
        let Some(old) = self.entries[i].proc.take() else {
            return Ok(());
        };
        old.stop().await;
        let (proc, url) = self
            .start_proxy(target, http)
            .await?
            .with_context(|| format!("restarting {}", target.label()))?;
        self.entries[i] = Entry { target, url, proc };
        Ok(())
    }

    async fn start_nginx(&mut self, http: &Http) -> anyhow::Result<Option<(Option<Proc>, Uri)>> {
        let Some(binary) = nginx::find(&self.args.nginx) else {
            let why = format!(
                "{} not found (benches/scale.sh installs nginx-light when run as root with apt-get)",
                self.args.nginx.display()
            );
            eprintln!("skipping the nginx target: {why}");
            self.skipped.push((Target::Nginx, why));
            return Ok(None);
        };
        let conf = NginxConf {
            dir: self.log_dir.clone(),
            port: 0,
            upstream_port: self.upstream_port,
            workers: self.args.nginx_workers.clone(),
            nofile: self.nofile,
            as_root: nix::unistd::geteuid().is_root(),
        };
        let (proc, url) = nginx::start(&binary, conf, http, &self.log_dir).await?;
        Ok(Some((Some(proc), url)))
    }

    async fn start_shadowcat(
        &mut self,
        target: Target,
        store: String,
        http: &Http,
    ) -> anyhow::Result<(Option<Proc>, Uri)> {
        let mut extra = shadowcat_flags(self.nofile);
        if target == Target::ShadowcatAuth {
            let (_, issuer) = self.auth.as_ref().context("no authorization server")?;
            extra.extend([
                format!("--auth-issuer={issuer}"),
                format!("--auth-resource={AUTH_RESOURCE}"),
                "--auth-scopes=mcp".to_owned(),
            ]);
        }
        if let Some(rules) = target.policy_rules() {
            extra.push(format!(
                "--config={}",
                self.policy_file(target, &policy_with_rules(rules))?.display()
            ));
        }
        if target == Target::ShadowcatHook {
            let url = self.hook.as_ref().context("no hook server")?;
            let policy = format!(
                "policy:\n  hooks:\n    - id: bench\n      url: {url}\n      when: 'direction == \"client\" && method == \"tools/call\"'\n"
            );
            extra.push(format!(
                "--config={}",
                self.policy_file(target, &policy)?.display()
            ));
        }
        extra.extend(self.args.shadowcat_args.iter().cloned());
        let spec = ShadowcatSpec {
            binary: &self.args.shadowcat,
            name: match target {
                Target::ShadowcatRedis => "shadowcat-redis",
                Target::ShadowcatAuth => "shadowcat-auth",
                Target::ShadowcatPolicy1 => "shadowcat-policy1",
                Target::ShadowcatPolicy10 => "shadowcat-policy10",
                Target::ShadowcatPolicy100 => "shadowcat-policy100",
                Target::ShadowcatHook => "shadowcat-hook",
                _ => "shadowcat-memory",
            },
            store: &store,
            upstream: &format!("http://127.0.0.1:{}/mcp", self.upstream_port).parse()?,
            log_format: None,
            extra_args: &extra,
        };
        let (proc, url) = procs::start_shadowcat(spec, http, &self.log_dir)
            .await
            .with_context(|| format!("starting {}", target.label()))?;
        Ok((Some(proc), url))
    }

    /// Writes a target's config file into the log directory.
    fn policy_file(&self, target: Target, yaml: &str) -> anyhow::Result<PathBuf> {
        let path = self.log_dir.join(format!("{}.yaml", target.key()));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The targets that run, in round-one order.
    pub fn targets(&self) -> Vec<Target> {
        self.entries.iter().map(|e| e.target).collect()
    }

    fn entry(&self, target: Target) -> anyhow::Result<&Entry> {
        self.entries
            .iter()
            .find(|e| e.target == target)
            .with_context(|| format!("{} is not running", target.label()))
    }

    /// A target's MCP endpoint.
    pub fn url(&self, target: Target) -> anyhow::Result<&Uri> {
        Ok(&self.entry(target)?.url)
    }

    /// The upstream's port (for its control endpoints).
    pub fn upstream_port(&self) -> u16 {
        self.upstream_port
    }

    /// The processes a target's figures come from.
    pub fn pids(&self, target: Target) -> Pids {
        let upstream = self.upstream.pid();
        let entry = self.entries.iter().find(|e| e.target == target);
        let proxy = match entry.and_then(|e| e.proc.as_ref()) {
            Some(proc) => proc.pid(),
            None => upstream,
        };
        let redis = match (target, &self.redis) {
            (Target::ShadowcatRedis, Some((proc, port))) => Some((proc.pid(), *port)),
            _ => None,
        };
        Pids {
            proxy,
            tree: target == Target::Nginx,
            upstream,
            upstream_port: Some(self.upstream_port),
            redis: redis.and_then(|(pid, _)| pid),
            redis_port: redis.map(|(_, port)| port),
        }
    }

    /// Fails, naming the log, if any process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.upstream.check_running()?;
        for entry in &mut self.entries {
            if let Some(proc) = &mut entry.proc {
                proc.check_running()?;
            }
        }
        if let Some((proc, _)) = &mut self.redis {
            proc.check_running()?;
        }
        Ok(())
    }

    /// Stops every process.
    pub async fn stop(self) {
        for entry in self.entries {
            if let Some(proc) = entry.proc {
                proc.stop().await;
            }
        }
        if let Some((proc, _)) = self.redis {
            proc.stop().await;
        }
        self.upstream.stop().await;
    }

    /// Where the logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

/// A policy of `n` deny rules none of which matches the bench's calls, so
/// each message is checked against every one before the default lets it
/// through.
fn policy_with_rules(n: usize) -> String {
    let mut yaml = String::from("policy:\n  rules:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "    - {{id: r{i}, when: 'method == \"tools/call\" && name == \"blocked_{i}\"', action: deny}}\n"
        ));
    }
    yaml
}

/// A policy hook that lets everything pass, served in this process.
async fn start_hook() -> anyhow::Result<String> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(br#"{"action":"pass"}"#),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    eprintln!("policy hook {url}");
    Ok(url)
}

/// The audience the bench's tokens are issued for (any URL will do: it is
/// only compared).
const AUTH_RESOURCE: &str = "http://shadowcat-bench.local/mcp";

/// Starts the test suite's authorization server (`oidc-provider`, from
/// `tests/peers`), takes one client-credentials token from it for every
/// request of the run, and returns the process and its issuer.
async fn start_authorization_server(log_dir: &Path, http: &Http) -> anyhow::Result<(Proc, String)> {
    let peers = Path::new("tests/peers");
    anyhow::ensure!(
        peers.join("node_modules/oidc-provider").exists(),
        "the shadowcat-auth target needs the test peers: run tests/peers/install.sh"
    );
    let port = procs::free_port()?;
    let issuer = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new("node");
    cmd.arg(peers.join("authorization-server.mjs")).args([
        "--port",
        &port.to_string(),
        "--resource",
        AUTH_RESOURCE,
    ]);
    let mut proc = Proc::spawn("authorization-server", cmd, log_dir)?;
    proc.wait_until_http(http, &format!("{issuer}/jwks").parse()?)
        .await?;
    let form = format!(
        "grant_type=client_credentials&scope=mcp&resource={}",
        AUTH_RESOURCE.replace(':', "%3A").replace('/', "%2F")
    );
    let request = http::Request::post(format!("{issuer}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        // alice:alice-secret, the test server's client.
        .header("authorization", "Basic YWxpY2U6YWxpY2Utc2VjcmV0")
        .body(http_body_util::Full::new(bytes::Bytes::from(form)))?;
    let response = http.request(request).await?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let token = answer["access_token"]
        .as_str()
        .with_context(|| format!("no token from the authorization server: {answer}"))?;
    crate::client::set_bearer(token)?;
    eprintln!("authorization server {issuer}; every request carries its token");
    Ok((proc, issuer))
}
