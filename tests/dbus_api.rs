//! The D-Bus API end to end on a private `dbus-daemon`: a fake [`Control`] behind
//! [`leafd::dbus::serve`], driven through the generated proxies, `busctl`, and — for the
//! caller checks — `busctl` run as `nobody` through `setpriv`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "tests: failures panic, and child processes are waited on with wall-clock timeouts"
)]

mod common;

use std::future::poll_fn;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::dbus::PrivateBus;
use leafd::dbus::error::INTERNAL_ERROR;
use leafd::dbus::{
    BUS_NAME, Control, ControlError, ControlFuture, IdentityProxy, MANAGER_PATH, ManagerProxy,
    Service, connect_manager, identity_path, serve,
};
use leafd::keys::{KeyAlgorithm, KeyInfo};
use leafd::state::status::{IdentityStatus, Status};
use zbus::export::futures_core::Stream;

/// The admin group the tests pass to `serve`; no such group needs to exist.
const ADMIN_GID: u32 = 4242;
/// A detail that must never reach a caller.
const SECRET_DETAIL: &str = "pkcs11 pin 123456 rejected by /usr/lib/softhsm/libsofthsm2.so";

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
        not_before: serial.map(|_| at(1_890_000_000 - 1000)),
        not_after: serial.map(|_| at(1_900_000_000)),
        next_renewal: serial.map(|_| at(1_890_000_000)),
        rotations: 3,
        last_error: None,
        outputs: vec![
            PathBuf::from(format!("/etc/kafka/ssl/{name}.p12")),
            PathBuf::from(format!("/etc/kafka/ssl/{name}-trust.p12")),
        ],
        reload: None,
        counters: Default::default(),
    }
}

fn status() -> Status {
    let mut client = identity("kafka.client-1", None);
    client.last_error = Some("CA unreachable".to_owned());
    client.outputs.clear();
    Status {
        version: "0.1.0-test".to_owned(),
        pid: 4711,
        updated: at(1_800_000_000),
        summary: "2 identities; next renewal in 3h".to_owned(),
        host_key: Some(KeyInfo {
            backend: "tpm".to_owned(),
            algorithm: KeyAlgorithm::EcdsaP256,
            non_exportable: true,
            facts: vec![("device".to_owned(), "/dev/tpmrm0".to_owned())],
        }),
        host_cert: None,
        identities: vec![identity("broker", Some("0a1b2c")), client],
        ca: Default::default(),
    }
}

/// A fake daemon: a settable status; renewals of "broken" fail internally; renewals of
/// "vanished" report NotFound; reloads fail while `reload_error` is set.
#[derive(Default)]
struct Fake {
    status: Mutex<Option<Status>>,
    renewed: Mutex<Vec<String>>,
    reloads: Mutex<u32>,
    reload_error: Mutex<Option<String>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        let fake = Self::default();
        *fake.status.lock().unwrap() = Some(status());
        Arc::new(fake)
    }
    fn set_status(&self, status: Status) {
        *self.status.lock().unwrap() = Some(status);
    }
}

impl Control for Fake {
    fn status(&self) -> Status {
        self.status.lock().unwrap().clone().unwrap()
    }
    fn renew<'a>(&'a self, identity: &'a str) -> ControlFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.renewed.lock().unwrap().push(identity.to_owned());
            match identity {
                "broken" => Err(ControlError::Failed(SECRET_DETAIL.to_owned())),
                "vanished" => Err(ControlError::NotFound(identity.to_owned())),
                _ => Ok(()),
            }
        })
    }
    fn reload_config(&self) -> ControlFuture<'_, Result<(), String>> {
        Box::pin(async move {
            *self.reloads.lock().unwrap() += 1;
            match self.reload_error.lock().unwrap().clone() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }
}

struct Harness {
    bus: PrivateBus,
    fake: Arc<Fake>,
    service: Service,
    manager: ManagerProxy<'static>,
}

async fn start() -> Harness {
    start_with(Fake::new()).await
}

async fn start_with(fake: Arc<Fake>) -> Harness {
    let bus = PrivateBus::start();
    let builder = zbus::connection::Builder::address(bus.address()).unwrap();
    let service = serve(builder, fake.clone(), Some(ADMIN_GID)).await.unwrap();
    let manager = connect_manager(Some(bus.address())).await.unwrap();
    Harness {
        bus,
        fake,
        service,
        manager,
    }
}

