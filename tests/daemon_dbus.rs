//! The `leafd` binary on a (private) system bus: every Manager method and property and the
//! Identity objects of a running daemon, its signals, and the `systemd` reload actions
//! against an in-test `org.freedesktop.systemd1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    missing_docs,
    reason = "test code drives real processes: failures panic, deadlines are wall-clock"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Setup;
use common::dbus::PrivateBus;
use futures_util::StreamExt as _;
use leafd::dbus::{IdentityProxy, ManagerProxy, identity_path};
use leafd::state::status::Status;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;

/// What the fake systemd was asked.
#[derive(Default)]
struct Calls {
    calls: Vec<String>,
    next_job: u32,
    /// The result the next jobs finish with.
    result: String,
}

struct FakeSystemd {
    calls: Arc<Mutex<Calls>>,
}

impl FakeSystemd {
    fn job(&self, call: String, unit: String, emitter: &SignalEmitter<'_>) -> OwnedObjectPath {
        let (id, result) = {
            let mut c = self.calls.lock().unwrap();
            c.calls.push(call);
            c.next_job += 1;
            (c.next_job, c.result.clone())
        };
        let path =
            OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        let (emitter, job) = (emitter.to_owned(), path.clone());
        // The job finishes after the reply, as systemd's do.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            FakeSystemd::job_removed(&emitter, id, job, unit, result)
                .await
                .unwrap();
        });
        path
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    async fn subscribe(&self) {}

    async fn reload_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.job(format!("ReloadUnit {name} {mode}"), name, &emitter)
    }

    async fn restart_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.job(format!("RestartUnit {name} {mode}"), name, &emitter)
    }

    async fn kill_unit(&self, name: String, whom: String, signal: i32) {
        self.calls
            .lock()
            .unwrap()
            .calls
            .push(format!("KillUnit {name} {whom} {signal}"));
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

const CONFIG: &str = r#"[daemon]
state-directory = "@DIR@/state"
testing-short-lifetimes = true

[[identity]]
name = "broker"
subject = "CN=broker1,O=Example"
sans = ["localhost"]
lifetime = "LIFETIME"
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/broker.pem"
[[identity.reload]]
type = "systemd"
unit = "kafka.service"
[[identity.reload]]
type = "signal"
unit = "kafka.service"
signal = "USR1"
[[identity.reload]]
type = "systemd"
unit = "kafka-connect.service"
action = "restart"

[[identity]]
name = "client"
sans = ["client.example.net"]
[[identity.keystore]]
format = "pkcs12"
path = "@DIR@/tls/client.p12"
password-file = "@DIR@/store.pass"
"#;

struct Rig {
    s: Setup,
    _bus: PrivateBus,
    _systemd: zbus::Connection,
    calls: Arc<Mutex<Calls>>,
    manager: ManagerProxy<'static>,
}

async fn start() -> Rig {
    let bus = PrivateBus::start();
    let calls = Arc::new(Mutex::new(Calls {
        result: "done".into(),
        ..Default::default()
    }));
    let systemd = zbus::connection::Builder::address(bus.address())
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at(
            "/org/freedesktop/systemd1",
            FakeSystemd {
                calls: Arc::clone(&calls),
            },
        )
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut s = Setup::new(&CONFIG.replace("LIFETIME", "1h"));
    s.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.address())]);
    let manager = leafd::dbus::connect_manager(Some(bus.address()))
        .await
        .unwrap();
    let rig = Rig {
        s,
        _bus: bus,
        _systemd: systemd,
        calls,
        manager,
    };
    rig.wait("both identities rotated and the reload verified", |st| {
        st.identities.iter().all(|i| i.serial.is_some())
            && st.identities[0].reload.as_ref().is_some_and(|r| {
                r.serial == *st.identities[0].serial.as_ref().unwrap()
                    && r.state == leafd::state::status::ReloadState::Verified
            })
    })
    .await;
    rig
}

