//! `shadowcat-operator`: `crd` prints the CRD; `run` (the default) runs the controller.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Shadowcat's operator.
#[derive(Debug, Parser)]
#[command(name = "shadowcat-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the McpProxy CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Some(Command::Crd) => {
            print!("{}", shadowcat_operator::crdgen::crd_yaml()?);
            Ok(())
        }
        None => anyhow::bail!("the controller is not part of this build yet; `crd` prints the CRD"),
    }
}
