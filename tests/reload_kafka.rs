//! The `kafka` reload action against an in-test Kafka admin server, verified against a JDK
//! TLS server that reloads its stores the way a broker does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code: setup failures must panic"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::java::{JavaTlsServer, Store};
use common::kafka_broker::{FakeBroker, Hook};
use leafd::reload::{
    Error, KafkaAdmin, ReloadMode, Security, StoreKind, next_path, served_serial, wait_for_serial,
};

const BROKER_ID: i32 = 1;
const SERIAL_A: [u8; 8] = [0x1a, 0xa1, 0, 0, 0, 0, 0, 0x0a];
const SERIAL_B: [u8; 8] = [0x2b, 0xb2, 0, 0, 0, 0, 0, 0x0b];
const KEYSTORE_CONFIG: &str = "listener.name.ssl.ssl.keystore.location";
const TRUSTSTORE_CONFIG: &str = "listener.name.ssl.ssl.truststore.location";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a PEM keystore (self-signed leaf for CN=broker-1, SAN localhost, given serial).
fn write_keystore(path: &Path, serial: &[u8]) -> String {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "broker-1");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    cert.pem()
}

struct Setup {
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    truststore: Store,
    java: Arc<Mutex<JavaTlsServer>>,
    broker: FakeBroker,
    admin: KafkaAdmin,
}

