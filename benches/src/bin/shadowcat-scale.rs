//! `shadowcat-scale`: Shadowcat and nginx side by side on a fast upstream
//! (see `shadowcat_bench::scale` and `benches/scale.sh`).
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use shadowcat_bench::scale::{cli::Args, plots, run};

/// Ceiling on the open-file limit used when the hard limit is unlimited.
const NOFILE_CEILING: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one (children inherit it);
/// returns the limit now in force.
fn raise_nofile() -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    let target = hard.min(NOFILE_CEILING);
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(target.max(soft.min(NOFILE_CEILING)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = raise_nofile()?;
    let report = run::run(&args, nofile).await?;
    println!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plots {
        for path in plots::write_all(&report.findings, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
