//! The real-Kafka fixture end to end: a test CA, broker and client certificates made with
//! openssl and keytool, an Apache Kafka broker with the StandardAuthorizer, a topic created
//! over SASL_SSL as admin, produce and consume over mutual TLS with an ACL for the client
//! certificate's principal, and denials for a certificate without ACLs and for no
//! certificate at all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code: setup failures must panic; the broker is timed with std time"
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::java::{JDK_MISSING, Store};
use common::real_kafka::{KafkaConfig, StoreProps};

const PASSWORD: &str = "changeit";
const TOPIC: &str = "leafd-smoke";
const CLIENT_CN: &str = "leafd-smoke-client";
const STRANGER_CN: &str = "leafd-smoke-stranger";

/// A throw-away PKI in a temporary directory: PKCS12 keystores (key + leaf + CA) and a
/// keytool-made PKCS12 truststore holding the CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::Builder::new()
                .prefix("leafd-kafka-pki-")
                .tempdir()
                .unwrap(),
        };
        pki.openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=leafd-smoke-CA \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign",
        );
        pki.leaf(
            "broker",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        );
        let client_ext = "extendedKeyUsage=clientAuth\n";
        pki.leaf("client", &format!("/CN={CLIENT_CN}"), client_ext);
        pki.leaf("stranger", &format!("/CN={STRANGER_CN}"), client_ext);
        pki.keytool(&format!(
            "-importcert -noprompt -alias leafd-smoke-ca -file ca.pem -keystore trust.p12 \
             -storetype PKCS12 -storepass {PASSWORD}"
        ));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn keystore(&self, name: &str) -> Store {
        Store::pkcs12(self.path(&format!("{name}.p12")), PASSWORD)
    }

    fn truststore(&self) -> Store {
        Store::pkcs12(self.path("trust.p12"), PASSWORD)
    }

    /// `<name>.p12`: a P-256 key and a leaf signed by the CA, with `ext` as extensions.
    fn leaf(&self, name: &str, subject: &str, ext: &str) {
        fs::write(
            self.path(&format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\n{ext}"),
        )
        .unwrap();
        self.openssl(&format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
             -out {name}.csr -subj {subject}"
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -out {name}.pem -extfile {name}.ext"
        ));
        self.openssl(&format!(
            "pkcs12 -export -in {name}.pem -inkey {name}.key -certfile ca.pem -name {name} \
             -out {name}.p12 -passout pass:{PASSWORD}"
        ));
    }

    /// Runs openssl with whitespace-separated arguments in the PKI directory.
    fn openssl(&self, args: &str) {
        run(
            self.dir.path(),
            "openssl",
            args,
            "openssl missing: run 'apt-get install -y --no-install-recommends openssl'",
        );
    }

    fn keytool(&self, args: &str) {
        run(self.dir.path(), "keytool", args, JDK_MISSING);
    }
}

