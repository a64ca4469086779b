//! The `leafctl` binary end to end: every subcommand against a private `dbus-daemon` with a
//! fake daemon ([`Control`]) behind the real D-Bus service, the local commands against
//! real config files and certificates, and the RFC 2253 subjects and mapping rules against
//! the JDK (`tests/java/KafkaStoreCheck.java principal`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: failures panic"
)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::dbus::PrivateBus;
use common::java::{self, Batch};
use leafd::dbus::{Control, ControlError, ControlFuture, Service, serve};
use leafd::kafka::principal::Mapper;
use leafd::keys::{KeyAlgorithm, KeyInfo};
use leafd::state::status::{HostCertStatus, IdentityStatus, ReloadState, ReloadStatus, Status};
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

const LEAFCTL: &str = env!("CARGO_BIN_EXE_leafctl");
/// The admin group the tests pass to `serve`; no such group needs to exist.
const ADMIN_GID: u32 = 4242;
/// A detail that must never reach a caller.
const SECRET_DETAIL: &str = "pkcs11 pin 123456 rejected";
const PASSWORD: &str = "fixture-password-do-not-print";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn identity(name: &str, serial: Option<&str>) -> IdentityStatus {
    IdentityStatus {
        name: name.to_owned(),
        serial: serial.map(str::to_owned),
        subject: serial.map(|_| format!("CN={name},O=Example")),
        issuer: serial.map(|_| "CN=broker-1.example.com leafd host issuing CA".to_owned()),
        sans: vec![format!("{name}.example.com")],
        not_before: serial.map(|_| at(4_000_000_000 - 1000)),
        not_after: serial.map(|_| at(4_100_000_000)),
        next_renewal: serial.map(|_| at(4_050_000_000)),
        rotations: 3,
        last_error: None,
        outputs: vec![PathBuf::from(format!("/etc/kafka/ssl/{name}.p12"))],
        reload: None,
        counters: Default::default(),
    }
}

/// broker: issued, last reload verified (for its current serial); kafka.client-1: never
/// issued, renewal failing; connect: reload failed; expired: past notAfter.
fn status() -> Status {
    let mut broker = identity("broker", Some("0a1b2c"));
    broker.reload = Some(ReloadStatus {
        state: ReloadState::Verified,
        serial: "0a1b2c".to_owned(),
        at: at(1_800_000_000),
        detail: "listener SSL serves 0a1b2c".to_owned(),
    });
    let mut client = identity("kafka.client-1", None);
    client.last_error = Some("CA unreachable".to_owned());
    client.outputs.clear();
    let mut connect = identity("connect", Some("77"));
    connect.reload = Some(ReloadStatus {
        state: ReloadState::Failed,
        serial: "77".to_owned(),
        at: at(1_800_000_000),
        detail: "listener SSL still serves 76".to_owned(),
    });
    let mut expired = identity("expired", Some("01"));
    expired.not_after = Some(at(1_000_000_000));
    Status {
        version: "0.1.0-test".to_owned(),
        pid: 4711,
        updated: at(1_800_000_000),
        summary: "4 identities; next renewal in 3h".to_owned(),
        host_key: Some(KeyInfo {
            backend: "tpm".to_owned(),
            algorithm: KeyAlgorithm::EcdsaP256,
            non_exportable: true,
            facts: vec![("device".to_owned(), "/dev/tpmrm0".to_owned())],
        }),
        host_cert: Some(HostCertStatus {
            serial: "c0ffee".to_owned(),
            not_after: at(4_100_000_000),
            next_renewal: at(4_000_000_000),
            last_error: None,
        }),
        identities: vec![broker, client, connect, expired],
        ca: Default::default(),
    }
}

/// What the fake daemon's reload does after a renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// No reload configured: `reload` becomes null.
    None,
    /// Pending, then verified.
    Verify,
    /// Pending, then failed.
    Fail,
    /// Pending for good.
    StayPending,
}

/// A fake daemon. `Renew` writes a new serial and returns; the reload state then moves
/// per [`Plan`], starting from the previous rotation's (stale) outcome. Renewing "broken"
/// fails with internal details that must not reach the caller.
struct Fake {
    status: Arc<Mutex<Status>>,
    plan: Mutex<Plan>,
    renewed: Mutex<Vec<String>>,
}

impl Fake {
    fn new(plan: Plan) -> Arc<Self> {
        Arc::new(Self {
            status: Arc::new(Mutex::new(status())),
            plan: Mutex::new(plan),
            renewed: Mutex::new(Vec::new()),
        })
    }
}

