//! nginx as the reference reverse proxy: its config, written into the run's
//! directory, and the process (`daemon off`, so the child is the master;
//! its workers are found by parent pid when measuring).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::client::Http;
use crate::procs::{Proc, free_port};
use anyhow::Context;
use http::Uri;
use tokio::process::Command;

/// What the config depends on.
#[derive(Clone, Debug)]
pub struct NginxConf {
    /// The run's directory: config, pid, logs and temp files go here.
    pub dir: PathBuf,
    /// Where nginx listens, on 127.0.0.1.
    pub port: u16,
    /// The upstream's port, on 127.0.0.1.
    pub upstream_port: u16,
    /// `worker_processes`: a number or `auto`.
    pub workers: String,
    /// Descriptors per worker (the hard open-file limit); also its connections.
    pub nofile: u64,
    /// Whether nginx runs as root (then its workers stay root: its default
    /// group `nobody` does not exist on every system).
    pub as_root: bool,
}

/// The config: a plain streaming reverse proxy with a keep-alive pool to the
/// upstream, nothing buffered, and timeouts long enough for held streams.
pub fn render(c: &NginxConf) -> String {
    let dir = c.dir.display();
    let mut out = String::new();
    if c.as_root {
        out.push_str("user root;\n");
    }
    let _ = write!(
        out,
        "daemon off;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;

events {{
    # Every held stream is two connections of one worker: client and upstream.
    worker_connections {nofile};
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 1h;

    upstream mcp {{
        server 127.0.0.1:{upstream};
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 1h;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
",
        workers = c.workers,
        nofile = c.nofile,
        upstream = c.upstream_port,
        port = c.port,
    );
    out
}

/// The nginx binary: `binary` itself when it names a path, else the first
/// match on `PATH` or in the sbin directories (often not on a user's `PATH`).
pub fn find(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// Starts nginx with `conf` (its port chosen here) in front of the upstream;
/// waits until it answers HTTP. Returns the master process and its MCP URL.
pub async fn start(
    binary: &Path,
    mut conf: NginxConf,
    http: &Http,
    log_dir: &Path,
) -> anyhow::Result<(Proc, Uri)> {
    conf.port = free_port()?;
    let file = conf.dir.join("nginx.conf");
    std::fs::write(&file, render(&conf)).with_context(|| format!("writing {}", file.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("-p").arg(&conf.dir).arg("-c").arg(&file);
    let mut proc = Proc::spawn("nginx", cmd, log_dir)?.with_children();
    let url: Uri = format!("http://127.0.0.1:{}/mcp", conf.port).parse()?;
    proc.wait_until_http(http, &url).await?;
    Ok((proc, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_streams_and_pools() {
        let conf = NginxConf {
            dir: "/tmp/x".into(),
            port: 8080,
            upstream_port: 3000,
            workers: "2".into(),
            nofile: 20_000,
            as_root: false,
        };
        let text = render(&conf);
        for line in [
            "daemon off;",
            "worker_processes 2;",
            "worker_rlimit_nofile 20000;",
            "worker_connections 20000;",
            "pid /tmp/x/nginx.pid;",
            "server 127.0.0.1:3000;",
            "keepalive 256;",
            "listen 127.0.0.1:8080 backlog=4096;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_buffering off;",
            "proxy_request_buffering off;",
            "proxy_read_timeout 1h;",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("user root"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }
}
