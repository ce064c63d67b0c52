//! `shadowcat-bench`: the same MCP load direct to an upstream and through
//! Shadowcat, side by side in one run. See `benches/RESULTS.md`.
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod report;
mod scenario;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli::Args::parse();
    let report = bench::run(&args).await?;
    println!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
