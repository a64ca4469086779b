//! leafd against a real Apache Kafka broker (tests/common/real_kafka.rs): the `leafd` binary
//! writes a broker identity's PKCS#12 stores, the broker is started on exactly those files
//! (its `server.properties` lines come from `leafctl kafka-config`, passwords by
//! `DirectoryConfigProvider` reference), and every rotation, driven with `leafctl renew
//! broker --wait` over a private bus, is pushed to the broker by leafd's own admin client
//! (SASL_SSL, SCRAM-SHA-512, the broker certificate checked against leafd's root) and
//! checked at the SSL listener by leafd's verify and independently with `openssl s_client`.
//!
//! - `reload_alternate_five_times`, `reload_same_path_five_times`: five rotations each,
//!   every one accepted by the broker and served.
//! - `refused_store_keeps_the_old_serial`: a keystore whose SANs shrink (allowed on leafd's
//!   side, not on the broker's) is refused in the validateOnly pre-flight; the broker keeps
//!   serving the old serial from the untouched file and leafd raises the alarm.
//! - `traffic_during_ten_rotations`: a producer authenticated by a second leafd identity
//!   sends continuously over mutual TLS while the broker identity rotates ten times.
//!
//! `leafctl renew` is a D-Bus call the daemon allows to root and `leafd-admin` only: run as
//! root (tests/run does).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code drives real processes: failures panic, deadlines are wall-clock"
)]

mod common;

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::daemon::{PASSWORD, Setup, bytes, run_bin};
use common::dbus::PrivateBus;
use common::java::Store;
use common::real_kafka::{
    ADMIN_USER, DEFAULT_ADMIN_PASSWORD, KafkaConfig, RealKafka, ReservedPorts, StoreProps,
};
use serde_json::Value;

/// The broker's node id (the fixture's default) and leafd's `[host] broker-id`.
const BROKER_ID: &str = "1";
const SANS: &str = r#"["localhost", "127.0.0.1"]"#;
const KEYSTORE_CONFIG: &str = "listener.name.ssl.ssl.keystore.location";
const TRUSTSTORE_CONFIG: &str = "listener.name.ssl.ssl.truststore.location";
/// leafd's log line when the broker accepted an IncrementalAlterConfigs (after the
/// validateOnly pre-flight).
const ACCEPTED: &str = "kafka broker accepted new store locations";
/// The principal of the leafd client identity that administers the broker over SSL.
const SSL_ADMIN_PRINCIPAL: &str = "User:CN=leafd-admin,OU=admins,O=Example";
const PRODUCER_PRINCIPAL: &str = "User:CN=leafd producer,OU=clients,O=Example";
const TOPIC: &str = "leafd-rotation-traffic";
/// leafd's first reload waits for the broker to start (unreachable, retried with backoff).
const FIRST_RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
const RENEW_TIMEOUT: &str = "60s";

/// leafd's configuration: the broker identity with its kafka reload and verify, and
/// optionally a client-only identity for the producer.
fn config(
    mode: &str,
    ssl: SocketAddr,
    sasl_ssl: SocketAddr,
    sans: &str,
    extra: &str,
    producer: bool,
) -> String {
    let mut text = format!(
        r#"[daemon]
state-directory = "@DIR@/state"
testing-short-lifetimes = true

[host]
hostname = "broker1"
broker-id = {BROKER_ID}

[[identity]]
name = "broker"
subject = "CN=localhost,OU=kafka,O=Example"
sans = {sans}
lifetime = "1h"
reload-retry-for = "2m"
{extra}
[[identity.keystore]]
format = "pkcs12"
path = "@DIR@/tls/broker.p12"
password-file = "@DIR@/secrets/broker.pass"
[[identity.truststore]]
format = "pkcs12"
path = "@DIR@/tls/truststore.p12"
password-file = "@DIR@/secrets/broker.pass"

[[identity.reload]]
type = "kafka"
bootstrap = "{sasl_ssl}"
listener = "SSL"
mode = "{mode}"
security = "sasl-ssl"
server-name = "localhost"
ca-file = "@DIR@/state/ca/root.crt"
sasl-mechanism = "scram-sha-512"
sasl-username = "{ADMIN_USER}"
sasl-password-file = "@DIR@/secrets/admin.pass"
timeout = "10s"

[identity.verify]
addresses = ["{ssl}"]
server-name = "localhost"
timeout = "20s"
"#
    );
    if producer {
        text.push_str(
            r#"
[[identity]]
name = "producer"
subject = "CN=leafd producer,OU=clients,O=Example"
eku = ["client-auth"]
lifetime = "1h"
[[identity.keystore]]
format = "pkcs12"
path = "@DIR@/tls/producer.p12"
password-file = "@DIR@/secrets/broker.pass"
[[identity.truststore]]
format = "pkcs12"
path = "@DIR@/tls/producer-trust.p12"
password-file = "@DIR@/secrets/broker.pass"
"#,
        );
    }
    text
}

