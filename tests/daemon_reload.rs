//! The daemon's reload actions end to end: the `leafd` binary rotates, tells an in-test
//! Kafka admin server (real frames) to switch store locations, which makes a JDK TLS server
//! reload the stores as a broker does, and leafd checks the served serial. Also the alarms
//! (rejected change, unreachable broker, serial never served) and the exec and signal
//! actions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code drives real processes: failures panic, deadlines are wall-clock"
)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Setup;
use common::java::{JavaTlsServer, Store};
use common::kafka_broker::{FakeBroker, Hook, Listener, SaslServer};
use common::tls::TestPki;
use serde_json::Value;

const BROKER_ID: i32 = 1;
const KEYSTORE_CONFIG: &str = "listener.name.ssl.ssl.keystore.location";
const TRUSTSTORE_CONFIG: &str = "listener.name.ssl.ssl.truststore.location";

/// A throwaway self-signed PEM keystore so the JDK server can start before leafd has
/// written anything.
fn bootstrap_keystore(dir: &Path) -> (Store, Store) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bootstrap");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ks = dir.join("bootstrap.pem");
    let ts = dir.join("bootstrap-trust.pem");
    std::fs::write(&ks, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    std::fs::write(&ts, cert.pem()).unwrap();
    (Store::pem(ks), Store::pem(ts))
}

struct Rig {
    java: Arc<Mutex<JavaTlsServer>>,
    broker: FakeBroker,
    /// Whether the broker's success hook reloads the JDK server.
    reloads_java: Arc<Mutex<bool>>,
}

impl Rig {
    async fn start(dir: &Path) -> Rig {
        Self::start_with(dir, Listener::default()).await
    }

    async fn start_with(dir: &Path, listener: Listener) -> Rig {
        let (ks, ts) = bootstrap_keystore(dir);
        let java = tokio::task::spawn_blocking(move || JavaTlsServer::start(&ks, &ts))
            .await
            .unwrap();
        let java = Arc::new(Mutex::new(java));
        let broker = FakeBroker::start_with(BROKER_ID, listener).await;
        let reloads_java = Arc::new(Mutex::new(true));
        let hook: Hook = {
            let (java, reloads_java) = (Arc::clone(&java), Arc::clone(&reloads_java));
            Arc::new(move |configs: &[(String, Option<String>)]| {
                let get = |name: &str| {
                    configs
                        .iter()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, v)| v.clone())
                        .ok_or_else(|| format!("no {name} in {configs:?}"))
                };
                let (keystore, truststore) = (get(KEYSTORE_CONFIG)?, get(TRUSTSTORE_CONFIG)?);
                if !*reloads_java.lock().unwrap() {
                    return Ok(());
                }
                java.lock()
                    .unwrap()
                    .reload(&Store::pem(keystore), &Store::pem(truststore))
                    .map(drop)
            })
        };
        broker.set_hook(Some(hook));
        Rig {
            java,
            broker,
            reloads_java,
        }
    }

    fn java_addr(&self) -> std::net::SocketAddr {
        self.java.lock().unwrap().addr()
    }

    /// The test config reloading through this rig's broker and verifying at its JDK server.
    fn config(&self, lifetime: &str) -> String {
        config(
            &self.broker.addr().to_string(),
            &self.java_addr().to_string(),
            lifetime,
        )
    }
}

fn config(bootstrap: &str, verify: &str, lifetime: &str) -> String {
    format!(
        r#"[daemon]
state-directory = "@DIR@/state"
testing-short-lifetimes = true

[host]
hostname = "broker1"
broker-id = {BROKER_ID}

[[identity]]
name = "broker"
subject = "CN=broker1,O=Example"
sans = ["localhost", "ip:127.0.0.1"]
lifetime = "{lifetime}"
renew-at = "50%"
reload-retry-for = "4s"
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/broker.pem"
[[identity.truststore]]
format = "pem"
path = "@DIR@/tls/trust.pem"

[[identity.reload]]
type = "kafka"
bootstrap = "{bootstrap}"
listener = "SSL"

[identity.verify]
addresses = ["{verify}"]
server-name = "localhost"
timeout = "3s"
"#
    )
}