async fn identity_proxy(h: &Harness, name: &str) -> IdentityProxy<'static> {
    IdentityProxy::builder(h.manager.inner().connection())
        .path(identity_path(name).unwrap())
        .unwrap()
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// The D-Bus error name and message of a failed call.
fn method_error(e: zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            (name.as_str().to_owned(), message.unwrap_or_default())
        }
        other => panic!("expected a D-Bus method error, got {other:?}"),
    }
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(
        Duration::from_secs(5),
        poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)),
    )
    .await
    .expect("no signal within 5 s")
    .expect("signal stream ended")
}

/// Runs busctl off the runtime thread: the service answers on this (single) thread.
async fn busctl(address: &str, args: &[&str]) -> Output {
    let address = address.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_as(None, &address, &args)
    })
    .await
    .unwrap()
}

/// Runs `busctl --address=… ARGS`, as `nobody` with extra groups if `as_nobody` is set.
fn run_as(as_nobody: Option<&[u32]>, address: &str, args: &[&str]) -> Output {
    let addr = format!("--address={address}");
    let mut cmd = match as_nobody {
        None => Command::new("busctl"),
        Some(groups) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534"]);
            if groups.is_empty() {
                c.arg("--clear-groups");
            } else {
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                c.arg(format!("--groups={}", list.join(",")));
            }
            c.arg("busctl");
            c
        }
    };
    cmd.arg(addr)
        .args(args)
        .output()
        .expect("could not run busctl/setpriv")
}

/// `dbus-send --print-reply` as `nobody` without groups; it prints `Error <name>: <message>`.
fn dbus_send_as_nobody(address: &str, method_and_args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "dbus-send",
        ])
        .arg(format!("--bus={address}"))
        .args(["--print-reply", &format!("--dest={BUS_NAME}"), MANAGER_PATH])
        .args(method_and_args)
        .output()
        .expect("could not run setpriv dbus-send")
}

fn text(o: &Output) -> String {
    format!(
        "rc={:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn manager_methods_and_properties() {
    let h = start().await;
    assert_eq!(
        h.manager.list_identities().await.unwrap(),
        vec!["broker".to_owned(), "kafka.client-1".to_owned()]
    );
    let json = h.manager.get_status().await.unwrap();
    let parsed: Status = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, status());
    assert_eq!(h.manager.version().await.unwrap(), "0.1.0-test");
    assert_eq!(h.manager.backend().await.unwrap(), "tpm");
    assert!(h.manager.host_key_non_exportable().await.unwrap());

    // The caller (this test) is root: state-changing methods are allowed.
    h.manager.renew("broker").await.unwrap();
    assert_eq!(*h.fake.renewed.lock().unwrap(), vec!["broker".to_owned()]);
    h.manager.reload_config().await.unwrap();
    assert_eq!(*h.fake.reloads.lock().unwrap(), 1);
}

#[tokio::test]
async fn backend_properties_without_a_host_key() {
    let fake = Fake::new();
    let mut s = status();
    s.host_key = None;
    fake.set_status(s);
    let h = start_with(fake).await;
    assert_eq!(h.manager.backend().await.unwrap(), "");
    assert!(!h.manager.host_key_non_exportable().await.unwrap());
}

#[tokio::test]
async fn identity_objects_and_properties() {
    let h = start().await;
    assert_eq!(
        identity_path("kafka.client-1").unwrap().as_str(),
        "/org/leafd/leafd1/identity/kafka_2eclient_2d1"
    );
    let broker = identity_proxy(&h, "broker").await;
    assert_eq!(broker.name().await.unwrap(), "broker");
    assert_eq!(broker.serial().await.unwrap(), "0a1b2c");
    assert_eq!(broker.not_before().await.unwrap(), 1_889_999_000);
    assert_eq!(broker.not_after().await.unwrap(), 1_900_000_000);
    assert_eq!(broker.next_renewal().await.unwrap(), 1_890_000_000);
    assert_eq!(
        broker.issuer().await.unwrap(),
        "CN=broker-1.example.com leafd host issuing CA"
    );
    assert_eq!(
        broker.keystores().await.unwrap(),
        vec![
            "/etc/kafka/ssl/broker.p12".to_owned(),
            "/etc/kafka/ssl/broker-trust.p12".to_owned()
        ]
    );
    assert_eq!(broker.last_error().await.unwrap(), "");

    let client = identity_proxy(&h, "kafka.client-1").await;
    assert_eq!(client.name().await.unwrap(), "kafka.client-1");
    assert_eq!(client.serial().await.unwrap(), "");
    assert_eq!(client.not_after().await.unwrap(), 0);
    assert_eq!(client.next_renewal().await.unwrap(), 0);
    assert!(client.keystores().await.unwrap().is_empty());
    assert_eq!(client.last_error().await.unwrap(), "CA unreachable");

    // Properties are live: a new status shows without re-exporting.
    let mut s = status();
    s.identities[0].serial = Some("ffee".to_owned());
    s.identities[0].last_error = Some("broker did not reload".to_owned());
    h.fake.set_status(s);
    assert_eq!(broker.serial().await.unwrap(), "ffee");
    assert_eq!(broker.last_error().await.unwrap(), "broker did not reload");
}

