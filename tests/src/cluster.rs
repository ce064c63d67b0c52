//! Several Shadowcat replicas sharing one Redis, each in front of its own
//! upstream (as pods would be), behind a round-robin front that plays the
//! Kubernetes Service: every request goes to the next replica that accepts a
//! connection.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::client::{Http, http};
use crate::procs::{RedisServer, Shadowcat};
use crate::relay::Relay;
use crate::upstream::Scripted;

/// How a cluster is built.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Each replica reaches Redis through a relay of its own.
    pub relayed: bool,
    /// Redis keeps its data (append-only) here, so a restart keeps it.
    pub redis_dir: Option<PathBuf>,
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The shared store.
    pub redis: RedisServer,
    /// One scripted upstream per replica (empty when started over other
    /// upstreams).
    pub upstreams: Vec<Scripted>,
    upstream_urls: Vec<String>,
    /// The replicas; `None` while one is down.
    pub replicas: Vec<Option<Shadowcat>>,
    /// The Service.
    pub front: Front,
    /// Each replica's own path to Redis, when the cluster is partitionable.
    pub relays: Vec<Relay>,
    /// What replicas that were stopped or killed printed.
    gone: Vec<String>,
    secret: PathBuf,
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` replicas, each in front of a scripted upstream of its own.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut upstreams = Vec::new();
        for _ in 0..n {
            upstreams.push(Scripted::start().await);
        }
        let urls = upstreams.iter().map(|u| u.url.clone()).collect();
        Self::start_over(upstreams, urls, extra).await
    }

    /// Starts `n` replicas as [`Cluster::start`] does, each reaching Redis
    /// through a relay of its own, so a test can cut one replica off.
    pub async fn start_partitionable(n: usize, extra: &[&str]) -> Cluster {
        let mut upstreams = Vec::new();
        for _ in 0..n {
            upstreams.push(Scripted::start().await);
        }
        let urls = upstreams.iter().map(|u| u.url.clone()).collect();
        let options = Options {
            relayed: true,
            ..Default::default()
        };
        Self::build(upstreams, urls, extra, options).await
    }

    /// Starts one replica in front of each of `urls`.
    pub async fn start_over(upstreams: Vec<Scripted>, urls: Vec<String>, extra: &[&str]) -> Cluster {
        Self::build(upstreams, urls, extra, Options::default()).await
    }

    /// Starts one replica in front of each of `urls`, as `options` say.
    pub async fn build(
        upstreams: Vec<Scripted>,
        urls: Vec<String>,
        extra: &[&str],
        options: Options,
    ) -> Cluster {
        let n = urls.len();
        let redis = match &options.redis_dir {
            Some(dir) => RedisServer::start_on(crate::free_port(), Some(dir)).await,
            None => RedisServer::start().await,
        };
        let relayed = options.relayed;
        let secret = std::env::temp_dir().join(format!(
            "shadowcat-peer-secret-{}-{}",
            std::process::id(),
            redis.port
        ));
        std::fs::write(&secret, "a-secret-the-replicas-share\n").unwrap();
        let front = Front::start().await;
        let mut relays = Vec::new();
        if relayed {
            for _ in 0..n {
                relays.push(Relay::start(&format!("127.0.0.1:{}", redis.port)).await);
            }
        }
        let mut cluster = Cluster {
            redis,
            upstreams,
            upstream_urls: urls,
            replicas: (0..n).map(|_| None).collect(),
            front,
            relays,
            gone: Vec::new(),
            secret,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            cluster.start_replica(i).await;
        }
        cluster
    }

    /// (Re)starts replica `i` (id `replica-i`) in front of upstream `i`.
    pub async fn start_replica(&mut self, i: usize) {
        let id = format!("replica-{i}");
        let secret = self.secret.to_string_lossy().into_owned();
        let store = match self.relays.get(i) {
            Some(relay) => format!("redis://{}", relay.addr),
            None => self.redis.url.clone(),
        };
        let mut args = vec![
            "--store",
            store.as_str(),
            "--peer-secret-file",
            secret.as_str(),
            "--peer-listen",
            "127.0.0.1:0",
            "--replica-id",
            id.as_str(),
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let replica = Shadowcat::start(&self.upstream_urls[i], &args).await;
        self.front.set(i, Some(replica.url.clone()));
        self.replicas[i] = Some(replica);
    }

    /// Kills replica `i` with SIGKILL and takes it out of the front.
    pub async fn kill(&mut self, i: usize) {
        self.front.set(i, None);
        if let Some(mut replica) = self.replicas[i].take() {
            replica.proc.child.kill().await.unwrap();
            self.gone
                .push(format!("=== replica-{i} (killed)\n{}", replica.proc.output()));
        }
    }

    /// Everything every replica printed, the gone ones included.
    pub fn all_output(&self) -> String {
        let live = self
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some(format!("=== replica-{i} (live)\n{}", r.as_ref()?.proc.output())));
        self.gone
            .iter()
            .cloned()
            .chain(live)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops replica `i` with SIGTERM (out of the front first, as Kubernetes
    /// does) and waits for it to exit; returns its output.
    pub async fn stop(&mut self, i: usize) -> String {
        self.front.set(i, None);
        let mut replica = self.replicas[i].take().unwrap();
        replica.proc.terminate();
        let status = crate::within(
            "replica to exit",
            std::time::Duration::from_secs(40),
            replica.proc.child.wait(),
        )
        .await
        .unwrap();
        assert!(
            status.success(),
            "replica {i} exited with {status}\n{}",
            replica.proc.output()
        );
        replica
            .proc
            .wait_line("stopped", |l| l.contains("\"stopped\"").then_some(()))
            .await;
        let output = replica.proc.output();
        self.gone.push(format!("=== replica-{i} (stopped)\n{output}"));
        output
    }

    /// A counter summed over the live replicas' `/metrics`.
    pub async fn total(&self, name: &str) -> u64 {
        let http = http();
        let mut total = 0;
        for replica in self.replicas.iter().flatten() {
            total += crate::client::metric(&http, &replica.admin, name).await;
        }
        total
    }

    /// Runs `redis-cli` against the cluster's Redis; its output.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        crate::procs::redis_cli(self.redis.port, args)
    }

    /// Which upstream saw the session's initialize last (its owner's).
    pub fn initialized_on(&self) -> Vec<usize> {
        (0..self.upstreams.len())
            .filter(|i| self.upstreams[*i].rpc_methods().iter().any(|m| m == "initialize"))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secret);
    }
}

/// The round-robin front.
#[derive(Debug)]
pub struct Front {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    backends: Arc<Mutex<Vec<Option<String>>>>,
}

type FrontBody = BoxBody<Bytes, hyper::Error>;

impl Front {
    /// A front to `backend` alone that adds `headers` to every request it
    /// passes on (e.g. a bearer token, for a client that cannot send one).
    pub async fn adding(backend: &str, headers: &[(&str, &str)]) -> Front {
        let extra = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let front = Self::start_with(extra).await;
        front.set(0, Some(backend.to_owned()));
        front
    }

    async fn start() -> Front {
        Self::start_with(Vec::new()).await
    }

    async fn start_with(extra: Vec<(String, String)>) -> Front {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let backends: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let client = http();
        let state = (backends.clone(), next, client, Arc::new(extra));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (backends, next, client, extra) = state.clone();
                        async move { Ok::<_, Infallible>(route(&backends, &next, &client, &extra, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Front { url, backends }
    }

    fn set(&self, i: usize, url: Option<String>) {
        let mut backends = self.backends.lock().unwrap();
        if backends.len() <= i {
            backends.resize(i + 1, None);
        }
        backends[i] = url;
    }
}

/// Sends the request to the next backend that takes it, as a Service would.
async fn route(
    backends: &Mutex<Vec<Option<String>>>,
    next: &AtomicUsize,
    client: &Http,
    extra: &[(String, String)],
    req: Request<Incoming>,
) -> Response<FrontBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let count = backends.lock().unwrap().len();
    for _ in 0..count {
        let i = next.fetch_add(1, Ordering::SeqCst) % count;
        let Some(url) = backends.lock().unwrap()[i].clone() else {
            continue;
        };
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(url.parse::<Uri>().unwrap());
        for (k, v) in &parts.headers {
            if k != http::header::HOST {
                request = request.header(k, v);
            }
        }
        for (k, v) in extra {
            request = request.header(k, v);
        }
        match client
            .request(request.body(Full::new(body.clone())).unwrap())
            .await
        {
            Ok(response) => return response.map(|b| b.boxed()),
            // Only a backend that refused the connection is skipped: a
            // request that was sent is never sent again (as an L4 Service
            // would not).
            Err(e) if e.is_connect() => continue,
            Err(_) => {
                let mut r = Response::new(
                    Full::new(Bytes::from_static(b"backend connection broke"))
                        .map_err(|n| match n {})
                        .boxed(),
                );
                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                return r;
            }
        }
    }
    let mut r = Response::new(
        Full::new(Bytes::from_static(b"no backend"))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    r
}