fn status(s: &Setup) -> Value {
    std::fs::read_to_string(s.path("state/status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn reload_of(s: &Setup) -> Value {
    status(s)["identities"][0]["reload"].clone()
}

async fn wait(s: &mut Setup, what: &str, timeout: Duration, f: impl Fn(&Setup) -> bool) {
    let deadline = Instant::now() + timeout;
    while !f(s) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status {}\nlog:\n{}",
            status(s),
            s.log()
        );
        assert!(s.running(), "leafd exited waiting for {what}:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reload_is(s: &Setup, state: &str, serial: &str) -> bool {
    let r = reload_of(s);
    r["state"] == state && r["serial"] == serial
}

/// Waits until the current leaf (a new one, if `after` names the previous serial) has the
/// reload state `state`.
async fn wait_reload(
    s: &mut Setup,
    what: &str,
    timeout: Duration,
    state: &str,
    after: Option<&str>,
) {
    wait(s, what, timeout, |s| {
        let serial = serial(s);
        !serial.is_empty() && after != Some(serial.as_str()) && reload_is(s, state, &serial)
    })
    .await;
}

fn serial(s: &Setup) -> String {
    s.identity_state("broker")["serial"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn served(addr: std::net::SocketAddr) -> String {
    leafd::reload::served_serial(addr, "localhost", Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reloads_broker_alternating_paths_and_verifies_serial() {
    let mut s = Setup::new("");
    let rig = Rig::start(s.dir.path()).await;
    s.write_config(&rig.config("8s"));
    s.start();
    wait_reload(
        &mut s,
        "the first reload verified",
        Duration::from_secs(30),
        "verified",
        None,
    )
    .await;
    let first = serial(&s);
    assert_eq!(served(rig.java_addr()).await, first);
    assert!(s.log().contains("broker reload verified"), "{}", s.log());

    // The second rotation (renew-at 50% of 8 s) goes to the alternate paths.
    wait_reload(
        &mut s,
        "the second reload verified",
        Duration::from_secs(30),
        "verified",
        Some(&first),
    )
    .await;
    let second = serial(&s);
    assert_eq!(served(rig.java_addr()).await, second);

    let tls = s.path("tls");
    let real: Vec<(bool, String)> = rig
        .broker
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.resource_name, BROKER_ID.to_string());
            let ks = r
                .configs
                .iter()
                .find(|c| c.0 == KEYSTORE_CONFIG)
                .and_then(|c| c.2.clone())
                .unwrap();
            (r.validate_only, ks)
        })
        .collect();
    let primary = tls.join("broker.pem").display().to_string();
    let alternate = tls.join("broker.alt.pem").display().to_string();
    assert_eq!(
        real[..4],
        [
            (true, primary.clone()),
            (false, primary.clone()),
            (true, alternate.clone()),
            (false, alternate.clone())
        ],
        "pre-flight then real request, alternating paths: {real:?}"
    );
    let st = status(&s);
    assert_eq!(
        st["identities"][0]["outputs"][0].as_str().unwrap(),
        alternate,
        "status names the stores in use"
    );
    assert!(!st["summary"].as_str().unwrap().contains("ALARM"), "{st}");
    assert_eq!(
        s.identity_state("broker")["broker_alternate"],
        Value::Bool(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_change_keeps_previous_path_and_raises_alarm() {
    let mut s = Setup::new("");
    let rig = Rig::start(s.dir.path()).await;
    s.write_config(&rig.config("1h"));
    s.start();
    wait_reload(
        &mut s,
        "the first reload verified",
        Duration::from_secs(30),
        "verified",
        None,
    )
    .await;
    let first = serial(&s);

    // The broker refuses the next store; renew by SIGHUP after a config change that forces
    // a new leaf (the lifetime).
    rig.broker
        .reject_next("Validation of dynamic config update of SSLFactory failed");
    s.write_config(&rig.config("2h"));
    s.signal(nix::sys::signal::Signal::SIGHUP);
    wait_reload(
        &mut s,
        "the alarm",
        Duration::from_secs(30),
        "failed",
        Some(&first),
    )
    .await;
    let r = reload_of(&s);
    assert!(
        r["detail"].as_str().unwrap().contains("INVALID_CONFIG"),
        "{r}"
    );
    assert!(
        status(&s)["summary"]
            .as_str()
            .unwrap()
            .contains("ALARM broker reload failed (broker)"),
        "{}",
        status(&s)
    );
    assert!(
        s.log().contains("ALARM: broker reload failed"),
        "{}",
        s.log()
    );
    // The broker still serves the first leaf from the first path, which leafd did not touch.
    assert_eq!(served(rig.java_addr()).await, first);
    let state = s.identity_state("broker");
    assert_eq!(state["broker_alternate"], Value::Bool(false), "{state}");
    assert_eq!(state["written_alternate"], Value::Bool(true), "{state}");
    let primary = std::fs::read_to_string(s.path("tls/broker.pem")).unwrap();
    let leaf = pem::parse_many(&primary).unwrap();
    let summary = leafd::x509::summarize(leaf[1].contents(), "leaf").unwrap();
    assert_eq!(summary.serial, first, "the served file was left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_retried_then_alarms() {
    let mut s = Setup::new("");
    let dir = tempfile::tempdir().unwrap();
    let (ks, ts) = bootstrap_keystore(dir.path());
    let java = tokio::task::spawn_blocking(move || JavaTlsServer::start(&ks, &ts))
        .await
        .unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    s.write_config(&config(&addr.to_string(), &java.addr().to_string(), "1h"));
    s.start();
    let mut saw_pending = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&s);
        if st["summary"]
            .as_str()
            .is_some_and(|l| l.contains("reload pending (broker)"))
            && reload_of(&s)["detail"]
                .as_str()
                .is_some_and(|d| d.contains("retrying"))
        {
            saw_pending = true;
        }
        if reload_of(&s)["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "no alarm: {st}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_pending,
        "STATUS never showed the pending retry:\n{}",
        s.log()
    );
    assert!(s.log().contains("could not connect"), "{}", s.log());
    assert!(
        reload_of(&s)["detail"]
            .as_str()
            .unwrap()
            .contains(&addr.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_never_served_raises_alarm() {
    let mut s = Setup::new("");
    let rig = Rig::start(s.dir.path()).await;
    *rig.reloads_java.lock().unwrap() = false;
    s.write_config(&rig.config("1h"));
    s.start();
    wait_reload(&mut s, "the alarm", Duration::from_secs(40), "failed", None).await;
    let detail = reload_of(&s)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("does not match"), "{detail}");
    assert!(detail.contains(&serial(&s)), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_signal_actions() {
    let mut s = Setup::new("");
    let out = s.path("hook.out");
    let hook = s.path("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nenv | grep ^LEAFD_ | sort > {out}\necho ran >> {out}\n",
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let failing = s.path("failing.sh");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'store not accepted' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A process that counts SIGHUPs into a file.
    let hups = s.path("hups");
    let mut sleeper = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap 'echo hup >> {}' HUP; while :; do sleep 0.05; done",
            hups.display()
        ))
        .spawn()
        .unwrap();
    std::fs::write(s.path("kafka.pid"), format!("{}\n", sleeper.id())).unwrap();
    let base = |lifetime: &str, actions: &str| {
        format!(
            r#"[daemon]
state-directory = "@DIR@/state"
testing-short-lifetimes = true
[[identity]]
name = "broker"
sans = ["localhost"]
lifetime = "{lifetime}"
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/broker.pem"
{actions}"#
        )
    };
    s.write_config(&base(
        "1h",
        &format!(
            r#"[[identity.reload]]
type = "signal"
pid-file = "@DIR@/kafka.pid"
[[identity.reload]]
type = "exec"
command = ["{}", "--flag"]
timeout = "10s"
"#,
            hook.display()
        ),
    ));
    s.start();
    wait_reload(
        &mut s,
        "the reload",
        Duration::from_secs(30),
        "verified",
        None,
    )
    .await;
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(env.contains("LEAFD_IDENTITY=broker\n"), "{env}");
    assert!(
        env.contains(&format!("LEAFD_SERIAL={}\n", serial(&s))),
        "{env}"
    );
    assert!(
        env.contains(&format!(
            "LEAFD_KEYSTORES={}\n",
            s.path("tls/broker.pem").display()
        )),
        "{env}"
    );
    assert!(env.contains("LEAFD_NOT_AFTER="), "{env}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&hups)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
    {
        assert!(Instant::now() < deadline, "no SIGHUP arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A failing hook: the alarm names its exit status and last stderr line.
    s.write_config(&base(
        "2h",
        &format!(
            "[[identity.reload]]\ntype = \"exec\"\ncommand = [\"{}\"]\n",
            failing.display()
        ),
    ));
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let before = serial(&s);
    wait_reload(
        &mut s,
        "the exec alarm",
        Duration::from_secs(30),
        "failed",
        Some(&before),
    )
    .await;
    let detail = reload_of(&s)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("exit status: 3"), "{detail}");
    assert!(detail.contains("store not accepted"), "{detail}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_admin_connection() {
    const PASSWORD: &str = "scram-secret-do-not-log";
    let mut s = Setup::new("");
    std::fs::write(s.path("scram.pass"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(s.path("wrong.pass"), "not-the-password\n").unwrap();
    let rig = Rig::start_with(
        s.dir.path(),
        Listener {
            tls: None,
            sasl: Some(SaslServer::new(&["SCRAM-SHA-512"], "leafd", PASSWORD)),
        },
    )
    .await;
    let cfg = |lifetime: &str, pass: &str| {
        rig.config(lifetime).replace(
            "listener = \"SSL\"\n",
            &format!(
                "listener = \"SSL\"\nsecurity = \"sasl-plaintext\"\nsasl-mechanism = \"scram-sha-512\"\nsasl-username = \"leafd\"\nsasl-password-file = \"@DIR@/{pass}\"\n"
            ),
        )
    };
    s.write_config(&cfg("1h", "scram.pass"));
    s.start();
    wait_reload(
        &mut s,
        "the reload verified",
        Duration::from_secs(30),
        "verified",
        None,
    )
    .await;
    assert_eq!(served(rig.java_addr()).await, serial(&s));

    // A wrong password: not retried, alarm, and no password in the log or status.
    s.write_config(&cfg("2h", "wrong.pass"));
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let before = serial(&s);
    wait_reload(
        &mut s,
        "the alarm",
        Duration::from_secs(30),
        "failed",
        Some(&before),
    )
    .await;
    let detail = reload_of(&s)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.to_lowercase().contains("authentication failed"),
        "{detail}"
    );
    let everything = format!("{}{}", s.log(), status(&s));
    for secret in [PASSWORD, "not-the-password"] {
        assert!(
            !everything.contains(secret),
            "password leaked:\n{everything}"
        );
    }
    assert!(
        !s.log().contains("retrying"),
        "authentication failures are not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_admin_connection_with_a_leafd_client_identity() {
    // First run: leafd creates its CA and the admin identity's pem keystore.
    let admin = r#"[daemon]
state-directory = "@DIR@/state"
testing-short-lifetimes = true
[[identity]]
name = "admin"
subject = "CN=leafd-admin"
eku = ["client-auth"]
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/admin.pem"
"#;
    let mut s = Setup::new(admin);
    s.start();
    s.wait_for("the admin keystore", Duration::from_secs(30), |s| {
        s.path("tls/admin.pem").exists()
    });
    s.stop();
    let root = pem::parse(std::fs::read(s.path("state/ca/root.crt")).unwrap()).unwrap();

    // The broker's admin listener requires a client certificate from leafd's CA and
    // presents one from another CA, which leafd trusts through ca-file.
    let pki = TestPki::new();
    std::fs::write(s.path("broker-ca.pem"), pki.ca_pem()).unwrap();
    let broker = FakeBroker::start_with(
        BROKER_ID,
        Listener {
            tls: Some(pki.server_config_with_client_roots(&[root.contents().to_vec()])),
            sasl: None,
        },
    )
    .await;
    s.write_config(&format!(
        r#"{admin}
[[identity]]
name = "broker"
sans = ["localhost"]
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/broker.pem"
[[identity.reload]]
type = "kafka"
bootstrap = "{}"
broker-id = {BROKER_ID}
listener = "SSL"
security = "ssl"
server-name = "localhost"
client-identity = "admin"
ca-file = "@DIR@/broker-ca.pem"
"#,
        broker.addr()
    ));
    s.start();
    wait(
        &mut s,
        "the reload over mTLS",
        Duration::from_secs(30),
        |s| {
            let st = status(s);
            st["identities"][1]["reload"]["state"] == "verified"
        },
    )
    .await;
    assert!(
        broker.client_certs().iter().all(|c| *c) && !broker.client_certs().is_empty(),
        "leafd presented its client certificate: {:?}",
        broker.client_certs()
    );
    assert_eq!(
        broker.requests().last().unwrap().configs[0].2.as_deref(),
        Some(s.path("tls/broker.pem").to_str().unwrap())
    );
}