#[tokio::test]
async fn refresh_identities_adds_and_removes_objects() {
    let h = start().await;
    let mut s = status();
    s.identities.remove(1);
    s.identities.push(identity("connect", Some("01")));
    h.fake.set_status(s.clone());
    h.service.refresh_identities(&s).await.unwrap();

    let connect = identity_proxy(&h, "connect").await;
    assert_eq!(connect.serial().await.unwrap(), "01");
    let gone = identity_proxy(&h, "kafka.client-1").await;
    let err = gone.name().await.unwrap_err();
    assert!(
        matches!(err, zbus::Error::FDO(ref e) if matches!(**e, zbus::fdo::Error::UnknownObject(_))),
        "{err:?}"
    );
    assert_eq!(
        h.manager.list_identities().await.unwrap(),
        vec!["broker".to_owned(), "connect".to_owned()]
    );
    // Refreshing again with the same set is a no-op apart from change signals.
    h.service.refresh_identities(&s).await.unwrap();
    assert_eq!(
        identity_proxy(&h, "broker").await.serial().await.unwrap(),
        "0a1b2c"
    );
}

#[tokio::test]
async fn signals_reach_subscribers() {
    let h = start().await;
    let mut rotated = h.manager.receive_certificate_rotated().await.unwrap();
    let mut reload_failed = h.manager.receive_reload_failed().await.unwrap();
    let mut trust = h.manager.receive_trust_bundle_changed().await.unwrap();

    h.service
        .emit_rotated("broker", "0a1b2c", at(1_900_000_000))
        .await
        .unwrap();
    let signal = next(&mut rotated).await;
    let args = signal.args().unwrap();
    assert_eq!(args.identity(), &"broker");
    assert_eq!(args.serial(), &"0a1b2c");
    assert_eq!(*args.not_after_unix(), 1_900_000_000);

    h.service
        .emit_reload_failed("broker", "DescribeConfigs timed out")
        .await
        .unwrap();
    let signal = next(&mut reload_failed).await;
    let args = signal.args().unwrap();
    assert_eq!(args.identity(), &"broker");
    assert_eq!(args.reason(), &"DescribeConfigs timed out");

    h.service.emit_trust_bundle_changed(7).await.unwrap();
    let signal = next(&mut trust).await;
    assert_eq!(*signal.args().unwrap().version(), 7);
}

