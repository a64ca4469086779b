//! The `kafka` reload action against an in-test Kafka admin server, verified against a JDK
//! TLS server that reloads its stores the way a broker does; the admin client's security
//! protocols (mutual TLS, SASL PLAIN and SCRAM over plain TCP and TLS) and DescribeConfigs.

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
use common::kafka_broker::{FakeBroker, Hook, Listener, PLAIN_FAILED, SaslServer, Tamper};
use common::tls::{ClientAuth, TestPki};
use kafka_protocol::messages::ApiKey;
use leafd::reload::{
    Error, KafkaAdmin, ReloadMode, Sasl, SaslMechanism, Security, StoreKind, StoreLocations,
    next_path, served_serial, wait_for_serial,
};
use leafd::secret::Secret;

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

/// Kafka cannot reload a KRaft controller listener's stores at run time: the broker would
/// accept the change and keep its old certificate. The pre-flight reads
/// `controller.listener.names` and refuses before any change is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_listener_is_refused_before_any_change() {
    let s = Setup::new().await;
    s.broker
        .set_static_config("controller.listener.names", "CONTROLLER,RAFT");
    let err = s
        .admin
        .reload(
            BROKER_ID,
            "controller",
            &s.changes(&s.b),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ControllerListener { listener } if listener == "controller"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("systemd restart action"), "{err}");
    assert!(s.broker.requests().is_empty(), "no change may be sent");
    // Another listener of the same broker reloads as usual.
    s.admin
        .reload(
            BROKER_ID,
            "SSL",
            &s.changes(&s.b),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap();
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

const USER: &str = "leafd-admin";
const PASSWORD: &str = "s3cret-Passw0rd";

fn sasl(mechanism: SaslMechanism, user: &str, password: &str) -> Sasl {
    Sasl::new(mechanism, user, Secret::new(password.to_owned()))
}

async fn sasl_broker(server: SaslServer) -> FakeBroker {
    FakeBroker::start_with(
        BROKER_ID,
        Listener {
            tls: None,
            sasl: Some(server),
        },
    )
    .await
}

fn sasl_admin(broker: &FakeBroker, sasl: Sasl) -> KafkaAdmin {
    KafkaAdmin::new(
        broker.addr(),
        Security::SaslPlaintext { sasl },
        "leafd-test",
    )
    .with_timeout(Duration::from_secs(5))
}

fn keystore_change() -> Vec<(StoreKind, PathBuf)> {
    vec![(StoreKind::Keystore, PathBuf::from("/etc/kafka/tls/b.p12"))]
}

/// The SASL requests the broker saw, as `(api, version, payload as text)`.
fn sasl_log(broker: &FakeBroker) -> Vec<(ApiKey, i16, String)> {
    broker
        .sasl_requests()
        .into_iter()
        .map(|r| {
            (
                r.api,
                r.api_version,
                String::from_utf8_lossy(&r.payload).into_owned(),
            )
        })
        .collect()
}

/// The password appears in neither `Display` (with sources) nor `Debug`.
fn assert_no_password(err: &Error, password: &str) {
    let mut text = format!("{err:?}");
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    assert!(!text.contains(password), "password leaked: {text}");
}

#[tokio::test(flavor = "current_thread")]
async fn sasl_plain_authenticates_before_altering_configs() {
    let broker = sasl_broker(SaslServer::new(&["PLAIN", "SCRAM-SHA-512"], USER, PASSWORD)).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::Plain, USER, PASSWORD));
    admin
        .alter_store_locations(BROKER_ID, "SSL", &keystore_change(), false)
        .await
        .unwrap();

    assert_eq!(
        sasl_log(&broker),
        vec![
            (ApiKey::SaslHandshake, 1, "PLAIN".to_owned()),
            (ApiKey::SaslAuthenticate, 2, format!("\0{USER}\0{PASSWORD}")),
        ]
    );
    let requests = broker.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(!requests[0].validate_only);
    assert!(broker.unauthenticated_requests().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn sasl_scram_sha512_reloads_and_escapes_the_user_name() {
    let user = "leafd,admin=1";
    let broker = sasl_broker(SaslServer::new(&["SCRAM-SHA-512"], user, PASSWORD)).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::ScramSha512, user, PASSWORD));
    admin
        .reload(
            BROKER_ID,
            "SSL",
            &keystore_change(),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap();

    // One connection: one handshake, client-first and client-final, then both requests.
    let log = sasl_log(&broker);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        log[0],
        (ApiKey::SaslHandshake, 1, "SCRAM-SHA-512".to_owned())
    );
    assert_eq!((log[1].0, log[1].1), (ApiKey::SaslAuthenticate, 2));
    assert!(
        log[1].2.starts_with("n,,n=leafd=2Cadmin=3D1,r="),
        "client-first: {}",
        log[1].2
    );
    assert!(
        log[2].2.starts_with("c=biws,r="),
        "client-final: {}",
        log[2].2
    );
    assert!(log[2].2.contains(",p="), "client-final: {}", log[2].2);
    assert!(
        log.iter()
            .all(|(_, _, payload)| !payload.contains(PASSWORD))
    );
    let requests = broker.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].validate_only && !requests[1].validate_only);
}

