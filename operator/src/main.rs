//! `shadowcat-operator`: `crd` prints the CRD; `run` (the default) runs the
//! controller, with health, readiness and metrics on the admin port.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use shadowcat_operator::controller::{self, Context};
use shadowcat_operator::leader;
use shadowcat_operator::render::Defaults;

/// Shadowcat's operator.
#[derive(Debug, Parser)]
#[command(name = "shadowcat-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Sidecar image put into target pods (an McpProxy may override it).
    #[arg(long, env = "SHADOWCAT_SIDECAR_IMAGE", default_value = "shadowcat:latest")]
    sidecar_image: String,
    /// Seconds the sidecar gets to drain on shutdown.
    #[arg(long, env = "SHADOWCAT_DRAIN_SECONDS", default_value_t = 25)]
    drain_seconds: i64,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "SHADOWCAT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Health (/healthz, /readyz) and /metrics listener.
    #[arg(long, env = "SHADOWCAT_OPERATOR_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Elect a leader on this Lease (in $POD_NAMESPACE) so several replicas can run.
    #[arg(long, env = "SHADOWCAT_LEADER_LEASE")]
    leader_lease: Option<String>,
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
    let defaults = Defaults {
        image: cli.sidecar_image,
        drain_seconds: cli.drain_seconds,
        ..Defaults::default()
    };
    let ctx = Context::new(client.clone(), defaults);
    let listener = tokio::net::TcpListener::bind(cli.admin_listen).await?;
    tokio::spawn(admin(listener, ctx.clone()));
    match cli.leader_lease {
        None => controller::run(ctx, cli.namespace).await,
        Some(lease) => {
            let ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
            let me = std::env::var("POD_NAME").unwrap_or_else(|_| "shadowcat-operator".into());
            let leases: Api<Lease> = Api::namespaced(client, &ns);
            leader::acquire(&leases, &lease, &me).await;
            tokio::select! {
                () = controller::run(ctx, cli.namespace) => {}
                () = leader::keep(&leases, &lease, &me) => anyhow::bail!("leadership lost; exiting to stand again"),
            }
        }
    }
    Ok(())
}

async fn admin(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/healthz" | "/readyz" => (200, "ok\n".to_owned()),
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
