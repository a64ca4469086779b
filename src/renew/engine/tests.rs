//! The engine against a fake issuer, driven the way the daemon drives it (tick, then sleep
//! until `next_wakeup`) on paused tokio time. Keys are real soft keys and the stores are real
//! files in a temporary directory; only the issuer is a double: a real local CA behind a
//! switch that makes it unreachable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::*;
use crate::config::{self, LoadEnv};
use crate::issuer::local::LocalCa;
use crate::issuer::{self, HostCertRequest, IssuedChain};
use crate::keys::soft::SoftBackend;
use crate::vocab::San;

/// A local CA that can be switched off: while `down`, every request fails as an
/// unreachable remote CA would.
#[derive(Clone)]
struct FakeIssuer {
    ca: Arc<LocalCa>,
    down: Arc<AtomicBool>,
    requests: Arc<AtomicU32>,
}

impl Issuer for FakeIssuer {
    async fn issue_host_cert(
        &self,
        req: &HostCertRequest,
        now: SystemTime,
    ) -> Result<IssuedChain, issuer::Error> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(issuer::Error::Unavailable("connection refused".into()));
        }
        self.ca.issue(req, now)
    }
}

/// One engine on paused time: `now()` is the wall-clock time the engine is told.
struct Rig {
    dir: tempfile::TempDir,
    engine: Engine<FakeIssuer>,
    issuer: FakeIssuer,
    start: Instant,
    base: SystemTime,
}

const BASE_CONFIG: &str = r#"
[daemon]
state-directory = "state"
[host]
hostname = "b1"
fqdn = "b1.kafka.example.net"
[issuer]
type = "local"
host-cert-validity = "HOSTVALIDITY"
"#;

fn identity_toml(name: &str, sans: &str, lifetime: &str) -> String {
    format!(
        r#"
[[identity]]
name = "{name}"
subject = "CN={name},OU=kafka,O=Example"
sans = [{sans}]
lifetime = "{lifetime}"
[[identity.keystore]]
format = "pem"
path = "tls/{name}.pem"
[[identity.truststore]]
format = "pem"
path = "tls/{name}-ca.pem"
"#
    )
}

fn load(dir: &Path, host_validity: &str, identities: &str) -> Arc<Settings> {
    let path = dir.join("leafd.toml");
    let text = BASE_CONFIG.replace("HOSTVALIDITY", host_validity) + identities;
    std::fs::write(&path, text).unwrap();
    let env = LoadEnv {
        credentials_directory: None,
        hostname: "b1".into(),
    };
    Arc::new(config::load_with_warnings(&path, &env).unwrap().0)
}

impl Rig {
    async fn new(host_validity: &str, identities: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let settings = load(dir.path(), host_validity, identities);
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let crate::settings::IssuerSettings::Local(local) = &settings.issuer;
        let ca = LocalCa::open_or_create(&dir.path().join("state/ca"), local, base).unwrap();
        let issuer = FakeIssuer {
            ca: Arc::new(ca),
            down: Arc::default(),
            requests: Arc::default(),
        };
        let keys_dir = dir.path().join("state/keys");
        let (keys, _thread) = KeyService::spawn(move || {
            Ok(Box::new(SoftBackend::open(&keys_dir)?) as Box<dyn crate::keys::KeyBackend>)
        })
        .unwrap();
        let (engine, report) = Engine::start(settings, keys, issuer.clone(), base)
            .await
            .unwrap();
        assert!(report.generated_host_key);
        Rig {
            dir,
            engine,
            issuer,
            start: Instant::now(),
            base,
        }
    }

    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn set_down(&self, down: bool) {
        self.issuer.down.store(down, Ordering::SeqCst);
    }

    async fn tick(&mut self) -> Vec<Event> {
        let now = self.now();
        self.engine.tick(now).await
    }

    /// What the daemon loop does between ticks: sleep until the engine's next wake-up.
    async fn sleep_to_wakeup(&self) {
        let wake = self.engine.next_wakeup(self.now());
        let wait = wake.duration_since(self.now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
    }

    /// Ticks at every wake-up until `pred` holds for the events of one tick; returns those
    /// events. Gives up after `limit` wake-ups.
    async fn run_until(&mut self, limit: usize, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        for _ in 0..limit {
            self.sleep_to_wakeup().await;
            let events = self.tick().await;
            if pred(&events) {
                return events;
            }
        }
        panic!("condition not reached after {limit} wake-ups");
    }

    fn serial(&self, name: &str) -> String {
        self.engine.state().identities[name].serial.clone()
    }

    fn leaf_pem(&self, name: &str) -> Vec<Vec<u8>> {
        let text = std::fs::read_to_string(self.path(&format!("tls/{name}.pem"))).unwrap();
        pem_chain(&text)
    }
}

fn rotated(events: &[Event], name: &str) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Rotated {
            identity, serial, ..
        } if identity == name => Some(serial.clone()),
        _ => None,
    })
}