/// Serials compared as numbers written in hex: case and leading zeros do not matter.
fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim()
            .to_ascii_lowercase()
            .trim_start_matches('0')
            .to_owned()
    };
    !a.trim().is_empty() && norm(a) == norm(b)
}

/// The serial of the certificate served at `addr`, read by `openssl s_client` (no client
/// certificate: under TLS 1.3 the server's certificate arrives first). The chain must also
/// verify against `ca` (leafd's root) for host name `localhost`, name constraints included.
fn openssl_served_serial(addr: SocketAddr, ca: &Path) -> String {
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args([
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-showcerts",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client (apt-get install -y openssl)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let begin = stdout
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| {
            panic!("openssl s_client {addr} showed no certificate:\n{stdout}{stderr}")
        });
    let end_marker = "-----END CERTIFICATE-----";
    let end = begin
        + stdout[begin..]
            .find(end_marker)
            .unwrap_or_else(|| panic!("truncated certificate from {addr}:\n{stdout}"))
        + end_marker.len();
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "openssl does not verify the chain served at {addr} against {}:\n{stdout}{stderr}",
        ca.display()
    );
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    x509.stdin
        .take()
        .unwrap()
        .write_all(stdout[begin..end].as_bytes())
        .unwrap();
    let parsed = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&parsed.stdout);
    text.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| {
            panic!(
                "openssl x509 -serial printed {text:?}: {}",
                String::from_utf8_lossy(&parsed.stderr)
            )
        })
        .to_owned()
}

