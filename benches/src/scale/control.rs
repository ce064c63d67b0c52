//! The upstream's control endpoints, each asked on a connection of its own:
//! `GET /stats` (streams held, MCP requests served) and `POST /broadcast`.

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::conn::Conn;

/// What the upstream reports about itself.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamStats {
    /// GET streams it holds open.
    pub held: u64,
    /// MCP requests it has served.
    pub requests: u64,
}

/// A request to `http://127.0.0.1:port{path}`; the answer's body.
async fn ask(port: u16, method: Method, path: &str) -> anyhow::Result<Bytes> {
    let url: Uri = format!("http://127.0.0.1:{port}{path}").parse()?;
    let mut conn = Conn::new(&url)?;
    let request = Request::builder()
        .method(method)
        .uri(url.clone())
        .body(Full::new(Bytes::new()))?;
    let response = conn.request(request).await?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Reads `/stats`.
pub async fn stats(port: u16) -> anyhow::Result<UpstreamStats> {
    let v: Value = serde_json::from_slice(&ask(port, Method::GET, "/stats").await?)?;
    let field = |name: &str| v[name].as_u64().with_context(|| format!("no `{name}` in /stats"));
    Ok(UpstreamStats {
        held: field("held")?,
        requests: field("requests")?,
    })
}

/// Has the upstream write one event to every held stream.
pub async fn broadcast(port: u16) -> anyhow::Result<()> {
    ask(port, Method::POST, "/broadcast").await.map(drop)
}
