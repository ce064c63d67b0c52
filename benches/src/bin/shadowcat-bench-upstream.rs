//! `shadowcat-bench-upstream`: a fast MCP Streamable HTTP server for
//! `shadowcat-scale` (see `shadowcat_bench::upstream`).
//!
//!     shadowcat-bench-upstream --port 3000 [--sse-notifications N] [--broadcast-every SECS]
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::ensure;
use clap::Parser;
use shadowcat_bench::upstream::{self, Config};
use tokio::net::TcpListener;

/// A fast MCP upstream: tools `json` and `sse`, held GET streams and a
/// broadcast to all of them on `POST /broadcast`.
#[derive(Debug, Parser)]
#[command(name = "shadowcat-bench-upstream")]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Progress notifications an `sse` tool call sends before its response.
    #[arg(long, default_value_t = 0)]
    sse_notifications: u32,
    /// Also broadcast to every held stream every SECS seconds.
    #[arg(long, value_name = "SECS")]
    broadcast_every: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broadcast_every = match args.broadcast_every {
        Some(secs) => {
            ensure!(
                secs.is_finite() && secs > 0.0,
                "--broadcast-every must be positive"
            );
            Some(Duration::from_secs_f64(secs))
        }
        None => None,
    };
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    let config = Config {
        sse_notifications: args.sse_notifications,
        broadcast_every,
    };
    upstream::serve(listener, config).await
}