impl Rig {
    async fn status(&self) -> Option<Status> {
        let json = self.manager.get_status().await.ok()?;
        serde_json::from_str(&json).ok()
    }

    async fn wait(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.status().await
                && f(&st)
            {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}\nlog:\n{}",
                self.status().await,
                self.s.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn identity(&self, name: &str) -> IdentityProxy<'static> {
        IdentityProxy::builder(self.manager.inner().connection())
            .path(identity_path(name).unwrap())
            .unwrap()
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .unwrap()
    }
}

fn method_error(e: zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            (name.as_str().to_owned(), message.unwrap_or_default())
        }
        other => panic!("expected a D-Bus method error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_and_identities_of_a_running_daemon() {
    let rig = start().await;
    let m = &rig.manager;
    assert_eq!(m.list_identities().await.unwrap(), ["broker", "client"]);
    assert_eq!(m.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(m.backend().await.unwrap(), "soft");
    assert!(!m.host_key_non_exportable().await.unwrap());

    let st = rig.status().await.unwrap();
    let broker = rig.identity("broker").await;
    let state = rig.s.identity_state("broker");
    assert_eq!(broker.name().await.unwrap(), "broker");
    assert_eq!(
        broker.serial().await.unwrap(),
        state["serial"].as_str().unwrap()
    );
    let (nb, na) = (
        broker.not_before().await.unwrap(),
        broker.not_after().await.unwrap(),
    );
    assert!(nb > 1_700_000_000 && na > nb, "{nb} {na}");
    assert!(broker.next_renewal().await.unwrap() > nb);
    let issuer = broker.issuer().await.unwrap();
    assert!(issuer.contains("CN="), "{issuer}");
    assert_eq!(Some(issuer), st.identities[0].issuer);
    assert_eq!(
        broker.keystores().await.unwrap(),
        [rig.s.path("tls/broker.pem").display().to_string()]
    );
    assert_eq!(broker.last_error().await.unwrap(), "");
    assert_eq!(
        st.identities[0].subject.as_deref(),
        Some("CN=broker1,O=Example")
    );

    // The systemd actions ran in order, the job waited for.
    let calls = rig.calls.lock().unwrap().calls.clone();
    assert_eq!(
        calls[..3],
        [
            "ReloadUnit kafka.service replace".to_owned(),
            "KillUnit kafka.service main 10".to_owned(),
            "RestartUnit kafka-connect.service replace".to_owned(),
        ],
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_reload_config_and_signals() {
    let rig = start().await;
    let m = &rig.manager;
    let mut rotated = m.receive_certificate_rotated().await.unwrap();
    let mut reload_failed = m.receive_reload_failed().await.unwrap();

    let before = rig.s.rotations("client");
    m.renew("client").await.unwrap();
    assert_eq!(
        rig.s.rotations("client"),
        before + 1,
        "Renew returns after the rotation"
    );
    let sig = tokio::time::timeout(Duration::from_secs(10), rotated.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(args.identity, "client");
    assert_eq!(
        args.serial,
        rig.s.identity_state("client")["serial"].as_str().unwrap()
    );

    let (name, _) = method_error(m.renew("nope").await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.NotFound");
    let (name, _) = method_error(m.renew("Bad Name!").await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.InvalidArgument");

    // A failed systemd job raises the alarm: ReloadFailed, status, STATUS line.
    rig.calls.lock().unwrap().result = "failed".into();
    m.renew("broker").await.unwrap();
    let sig = tokio::time::timeout(Duration::from_secs(20), reload_failed.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(args.identity, "broker");
    assert!(args.reason.contains("kafka.service"), "{}", args.reason);
    assert!(args.reason.contains("\"failed\""), "{}", args.reason);
    let st = rig
        .wait("the alarm in the status", |st| st.summary.contains("ALARM"))
        .await;
    assert!(
        st.summary.contains("broker reload failed (broker)"),
        "{}",
        st.summary
    );

    // A broken config is refused over D-Bus and the daemon keeps running.
    rig.s.write_config("[[identity]]\nname = \"BROKEN\"\n");
    let (name, message) = method_error(m.reload_config().await.unwrap_err());
    assert_eq!(name, "org.leafd.leafd1.Error.Failed");
    assert!(message.contains("invalid identity name"), "{message}");
    assert_eq!(m.list_identities().await.unwrap(), ["broker", "client"]);

    // A good one with a new identity: a new object appears.
    rig.s.write_config(&format!(
        "{}\n[[identity]]\nname = \"extra\"\nsans = [\"extra.example.net\"]\n[[identity.keystore]]\nformat = \"pem\"\npath = \"@DIR@/tls/extra.pem\"\n",
        CONFIG.replace("LIFETIME", "1h")
    ));
    m.reload_config().await.unwrap();
    rig.wait("the extra identity", |st| {
        st.identities.len() == 3 && st.identities[2].serial.is_some()
    })
    .await;
    assert_eq!(
        m.list_identities().await.unwrap(),
        ["broker", "client", "extra"]
    );
    let extra = rig.identity("extra").await;
    assert_eq!(
        extra.serial().await.unwrap(),
        rig.s.identity_state("extra")["serial"].as_str().unwrap()
    );
}

/// Runs the real `leafctl` against the rig's bus.
async fn leafctl(rig: &Rig, args: &[&str]) -> (i32, String) {
    let address = rig._bus.address().to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leafctl"))
            .arg("--bus-address")
            .arg(&address)
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafctl_against_the_running_daemon() {
    let rig = start().await;
    let serial = rig.s.identity_state("broker")["serial"]
        .as_str()
        .unwrap()
        .to_owned();

    let (rc, out) = leafctl(&rig, &["status"]).await;
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("broker") && out.contains("client"), "{out}");
    assert!(out.contains(&serial), "{out}");

    let (rc, out) = leafctl(&rig, &["status", "--json"]).await;
    assert_eq!(rc, 0, "{out}");
    let st: Status = serde_json::from_str(&out).unwrap();
    assert_eq!(st.identities[0].serial.as_deref(), Some(serial.as_str()));

    let (rc, out) = leafctl(&rig, &["list"]).await;
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("broker") && out.contains("client"), "{out}");

    let (rc, out) = leafctl(&rig, &["show", "broker"]).await;
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("CN=broker1,O=Example"), "{out}");

    let (rc, out) = leafctl(&rig, &["principal", "broker"]).await;
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("User:CN=broker1,O=Example"), "{out}");

    // renew --wait returns once the broker reload is verified for the new serial.
    let (rc, out) = leafctl(&rig, &["renew", "broker", "--wait", "--timeout", "30s"]).await;
    assert_eq!(rc, 0, "{out}");
    let new = rig.s.identity_state("broker")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, serial);
    let st = rig.status().await.unwrap();
    let reload = st.identities[0].reload.as_ref().unwrap();
    assert_eq!(reload.serial, new);
    assert_eq!(reload.state, leafd::state::status::ReloadState::Verified);

    // A failing reload makes renew --wait fail.
    rig.calls.lock().unwrap().result = "failed".into();
    let (rc, out) = leafctl(&rig, &["renew", "broker", "--wait", "--timeout", "30s"]).await;
    assert_eq!(rc, 1, "{out}");

    let (rc, out) = leafctl(&rig, &["renew", "nope"]).await;
    assert_eq!(rc, 64, "{out}");

    // Not root and not in leafd-admin: the daemon refuses.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs leafctl as another user (setpriv): run it as root (tests/run does in CI)"
    );
    let address = rig._bus.address().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_leafctl"))
            .args(["--bus-address", &address, "renew", "client"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{text}");
    assert!(text.contains("leafd-admin"), "{text}");
}
