//! The `shadowcat` binary: flags and config in, telemetry up, then the library.
#![forbid(unsafe_code)]

use clap::Parser;
use shadowcat_crds::{LogFormat, SidecarConfig};
use shadowcat_proxy::cli::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = match &cli.config {
        None => SidecarConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
            SidecarConfig::from_yaml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
        }
    };
    let settings = cli.layer().or(file).validate()?;
    telemetry(settings.log_format);
    // One TLS implementation for the whole process (Redis over rediss://).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new()?;
    let code = runtime.block_on(shadowcat_proxy::run(
        settings,
        cli.replica_id(),
        cli.command.clone(),
        cli.config.clone(),
    ))?;
    std::process::exit(code);
}

fn telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHADOWCAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
