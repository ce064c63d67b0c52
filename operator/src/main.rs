//! `shadowcat-operator`: `crd` prints the CRD; `run` (the default) runs the
//! controller (on the leader), the injection webhook (on every replica), and
//! health, readiness and metrics on the admin port.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use shadowcat_operator::certs;
use shadowcat_operator::controller::{self, Context};
use shadowcat_operator::leader::Elector;
use shadowcat_operator::render::Defaults;
use shadowcat_operator::webhook::{self, Admission, Certificates, Webhook};

/// Shadowcat's operator.
#[derive(Debug, Parser)]
#[command(name = "shadowcat-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Sidecar image put into target pods (an McpProxy may override it).
    #[arg(long, env = "SHADOWCAT_SIDECAR_IMAGE", default_value = "shadowcat:latest")]
    sidecar_image: String,
    /// Image pull Secrets added to every injected pod, comma-separated (they
    /// must exist in the pods' namespaces).
    #[arg(long, env = "SHADOWCAT_SIDECAR_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    sidecar_image_pull_secrets: Vec<String>,
    /// Prefixes a sidecar image must start with, comma-separated (any image
    /// when empty); an McpProxy asking for another is not applied.
    #[arg(long, env = "SHADOWCAT_ALLOWED_IMAGES", value_delimiter = ',')]
    allowed_images: Vec<String>,
    /// Seconds the sidecar gets to drain on shutdown.
    #[arg(long, env = "SHADOWCAT_DRAIN_SECONDS", default_value_t = 25)]
    drain_seconds: i64,
    /// Watch only these namespaces, comma-separated (default: all).
    #[arg(long, env = "SHADOWCAT_WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Health (/healthz, /readyz) and /metrics listener.
    #[arg(long, env = "SHADOWCAT_OPERATOR_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Elect a leader on this Lease (in $POD_NAMESPACE) so several replicas can run.
    #[arg(long, env = "SHADOWCAT_LEADER_LEASE")]
    leader_lease: Option<String>,
    /// The injection webhook's TLS listener (`POST /mutate`).
    #[arg(long, env = "SHADOWCAT_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    webhook_listen: SocketAddr,
    /// Serve the webhook with `tls.crt` and `tls.key` from this directory
    /// (e.g. a cert-manager Secret), reloaded as they change. Without it
    /// the operator makes and renews its own certificate.
    #[arg(long, env = "SHADOWCAT_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// The Secret (in $POD_NAMESPACE) holding the operator's own webhook CA
    /// and certificate.
    #[arg(
        long,
        env = "SHADOWCAT_WEBHOOK_SECRET",
        default_value = "shadowcat-webhook-tls"
    )]
    webhook_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle the operator keeps
    /// current (with its own certificate).
    #[arg(long, env = "SHADOWCAT_WEBHOOK_CONFIGURATION", default_value = "shadowcat")]
    webhook_configuration: String,
    /// `Fail` (the webhook's failurePolicy): a pod the sidecar cannot be
    /// added to is refused, so one that opted in never runs without it.
    /// `Ignore`: it is admitted without, marked with the reason.
    #[arg(long, env = "SHADOWCAT_WEBHOOK_FAILURE_POLICY", default_value = "Fail", value_parser = ["Fail", "Ignore"])]
    webhook_failure_policy: String,
    /// The webhook's timeoutSeconds: reading the McpProxy is cut off well
    /// within it, so the API server gets an answer it can act on.
    #[arg(long, env = "SHADOWCAT_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=30))]
    webhook_timeout_seconds: u64,
    /// The webhook's Service (its certificate names `<service>.<namespace>.svc`).
    #[arg(long, env = "SHADOWCAT_WEBHOOK_SERVICE", default_value = "shadowcat-webhook")]
    webhook_service: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the McpProxy CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (the default).
    Run,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        print!("{}", shadowcat_operator::crdgen::crd_yaml()?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWCAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let nonempty = |list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let defaults = Defaults {
        image: cli.sidecar_image,
        drain_seconds: cli.drain_seconds,
        image_pull_secrets: nonempty(cli.sidecar_image_pull_secrets),
        allowed_images: nonempty(cli.allowed_images),
        ..Defaults::default()
    };
    if let Some(problem) = defaults.problem() {
        anyhow::bail!("{problem}");
    }
    let namespaces = nonempty(cli.namespaces);
    let ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let ctx = Context::new(client.clone(), defaults.clone());

    // The webhook, on every replica: its certificate from files, or made
    // and renewed here.
    let certificates = Arc::new(Certificates::default());
    match cli.webhook_cert_dir {
        Some(dir) => {
            tokio::spawn(certificates.clone().watch_dir(dir));
        }
        None => {
            let keeper = certs::Keeper {
                secrets: Api::namespaced(client.clone(), &ns),
                secret: cli.webhook_secret,
                configurations: Api::all(client.clone()),
                configuration: cli.webhook_configuration,
                dns_names: certs::dns_names(&cli.webhook_service, &ns),
            };
            tokio::spawn(keeper.run(certificates.clone()));
        }
    }
    let webhook = Arc::new(Webhook {
        lookup: client.clone(),
        admission: Admission {
            defaults,
            deny_without_sidecar: cli.webhook_failure_policy == "Fail",
            lookup_timeout: Duration::from_millis(cli.webhook_timeout_seconds * 700),
        },
        metrics: ctx.metrics.clone(),
    });
    let listener = tokio::net::TcpListener::bind(cli.webhook_listen).await?;
    tokio::spawn(webhook.serve(listener, webhook::tls_config(certificates.clone())));

    let stopping = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(cli.admin_listen).await?;
    tokio::spawn(admin(listener, ctx.clone(), certificates, stopping.clone()));
    let led = lead(cli.leader_lease, client, &ns, ctx, namespaces).await;
    // Shutting down, or leadership lost: not ready (the webhook Service
    // drops this pod), but still serving the webhook while endpoints catch
    // up, so pod creation never meets a replica that is gone.
    stopping.store(true, Ordering::SeqCst);
    tracing::info!(
        seconds = WEBHOOK_GRACE.as_secs(),
        "serving the webhook on while endpoints drop this pod"
    );
    tokio::time::sleep(WEBHOOK_GRACE).await;
    led
}

