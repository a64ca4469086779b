//! `leafctl`: the operator's CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, LoadEnv};
use crate::renew::engine::chain;

/// leafctl: manage and check leafd.
#[derive(Debug, Parser)]
#[command(name = "leafctl", version, about = "Manage and check leafd")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration exactly as the daemon reads it; exit 78 if it is invalid.
    Validate {
        /// Main config file; drop-ins are read from `<stem>.d/*.toml` beside it.
        #[arg(short, long, default_value = "/etc/leafd/leafd.toml")]
        config: PathBuf,
    },
}

/// Entry point of the `leafctl` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => validate(&config),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match config::load_with_warnings(path, &LoadEnv::from_process()) {
        Ok((s, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let names: Vec<&str> = s.identities.iter().map(|i| i.name.as_str()).collect();
            println!(
                "{}: OK ({} file{}, {} identit{}: {})",
                path.display(),
                s.sources.len(),
                if s.sources.len() == 1 { "" } else { "s" },
                names.len(),
                if names.len() == 1 { "y" } else { "ies" },
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(crate::daemon::EXIT_CONFIG)
        }
    }
}