fn run(dir: &Path, program: &str, args: &str, missing: &str) {
    let output = Command::new(program)
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{missing} ({program}: {e})"));
    assert!(
        output.status.success(),
        "{program} {args} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn broker_serves_mtls_clients_by_acl() {
    let pki = Pki::new();
    let secrets = pki.path("secrets");
    fs::create_dir(&secrets).unwrap();
    fs::write(secrets.join("truststore.pass"), PASSWORD).unwrap();

    // The SSL listener's truststore password comes through DirectoryConfigProvider (the raw
    // property path); the SASL_SSL listener gets plain values.
    let truststore_raw = StoreProps::raw(
        "PKCS12",
        pki.path("trust.p12").to_str().unwrap(),
        Some(&format!(
            "${{directory:{}:truststore.pass}}",
            secrets.display()
        )),
    );
    let mut kafka = KafkaConfig::new(pki.keystore("broker"), truststore_raw)
        .sasl_ssl_stores(pki.keystore("broker"), pki.truststore())
        .standard_authorizer()
        .property("config.providers=directory")
        .property(
            "config.providers.directory.class=\
             org.apache.kafka.common.config.provider.DirectoryConfigProvider",
        )
        .start();
    eprintln!(
        "broker ready in {:?} (format + start), RSS {:?} KiB, cluster {}",
        kafka.startup_time(),
        kafka.rss_kib(),
        kafka.cluster_id()
    );

    let text = kafka.admin_client_properties(&pki.truststore());
    let admin = kafka.write_properties("admin", &text);
    let text = kafka.ssl_client_properties(Some(&pki.keystore("client")), &pki.truststore());
    let client = kafka.write_properties("client", &text);
    let text = kafka.ssl_client_properties(Some(&pki.keystore("stranger")), &pki.truststore());
    let stranger = kafka.write_properties("stranger", &text);
    let text = kafka.ssl_client_properties(None, &pki.truststore());
    let anonymous = kafka.write_properties("anonymous", &text);

    let t = Instant::now();
    let cluster = kafka.client("admin-describe-cluster", &admin, &[]).unwrap();
    eprintln!("admin-describe-cluster took {:?}", t.elapsed());
    assert_eq!(
        cluster,
        format!(
            "OK cluster-id={} controller={} nodes={}@{}",
            kafka.cluster_id(),
            kafka.node_id(),
            kafka.node_id(),
            kafka.sasl_ssl_addr()
        )
    );
    assert_eq!(
        kafka.client("admin-create-topic", &admin, &[TOPIC]),
        Ok(format!("OK created {TOPIC}"))
    );
    let principal = format!("User:CN={CLIENT_CN}");
    assert_eq!(
        kafka.client(
            "admin-acl-allow",
            &admin,
            &[&principal, TOPIC, "WRITE", "READ", "DESCRIBE"]
        ),
        Ok("OK acls=3".to_owned())
    );

    let t = Instant::now();
    assert_eq!(
        kafka.client("produce", &client, &[TOPIC, "5"]),
        Ok("OK produced 5".to_owned())
    );
    eprintln!("produce 5 took {:?}", t.elapsed());
    assert_eq!(
        kafka.client("consume", &client, &[TOPIC, "5", "20000"]),
        Ok("OK consumed 5".to_owned())
    );

    // A certificate the CA issued, but without ACLs: authenticated, then denied.
    let denied = kafka
        .client("produce", &stranger, &[TOPIC, "1"])
        .unwrap_err();
    assert!(
        denied.starts_with("FAIL org.apache.kafka.common.errors.TopicAuthorizationException:"),
        "{denied}"
    );
    let denied = kafka
        .client("consume", &stranger, &[TOPIC, "1", "10000"])
        .unwrap_err();
    assert!(denied.contains("TopicAuthorizationException"), "{denied}");
    assert!(
        kafka.log_count(&format!("Principal = User:CN={STRANGER_CN} is Denied")) > 0,
        "the authorizer log shows no denial for the stranger\n{}",
        kafka.log_tail()
    );

    // No client certificate: the SSL listener requires one.
    let refused = kafka
        .client("produce", &anonymous, &[TOPIC, "1"])
        .unwrap_err();
    assert!(refused.contains("SslAuthenticationException"), "{refused}");

    // Continuous production: every record acknowledged.
    let mut producer = kafka.spawn_client("produce-continuous", &client, &[TOPIC]);
    producer.wait_for_stderr("first record acknowledged", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let outcome = producer.stop();
    let line = outcome.result.unwrap();
    eprintln!("produce-continuous: {line}");
    let sent: u64 = line
        .strip_prefix("OK sent=")
        .and_then(|rest| rest.strip_suffix(" failed=0"))
        .unwrap_or_else(|| panic!("{line}; stderr:\n{}", outcome.stderr))
        .parse()
        .unwrap();
    assert!(sent >= 5, "{line}");

    eprintln!("broker RSS at the end: {:?} KiB", kafka.rss_kib());
    let t = Instant::now();
    kafka.stop();
    eprintln!("broker stop took {:?}", t.elapsed());
}