/// How long a stopping operator serves the webhook on, not ready.
const WEBHOOK_GRACE: Duration = Duration::from_secs(5);

/// Runs the controllers until shutdown: at once, or once elected leader
/// on `lease`; an error when leadership is lost.
async fn lead(
    lease: Option<String>,
    client: Client,
    ns: &str,
    ctx: Arc<Context>,
    namespaces: Vec<String>,
) -> anyhow::Result<()> {
    match lease {
        None => controller::run(ctx, namespaces).await,
        Some(lease) => {
            // Two replicas under one identity would both lead.
            let me = std::env::var("POD_NAME").map_err(|_| {
                anyhow::anyhow!("leader election needs POD_NAME (the downward API's metadata.name)")
            })?;
            let mut elector = Elector::new(Api::<Lease>::namespaced(client, ns), &lease, &me);
            tokio::select! {
                () = elector.acquire() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
                () = terminated() => return Ok(()),
            }
            let lost = tokio::select! {
                // The controllers end on SIGTERM or SIGINT (shutdown).
                () = controller::run(ctx, namespaces) => false,
                () = elector.keep() => true,
            };
            if lost {
                anyhow::bail!("leadership lost; exiting to stand again");
            }
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "cannot release the lease; a standby takes over when it expires");
            } else {
                tracing::info!(lease = %lease, "lease released");
            }
        }
    }
    Ok(())
}

/// Resolves on SIGTERM (never, where there is none).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn admin(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    certificates: Arc<Certificates>,
    stopping: Arc<AtomicBool>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (ctx, certificates, stopping) = (ctx.clone(), certificates.clone(), stopping.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ctx, certificates, stopping) = (ctx.clone(), certificates.clone(), stopping.clone());
                async move {
                    let (status, body) = match req.uri().path() {
                        "/healthz" => (200, "ok\n".to_owned()),
                        // Not ready (no webhook traffic) before the webhook
                        // has a certificate to serve.
                        "/readyz" if stopping.load(Ordering::SeqCst) => (503, "shutting down\n".to_owned()),
                        "/readyz" if certificates.ready() => (200, "ok\n".to_owned()),
                        "/readyz" => (503, "no webhook certificate yet\n".to_owned()),
                        "/metrics" => (200, ctx.metrics.encode()),
                        _ => (404, "not found\n".to_owned()),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