fn host_failed(events: &[Event]) -> Option<SystemTime> {
    events.iter().find_map(|e| match e {
        Event::Failed {
            identity: None,
            retry_at,
            ..
        } => Some(*retry_at),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn renews_at_the_planned_time_within_the_jitter() {
    let mut rig = Rig::new("7d", &identity_toml("broker", "\"{fqdn}\"", "1h")).await;
    let events = rig.tick().await;
    assert!(
        matches!(events[0], Event::HostCertIssued { .. }),
        "{events:?}"
    );
    let first = rotated(&events, "broker").expect("first rotation");
    let s = rig.engine.state().identities["broker"].clone();
    // The plan: two thirds of the leaf's validity, jitter 5 % of it either way.
    let validity = s.not_after.duration_since(s.not_before).unwrap();
    let earliest = s.not_before + validity.mul_f64(2.0 / 3.0 - 0.05);
    let latest = s.not_before + validity.mul_f64(2.0 / 3.0 + 0.05);
    assert!(s.next_renewal >= earliest && s.next_renewal <= latest);

    // Nothing happens before the planned time.
    rig.sleep_to_wakeup().await;
    let events = rig.tick().await;
    let second = rotated(&events, "broker").expect("rotated at the wake-up");
    let at = rig.now();
    assert_ne!(first, second);
    assert!(
        at + Duration::from_secs(1) >= earliest && at <= latest + Duration::from_secs(1),
        "rotated at {at:?}, planned window {earliest:?}..{latest:?}"
    );
    assert_eq!(rig.leaf_pem("broker").len(), 2, "leaf and host certificate");
    assert_eq!(rig.issuer.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn backs_off_while_the_issuer_fails_and_keeps_the_stores() {
    let mut rig = Rig::new("1h", &identity_toml("broker", "\"{fqdn}\"", "10m")).await;
    let events = rig.tick().await;
    rotated(&events, "broker").expect("first rotation");
    rig.set_down(true);

    // Run until the host certificate is due and its renewal fails.
    let events = rig.run_until(50, |e| host_failed(e).is_some()).await;
    let mut retry_at = host_failed(&events).unwrap();
    let mut delays = vec![retry_at.duration_since(rig.now()).unwrap()];
    let requests = rig.issuer.requests.load(Ordering::SeqCst);

    // Each retry waits longer (exponential backoff with jitter), and the issuer is not
    // asked again before the retry time.
    for _ in 0..3 {
        let events = rig.run_until(50, |e| host_failed(e).is_some()).await;
        let now = rig.now();
        assert!(now + Duration::from_secs(1) >= retry_at, "retried early");
        retry_at = host_failed(&events).unwrap();
        delays.push(retry_at.duration_since(now).unwrap());
        // The stores are still there and complete.
        let chain = rig.leaf_pem("broker");
        assert_eq!(chain.len(), 2);
        assert!(rig.path("tls/broker-ca.pem").exists());
    }
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "retry delays should grow: {delays:?}"
    );
    assert_eq!(
        rig.issuer.requests.load(Ordering::SeqCst),
        requests + 3,
        "one request per retry"
    );
    let status = rig.engine.status(rig.now());
    assert!(
        status
            .host_cert
            .unwrap()
            .last_error
            .unwrap()
            .contains("connection refused"),
        "the host certificate's error is reported"
    );
    assert!(
        rig.engine
            .status_line(rig.now())
            .contains("renewal failing")
    );
}

#[tokio::test(start_paused = true)]
async fn no_leaf_outlives_the_host_certificate_while_the_issuer_is_down() {
    let mut rig = Rig::new("1h", &identity_toml("broker", "\"{fqdn}\"", "30m")).await;
    rig.tick().await;
    rig.set_down(true);
    let host_not_after = rig.engine.state().host.as_ref().unwrap().not_after;

    // Until the host certificate runs out, leaves keep rotating, each cut at its notAfter.
    let mut serials = vec![rig.serial("broker")];
    let mut wakeups = 0;
    while rig.now() < host_not_after {
        wakeups += 1;
        assert!(wakeups < 100, "the engine keeps waking up: {serials:?}");
        rig.sleep_to_wakeup().await;
        let events = rig.tick().await;
        if let Some(serial) = rotated(&events, "broker") {
            serials.push(serial);
        }
        let s = &rig.engine.state().identities["broker"];
        assert!(
            s.not_after <= host_not_after,
            "leaf valid until {:?} outlives the host certificate ({host_not_after:?})",
            s.not_after
        );
    }
    assert!(serials.len() >= 3, "{serials:?}");

    // After it: nothing is minted, and STATUS and leafctl status say why.
    let events = rig
        .run_until(50, |e| {
            e.iter().any(|e| {
                matches!(e, Event::Failed { identity: Some(_), error, .. }
                    if error.contains("host issuing certificate expired"))
            })
        })
        .await;
    assert!(rotated(&events, "broker").is_none());
    let now = rig.now();
    let line = rig.engine.status_line(now);
    assert!(
        line.contains("ALARM host issuing certificate expired"),
        "{line}"
    );
    let status = rig.engine.status(now);
    let alarms = crate::ctl::render::alarms(&status, now);
    assert!(
        alarms
            .iter()
            .any(|a| a.starts_with("host issuing certificate expired")),
        "{alarms:?}"
    );
    assert!(
        alarms
            .iter()
            .any(|a| a.starts_with("broker: renewal failing") && a.contains("expired")),
        "{alarms:?}"
    );
    let last = serials.last().unwrap().clone();
    assert_eq!(rig.serial("broker"), last, "the last leaf stays in place");

    // The issuer comes back: a new host certificate, then a new leaf.
    rig.set_down(false);
    let events = rig
        .run_until(50, |e| {
            e.iter().any(|e| matches!(e, Event::HostCertIssued { .. }))
        })
        .await;
    if rotated(&events, "broker").is_none() {
        rig.run_until(50, |e| rotated(e, "broker").is_some()).await;
    }
    assert!(!rig.engine.status_line(rig.now()).contains("ALARM"));
}

#[tokio::test(start_paused = true)]
async fn sighup_adds_changes_and_removes_identities() {
    let one = identity_toml("broker", "\"{fqdn}\"", "1h");
    let mut rig = Rig::new("7d", &one).await;
    rig.tick().await;
    let first = rig.serial("broker");

    // Added: the new identity is issued at once; the other one is left alone.
    let two = one.clone() + &identity_toml("client", "", "1h");
    let settings = load(rig.dir.path(), "7d", &two);
    rig.engine.apply_settings(settings);
    let events = rig.tick().await;
    assert!(rotated(&events, "client").is_some(), "{events:?}");
    assert!(rotated(&events, "broker").is_none(), "{events:?}");
    assert_eq!(rig.serial("broker"), first);

    // Changed: a new SAN needs a new host certificate (its constraints) and a new leaf.
    let changed = identity_toml("broker", "\"{fqdn}\", \"127.0.0.1\"", "1h")
        + &identity_toml("client", "", "1h");
    rig.engine
        .apply_settings(load(rig.dir.path(), "7d", &changed));
    let events = rig.tick().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HostCertIssued { .. })),
        "{events:?}"
    );
    assert!(rotated(&events, "broker").is_some(), "{events:?}");
    assert!(rotated(&events, "client").is_none(), "{events:?}");
    let status = rig.engine.status(rig.now());
    let broker = status
        .identities
        .iter()
        .find(|i| i.name == "broker")
        .unwrap();
    assert_eq!(broker.sans, ["b1.kafka.example.net", "127.0.0.1"]);

    // Removed: forgotten by the status and the state; its files stay on disk.
    rig.engine.apply_settings(load(
        rig.dir.path(),
        "7d",
        &identity_toml("broker", "\"{fqdn}\", \"127.0.0.1\"", "1h"),
    ));
    let events = rig.tick().await;
    assert!(events.is_empty(), "{events:?}");
    let status = rig.engine.status(rig.now());
    assert_eq!(status.identities.len(), 1);
    assert!(!rig.engine.state().identities.contains_key("client"));
    assert!(rig.path("tls/client.pem").exists());
}

#[tokio::test(start_paused = true)]
async fn the_host_certificate_permits_the_configured_subjects_unless_told_not_to() {
    let identities =
        identity_toml("broker", "\"{fqdn}\"", "1h") + &identity_toml("client", "", "1h");
    let mut rig = Rig::new("7d", &identities).await;
    rig.tick().await;
    let host = rig.engine.host.as_ref().unwrap();
    assert_eq!(
        host.summary.permitted_subjects,
        vec![
            rig.engine.settings.identities[0].subject.clone(),
            rig.engine.settings.identities[1].subject.clone()
        ]
    );
    // The client has no SAN: its CN is permitted as the DNS name Java checks it as.
    assert!(host.summary.permitted.contains(&San::Dns("client".into())));

    let off = load(rig.dir.path(), "7d", &identities).as_ref().clone();
    let off = {
        let mut s = off;
        let crate::settings::IssuerSettings::Local(local) = &mut s.issuer;
        local.constrain_subjects = false;
        Arc::new(s)
    };
    rig.engine.apply_settings(off);
    // Switched off: a new host certificate without subject constraints, at once.
    let events = rig.tick().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HostCertIssued { .. })),
        "{events:?}"
    );
    let host = rig.engine.host.as_ref().unwrap();
    assert!(host.summary.permitted_subjects.is_empty());
    assert!(host.summary.permitted.contains(&San::Dns("client".into())));
    assert!(rig.tick().await.is_empty(), "and it stays");
}