#[tokio::test(flavor = "current_thread")]
async fn sasl_scram_sha256_with_an_older_authenticate_version() {
    let mut server = SaslServer::new(&["SCRAM-SHA-256", "SCRAM-SHA-512"], USER, PASSWORD);
    server.max_authenticate_version = 1;
    server.session_lifetime_ms = 3_600_000;
    let broker = sasl_broker(server).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::ScramSha256, USER, PASSWORD));
    let apis = admin.api_versions().await.unwrap();
    assert!(
        apis.iter()
            .any(|a| a.key == ApiKey::SaslAuthenticate as i16 && a.max == 1)
    );
    let versions: Vec<(ApiKey, i16)> = sasl_log(&broker)
        .into_iter()
        .map(|(a, v, _)| (a, v))
        .collect();
    assert_eq!(
        versions,
        vec![
            (ApiKey::SaslHandshake, 1),
            (ApiKey::SaslAuthenticate, 1),
            (ApiKey::SaslAuthenticate, 1),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_password_is_not_retryable_and_not_shown() {
    let wrong = "Wr0ng-Passw0rd-value";
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
        let broker =
            sasl_broker(SaslServer::new(&["PLAIN", "SCRAM-SHA-512"], USER, PASSWORD)).await;
        let admin = sasl_admin(&broker, sasl(mechanism, USER, wrong));
        let err = admin
            .alter_store_locations(BROKER_ID, "SSL", &keystore_change(), true)
            .await
            .unwrap_err();
        match &err {
            Error::AuthenticationFailed {
                mechanism: name,
                username,
                message,
            } => {
                assert_eq!(*name, mechanism.name());
                assert_eq!(username, USER);
                if mechanism == SaslMechanism::Plain {
                    assert_eq!(message, PLAIN_FAILED);
                } else {
                    assert!(message.contains("invalid credentials"), "{message}");
                }
            }
            other => panic!("{mechanism}: expected AuthenticationFailed, got {other:?}"),
        }
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains(USER), "{err}");
        assert_no_password(&err, wrong);
        assert_no_password(&err, PASSWORD);
        assert!(broker.requests().is_empty());
        assert!(broker.unauthenticated_requests().is_empty());
    }
    // The admin client's own Debug output redacts the password as well.
    let admin = KafkaAdmin::new(
        "127.0.0.1:9".parse().unwrap(),
        Security::SaslPlaintext {
            sasl: sasl(SaslMechanism::Plain, USER, wrong),
        },
        "leafd-test",
    );
    let debug = format!("{admin:?}");
    assert!(
        !debug.contains(wrong) && debug.contains("redacted"),
        "{debug}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_message_quoting_the_password_is_scrubbed() {
    let mut server = SaslServer::new(&["PLAIN"], USER, PASSWORD);
    server.tamper = Tamper::EchoPlainToken;
    let broker = sasl_broker(server).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::Plain, "nobody", PASSWORD));
    let err = admin.api_versions().await.unwrap_err();
    match &err {
        Error::AuthenticationFailed { message, .. } => {
            assert_eq!(message, &format!("{PLAIN_FAILED}: nobody <redacted>"));
        }
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    assert_no_password(&err, PASSWORD);
}