/// leafd's `NOTIFY_SOCKET`, drained by a thread as systemd does: sd_notify sends block
/// once a datagram socket's small queue is full, which would stall leafd's engine loop.
struct Notifications {
    seen: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let mut seen = seen.lock().unwrap();
                        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                        seen.push('\n');
                    }
                }
            })
        };
        Notifications {
            seen,
            stop,
            reader: Some(reader),
        }
    }

    /// Everything received so far, one datagram per line.
    fn all(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// The last `STATUS=` line received.
    fn last_status(&self) -> String {
        self.all()
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("STATUS="))
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// One test's world: leafd (with a private bus and a notify socket) and the broker started
/// on leafd's first stores. Dropping it kills leafd, then stops the broker.
struct Rig {
    name: &'static str,
    started: Instant,
    s: Setup,
    kafka: RealKafka,
    bus: PrivateBus,
    notify: Notifications,
    admin: PathBuf,
    ssl: SocketAddr,
    sasl_ssl: SocketAddr,
    mode: &'static str,
    producer: bool,
    /// (what, when since `started`) for the timing report.
    marks: Vec<(String, Duration)>,
}

impl Rig {
    fn start(name: &'static str, mode: &'static str, producer: bool) -> Rig {
        let started = Instant::now();
        let ports = ReservedPorts::new();
        let (ssl, sasl_ssl) = (ports.ssl_addr(), ports.sasl_ssl_addr());
        let mut s = Setup::new(&config(mode, ssl, sasl_ssl, SANS, "", producer));
        let secrets = s.path("secrets");
        fs::create_dir(&secrets).unwrap();
        // No trailing line break: Kafka's DirectoryConfigProvider reads the file verbatim.
        fs::write(secrets.join("broker.pass"), PASSWORD).unwrap();
        fs::write(secrets.join("admin.pass"), DEFAULT_ADMIN_PASSWORD).unwrap();
        let notify_path = s.path("notify.sock");
        let notify = Notifications::bind(&notify_path);
        let bus = PrivateBus::start();
        s.start_with_env(&[
            ("DBUS_SYSTEM_BUS_ADDRESS", bus.address()),
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ]);
        s.wait_for("leafd's first stores", Duration::from_secs(30), |s| {
            s.rotations("broker") >= 1
                && (!producer || s.rotations("producer") >= 1)
                && s.path("tls/broker.p12").exists()
                && s.path("tls/truststore.p12").exists()
                && s.path("state/ca/root.crt").exists()
        });
        let mut marks = vec![("leafd's first stores".to_owned(), started.elapsed())];
        assert_eq!(
            s.identity_state("broker")["written_alternate"],
            Value::Bool(false),
            "the first stores go to the configured paths"
        );

        // The broker's SSL listener exactly as `leafctl kafka-config` prints it.
        let (rc, out) = run_bin(
            env!("CARGO_BIN_EXE_leafctl"),
            &[
                "kafka-config",
                "--config",
                s.config_path().to_str().unwrap(),
                "broker",
            ],
        );
        assert_eq!(rc, 0, "leafctl kafka-config broker:\n{out}");
        let lines: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let keystore = s.path("tls/broker.p12");
        assert!(
            lines.contains(&format!("{KEYSTORE_CONFIG}={}", keystore.display()).as_str()),
            "kafka-config names the configured keystore path:\n{out}"
        );
        // The SASL_SSL (admin and inter-broker) listener serves the same files, by the same
        // password reference.
        let reference = format!("${{directory:{}:broker.pass}}", secrets.display());
        let store = |file: &str| {
            StoreProps::raw(
                "PKCS12",
                s.path(file).to_str().unwrap(),
                Some(reference.as_str()),
            )
        };
        let (ks, ts) = (store("tls/broker.p12"), store("tls/truststore.p12"));
        let mut broker = KafkaConfig::new(ks.clone(), ts.clone())
            .sasl_ssl_stores(ks, ts)
            .ports(ports)
            .standard_authorizer()
            .super_user(SSL_ADMIN_PRINCIPAL);
        for line in lines {
            broker = broker.property(line);
        }
        let mut kafka = broker.start();
        marks.push(("broker started".to_owned(), started.elapsed()));
        assert_eq!(kafka.ssl_addr(), ssl);
        assert_eq!(kafka.sasl_ssl_addr(), sasl_ssl);
        let text =
            kafka.admin_client_properties(&Store::pkcs12(s.path("tls/truststore.p12"), PASSWORD));
        let admin = kafka.write_properties("admin", &text);
        let mut rig = Rig {
            name,
            started,
            s,
            kafka,
            bus,
            notify,
            admin,
            ssl,
            sasl_ssl,
            mode,
            producer,
            marks,
        };
        let reload = rig.wait_reload("the first reload", "verified", None, FIRST_RELOAD_TIMEOUT);
        rig.mark("first reload verified");
        let serial = rig.serial();
        assert_eq!(
            reload["detail"].as_str().unwrap(),
            format!("serial {serial} served at {ssl}"),
            "{reload}"
        );
        rig.check_served(&serial);
        rig
    }

    fn mark(&mut self, what: &str) {
        self.marks.push((what.to_owned(), self.started.elapsed()));
    }

    /// The current broker leaf's serial according to leafd's state.
    fn serial(&self) -> String {
        self.s.identity_state("broker")["serial"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The broker identity's entry in `status.json`.
    fn status_of_broker(&self) -> Value {
        self.s.status()["identities"][0].clone()
    }

    /// Waits until the current leaf (a new one if `after` names the previous serial) has
    /// reload state `state`; returns that reload status.
    fn wait_reload(
        &mut self,
        what: &str,
        state: &str,
        after: Option<&str>,
        timeout: Duration,
    ) -> Value {
        let what = format!("{what} ({state})");
        self.s.wait_for(&what, timeout, |s| {
            let serial = s.identity_state("broker")["serial"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let reload = &s.status()["identities"][0]["reload"];
            !serial.is_empty()
                && after != Some(serial.as_str())
                && reload["state"] == state
                && reload["serial"] == serial.as_str()
        });
        self.status_of_broker()["reload"].clone()
    }

    /// Runs `leafctl --bus-address <private bus> ARGS...`.
    fn leafctl(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["--bus-address", self.bus.address()];
        all.extend_from_slice(args);
        run_bin(env!("CARGO_BIN_EXE_leafctl"), &all)
    }

    /// `leafctl status --json`, parsed.
    fn leafctl_status(&self) -> Value {
        let (rc, out) = self.leafctl(&["status", "--json"]);
        assert_eq!(rc, 0, "leafctl status --json:\n{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("leafctl status --json: {e}\n{out}"))
    }

    /// The broker's dynamic config `key` for its own id, read with Kafka's admin client.
    fn describe(&self, key: &str) -> String {
        self.kafka
            .client(
                "admin-describe-broker-config",
                &self.admin,
                &[BROKER_ID, key],
            )
            .unwrap_or_else(|e| panic!("describe {key}: {e}"))
    }

    /// The broker serves `serial` on its SSL listener, by openssl.
    fn check_served(&self, serial: &str) {
        let served = openssl_served_serial(self.ssl, &self.s.path("state/ca/root.crt"));
        assert!(
            same_serial(&served, serial),
            "openssl sees serial {served} at {}, leafd's current serial is {serial}",
            self.ssl
        );
    }

    /// One rotation with `leafctl renew broker --wait`, then every check: a new serial, the
    /// broker accepted the new locations exactly once, the reload is verified in
    /// `status.json` and `leafctl status --json`, leafd is on the expected paths, and openssl
    /// sees the new serial. Returns the new serial and how long `renew --wait` took.
    fn rotate(&mut self, n: usize) -> (String, Duration) {
        let before = self.serial();
        let accepted_before = self.s.log().matches(ACCEPTED).count();
        let t = Instant::now();
        let (rc, out) = self.leafctl(&["renew", "broker", "--wait", "--timeout", RENEW_TIMEOUT]);
        let took = t.elapsed();
        assert_eq!(
            rc,
            0,
            "rotation {n}: leafctl renew broker --wait:\n{out}\nstatus: {}\nleafd log:\n{}",
            self.s.status(),
            self.s.log()
        );
        let serial = self.serial();
        assert_ne!(serial, before, "rotation {n} made no new leaf:\n{out}");
        assert!(
            out.contains(&format!("renewed broker: serial {serial}"))
                && out.contains(&format!(
                    "reload verified: serial {serial} served at {}",
                    self.ssl
                )),
            "rotation {n}: leafctl output:\n{out}"
        );

        let status = self.status_of_broker();
        assert_eq!(
            status["reload"]["state"], "verified",
            "rotation {n}: {status}"
        );
        assert_eq!(status["reload"]["serial"], serial.as_str(), "{status}");
        let summary = self.s.status()["summary"].as_str().unwrap().to_owned();
        assert!(!summary.contains("ALARM"), "rotation {n}: {summary}");
        let ctl = self.leafctl_status();
        let ctl_broker = ctl["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "broker")
            .unwrap()
            .clone();
        assert_eq!(ctl_broker["serial"], serial.as_str(), "{ctl}");
        assert_eq!(ctl_broker["reload"]["state"], "verified", "{ctl}");
        assert_eq!(ctl_broker["reload"]["serial"], serial.as_str(), "{ctl}");

        let log = self.s.log();
        assert_eq!(
            log.matches(ACCEPTED).count(),
            accepted_before + 1,
            "rotation {n}: the broker accepted the new locations once:\n{log}"
        );
        let state = self.s.identity_state("broker");
        let keystore = if self.mode == "alternate" {
            // Rotation 1 goes to the alternate paths, rotation 2 back to the configured ones...
            let alternate = n % 2 == 1;
            assert_eq!(
                state["written_alternate"],
                Value::Bool(alternate),
                "{state}"
            );
            assert_eq!(state["broker_alternate"], Value::Bool(alternate), "{state}");
            if alternate {
                "tls/broker.alt.p12"
            } else {
                "tls/broker.p12"
            }
        } else {
            assert_eq!(state["written_alternate"], Value::Bool(false), "{state}");
            "tls/broker.p12"
        };
        assert_eq!(
            status["outputs"][0].as_str().unwrap(),
            self.s.path(keystore).to_str().unwrap(),
            "rotation {n}: {status}"
        );
        self.check_served(&serial);
        (serial, took)
    }

    /// The timing report (shown with --nocapture).
    fn report(&self, rotations: &[Duration]) {
        let mut line = format!("{}:", self.name);
        let mut last = Duration::ZERO;
        for (what, at) in &self.marks {
            line.push_str(&format!(" {what} +{:.1?};", at.saturating_sub(last)));
            last = *at;
        }
        if !rotations.is_empty() {
            let total: Duration = rotations.iter().sum();
            let max = rotations.iter().max().unwrap();
            line.push_str(&format!(
                " {} rotations: mean {:.2?}, max {:.2?};",
                rotations.len(),
                total / u32::try_from(rotations.len()).unwrap(),
                max
            ));
        }
        line.push_str(&format!(
            " total {:.1?} (broker start-up {:.1?}, RSS {:?} KiB)",
            self.started.elapsed(),
            self.kafka.startup_time(),
            self.kafka.rss_kib()
        ));
        eprintln!("{line}");
    }
}

fn five_rotations(name: &'static str, mode: &'static str) {
    let mut rig = Rig::start(name, mode, false);
    let first = rig.serial();
    let mut serials = vec![first];
    let mut took = Vec::new();
    for n in 1..=5 {
        let (serial, t) = rig.rotate(n);
        if mode == "alternate" {
            // The broker's own record of the override: the path leafd just wrote.
            let path = if n % 2 == 1 {
                "tls/broker.alt.p12"
            } else {
                "tls/broker.p12"
            };
            assert_eq!(
                rig.describe(KEYSTORE_CONFIG),
                format!(
                    "OK {KEYSTORE_CONFIG}={} source=DYNAMIC_BROKER_CONFIG",
                    rig.s.path(path).display()
                )
            );
        }
        assert!(!serials.contains(&serial), "serial {serial} repeated");
        serials.push(serial);
        took.push(t);
    }
    rig.mark("5 rotations");
    let (keystore, truststore) = if mode == "alternate" {
        ("tls/broker.alt.p12", "tls/truststore.alt.p12")
    } else {
        ("tls/broker.p12", "tls/truststore.p12")
    };
    assert_eq!(
        rig.describe(KEYSTORE_CONFIG),
        format!(
            "OK {KEYSTORE_CONFIG}={} source=DYNAMIC_BROKER_CONFIG",
            rig.s.path(keystore).display()
        )
    );
    assert_eq!(
        rig.describe(TRUSTSTORE_CONFIG),
        format!(
            "OK {TRUSTSTORE_CONFIG}={} source=DYNAMIC_BROKER_CONFIG",
            rig.s.path(truststore).display()
        )
    );
    let counters = rig.status_of_broker()["counters"].clone();
    assert_eq!(counters["reloads_verified"], 6, "{counters}");
    assert_eq!(counters["reloads_failed"], 0, "{counters}");
    rig.report(&took);
    assert_eq!(rig.s.stop(), 0, "leafd exits cleanly:\n{}", rig.s.log());
}

#[test]
fn reload_alternate_five_times() {
    five_rotations("reload_alternate_five_times", "alternate");
}

#[test]
fn reload_same_path_five_times() {
    five_rotations("reload_same_path_five_times", "same-path");
}

#[test]
fn refused_store_keeps_the_old_serial() {
    let mut rig = Rig::start("refused_store_keeps_the_old_serial", "alternate", false);
    let first = rig.serial();
    let keystore = rig.s.path("tls/broker.p12");
    let truststore = rig.s.path("tls/truststore.p12");
    let (ks_before, ts_before) = (bytes(&keystore), bytes(&truststore));
    let state = rig.s.identity_state("broker");
    assert_eq!(state["broker_alternate"], Value::Bool(false), "{state}");

    // Listen for the ReloadFailed signal on leafd's bus.
    let monitor_out = rig.s.path("dbus-monitor.txt");
    let mut monitor = std::process::Command::new("dbus-monitor")
        .args([
            "--address",
            rig.bus.address(),
            "type='signal',interface='org.leafd.leafd1.Manager',member='ReloadFailed'",
        ])
        .stdout(fs::File::create(&monitor_out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dbus-monitor missing: apt-get install -y dbus");
    std::thread::sleep(Duration::from_millis(300));

    // Drop the IP SAN. leafd allows it and mints; the broker has no ssl.allow.san.changes.
    rig.s.write_config(&config(
        rig.mode,
        rig.ssl,
        rig.sasl_ssl,
        r#"["localhost"]"#,
        "allow-san-change = true",
        rig.producer,
    ));
    rig.s.signal(nix::sys::signal::Signal::SIGHUP);
    let reload = rig.wait_reload(
        "the broker's refusal",
        "failed",
        Some(&first),
        Duration::from_secs(60),
    );
    rig.mark("refusal");
    let refused = rig.serial();
    let detail = reload["detail"].as_str().unwrap().to_owned();
    eprintln!("refusal detail: {detail}");
    // KRaft answers a refused dynamic SSL config with INVALID_REQUEST, quoting SslFactory.
    assert!(
        detail.contains("INVALID_REQUEST (42)")
            && detail.contains("Keystore SubjectAltNames do not match"),
        "the alarm says why the broker refused: {detail}"
    );

    // The alarm: status.json, the STATUS= line, leafctl.
    let summary = rig.s.status()["summary"].as_str().unwrap().to_owned();
    assert!(
        summary.contains("ALARM broker reload failed (broker)"),
        "{summary}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = rig.notify.last_status();
        if line.contains("ALARM broker reload failed (broker)") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the last STATUS= line has no alarm: {line:?}\nall notifications:\n{}",
            rig.notify.all()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ctl = rig.leafctl_status();
    assert_eq!(ctl["identities"][0]["reload"]["state"], "failed", "{ctl}");
    assert_eq!(
        ctl["identities"][0]["reload"]["serial"],
        refused.as_str(),
        "{ctl}"
    );
    let (rc, text) = rig.leafctl(&["status"]);
    assert!(
        text.contains("ALARM"),
        "leafctl status (exit {rc}):\n{text}"
    );
    assert!(
        rig.s.log().contains("ALARM: broker reload failed"),
        "{}",
        rig.s.log()
    );
    // The D-Bus signal ReloadFailed, for the broker identity.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = fs::read_to_string(&monitor_out).unwrap_or_default();
        if seen.contains("member=ReloadFailed") && seen.contains("\"broker\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ReloadFailed signal for broker on the bus:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = monitor.kill();
    let _ = monitor.wait();

    // The broker still serves the first leaf from the first files, which nobody touched;
    // the refused store went to the alternate paths.
    rig.check_served(&first);
    assert_eq!(
        bytes(&keystore),
        ks_before,
        "the served keystore is untouched"
    );
    assert_eq!(
        bytes(&truststore),
        ts_before,
        "the served truststore is untouched"
    );
    let state = rig.s.identity_state("broker");
    assert_eq!(state["broker_alternate"], Value::Bool(false), "{state}");
    assert_eq!(state["written_alternate"], Value::Bool(true), "{state}");
    assert_eq!(
        rig.describe(KEYSTORE_CONFIG),
        format!(
            "OK {KEYSTORE_CONFIG}={} source=DYNAMIC_BROKER_CONFIG",
            keystore.display()
        )
    );
    // Still served after a moment (nothing applies later, as a same-path change would).
    std::thread::sleep(Duration::from_millis(500));
    rig.check_served(&first);
    rig.report(&[]);
}

#[test]
fn traffic_during_ten_rotations() {
    let mut rig = Rig::start("traffic_during_ten_rotations", "alternate", true);
    assert_eq!(
        rig.kafka.client("admin-create-topic", &rig.admin, &[TOPIC]),
        Ok(format!("OK created {TOPIC}"))
    );
    assert_eq!(
        rig.kafka.client(
            "admin-acl-allow",
            &rig.admin,
            &[PRODUCER_PRINCIPAL, TOPIC, "WRITE", "READ", "DESCRIBE"]
        ),
        Ok("OK acls=3".to_owned())
    );
    let text = rig.kafka.ssl_client_properties(
        Some(&Store::pkcs12(rig.s.path("tls/producer.p12"), PASSWORD)),
        &Store::pkcs12(rig.s.path("tls/producer-trust.p12"), PASSWORD),
    );
    let client = rig.kafka.write_properties("producer", &text);
    let mut producer = rig
        .kafka
        .spawn_client("produce-continuous", &client, &[TOPIC]);
    producer.wait_for_stderr("first record acknowledged", Duration::from_secs(60));
    rig.mark("producer running");

    let mut took = Vec::new();
    for n in 1..=10 {
        let (_, t) = rig.rotate(n);
        took.push(t);
    }
    rig.mark("10 rotations");
    // Let records flow past the last rotation before stopping.
    std::thread::sleep(Duration::from_millis(300));
    let outcome = producer.stop();
    let line = outcome
        .result
        .unwrap_or_else(|e| panic!("produce-continuous: {e}\n{}", outcome.stderr));
    eprintln!("produce-continuous: {line}");
    let sent: u64 = line
        .strip_prefix("OK sent=")
        .and_then(|rest| rest.strip_suffix(" failed=0"))
        .unwrap_or_else(|| {
            panic!(
                "sends failed during the rotations: {line}\n{}",
                outcome.stderr
            )
        })
        .parse()
        .unwrap();
    assert!(sent >= 10, "{line}");

    // A new connection handshakes with the newest certificate, and every record is there.
    assert_eq!(
        rig.kafka.client("produce", &client, &[TOPIC, "5"]),
        Ok("OK produced 5".to_owned())
    );
    let all = (sent + 5).to_string();
    assert_eq!(
        rig.kafka
            .client("consume", &client, &[TOPIC, &all, "30000"]),
        Ok(format!("OK consumed {all}"))
    );
    rig.mark("produce + consume after");
    let counters = rig.status_of_broker()["counters"].clone();
    assert_eq!(counters["reloads_verified"], 11, "{counters}");
    assert_eq!(counters["reloads_failed"], 0, "{counters}");
    rig.report(&took);
}

/// Kafka cannot reload a KRaft controller listener's stores at run time. A kafka action
/// naming the broker's controller listener is refused before any change, with an alarm that
/// says what to do instead; the broker keeps serving what it served.
#[test]
fn controller_listener_is_refused_with_a_clear_error() {
    let mut rig = Rig::start("controller_listener_is_refused", "alternate", false);
    let first = rig.serial();
    let text = config(rig.mode, rig.ssl, rig.sasl_ssl, SANS, "", rig.producer)
        .replace("listener = \"SSL\"", "listener = \"CONTROLLER\"");
    assert!(text.contains("listener = \"CONTROLLER\""));
    rig.s.write_config(&text);
    let reloaded = rig.s.log().matches("configuration reloaded").count();
    rig.s.signal(nix::sys::signal::Signal::SIGHUP);
    rig.s
        .wait_for("the new configuration", Duration::from_secs(10), |s| {
            s.log().matches("configuration reloaded").count() > reloaded
        });
    let (rc, out) = rig.leafctl(&["renew", "broker", "--wait", "--timeout", RENEW_TIMEOUT]);
    assert_ne!(rc, 0, "the reload must fail:\n{out}");
    let reload = rig.wait_reload(
        "the controller listener's refusal",
        "failed",
        Some(&first),
        Duration::from_secs(30),
    );
    let detail = reload["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("listener CONTROLLER is a KRaft controller listener")
            && detail.contains("systemd restart action"),
        "{detail}"
    );
    assert_eq!(
        rig.s.log().matches(ACCEPTED).count(),
        1,
        "only the first reload's change was accepted, none for the controller listener:\n{}",
        rig.s.log()
    );
    rig.check_served(&first);
    rig.report(&[]);
}

/// The admin connection over SSL with a leafd client identity as client certificate (the
/// SSL listener requires one; the broker authorizes the identity's principal), instead of
/// SASL_SSL: the reload is accepted and verified.
#[test]
fn ssl_admin_connection_with_a_leafd_client_identity() {
    let mut rig = Rig::start("ssl_admin_connection", "alternate", false);
    let first = rig.serial();
    let text = config(rig.mode, rig.ssl, rig.sasl_ssl, SANS, "", rig.producer)
        .replace(
            &format!("bootstrap = \"{}\"", rig.sasl_ssl),
            &format!("bootstrap = \"{}\"", rig.ssl),
        )
        .replace(
            "security = \"sasl-ssl\"",
            "security = \"ssl\"\nclient-identity = \"admin\"",
        )
        .lines()
        .filter(|l| !l.starts_with("sasl-"))
        .collect::<Vec<_>>()
        .join("\n")
        + r#"

[[identity]]
name = "admin"
subject = "CN=leafd-admin,OU=admins,O=Example"
eku = ["client-auth"]
lifetime = "1h"
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/admin.pem"
"#;
    rig.s.write_config(&text);
    rig.s.signal(nix::sys::signal::Signal::SIGHUP);
    rig.s
        .wait_for("the admin identity", Duration::from_secs(30), |s| {
            s.rotations("admin") >= 1 && s.path("tls/admin.pem").exists()
        });
    let accepted = rig.s.log().matches(ACCEPTED).count();
    let (serial, _) = rig.rotate(1);
    assert_ne!(serial, first);
    assert_eq!(rig.s.log().matches(ACCEPTED).count(), accepted + 1);
    rig.report(&[]);
}