fn set_reload(status: &Mutex<Status>, name: &str, state: ReloadState, serial: &str, detail: &str) {
    let mut s = status.lock().unwrap();
    let i = s.identities.iter_mut().find(|i| i.name == name).unwrap();
    i.reload = Some(ReloadStatus {
        state,
        serial: serial.to_owned(),
        at: at(1_900_000_000),
        detail: detail.to_owned(),
    });
}

impl Control for Fake {
    fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    fn renew<'a>(&'a self, identity: &'a str) -> ControlFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.renewed.lock().unwrap().push(identity.to_owned());
            if identity == "broken" {
                return Err(ControlError::Failed(SECRET_DETAIL.to_owned()));
            }
            let plan = *self.plan.lock().unwrap();
            let serial = format!("f00d{:02x}", self.renewed.lock().unwrap().len());
            {
                let mut s = self.status.lock().unwrap();
                let Some(i) = s.identities.iter_mut().find(|i| i.name == identity) else {
                    return Err(ControlError::NotFound(identity.to_owned()));
                };
                i.serial = Some(serial.clone());
                i.rotations += 1;
                if plan == Plan::None {
                    i.reload = None;
                }
            }
            if plan != Plan::None {
                let status = Arc::clone(&self.status);
                let name = identity.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    set_reload(&status, &name, ReloadState::Pending, &serial, "reloading");
                    if plan == Plan::StayPending {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    match plan {
                        Plan::Verify => set_reload(
                            &status,
                            &name,
                            ReloadState::Verified,
                            &serial,
                            &format!("listener SSL serves {serial}"),
                        ),
                        _ => set_reload(
                            &status,
                            &name,
                            ReloadState::Failed,
                            &serial,
                            "listener SSL still serves 0a1b2c",
                        ),
                    }
                });
            }
            Ok(())
        })
    }

    fn reload_config(&self) -> ControlFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

struct Harness {
    bus: PrivateBus,
    fake: Arc<Fake>,
    _service: Service,
}

async fn start(plan: Plan) -> Harness {
    let bus = PrivateBus::start();
    let fake = Fake::new(plan);
    let builder = zbus::connection::Builder::address(bus.address()).unwrap();
    let service = serve(builder, fake.clone(), Some(ADMIN_GID)).await.unwrap();
    Harness {
        bus,
        fake,
        _service: service,
    }
}

/// A finished leafctl run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn text(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{}", self.text());
        self
    }

    fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{}", self.text());
        self
    }
}

/// Runs leafctl against the harness's bus without blocking the runtime that serves it.
async fn leafctl(h: &Harness, args: &[&str]) -> Run {
    let mut all = vec!["--bus-address", h.bus.address()];
    all.extend_from_slice(args);
    leafctl_raw(&all, &[]).await
}

async fn leafctl_raw(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = tokio::process::Command::new(LEAFCTL)
        .args(args)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run leafctl");
    Run::from(output)
}

fn leafctl_sync(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = StdCommand::new(LEAFCTL)
        .args(args)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().copied())
        .output()
        .expect("run leafctl");
    Run::from(output)
}

// ------------------------------------------------------------------ daemon commands