#[tokio::test(flavor = "current_thread")]
async fn unsupported_mechanism_lists_the_enabled_ones() {
    let broker = sasl_broker(SaslServer::new(&["GSSAPI", "OAUTHBEARER"], USER, PASSWORD)).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::ScramSha512, USER, PASSWORD));
    let err = admin
        .current_store_locations(BROKER_ID, "SSL")
        .await
        .unwrap_err();
    match &err {
        Error::SaslMechanismUnsupported { mechanism, enabled } => {
            assert_eq!(*mechanism, "SCRAM-SHA-512");
            assert_eq!(enabled, &["GSSAPI", "OAUTHBEARER"]);
        }
        other => panic!("expected SaslMechanismUnsupported, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("SCRAM-SHA-512") && text.contains("GSSAPI, OAUTHBEARER"),
        "{text}"
    );
    assert!(!err.is_retryable());
    assert!(broker.describes().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_signature_that_does_not_verify_is_rejected() {
    let mut server = SaslServer::new(&["SCRAM-SHA-512"], USER, PASSWORD);
    server.tamper = Tamper::ServerSignature;
    let broker = sasl_broker(server).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::ScramSha512, USER, PASSWORD));
    let err = admin
        .alter_store_locations(BROKER_ID, "SSL", &keystore_change(), false)
        .await
        .unwrap_err();
    match &err {
        Error::ScramVerification { mechanism, reason } => {
            assert_eq!(*mechanism, "SCRAM-SHA-512");
            assert!(reason.contains("signature does not verify"), "{reason}");
        }
        other => panic!("expected ScramVerification, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // The broker accepted the proof, but the client stopped before sending anything else.
    assert!(broker.requests().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_server_first_and_final_messages_are_rejected() {
    // Returns the error and how many SASL requests the client sent.
    let attempt = |tamper: Tamper, iterations: u32| async move {
        let mut server = SaslServer::new(&["SCRAM-SHA-512"], USER, PASSWORD);
        server.tamper = tamper;
        server.iterations = iterations;
        let broker = sasl_broker(server).await;
        let admin = sasl_admin(&broker, sasl(SaslMechanism::ScramSha512, USER, PASSWORD));
        let err = admin.api_versions().await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert_no_password(&err, PASSWORD);
        (err, broker.sasl_requests().len())
    };

    // The client gives up after server-first: handshake and client-first only.
    let (err, sent) = attempt(Tamper::ServerNonce, 4096).await;
    assert!(
        matches!(&err, Error::ScramVerification { reason, .. } if reason.contains("nonce")),
        "{err:?}"
    );
    assert_eq!(sent, 2);

    let (err, sent) = attempt(Tamper::None, 1000).await;
    assert!(
        matches!(&err, Error::ScramVerification { reason, .. }
            if reason.contains("1000") && reason.contains("minimum 4096")),
        "{err:?}"
    );
    assert_eq!(sent, 2);

    let (err, sent) = attempt(Tamper::ServerError("other-error".to_owned()), 4096).await;
    assert!(
        matches!(&err, Error::AuthenticationFailed { message, .. } if message.contains("other-error")),
        "{err:?}"
    );
    assert_eq!(sent, 3);
}

#[tokio::test(flavor = "current_thread")]
async fn illegal_sasl_state_is_reported() {
    let mut server = SaslServer::new(&["PLAIN"], USER, PASSWORD);
    server.tamper = Tamper::IllegalState;
    let broker = sasl_broker(server).await;
    let admin = sasl_admin(&broker, sasl(SaslMechanism::Plain, USER, PASSWORD));
    let err = admin.api_versions().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::SaslIllegalState {
                during: "SaslHandshake",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    // No token was sent after the refused handshake.
    assert_eq!(broker.sasl_requests().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_sasl_listener_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let admin = KafkaAdmin::new(
        addr,
        Security::SaslPlaintext {
            sasl: sasl(SaslMechanism::ScramSha512, USER, PASSWORD),
        },
        "leafd-test",
    );
    let err = admin.api_versions().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "current_thread")]
async fn sasl_ssl_authenticates_inside_tls() {
    let pki = TestPki::new();
    let broker = FakeBroker::start_with(
        BROKER_ID,
        Listener {
            tls: Some(pki.server_config(ClientAuth::None)),
            sasl: Some(SaslServer::new(&["SCRAM-SHA-512"], USER, PASSWORD)),
        },
    )
    .await;
    let admin = KafkaAdmin::new(
        broker.addr(),
        Security::SaslSsl {
            config: pki.client_config(false),
            server_name: TestPki::server_name(),
            sasl: sasl(SaslMechanism::ScramSha512, USER, PASSWORD),
        },
        "leafd-test",
    )
    .with_timeout(Duration::from_secs(5));
    admin
        .reload(
            BROKER_ID,
            "SSL",
            &keystore_change(),
            ReloadMode::AlternatePaths,
        )
        .await
        .unwrap();
    assert_eq!(broker.client_certs(), vec![false]);
    assert_eq!(broker.sasl_requests().len(), 3);
    assert_eq!(broker.requests().len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn ssl_admin_path_with_mutual_tls() {
    let pki = TestPki::new();
    let broker = FakeBroker::start_with(
        BROKER_ID,
        Listener {
            tls: Some(pki.server_config(ClientAuth::Required)),
            sasl: None,
        },
    )
    .await;
    let ssl = |with_cert: bool| {
        KafkaAdmin::new(
            broker.addr(),
            Security::Ssl {
                config: pki.client_config(with_cert),
                server_name: TestPki::server_name(),
            },
            "leafd-test",
        )
        .with_timeout(Duration::from_secs(5))
    };
    ssl(true)
        .alter_store_locations(BROKER_ID, "SSL", &keystore_change(), false)
        .await
        .unwrap();
    assert_eq!(broker.client_certs(), vec![true]);
    assert_eq!(broker.requests().len(), 1);

    // Without a client certificate the listener refuses the connection.
    let err = ssl(false)
        .alter_store_locations(BROKER_ID, "SSL", &keystore_change(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Handshake { .. } | Error::Connection { .. }),
        "{err:?}"
    );
    assert_eq!(broker.requests().len(), 1);
    for _ in 0..100 {
        if broker.tls_failures() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(broker.tls_failures(), 1);

    // A client that does not trust the broker's CA stops at the handshake.
    let other = TestPki::new();
    let err = KafkaAdmin::new(
        broker.addr(),
        Security::Ssl {
            config: other.client_config(true),
            server_name: TestPki::server_name(),
        },
        "leafd-test",
    )
    .api_versions()
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Handshake { .. }), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn describe_configs_reports_the_current_store_locations() {
    let broker = FakeBroker::start(BROKER_ID).await;
    broker.set_static_config(KEYSTORE_CONFIG, "/etc/kafka/tls/a.p12");
    // No listener override for the truststore: the broker-wide value applies.
    broker.set_static_config("ssl.truststore.location", "/etc/kafka/tls/trust.p12");
    broker.set_static_config("ssl.keystore.location", "/etc/kafka/tls/default.p12");
    let admin = KafkaAdmin::new(broker.addr(), Security::Plaintext, "leafd-test")
        .with_timeout(Duration::from_secs(5));

    let current = admin
        .current_store_locations(BROKER_ID, "SSL")
        .await
        .unwrap();
    assert_eq!(
        current,
        StoreLocations {
            keystore: Some("/etc/kafka/tls/a.p12".to_owned()),
            truststore: Some("/etc/kafka/tls/trust.p12".to_owned()),
        }
    );
    let describes = broker.describes();
    assert_eq!(describes.len(), 1);
    assert_eq!(describes[0].api_version, 4);
    assert_eq!(describes[0].resource_type, 4);
    assert_eq!(describes[0].resource_name, "1");
    assert_eq!(
        describes[0].keys.as_deref(),
        Some(
            &[
                KEYSTORE_CONFIG.to_owned(),
                TRUSTSTORE_CONFIG.to_owned(),
                "ssl.keystore.location".to_owned(),
                "ssl.truststore.location".to_owned(),
            ][..]
        )
    );

    // After an A/B switch the broker reports the new path.
    let target = next_path(
        Path::new(current.keystore.as_deref().unwrap()),
        Path::new("/etc/kafka/tls/a.p12"),
        Path::new("/etc/kafka/tls/b.p12"),
    );
    admin
        .alter_store_locations(
            BROKER_ID,
            "SSL",
            &[(StoreKind::Keystore, target.to_owned())],
            false,
        )
        .await
        .unwrap();
    let current = admin
        .current_store_locations(BROKER_ID, "ssl")
        .await
        .unwrap();
    assert_eq!(current.keystore.as_deref(), Some("/etc/kafka/tls/b.p12"));

    // A listener the broker has no stores for.
    let none = admin
        .current_store_locations(BROKER_ID, "EXTERNAL")
        .await
        .unwrap();
    assert_eq!(none.keystore.as_deref(), Some("/etc/kafka/tls/default.p12"));
    let empty = FakeBroker::start(BROKER_ID).await;
    let admin_empty = KafkaAdmin::new(empty.addr(), Security::Plaintext, "leafd-test");
    assert_eq!(
        admin_empty
            .current_store_locations(BROKER_ID, "SSL")
            .await
            .unwrap(),
        StoreLocations::default()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn describe_configs_errors_are_mapped() {
    let broker = FakeBroker::start(BROKER_ID).await;
    let admin = KafkaAdmin::new(broker.addr(), Security::Plaintext, "leafd-test")
        .with_timeout(Duration::from_secs(5));

    broker.fail_next_describe(31, "Cluster authorization failed.");
    let err = admin
        .current_store_locations(BROKER_ID, "SSL")
        .await
        .unwrap_err();
    match &err {
        Error::NotAuthorized { operation, message } => {
            assert_eq!(*operation, "describe broker configs");
            assert_eq!(message, "Cluster authorization failed.");
        }
        other => panic!("expected NotAuthorized, got {other:?}"),
    }
    assert!(!err.is_retryable());

    let err = admin
        .current_store_locations(BROKER_ID + 1, "SSL")
        .await
        .unwrap_err();
    match &err {
        Error::DescribeFailed {
            code,
            name,
            message,
        } => {
            assert_eq!((*code, name.as_str()), (42, "INVALID_REQUEST"));
            assert!(message.contains("Unexpected broker id"), "{message}");
        }
        other => panic!("expected DescribeFailed, got {other:?}"),
    }
    assert!(!err.is_retryable());

    broker.fail_next_describe(7, "");
    let err = admin
        .current_store_locations(BROKER_ID, "SSL")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DescribeFailed { code: 7, name, .. } if name == "REQUEST_TIMED_OUT"),
        "{err:?}"
    );
    assert!(err.is_retryable());
}