#[tokio::test]
async fn renew_errors() {
    let h = start().await;

    let (name, message) = method_error(h.manager.renew("nope").await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.NotFound");
    assert!(message.contains("nope"), "{message}");

    for bad in ["", "a/b", "tab\there", &"x".repeat(300)] {
        let (name, _) = method_error(h.manager.renew(bad).await.unwrap_err());
        assert_eq!(name, "org.leafd.leafd1.Error.InvalidArgument", "{bad:?}");
    }
    assert!(h.fake.renewed.lock().unwrap().is_empty());

    // The daemon says NotFound although the status listed it (raced with a reload).
    let fake = Fake::new();
    let mut s = status();
    s.identities.push(identity("vanished", None));
    s.identities.push(identity("broken", None));
    fake.set_status(s);
    let h = start_with(fake).await;
    let (name, _) = method_error(h.manager.renew("vanished").await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.NotFound");

    // Internal failures reach the caller without their details.
    let (name, message) = method_error(h.manager.renew("broken").await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.Failed");
    assert_eq!(message, INTERNAL_ERROR);
    assert!(!message.contains("pin"));
}

#[tokio::test]
async fn reload_config_error_is_shown() {
    let h = start().await;
    *h.fake.reload_error.lock().unwrap() =
        Some("/etc/leafd/leafd.toml:3:1: unknown field `foo`".to_owned());
    let (name, message) = method_error(h.manager.reload_config().await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.Failed");
    assert!(message.contains("unknown field `foo`"), "{message}");
}

#[tokio::test]
async fn busctl_introspects_the_objects() {
    let h = start().await;
    let o = busctl(h.bus.address(), &["introspect", BUS_NAME, MANAGER_PATH]).await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "org.leafd.leafd1.Manager",
        ".ListIdentities",
        ".GetStatus",
        ".Renew",
        ".ReloadConfig",
        ".Version",
        ".Backend",
        ".HostKeyNonExportable",
        ".CertificateRotated",
        ".ReloadFailed",
        ".TrustBundleChanged",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    let path = identity_path("broker").unwrap();
    let o = busctl(h.bus.address(), &["introspect", BUS_NAME, path.as_str()]).await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "org.leafd.leafd1.Identity",
        ".Name",
        ".Serial",
        ".NotBefore",
        ".NotAfter",
        ".NextRenewal",
        ".Issuer",
        ".Keystores",
        ".LastError",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    let o = busctl(h.bus.address(), &["tree", BUS_NAME]).await;
    assert!(
        text(&o).contains("/org/leafd/leafd1/identity/kafka_2eclient_2d1"),
        "{}",
        text(&o)
    );
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

const RENEW: &[&str] = &[
    "call",
    BUS_NAME,
    MANAGER_PATH,
    "org.leafd.leafd1.Manager",
    "Renew",
    "s",
    "broker",
];
const RELOAD: &[&str] = &[
    "call",
    BUS_NAME,
    MANAGER_PATH,
    "org.leafd.leafd1.Manager",
    "ReloadConfig",
];
const LIST: &[&str] = &[
    "call",
    BUS_NAME,
    MANAGER_PATH,
    "org.leafd.leafd1.Manager",
    "ListIdentities",
];

#[tokio::test]
async fn non_admin_callers_are_denied() {
    assert!(
        is_root(),
        "this test runs a D-Bus client as another user (setpriv): run it as root (tests/run does in CI)"
    );
    let h = start().await;
    let address = h.bus.address().to_owned();
    let (renew, reload, list) = tokio::task::spawn_blocking(move || {
        (
            run_as(Some(&[]), &address, RENEW),
            run_as(Some(&[]), &address, RELOAD),
            run_as(Some(&[]), &address, LIST),
        )
    })
    .await
    .unwrap();
    for o in [&renew, &reload] {
        // busctl prints only the error message, not its name.
        let out = text(o);
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains("needs root or membership in the leafd-admin group"),
            "{out}"
        );
    }
    // dbus-send prints the error name: check it exactly.
    let address = h.bus.address().to_owned();
    let (renew, reload) = tokio::task::spawn_blocking(move || {
        (
            dbus_send_as_nobody(
                &address,
                &["org.leafd.leafd1.Manager.Renew", "string:broker"],
            ),
            dbus_send_as_nobody(&address, &["org.leafd.leafd1.Manager.ReloadConfig"]),
        )
    })
    .await
    .unwrap();
    for o in [&renew, &reload] {
        let out = text(o);
        assert!(!o.status.success(), "{out}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.starts_with("Error org.leafd.leafd1.Error.AccessDenied: "),
            "{out}"
        );
    }
    assert!(h.fake.renewed.lock().unwrap().is_empty());
    assert_eq!(*h.fake.reloads.lock().unwrap(), 0);
    // Reads stay open.
    let out = text(&list);
    assert!(list.status.success(), "{out}");
    assert!(out.contains("\"broker\""), "{out}");
}

#[tokio::test]
async fn admin_group_members_are_allowed() {
    assert!(
        is_root(),
        "this test runs a D-Bus client as another user (setpriv): run it as root (tests/run does in CI)"
    );
    let h = start().await;
    let address = h.bus.address().to_owned();
    let (renew, reload) = tokio::task::spawn_blocking(move || {
        (
            run_as(Some(&[ADMIN_GID]), &address, RENEW),
            run_as(Some(&[100, ADMIN_GID]), &address, RELOAD),
        )
    })
    .await
    .unwrap();
    assert!(renew.status.success(), "{}", text(&renew));
    assert!(reload.status.success(), "{}", text(&reload));
    assert_eq!(*h.fake.renewed.lock().unwrap(), vec!["broker".to_owned()]);
    assert_eq!(*h.fake.reloads.lock().unwrap(), 1);
}