impl Setup {
    /// Java serves store A; the broker's success hook reloads Java from the sent keystore.
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("keystore-a.pem");
        let b = dir.path().join("keystore-b.pem");
        let cert_a = write_keystore(&a, &SERIAL_A);
        let cert_b = write_keystore(&b, &SERIAL_B);
        let trust_path = dir.path().join("truststore.pem");
        std::fs::write(&trust_path, format!("{cert_a}{cert_b}")).unwrap();
        let truststore = Store::pem(&trust_path);
        let java = tokio::task::spawn_blocking({
            let (a, truststore) = (a.clone(), truststore.clone());
            move || JavaTlsServer::start(&Store::pem(a), &truststore)
        })
        .await
        .unwrap();
        let java = Arc::new(Mutex::new(java));
        let broker = FakeBroker::start(BROKER_ID).await;
        let hook: Hook = {
            let java = Arc::clone(&java);
            let truststore = truststore.clone();
            Arc::new(move |configs: &[(String, Option<String>)]| {
                let keystore = configs
                    .iter()
                    .find(|(name, _)| name == KEYSTORE_CONFIG)
                    .and_then(|(_, value)| value.clone())
                    .ok_or_else(|| format!("no {KEYSTORE_CONFIG} in {configs:?}"))?;
                java.lock()
                    .unwrap()
                    .reload(&Store::pem(keystore), &truststore)
                    .map(drop)
            })
        };
        broker.set_hook(Some(hook));
        let admin = KafkaAdmin::new(broker.addr(), Security::Plaintext, "leafd-test")
            .with_timeout(Duration::from_secs(5));
        Setup {
            dir,
            a,
            b,
            truststore,
            java,
            broker,
            admin,
        }
    }

    fn java_addr(&self) -> std::net::SocketAddr {
        self.java.lock().unwrap().addr()
    }

    fn changes(&self, keystore: &Path) -> Vec<(StoreKind, PathBuf)> {
        vec![(StoreKind::Keystore, keystore.to_owned())]
    }

    async fn served(&self) -> String {
        served_serial(self.java_addr(), "localhost", Duration::from_secs(5))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_paths_reload_is_preflighted_and_served() {
    let s = Setup::new().await;
    assert_eq!(s.served().await, hex(&SERIAL_A));

    let target = next_path(&s.a, &s.a, &s.b);
    assert_eq!(target, s.b);
    s.admin
        .reload(
            BROKER_ID,
            "SSL",
            &s.changes(target),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap();

    let requests = s.broker.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].validate_only, "pre-flight first: {requests:?}");
    assert!(
        !requests[1].validate_only,
        "then the real request: {requests:?}"
    );
    wait_for_serial(
        s.java_addr(),
        "localhost",
        &hex(&SERIAL_B),
        Duration::from_secs(10),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_change_reports_the_broker_message_and_keeps_the_old_store() {
    let s = Setup::new().await;
    let message = "Validation of dynamic config update of SSLFactory failed: \
                   Keystore DistinguishedName does not match";
    s.broker.reject_next(message);
    let err = s
        .admin
        .reload(
            BROKER_ID,
            "SSL",
            &s.changes(&s.b),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap_err();
    match &err {
        Error::Rejected {
            code,
            name,
            message: got,
        } => {
            assert_eq!(*code, 40);
            assert_eq!(name, "INVALID_CONFIG");
            assert_eq!(got, message);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("Keystore DistinguishedName"),
        "{err}"
    );
    assert_eq!(s.broker.requests().len(), 2);
    assert_eq!(s.served().await, hex(&SERIAL_A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_server_cannot_load_is_rejected() {
    let s = Setup::new().await;
    let broken = s.dir.path().join("broken.pem");
    std::fs::write(&broken, "not a keystore").unwrap();
    let err = s
        .admin
        .reload(BROKER_ID, "SSL", &s.changes(&broken), ReloadMode::SamePath)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { code: 40, message, .. } if message.starts_with("FAIL")),
        "{err:?}"
    );
    assert_eq!(s.served().await, hex(&SERIAL_A));
}

#[tokio::test(flavor = "current_thread")]
async fn closed_port_is_unreachable_and_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let admin = KafkaAdmin::new(addr, Security::Plaintext, "leafd-test")
        .with_timeout(Duration::from_secs(2));
    let err = admin
        .reload(
            BROKER_ID,
            "SSL",
            &[(StoreKind::Keystore, PathBuf::from("/nonexistent"))],
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());

    let err = served_serial(addr, "localhost", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_broker_id_is_rejected_without_a_reload() {
    let s = Setup::new().await;
    let err = s
        .admin
        .reload(
            BROKER_ID + 1,
            "SSL",
            &s.changes(&s.b),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap_err();
    match &err {
        Error::Rejected {
            code,
            name,
            message,
        } => {
            assert_eq!(*code, 42);
            assert_eq!(name, "INVALID_REQUEST");
            assert!(message.contains("Unexpected broker id"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The pre-flight already failed: no real request was sent.
    let requests = s.broker.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].validate_only);
    assert_eq!(s.served().await, hex(&SERIAL_A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_served_serial_times_out_with_mismatch() {
    let s = Setup::new().await;
    s.broker.set_hook(None);
    s.admin
        .reload(
            BROKER_ID,
            "SSL",
            &s.changes(&s.b),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = wait_for_serial(
        s.java_addr(),
        "localhost",
        &hex(&SERIAL_B),
        Duration::from_millis(800),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(800));
    match &err {
        Error::Mismatch { served, expected } => {
            assert_eq!(served, &hex(&SERIAL_A));
            assert_eq!(expected, &hex(&SERIAL_B));
        }
        other => panic!("expected Mismatch, got {other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_carry_per_listener_store_locations() {
    let s = Setup::new().await;
    let apis = s.admin.api_versions().await.unwrap();
    assert!(apis.iter().any(|a| a.key == 44 && a.max == 1), "{apis:?}");

    let trust = s.truststore.path.clone();
    let changes = vec![
        (StoreKind::Keystore, s.b.clone()),
        (StoreKind::Truststore, trust.clone()),
    ];
    s.admin
        .alter_store_locations(BROKER_ID, "SSL", &changes, true)
        .await
        .unwrap();
    let requests = s.broker.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.api_version, 1);
    assert_eq!(r.client_id.as_deref(), Some("leafd-test"));
    assert!(r.validate_only);
    assert_eq!(r.resource_type, 4);
    assert_eq!(r.resource_name, "1");
    assert_eq!(
        r.configs,
        vec![
            (
                KEYSTORE_CONFIG.to_owned(),
                0,
                Some(s.b.to_str().unwrap().to_owned())
            ),
            (
                TRUSTSTORE_CONFIG.to_owned(),
                0,
                Some(trust.to_str().unwrap().to_owned())
            ),
        ]
    );

    // A broker that only speaks v0 (Kafka 2.3) gets the non-flexible encoding.
    s.broker.set_max_iac_version(0);
    s.admin
        .alter_store_locations(BROKER_ID, "SSL", &changes, false)
        .await
        .unwrap();
    let requests = s.broker.requests();
    assert_eq!(requests[1].api_version, 0);
    assert_eq!(requests[1].configs, r.configs);
    assert!(!requests[1].validate_only);
    wait_for_serial(
        s.java_addr(),
        "localhost",
        &hex(&SERIAL_B),
        Duration::from_secs(10),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
}
