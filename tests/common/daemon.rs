//! A leafd process for tests: its own config and directories in a `TempDir`, killed on drop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code drives a real process: failures panic, deadlines are wall-clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The store password every test config uses.
pub const PASSWORD: &str = "changeit";

/// One private daemon setup: directories, config, and (when started) the process.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    runs: u32,
}

impl Setup {
    /// Creates `state/`, `tls/`, `store.pass` and writes `leafd.toml` from `config`, where
    /// `@DIR@` stands for the temp dir.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tls")).unwrap();
        fs::write(dir.path().join("store.pass"), format!("{PASSWORD}\n")).unwrap();
        let s = Self {
            dir,
            child: None,
            runs: 0,
        };
        s.write_config(config);
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("leafd.toml")
    }

    pub fn write_config(&self, config: &str) {
        let text = config.replace("@DIR@", self.dir.path().to_str().unwrap());
        fs::write(self.config_path(), text).unwrap();
    }

    /// The daemon's log file of the current (or last) run.
    pub fn log_path(&self) -> PathBuf {
        self.path(&format!("leafd-{}.log", self.runs))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `leafd --config leafd.toml`, logging to a file.
    pub fn start(&mut self) {
        self.spawn(Command::new(env!("CARGO_BIN_EXE_leafd")));
    }

    /// Like `start`, with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(&mut self, vars: &[(&str, &str)]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leafd"));
        self.spawn_with(&mut cmd, vars);
    }

    /// Starts leafd as an unprivileged user (nobody) when the test runs as root, so file
    /// permissions apply to it as they do under systemd's `User=leafd`.
    pub fn start_unprivileged(&mut self) {
        if !nix::unistd::geteuid().is_root() {
            return self.start();
        }
        let bin = self.path("leafd");
        fs::copy(env!("CARGO_BIN_EXE_leafd"), &bin).unwrap();
        let status = Command::new("chown")
            .arg("-R")
            .arg("65534:65534")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        self.spawn(cmd);
    }

    fn spawn(&mut self, mut cmd: Command) {
        self.spawn_with(&mut cmd, &[]);
    }

    fn spawn_with(&mut self, cmd: &mut Command, vars: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let log = fs::File::create(self.log_path()).unwrap();
        let child = cmd
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.stop_wait()
    }

    /// Waits for the process to exit (after a signal already sent); returns the exit code.
    pub fn stop_wait(&mut self) -> i32 {
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt as _;
                if let Some(sig) = status.signal() {
                    panic!(
                        "leafd was killed by signal {sig} (core dumped: {}):\n{}",
                        status.core_dumped(),
                        self.log()
                    );
                }
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "leafd did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The parsed state file, if there is one.
    pub fn state(&self) -> Option<Value> {
        let text = fs::read_to_string(self.path("state/state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Rotations per identity according to the state file.
    pub fn rotations(&self, identity: &str) -> u64 {
        self.state()
            .and_then(|s| s["identities"][identity]["rotations"].as_u64())
            .unwrap_or(0)
    }

    /// The parsed `status.json` (what `leafctl status --json` shows), or `Null` before the
    /// first one.
    pub fn status(&self) -> Value {
        fs::read_to_string(self.path("state/status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    pub fn identity_state(&self, identity: &str) -> Value {
        self.state()
            .map(|s| s["identities"][identity].clone())
            .unwrap_or(Value::Null)
    }

    /// Polls `f` every 20 ms until it is true; panics with the log after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            if self.child.is_some() {
                assert!(
                    self.running(),
                    "leafd exited while waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs a binary of this package and returns (exit code, stdout + stderr).
pub fn run_bin(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Reads a file's bytes (for "left untouched" assertions).
pub fn bytes(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}
