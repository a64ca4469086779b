#![cfg(feature = "pkcs11")]
//! SoftHSM2 fixture: a private token in a `TempDir`, and [`isolated`], which runs a test body
//! in a child process whose environment names that token's `softhsm2.conf`.
//!
//! SoftHSM reads `SOFTHSM2_CONF` from the environment when the module is initialized.
//! `std::env::set_var` is banned (and would race between parallel tests), so each PKCS#11
//! test re-executes this test binary for just itself (`<name> --exact`) with `SOFTHSM2_CONF`
//! and a marker variable set; in the child the marker is present and the body runs. The
//! parent owns the `TempDir` and forwards the child's output.
//!
//! The child also gets `PKCS11SPY`/`PKCS11SPY_OUTPUT`, so a test that loads OpenSC's
//! `pkcs11-spy.so` ([`SoftHsm::spy_module`]) instead of SoftHSM sees every PKCS#11 call the
//! backend makes in [`SoftHsm::spy_log`]; [`SoftHsm::login_calls`] counts `C_Login`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a fixture that cannot be set up must panic with the reason"
)]

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use leafd::keys::pkcs11::{Pkcs11Config, TokenSelector};
use leafd::secret::Secret;

/// The panic message when SoftHSM2 or OpenSC is not installed.
pub const SOFTHSM_MISSING: &str =
    "SoftHSM2 missing: run 'apt-get install -y --no-install-recommends softhsm2 opensc'";
/// The token's SO PIN.
pub const SO_PIN: &str = "87654321";
/// The token's user PIN.
pub const PIN: &str = "246813";

/// Set in the child: the fixture directory. Its presence means "run the body".
const CHILD_DIR: &str = "LEAFD_TEST_SOFTHSM_DIR";
const CHILD_LABEL: &str = "LEAFD_TEST_SOFTHSM_LABEL";

/// A SoftHSM2 token in a private directory.
pub struct SoftHsm {
    dir: PathBuf,
    label: String,
    module: PathBuf,
    /// Held by the parent process only; the child borrows the directory.
    _temp: Option<tempfile::TempDir>,
}

impl SoftHsm {
    /// A fresh configuration with one initialized token with a unique label.
    pub fn new() -> SoftHsm {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let module = module_path();
        let temp = tempfile::Builder::new()
            .prefix("leafd-softhsm-")
            .tempdir()
            .expect("create the SoftHSM directory");
        let dir = temp.path().to_owned();
        fs::create_dir(dir.join("tokens")).expect("create the token directory");
        fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                dir.join("tokens").display()
            ),
        )
        .expect("write softhsm2.conf");
        let label = format!(
            "leafd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let hsm = SoftHsm {
            dir,
            label,
            module,
            _temp: Some(temp),
        };
        hsm.init_token(&hsm.label.clone());
        hsm
    }

    /// The fixture a parent made, as seen by its child (see [`isolated`]).
    fn from_env() -> Option<SoftHsm> {
        let dir = PathBuf::from(std::env::var_os(CHILD_DIR)?);
        let label = std::env::var(CHILD_LABEL).expect("the parent sets the token label");
        let conf = std::env::var_os("SOFTHSM2_CONF").expect("the parent sets SOFTHSM2_CONF");
        assert_eq!(Path::new(&conf), dir.join("softhsm2.conf"));
        Some(SoftHsm {
            dir,
            label,
            module: module_path(),
            _temp: None,
        })
    }

    /// Initializes another token (in the first free slot) with the fixture's PINs.
    pub fn init_token(&self, label: &str) {
        let out = self
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .unwrap_or_else(|e| missing("softhsm2-util", &e));
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The SoftHSM module: `TEST_PKCS11_MODULE` if set, else the Debian path.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// OpenSC's logging shim; in an [`isolated`] child it forwards to [`Self::module`].
    pub fn spy_module(&self) -> PathBuf {
        let path = multiarch_lib("pkcs11-spy.so");
        assert!(
            path.is_file(),
            "{SOFTHSM_MISSING} ({} not found)",
            path.display()
        );
        path
    }

    /// Where the spy writes its log in an [`isolated`] child.
    pub fn spy_log(&self) -> PathBuf {
        self.dir.join("pkcs11-spy.log")
    }

    /// How many `C_Login` calls went through the spy so far.
    pub fn login_calls(&self) -> usize {
        match fs::read_to_string(self.spy_log()) {
            Ok(log) => log.lines().filter(|l| l.ends_with(": C_Login")).count(),
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => panic!("read {}: {e}", self.spy_log().display()),
        }
    }

    /// The `softhsm2.conf` to put in `SOFTHSM2_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The fixture directory (the token directory is `tokens/` in it); free for test files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The label of the token made by [`Self::new`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The user PIN.
    pub fn pin(&self) -> &str {
        PIN
    }

    /// A backend configuration for this token, selected by label.
    pub fn config(&self) -> Pkcs11Config {
        Pkcs11Config {
            module: self.module.clone(),
            token: TokenSelector::Label(self.label.clone()),
            pin: Secret::new(PIN.to_owned()),
        }
    }

    /// `program` with `SOFTHSM2_CONF` pointing at this fixture.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", self.conf());
        cmd
    }

    /// `pkcs11-tool --module <module> --token-label <label>`, to inspect the token.
    pub fn pkcs11_tool(&self) -> Command {
        let mut cmd = self.command("pkcs11-tool");
        cmd.arg("--module")
            .arg(&self.module)
            .args(["--token-label", &self.label]);
        cmd
    }
}

impl Default for SoftHsm {
    fn default() -> SoftHsm {
        SoftHsm::new()
    }
}

/// Runs `body` with a fresh token in a child process that has `SOFTHSM2_CONF` set.
///
/// `test` must be this test's name as libtest knows it (the function name for a top-level
/// test): the parent runs `<test binary> <test> --exact` and fails unless exactly one test
/// ran there and passed.
pub fn isolated(test: &str, body: impl FnOnce(&SoftHsm)) {
    if let Some(hsm) = SoftHsm::from_env() {
        body(&hsm);
        return;
    }
    let hsm = SoftHsm::new();
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", hsm.conf())
        .env(CHILD_DIR, hsm.dir())
        .env(CHILD_LABEL, hsm.label())
        .env("PKCS11SPY", hsm.module())
        .env("PKCS11SPY_OUTPUT", hsm.spy_log())
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Through print!, so libtest captures it with the parent's output.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "{test} failed in its SoftHSM child process ({}); output above",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child process did not run exactly the test {test:?}: pass the test's own name to \
         softhsm::isolated"
    );
}

fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TEST_PKCS11_MODULE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TEST_PKCS11_MODULE={} does not exist",
            path.display()
        );
        return path;
    }
    let debian = PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
    if debian.is_file() {
        return debian;
    }
    let multiarch = multiarch_lib("softhsm/libsofthsm2.so");
    assert!(
        multiarch.is_file(),
        "{SOFTHSM_MISSING} (neither {} nor {} exists)",
        debian.display(),
        multiarch.display()
    );
    multiarch
}

fn multiarch_lib(name: &str) -> PathBuf {
    let arch = std::env::consts::ARCH;
    PathBuf::from(format!("/usr/lib/{arch}-linux-gnu/{name}"))
}

fn missing(program: &str, e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::NotFound {
        panic!("{SOFTHSM_MISSING} ({program} not found)");
    }
    panic!("cannot run {program}: {e}");
}
