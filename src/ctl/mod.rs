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
    /// Show the daemon's status: host key (attributes read back from the device), host
    /// issuing certificate, and every identity.
    Status {
        /// The config the daemon runs with (to find its state directory).
        #[arg(short, long, default_value = "/etc/leafd/leafd.toml")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `leafctl` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Status { config, json } => status(&config, json),
    }
}

fn status(config_path: &std::path::Path, json: bool) -> ExitCode {
    let settings = match config::load(config_path, &LoadEnv::from_process()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return ExitCode::from(crate::daemon::EXIT_CONFIG);
        }
    };
    let status = match crate::state::status::read(&settings.daemon.state_directory) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(69); // EX_UNAVAILABLE
        }
    };
    if json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(crate::daemon::EXIT_SOFTWARE);
            }
        }
        return ExitCode::SUCCESS;
    }
    print!("{}", render_status(&status));
    ExitCode::SUCCESS
}

fn time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The human view of a status snapshot.
pub fn render_status(s: &crate::state::status::Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leafd {} (pid {}), as of {}",
        s.version,
        s.pid,
        time(s.updated)
    );
    let _ = writeln!(out, "  {}", s.summary);
    match &s.host_key {
        Some(k) => {
            let _ = writeln!(
                out,
                "host key: {} {}, {}",
                k.backend,
                k.algorithm,
                if k.non_exportable {
                    "non-exportable"
                } else {
                    "exportable (software key)"
                }
            );
            for (name, value) in &k.facts {
                let _ = writeln!(out, "  {name}: {value}");
            }
        }
        None => {
            let _ = writeln!(out, "host key: unknown");
        }
    }
    match &s.host_cert {
        Some(h) => {
            let _ = writeln!(
                out,
                "host issuing certificate: serial {}, expires {}, renews {}{}",
                h.serial,
                time(h.not_after),
                time(h.next_renewal),
                h.last_error
                    .as_deref()
                    .map(|e| format!("\n  last error: {e}"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "host issuing certificate: none yet");
        }
    }
    let _ = writeln!(
        out,
        "{:<20} {:<34} {:<22} {:<22} {:>9}",
        "IDENTITY", "SERIAL", "NOT AFTER", "NEXT RENEWAL", "ROTATIONS"
    );
    for i in &s.identities {
        let _ = writeln!(
            out,
            "{:<20} {:<34} {:<22} {:<22} {:>9}",
            i.name,
            i.serial.as_deref().unwrap_or("-"),
            i.not_after.map(time).unwrap_or_else(|| "-".into()),
            i.next_renewal.map(time).unwrap_or_else(|| "-".into()),
            i.rotations
        );
        if let Some(e) = &i.last_error {
            let _ = writeln!(out, "  last error: {e}");
        }
    }
    out
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
