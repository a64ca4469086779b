//! `config::Error`: every way loading the config can fail, with file, line and column.

use std::io;
use std::path::PathBuf;

/// Configuration errors. Positioned variants display as `PATH:LINE:COLUMN: message`
/// (1-based line and column, columns counted in characters). No message ever contains a
/// password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file could not be read.
    #[error("{}: could not read config file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The drop-in directory exists but could not be listed.
    #[error("{}: could not read drop-in directory", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A file is not valid TOML, or does not match the schema (unknown key, wrong type,
    /// missing key).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file the value was written in.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A password file or credential could not be read. The position is that of the
    /// `password-file` or `password-credential` value.
    #[error("{}:{line}:{column}: could not read password file {}", path.display(), file.display())]
    PasswordFile {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The password file.
        file: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The kernel host name is empty and `[host] hostname` is not set.
    #[error("{}: the kernel host name is empty; set hostname in [host]", path.display())]
    NoHostname {
        /// The main config file.
        path: PathBuf,
    },
}

impl Error {
    /// The process exit code for this error: always 78 (`EX_CONFIG`), so that systemd's
    /// `RestartPreventExitStatus=78` stops a restart loop on a bad config.
    pub fn exit_code(&self) -> u8 {
        crate::error::exit::CONFIG
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Read { path, .. }
            | Self::ReadDir { path, .. }
            | Self::Parse { path, .. }
            | Self::Invalid { path, .. }
            | Self::PasswordFile { path, .. }
            | Self::NoHostname { path } => path,
        }
    }

    /// `(line, column)`, 1-based, for positioned errors.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            Self::Parse { line, column, .. }
            | Self::Invalid { line, column, .. }
            | Self::PasswordFile { line, column, .. } => Some((*line, *column)),
            Self::Read { .. } | Self::ReadDir { .. } | Self::NoHostname { .. } => None,
        }
    }

    /// Config errors are never cured by retrying with the same files.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