#[tokio::test]
async fn status_human_and_json() {
    let h = start(Plan::Verify).await;
    let r = leafctl(&h, &["status"]).await.ok();
    let out = &r.stdout;
    for needle in [
        "leafd 0.1.0-test (pid 4711)",
        "host key:   tpm p256, non-exportable",
        "device: /dev/tpmrm0",
        "host cert:  serial c0ffee",
        "2099-",
        "IDENTITY",
        "STATE",
        "RELOAD",
        "renewal-failing",
        "reload-failed",
        "expired",
        "alarms:",
        "kafka.client-1: renewal failing: CA unreachable",
        "connect: reload failed for serial 77",
        "expired: certificate expired",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    // Times are RFC 3339 with a relative form.
    assert!(out.contains("2099-12-03T") && out.contains("(in "), "{out}");
    assert!(out.contains(" ago)"), "{out}");
    // The table's columns line up: every row starts its STATE column at the same place.
    let header = out.lines().find(|l| l.starts_with("IDENTITY")).unwrap();
    let state = header.find("STATE").unwrap();
    for (name, word) in [
        ("broker ", "ok"),
        ("connect ", "reload-failed"),
        ("expired ", "expired"),
    ] {
        let row = out.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row[state..].starts_with(word), "{name}: {out}");
    }

    let r = leafctl(&h, &["status", "--json"]).await.ok();
    let parsed: Status = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(parsed, status());

    // DBUS_SYSTEM_BUS_ADDRESS works as well as --bus-address.
    let r = leafctl_raw(
        &["status", "--json"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", h.bus.address())],
    )
    .await
    .ok();
    assert_eq!(serde_json::from_str::<Status>(&r.stdout).unwrap(), status());
}

#[tokio::test]
async fn list_and_show() {
    let h = start(Plan::Verify).await;
    let r = leafctl(&h, &["list"]).await.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", r.text());
    assert!(
        lines[0].starts_with("IDENTITY") && lines[0].contains("NOT AFTER"),
        "{}",
        r.text()
    );
    assert!(
        lines[1].starts_with("broker ") && lines[1].ends_with("ok"),
        "{}",
        r.text()
    );
    assert!(lines[2].contains("kafka.client-1") && lines[2].ends_with("renewal-failing"));

    let r = leafctl(&h, &["list", "--json"]).await.ok();
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list[0]["name"], "broker");
    assert_eq!(list[0]["serial"], "0a1b2c");
    assert_eq!(list[0]["state"], "ok");
    assert_eq!(list[0]["reload"], "verified");
    assert_eq!(list[0]["not_after"], "2099-12-03T16:53:20.000Z");
    assert_eq!(list[1]["serial"], serde_json::Value::Null);
    assert_eq!(list[2]["state"], "reload-failed");
    assert_eq!(list[3]["state"], "expired");

    let r = leafctl(&h, &["show", "broker"]).await.ok();
    for needle in [
        "identity:       broker",
        "subject:        CN=broker,O=Example",
        "principal:      User:CN=broker,O=Example",
        "issuer:         CN=broker-1.example.com leafd host issuing CA",
        "SANs:           broker.example.com",
        "serial:         0a1b2c",
        "rotations:      3",
        "reload:         verified for serial 0a1b2c",
        "outputs:        /etc/kafka/ssl/broker.p12",
    ] {
        assert!(
            r.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            r.text()
        );
    }
    let r = leafctl(&h, &["show", "broker", "--json"]).await.ok();
    let parsed: IdentityStatus = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(parsed, status().identities[0]);

    let r = leafctl(&h, &["show", "nope"]).await.code(64);
    assert!(
        r.stderr.contains("no identity named \"nope\""),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn renew_and_its_errors() {
    let h = start(Plan::None).await;
    let r = leafctl(&h, &["renew", "broker"]).await.ok();
    assert!(
        r.stdout
            .starts_with("renewed broker: serial f00d01, not after 2099-"),
        "{}",
        r.text()
    );
    assert_eq!(*h.fake.renewed.lock().unwrap(), vec!["broker".to_owned()]);

    // Unknown name: the daemon's NotFound.
    let r = leafctl(&h, &["renew", "nope"]).await.code(64);
    assert!(
        r.stderr.contains("no identity named \"nope\""),
        "{}",
        r.text()
    );
    assert!(r.stderr.contains("leafctl list"), "{}", r.text());
    // Malformed names: the daemon's InvalidArgument.
    for bad in ["a/b", "tab\there", ""] {
        let r = leafctl(&h, &["renew", bad]).await.code(64);
        assert!(r.stderr.contains("identity name"), "{bad:?}: {}", r.text());
    }
    assert_eq!(h.fake.renewed.lock().unwrap().len(), 1);

    // A failed renewal: exit 1, no internal details.
    h.fake
        .status
        .lock()
        .unwrap()
        .identities
        .push(identity("broken", Some("02")));
    let r = leafctl(&h, &["renew", "broken"]).await.code(1);
    assert!(
        r.stderr.contains("internal error; see journalctl -u leafd"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("123456"), "{}", r.text());

    // --wait without a reload configured returns at once.
    let r = leafctl(&h, &["renew", "broker", "--wait"]).await.ok();
    assert!(
        r.stdout.contains("no reload configured for broker"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn renew_wait_until_verified() {
    let h = start(Plan::Verify).await;
    let r = leafctl(&h, &["renew", "broker", "--wait"]).await.ok();
    // The stale "verified" of the old serial did not count; the new one did.
    assert!(
        r.stdout
            .contains("reload verified: listener SSL serves f00d01"),
        "{}",
        r.text()
    );
    assert!(
        r.stderr
            .contains("waiting for the broker to serve serial f00d01"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn renew_wait_reports_a_failed_reload() {
    let h = start(Plan::Fail).await;
    let r = leafctl(&h, &["renew", "broker", "--wait"]).await.code(1);
    assert!(
        r.stderr
            .contains("reload of broker (serial f00d01) failed: listener SSL still serves 0a1b2c"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn renew_wait_times_out() {
    let h = start(Plan::StayPending).await;
    let r = leafctl(&h, &["renew", "broker", "--wait", "--timeout", "2s"])
        .await
        .code(75);
    assert!(r.stderr.contains("timed out after 2s"), "{}", r.text());
}

#[tokio::test]
async fn principal_of_an_identity() {
    let h = start(Plan::Verify).await;
    let r = leafctl(&h, &["principal", "broker"]).await.ok();
    assert_eq!(
        r.stdout,
        "subject:   CN=broker,O=Example\nprincipal: User:CN=broker,O=Example\n"
    );
    let r = leafctl(
        &h,
        &[
            "principal",
            "broker",
            "--rules",
            "RULE:^CN=([^,]+),O=Example$/$1/U,DEFAULT",
        ],
    )
    .await
    .ok();
    assert!(
        r.stdout.ends_with("principal: User:BROKER\n"),
        "{}",
        r.text()
    );
    // No rule applies: the broker would refuse the client.
    let r = leafctl(&h, &["principal", "broker", "--rules", "RULE:^O=(.*)$/$1/"])
        .await
        .code(1);
    assert!(
        r.stderr.contains("no rules apply to CN=broker,O=Example"),
        "{}",
        r.text()
    );
    // Malformed rules are a usage error.
    leafctl(&h, &["principal", "broker", "--rules", "DEFAULT/L"])
        .await
        .code(64);
    // Not issued yet, and unknown.
    leafctl(&h, &["principal", "kafka.client-1"]).await.code(1);
    leafctl(&h, &["principal", "nope"]).await.code(64);
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[tokio::test]
async fn access_denied_exits_77() {
    assert!(
        is_root(),
        "this test runs leafctl as another user (setpriv): run it as root (tests/run does in CI)"
    );
    let h = start(Plan::None).await;
    let output = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", LEAFCTL])
        .args(["--bus-address", h.bus.address(), "renew", "broker"])
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .output()
        .await
        .expect("run setpriv");
    let r = Run::from(output).code(77);
    assert!(r.stderr.contains("permission denied"), "{}", r.text());
    assert!(
        r.stderr.contains("root") && r.stderr.contains("leafd-admin"),
        "{}",
        r.text()
    );
    assert!(h.fake.renewed.lock().unwrap().is_empty());
    // Reads stay open to everyone.
    let output = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", LEAFCTL])
        .args(["--bus-address", h.bus.address(), "list"])
        .output()
        .await
        .expect("run setpriv");
    Run::from(output).ok();
}

#[tokio::test]
async fn daemon_not_running_exits_69() {
    // A bus without leafd on it.
    let bus = PrivateBus::start();
    let r = leafctl_raw(&["--bus-address", bus.address(), "status"], &[])
        .await
        .code(69);
    assert!(r.stderr.contains("cannot reach leafd"), "{}", r.text());
    assert!(r.stderr.contains("systemctl status leafd"), "{}", r.text());
    // No bus at all.
    let missing = format!("unix:path={}/nope.sock", bus.dir().display());
    let r = leafctl_raw(&["--bus-address", &missing, "renew", "broker"], &[])
        .await
        .code(69);
    assert!(r.stderr.contains("systemctl status leafd"), "{}", r.text());
}

// ------------------------------------------------------------------ local commands

#[test]
fn usage_help_completions_and_man_pages() {
    leafctl_sync(&["frobnicate"], &[]).code(64);
    leafctl_sync(&["renew"], &[]).code(64);
    let r = leafctl_sync(&["--help"], &[]).ok();
    for needle in [
        "kafka-config",
        "principal",
        "Exit status:",
        "69",
        "77",
        "78",
        "64",
    ] {
        assert!(
            r.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            r.text()
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let r = leafctl_sync(&["completions", shell], &[]).ok();
        assert!(r.stdout.len() > 500, "{shell}: {}", r.text());
        assert!(
            r.stdout.contains("leafctl") && r.stdout.contains("kafka-config"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    leafctl_sync(&["man", "--out", out.to_str().unwrap()], &[]).ok();
    for page in [
        "leafctl.1",
        "leafctl-status.1",
        "leafctl-list.1",
        "leafctl-show.1",
        "leafctl-renew.1",
        "leafctl-validate.1",
        "leafctl-kafka-config.1",
        "leafctl-principal.1",
        "leafctl-completions.1",
        "leafctl-man.1",
    ] {
        let text = fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.contains(".TH") && text.contains(".SH"),
            "{page} is not roff:\n{text}"
        );
    }
    let main = fs::read_to_string(out.join("leafctl.1")).unwrap();
    assert!(main.contains("leafd\\-admin"), "{main}");
    let renew = fs::read_to_string(out.join("leafctl-renew.1")).unwrap();
    assert!(
        renew.contains("\\-\\-wait") && renew.contains("\\-\\-timeout"),
        "{renew}"
    );
}

/// A config with a PKCS#12, a JKS (passwords from credentials) and a PEM identity.
struct ConfigFixture {
    dir: tempfile::TempDir,
}

impl ConfigFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("secrets")).unwrap();
        fs::create_dir_all(dir.path().join("creds")).unwrap();
        fs::write(
            dir.path().join("secrets/broker.pass"),
            format!("{PASSWORD}\n"),
        )
        .unwrap();
        fs::write(dir.path().join("secrets/trust.pass"), PASSWORD).unwrap();
        fs::write(dir.path().join("creds/client-pass"), PASSWORD).unwrap();
        fs::write(
            dir.path().join("leafd.toml"),
            r#"
[daemon]
state-directory = "state"

[key]
backend = "soft"

[issuer]
type = "local"

[[identity]]
name = "broker"
subject = "CN=b1.example.com,OU=kafka,O=Example"
sans = ["b1.example.com"]

[[identity.keystore]]
format = "pkcs12"
path = "tls/broker.p12"
password-file = "secrets/broker.pass"

[[identity.truststore]]
format = "pkcs12"
path = "tls/trust.p12"
password-file = "secrets/trust.pass"

[[identity]]
name = "client"
subject = "CN=app-orders,OU=clients,O=Example"
eku = ["client-auth"]

[[identity.keystore]]
format = "jks"
path = "tls/client.jks"
password-credential = "client-pass"

[[identity.truststore]]
format = "jks"
path = "tls/client-trust.jks"
password-credential = "client-pass"

[[identity]]
name = "pem"
subject = "CN=p1,O=Example"
sans = ["p1.example.com"]

[[identity.keystore]]
format = "pem"
path = "tls/p1.pem"

[[identity.truststore]]
format = "pem"
path = "tls/ca.pem"
"#,
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Run {
        let config = self.path("leafd.toml");
        let creds = self.path("creds");
        let mut all = vec!["kafka-config", "--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let r = leafctl_sync(&all, &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
        assert!(
            !r.text().contains(PASSWORD),
            "a password leaked:\n{}",
            r.text()
        );
        r
    }
}

/// `key=value` lines, with the `.properties` backslash escapes leafctl uses undone.
fn properties(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a property: {line:?}"));
        let mut out = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.push(chars.next().unwrap());
            } else {
                out.push(c);
            }
        }
        assert!(map.insert(key.to_owned(), out).is_none(), "{key} twice");
    }
    map
}

#[test]
fn kafka_config_for_pkcs12_jks_and_pem() {
    let f = ConfigFixture::new();
    let r = f.run(&["broker", "--listener", "SSL"]).ok();
    let p = properties(&r.stdout);
    let l = "listener.name.ssl.ssl.";
    let secrets = f.path("secrets");
    let secrets = secrets.to_str().unwrap();
    assert_eq!(p["config.providers"], "directory");
    assert_eq!(
        p["config.providers.directory.class"],
        "org.apache.kafka.common.config.provider.DirectoryConfigProvider"
    );
    assert_eq!(p["config.providers.directory.param.allowed.paths"], secrets);
    assert_eq!(p[&format!("{l}keystore.type")], "PKCS12");
    assert_eq!(
        p[&format!("{l}keystore.location")],
        f.path("tls/broker.p12").to_str().unwrap()
    );
    assert_eq!(
        p[&format!("{l}keystore.password")],
        format!("${{directory:{secrets}:broker.pass}}")
    );
    assert_eq!(p[&format!("{l}truststore.type")], "PKCS12");
    assert_eq!(
        p[&format!("{l}truststore.password")],
        format!("${{directory:{secrets}:trust.pass}}")
    );
    assert_eq!(p[&format!("{l}client.auth")], "required");
    assert!(!p.contains_key(&format!("{l}key.password")));
    // broker.pass ends with a newline, which Kafka would keep.
    assert!(
        r.stdout.contains("broker.pass ends with a line break"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("trust.pass ends with"), "{}", r.stdout);
    // The mapping rule maps brokers shaped like this one to their CN.
    let rules = &p[&format!("{l}principal.mapping.rules")];
    let mapper = Mapper::parse(rules).unwrap();
    assert_eq!(
        mapper.map("CN=b1.example.com,OU=kafka,O=Example").unwrap(),
        "b1.example.com"
    );
    assert_eq!(
        mapper.map("CN=b7.example.com,OU=kafka,O=Example").unwrap(),
        "b7.example.com"
    );
    assert_eq!(mapper.map("CN=x,O=Other").unwrap(), "CN=x,O=Other");

    // JKS with passwords in systemd credentials: instructions, no live reference.
    let r = f.run(&["client", "--listener", "client_tls"]).ok();
    let p = properties(&r.stdout);
    assert_eq!(p["listener.name.client_tls.ssl.keystore.type"], "JKS");
    assert_eq!(p["listener.name.client_tls.ssl.truststore.type"], "JKS");
    assert!(!p.contains_key("listener.name.client_tls.ssl.keystore.password"));
    assert!(
        r.stdout.contains("systemd credential \"client-pass\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("no server-auth extended key usage"),
        "{}",
        r.stdout
    );

    // PEM: no passwords, no provider.
    let r = f.run(&["pem", "--listener", "INTERNAL"]).ok();
    let p = properties(&r.stdout);
    assert_eq!(p["listener.name.internal.ssl.keystore.type"], "PEM");
    assert_eq!(
        p["listener.name.internal.ssl.keystore.location"],
        f.path("tls/p1.pem").to_str().unwrap()
    );
    assert_eq!(p["listener.name.internal.ssl.truststore.type"], "PEM");
    assert!(p.keys().all(|k| !k.contains("password")), "{p:?}");
    assert!(!p.contains_key("config.providers"));

    // Errors: no listener, bad listener, unknown identity, broken config.
    let r = f.run(&["broker"]).code(64);
    assert!(r.stderr.contains("--listener"), "{}", r.text());
    f.run(&["broker", "--listener", "a.b"]).code(64);
    f.run(&["nope", "--listener", "SSL"]).code(64);
    fs::write(f.path("leafd.toml"), "[daemon]\nfrobnicate = 1\n").unwrap();
    let r = f.run(&["broker", "--listener", "SSL"]).code(78);
    assert!(r.stderr.contains("frobnicate"), "{}", r.text());
}

/// Runs leafctl as `nobody` (uid and gid 65534, no supplementary groups).
fn leafctl_as_nobody(args: &[&str]) -> Run {
    let output = StdCommand::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", LEAFCTL])
        .args(args)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run setpriv");
    let r = Run::from(output);
    assert!(
        !r.text().contains(PASSWORD),
        "a password leaked:\n{}",
        r.text()
    );
    r
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn kafka_config_runs_as_nobody_without_reading_passwords() {
    assert!(
        is_root(),
        "this test runs leafctl as another user (setpriv): run it as root (tests/run does in CI)"
    );
    let f = ConfigFixture::new();
    // Everyone may read the config; the password files and credentials are root's (the
    // test runs as root), 0600.
    chmod(f.dir.path(), 0o755);
    chmod(&f.path("leafd.toml"), 0o644);
    for file in [
        "secrets/broker.pass",
        "secrets/trust.pass",
        "creds/client-pass",
    ] {
        chmod(&f.path(file), 0o600);
    }
    chmod(&f.path("creds"), 0o700);
    let config = f.path("leafd.toml");
    let config = config.to_str().unwrap();
    let secrets = f.path("secrets");
    let secrets = secrets.to_str().unwrap();

    // The daemon's load reads the password files, which nobody cannot.
    let r = leafctl_as_nobody(&["validate", "--config", config]).code(78);
    assert!(
        r.stderr.contains("could not read password file"),
        "{}",
        r.text()
    );

    // The password directory is searchable (the files can be stat'ed, not opened), then
    // not even that.
    for secrets_mode in [0o755, 0o700] {
        chmod(&f.path("secrets"), secrets_mode);
        let r = leafctl_as_nobody(&["kafka-config", "--config", config, "broker"]).code(64);
        assert!(r.stderr.contains("--listener"), "{}", r.text());
        let r = leafctl_as_nobody(&[
            "kafka-config",
            "--config",
            config,
            "broker",
            "--listener",
            "SSL",
        ])
        .ok();
        let p = properties(&r.stdout);
        let l = "listener.name.ssl.ssl.";
        assert_eq!(p["config.providers"], "directory");
        assert_eq!(p["config.providers.directory.param.allowed.paths"], secrets);
        assert_eq!(
            p[&format!("{l}keystore.password")],
            format!("${{directory:{secrets}:broker.pass}}")
        );
        assert_eq!(
            p[&format!("{l}truststore.password")],
            format!("${{directory:{secrets}:trust.pass}}")
        );
        // Whether the files end with a line break cannot be seen without reading them.
        for file in ["broker.pass", "trust.pass"] {
            assert!(
                r.stdout
                    .contains(&format!("{secrets}/{file} is not readable here")),
                "{}",
                r.stdout
            );
        }
        assert!(!r.stdout.contains("ends with a line break"), "{}", r.stdout);
    }

    // Credentials: no $CREDENTIALS_DIRECTORY, and the one leafd's would be is unreadable.
    let r = leafctl_as_nobody(&[
        "kafka-config",
        "--config",
        config,
        "client",
        "--listener",
        "TLS",
    ])
    .ok();
    assert!(
        r.stdout.contains("systemd credential \"client-pass\""),
        "{}",
        r.stdout
    );
}

#[test]
fn kafka_config_needs_no_password_file_but_the_daemons_load_does() {
    let f = ConfigFixture::new();
    fs::remove_file(f.path("secrets/broker.pass")).unwrap();
    fs::remove_dir_all(f.path("creds")).unwrap();
    let config = f.path("leafd.toml");
    let config = config.to_str().unwrap();
    // `validate` loads as the daemon does: the missing file fails it, with its position.
    let r = leafctl_sync(&["validate", "--config", config], &[]).code(78);
    assert!(
        r.stderr
            .contains(&format!("{config}:19:17: could not read password file")),
        "{}",
        r.text()
    );
    assert!(r.stderr.contains("broker.pass"), "{}", r.text());
    // kafka-config only needs to know where it is.
    let r = f.run(&["broker", "--listener", "SSL"]).ok();
    let secrets = f.path("secrets");
    let secrets = secrets.to_str().unwrap();
    assert!(
        r.stdout.contains(&format!(
            "ssl.keystore.password=${{directory:{secrets}:broker.pass}}"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("{secrets}/broker.pass is not readable here")),
        "{}",
        r.stdout
    );
    // trust.pass is there and has no line break: no note.
    assert!(
        !r.stdout.contains("trust.pass is not readable"),
        "{}",
        r.stdout
    );
    let r = f.run(&["client", "--listener", "TLS"]).ok();
    assert!(
        r.stdout.contains("systemd credential \"client-pass\""),
        "{}",
        r.stdout
    );
}

// ------------------------------------------------------------------ principal vs the JDK

fn oid(parts: &[u64]) -> DnType {
    DnType::CustomDnType(parts.to_vec())
}

/// Self-signed certificates with awkward subjects, written as PEM (and one as DER).
fn rcgen_certificates(dir: &Path) -> Vec<PathBuf> {
    let utf8 = |s: &str| DnValue::Utf8String(s.to_owned());
    let subjects: Vec<Vec<(DnType, DnValue)>> = vec![
        vec![
            (DnType::OrganizationName, utf8("Example, Inc.")),
            (DnType::OrganizationalUnitName, utf8("kafka")),
            (DnType::CommonName, utf8("b1.example.com")),
        ],
        vec![(DnType::CommonName, utf8(r#"a+b"c\d<e>f;g=h#i,j"#))],
        vec![
            (
                DnType::OrganizationName,
                utf8("  two leading, two trailing  "),
            ),
            (DnType::CommonName, utf8("#hash first")),
        ],
        vec![
            (DnType::CountryName, utf8("DE")),
            (DnType::LocalityName, utf8("Köln")),
            (DnType::CommonName, utf8("é ü 漢字 😀")),
        ],
        vec![(DnType::CommonName, utf8("nul\0and\rcr\r"))],
        vec![
            // DC (IA5String), UID, emailAddress (no RFC 2253 keyword: hex), serialNumber.
            (
                oid(&[0, 9, 2342, 19200300, 100, 1, 25]),
                DnValue::Ia5String("example".try_into().unwrap()),
            ),
            (oid(&[0, 9, 2342, 19200300, 100, 1, 1]), utf8("42")),
            (
                oid(&[1, 2, 840, 113549, 1, 9, 1]),
                DnValue::Ia5String("ops@example.com".try_into().unwrap()),
            ),
            (
                oid(&[2, 5, 4, 5]),
                DnValue::PrintableString("SN 42".try_into().unwrap()),
            ),
            (DnType::CommonName, utf8("app")),
        ],
        vec![
            // BMPString: JDK 17 reads its bytes as UTF-8.
            (
                DnType::OrganizationName,
                DnValue::PrintableString("Example".try_into().unwrap()),
            ),
            (
                DnType::CommonName,
                DnValue::BmpString("héllo".try_into().unwrap()),
            ),
        ],
    ];
    let mut files = Vec::new();
    for (n, attrs) in subjects.into_iter().enumerate() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        for (ty, value) in attrs {
            dn.push(ty, value);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = if n == 0 {
            let p = dir.join(format!("cert{n}.der"));
            fs::write(&p, cert.der()).unwrap();
            p
        } else {
            let p = dir.join(format!("cert{n}.pem"));
            fs::write(&p, cert.pem()).unwrap();
            p
        };
        files.push(path);
    }
    files
}

/// A multi-valued RDN, which rcgen cannot write: made by openssl.
fn openssl_multivalued(dir: &Path) -> PathBuf {
    let cert = dir.join("multi.pem");
    let out = StdCommand::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-multivalue-rdn"])
        .args(["-subj", "/O=Example/OU=apps/CN=app-orders+UID=42"])
        .arg("-keyout")
        .arg(dir.join("multi.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openssl missing ({e}): run 'apt-get install -y --no-install-recommends openssl'"
            )
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert
}

/// Splits `subject:   X\nprincipal: User:Y\n` (values may hold CR, so split on LF only).
fn principal_lines(stdout: &str) -> (String, String) {
    let mut subject = None;
    let mut principal = None;
    for line in stdout.split('\n') {
        if let Some(s) = line.strip_prefix("subject:   ") {
            subject = Some(s.to_owned());
        } else if let Some(p) = line.strip_prefix("principal: User:") {
            principal = Some(p.to_owned());
        }
    }
    (
        subject.unwrap_or_else(|| panic!("no subject in {stdout:?}")),
        principal.unwrap_or_else(|| panic!("no principal in {stdout:?}")),
    )
}

#[test]
fn principal_of_certificates_matches_the_jdk() {
    let dir = tempfile::tempdir().unwrap();
    let mut certs = rcgen_certificates(dir.path());
    certs.push(openssl_multivalued(dir.path()));
    let rule_sets = [
        // A cluster-style rule (escaped comma and dot in the literal part).
        r"RULE:^CN=(.*?),OU=kafka,O=Example\\, Inc\.$/$1/L,DEFAULT",
        // Any CN, upper-cased; a missing group ($4) stays literal.
        r"RULE:^.*[Cc][Nn]=([^,+]*).*$/$1@$4/U,DEFAULT",
        // Kafka's escaped-comma example.
        r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT",
        // replaceAll with a pattern that also matches empty at the end.
        "RULE:.*/x/",
        // ASCII \w and POSIX classes, as in Java.
        r"RULE:^(\p{Alpha}+)=([\w.]+)(,.*)?$/$2-$1/, RULE:(?i)^o=([^,]*),.*$/org:$1/, DEFAULT",
    ];
    let mut batch = Batch::new();
    for cert in &certs {
        let jdk = batch
            .principal(cert, None)
            .expect("the JDK reads the certificate");
        let r = leafctl_sync(&["principal", cert.to_str().unwrap()], &[]).ok();
        let (subject, principal) = principal_lines(&r.stdout);
        assert_eq!(subject, jdk.name, "{}", cert.display());
        assert_eq!(principal, jdk.name, "DEFAULT rules: {}", cert.display());
        for (n, rules) in rule_sets.iter().enumerate() {
            let rules_file = dir.path().join(format!("rules{n}"));
            fs::write(&rules_file, rules).unwrap();
            let r = leafctl_sync(
                &["principal", cert.to_str().unwrap(), "--rules", rules],
                &[],
            );
            match batch.principal(cert, Some(&rules_file)) {
                Ok(jdk) => {
                    let r = r.ok();
                    let (_, principal) = principal_lines(&r.stdout);
                    assert_eq!(
                        Some(principal),
                        jdk.mapped,
                        "{} with {rules}",
                        cert.display()
                    );
                }
                // No rule applies in Java either: the broker would refuse the client.
                Err(e) => {
                    assert!(e.contains("no rule applies"), "{e}");
                    let r = r.code(1);
                    assert!(r.stderr.contains("no rules apply"), "{}", r.text());
                }
            }
        }
    }
    // Spot checks on what the JDK printed, so the comparison is not vacuous.
    let jdk = |n: usize| java::principal(&certs[n], None).unwrap().name;
    assert_eq!(jdk(0), r"CN=b1.example.com,OU=kafka,O=Example\, Inc.");
    assert_eq!(jdk(1), r#"CN=a\+b\"c\\d\<e\>f\;g\=h\#i\,j"#);
    // openssl sorts the multi-valued RDN's SET by encoding; the JDK keeps that order.
    assert_eq!(jdk(7), "UID=42+CN=app-orders,OU=apps,O=Example");
    assert!(jdk(5).contains("1.2.840.113549.1.9.1=#160f"), "{}", jdk(5));

    // Not a certificate, and no file.
    let junk = dir.path().join("junk.pem");
    fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    leafctl_sync(&["principal", junk.to_str().unwrap()], &[]).code(65);
    leafctl_sync(&["principal", "./no-such-file.pem"], &[]).code(66);
}
