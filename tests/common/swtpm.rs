//! A private swtpm (TPM 2.0 simulator) per test, in the style of tss-esapi's fixture.
//!
//! `swtpm_setup` manufactures a TPM state with EK certificates once per golden state and
//! caches it under `CARGO_TARGET_TMPDIR/swtpm-golden/`; every [`SwtpmSession`] copies it into
//! its own `TempDir` and runs `swtpm socket` on a random loopback port pair (the `swtpm:`
//! TCTI always uses port + 1 as the control port). The simulator serves one client
//! connection at a time and holds about three transient objects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test fixture driving a real process: failures panic, deadlines are wall-clock"
)]

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::Rng;

/// The panic message when swtpm or its tools are not installed.
pub const SWTPM_MISSING: &str = "swtpm missing: run 'apt-get install -y --no-install-recommends swtpm swtpm-tools tpm2-tools libtss2-dev'";

/// Bump to invalidate cached golden states.
const GOLDEN_FORMAT: &str = "leafd-swtpm-golden-v1";

/// A manufactured TPM state. Different variants are different TPMs: their own seeds and EKs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Golden {
    /// The TPM most tests use.
    A,
    /// A second, independently manufactured TPM.
    B,
}

impl Golden {
    fn name(self) -> &'static str {
        match self {
            Golden::A => "a",
            Golden::B => "b",
        }
    }
}

/// One running (or stopped) swtpm with its own state directory; killed on drop.
pub struct SwtpmSession {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl SwtpmSession {
    /// A fresh copy of golden state A, started.
    pub fn new() -> SwtpmSession {
        SwtpmSession::with_golden(Golden::A)
    }

    /// A fresh copy of `golden`, started.
    pub fn with_golden(golden: Golden) -> SwtpmSession {
        let source = golden_state(golden);
        let dir = tempfile::Builder::new()
            .prefix("leafd-swtpm-")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        for entry in fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), state.join(entry.file_name())).unwrap();
            }
        }
        let mut session = SwtpmSession {
            dir,
            port: 0,
            child: None,
            starts: 0,
        };
        session.start_on_free_port();
        session
    }

    /// `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The server port (the control port is one higher).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The simulator's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Whether the simulator process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the simulator (SIGTERM, as at a shutdown): transient objects and sessions are
    /// lost, the NV state stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the simulator again on the same state and port, like a rebooted TPM
    /// (`startup-clear`). Panics if it was running.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "swtpm is already running");
        if let Err(log) = self.try_start(self.port) {
            panic!("swtpm did not restart on port {}:\n{log}", self.port);
        }
    }

    /// [`Self::stop`] then [`Self::start`].
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    fn start_on_free_port(&mut self) {
        let mut last = String::new();
        for _ in 0..20 {
            let port = free_port_pair();
            match self.try_start(port) {
                Ok(()) => {
                    self.port = port;
                    return;
                }
                // Most likely someone took the port between the check and swtpm's bind.
                Err(log) => last = log,
            }
        }
        panic!("swtpm did not start on any port; last log:\n{last}");
    }

    /// Spawns swtpm on `port` and waits until it answers a command; `Err(log)` if it exits.
    fn try_start(&mut self, port: u16) -> Result<(), String> {
        self.starts += 1;
        let log_path = self.dir.path().join(format!("swtpm-{}.log", self.starts));
        let log = fs::File::create(&log_path).unwrap();
        let state = self.state_dir();
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| missing("swtpm", &e));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("swtpm exited with {status}: {text}"));
            }
            if answers(port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("swtpm did not answer within 10 s: {text}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Default for SwtpmSession {
    fn default() -> SwtpmSession {
        SwtpmSession::new()
    }
}

impl Drop for SwtpmSession {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a TPM on `port` answers `TPM2_GetRandom` (the connection is closed right after,
/// so the simulator is free again).
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let cmd = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 2];
    let mut header = [0u8; 10];
    s.write_all(&cmd).is_ok() && s.read_exact(&mut header).is_ok() && header[..2] == [0x80, 0x01]
}

/// A random even port P with P and P + 1 free on 127.0.0.1 right now.
fn free_port_pair() -> u16 {
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(20_000u16..60_000) & !1;
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let b = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
}

fn missing(program: &str, e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::NotFound {
        panic!("{SWTPM_MISSING} ({program} not found)");
    }
    panic!("cannot run {program}: {e}");
}

/// The cached golden state directory of `golden`, made on first use.
pub fn golden_state(golden: Golden) -> &'static Path {
    static A: OnceLock<PathBuf> = OnceLock::new();
    static B: OnceLock<PathBuf> = OnceLock::new();
    let cell = match golden {
        Golden::A => &A,
        Golden::B => &B,
    };
    cell.get_or_init(|| make_golden(golden))
}

fn make_golden(golden: Golden) -> PathBuf {
    let version = Command::new("swtpm")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| missing("swtpm", &e));
    let key = fnv1a(&[GOLDEN_FORMAT.as_bytes(), &version.stdout].concat());
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("swtpm-golden");
    let dir = root.join(format!("{}-{key:016x}", golden.name()));
    if dir.join("tpm2-00.permall").is_file() {
        return dir;
    }
    fs::create_dir_all(&root).unwrap();
    // Build in a private directory and rename the state into place, so concurrent test
    // processes never see a half-made state.
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&root)
        .unwrap();
    let b = build.path();
    for sub in ["ca", "state", "ek"] {
        fs::create_dir(b.join(sub)).unwrap();
    }
    fs::write(
        b.join("swtpm-localca.conf"),
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = b.join("ca").display()
        ),
    )
    .unwrap();
    fs::write(
        b.join("swtpm-localca.options"),
        "--platform-manufacturer leafd-test\n--platform-version 2.1\n--platform-model swtpm\n",
    )
    .unwrap();
    fs::write(
        b.join("swtpm_setup.conf"),
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            b.join("swtpm-localca.conf").display(),
            b.join("swtpm-localca.options").display()
        ),
    )
    .unwrap();
    let output = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(b.join("state"))
        .arg("--config")
        .arg(b.join("swtpm_setup.conf"))
        .args([
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--overwrite",
        ])
        .arg("--write-ek-cert-files")
        .arg(b.join("ek"))
        .arg("--logfile")
        .arg(b.join("setup.log"))
        .output()
        .unwrap_or_else(|e| missing("swtpm_setup", &e));
    assert!(
        output.status.success(),
        "swtpm_setup failed ({}):\n{}{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        fs::read_to_string(b.join("setup.log")).unwrap_or_default()
    );
    if let Err(e) = fs::rename(b.join("state"), &dir) {
        // Another test process may have won the race; its state is just as good.
        assert!(
            dir.join("tpm2-00.permall").is_file(),
            "cannot move the golden swtpm state to {}: {e}",
            dir.display()
        );
    }
    dir
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
