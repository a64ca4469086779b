//! What every layer shares about errors: the one-line cause chain and the process exit
//! codes (sysexits.h where one fits). Pure.

use std::fmt::Write as _;

/// The full error chain on one line (`outer: cause: root cause`), for logs, STATUS and the
/// state file.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// Process exit codes of leafd and leafctl: one definition, sysexits.h where one fits.
pub mod exit {
    /// The operation failed (renewal, broker reload, no mapping rule).
    pub const FAILED: u8 = 1;
    /// Bad usage, unknown identity, malformed name (`EX_USAGE`).
    pub const USAGE: u8 = 64;
    /// An input file holds no certificate (`EX_DATAERR`).
    pub const DATAERR: u8 = 65;
    /// An input file cannot be read (`EX_NOINPUT`).
    pub const NOINPUT: u8 = 66;
    /// A service or device cannot be reached (`EX_UNAVAILABLE`): systemd retries.
    pub const UNAVAILABLE: u8 = 69;
    /// Internal error or an unexpected answer (`EX_SOFTWARE`).
    pub const SOFTWARE: u8 = 70;
    /// An output file cannot be written (`EX_CANTCREAT`).
    pub const CANTCREAT: u8 = 73;
    /// Waiting timed out (`EX_TEMPFAIL`).
    pub const TEMPFAIL: u8 = 75;
    /// The caller may not do this (`EX_NOPERM`).
    pub const NOPERM: u8 = 77;
    /// The configuration is invalid (`EX_CONFIG`): the units' `RestartPreventExitStatus=78`
    /// stops a restart loop on it.
    pub const CONFIG: u8 = 78;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
