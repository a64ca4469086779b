//! A private `dbus-daemon` per test: its own socket in a `TempDir`, killed on drop.
//!
//! The bus policy lets everyone own names and send anything, because what the tests check
//! is leafd's own caller check, not dbus-daemon's. The directory is 0755 and the socket
//! world-connectable, so a client run as `nobody` (via `setpriv`) can reach it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixture driving a real process: failures panic"
)]

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

/// The panic message when dbus-daemon is not installed.
pub const DBUS_MISSING: &str =
    "dbus missing: run 'apt-get install -y --no-install-recommends dbus'";

/// A running private bus.
pub struct PrivateBus {
    child: Child,
    address: String,
    dir: TempDir,
}

impl PrivateBus {
    /// Starts `dbus-daemon --nofork --print-address` and waits for its address.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("leafd-dbus-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus.sock");
        let config = dir.path().join("bus.conf");
        fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/><allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = match Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!("{DBUS_MISSING}"),
            Err(e) => panic!("could not start dbus-daemon: {e}"),
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        if address.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("dbus-daemon printed no address: {err}");
        }
        // Only the listening path matters to clients; drop the guid and other keys.
        let address = format!("unix:path={}", socket.display());
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
        Self {
            child,
            address,
            dir,
        }
    }

    /// The bus address, `unix:path=…`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The directory holding the socket and config.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
