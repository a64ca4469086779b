//! The shipped quickstart against a real Apache Kafka broker: leafd runs
//! `etc/leafd/quickstart.toml` as shipped (with its password file), `leafctl kafka-config`
//! prints the broker's `server.properties` lines, the broker starts with them appended
//! verbatim and serves leafd's stores, and leafd's client identities connect with
//! `ssl.client.auth=required`: the quickstart's own client (JKS and PEM keystores, no SAN)
//! is accepted, ACLs follow the principal `leafctl principal` prints under non-trivial
//! `ssl.principal.mapping.rules`, and a second leafd client without an ACL is denied.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code: setup failures must panic; the daemon is waited for with std time"
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::java::Store;
use common::real_kafka::KafkaConfig;

const PASSWORD: &str = "changeit";
const TOPIC: &str = "quickstart-orders";

/// The quickstart as shipped, in a temporary tree shaped like the source tree (the config's
/// relative paths `../../target/quickstart/...` stay inside it). Stops leafd on drop.
struct Quickstart {
    dir: tempfile::TempDir,
    child: Child,
}

impl Quickstart {
    fn start() -> Quickstart {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc/leafd");
        fs::create_dir_all(&etc).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/leafd");
        for file in ["quickstart.toml", "quickstart.pass"] {
            fs::copy(src.join(file), etc.join(file)).unwrap();
        }
        // A second client identity, as an operator would add one: a drop-in.
        fs::create_dir_all(etc.join("quickstart.d")).unwrap();
        fs::write(
            etc.join("quickstart.d/50-other.toml"),
            "[[identity]]\nname = \"other\"\nsubject = \"CN=other-client,OU=clients,O=leafd quickstart\"\n\
             eku = [\"client-auth\"]\nlifetime = \"10m\"\n[[identity.keystore]]\nformat = \"pkcs12\"\n\
             path = \"../../../target/quickstart/tls/other.p12\"\npassword-file = \"../quickstart.pass\"\n",
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("leafd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_leafd"))
            .arg("--config")
            .arg(etc.join("quickstart.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let q = Quickstart { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        let files = [
            "broker.p12",
            "truststore.p12",
            "client.jks",
            "client-truststore.jks",
            "client-key.pem",
            "ca.pem",
            "other.p12",
        ];
        while !files.iter().all(|f| q.tls(f).exists()) {
            assert!(
                Instant::now() < deadline,
                "the quickstart wrote no stores in 60 s; log:\n{}",
                q.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The PKCS#12 files are renamed into place whole; give the last one a moment to be
        // followed by the state save.
        std::thread::sleep(Duration::from_millis(200));
        q
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("etc/leafd/quickstart.toml")
    }

    fn tls(&self, file: &str) -> PathBuf {
        self.dir.path().join("target/quickstart/tls").join(file)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("leafd.log")).unwrap_or_default()
    }

    fn leafctl(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_leafctl"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "leafctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("leafd log:\n{}", self.log());
        }
    }
}

/// The first certificate of a PEM keystore, alone, for `leafctl principal`.
fn leaf_pem(q: &Quickstart, keystore_pem: &str, out: &str) -> PathBuf {
    let text = fs::read_to_string(q.tls(keystore_pem)).unwrap();
    let leaf = pem::parse_many(&text)
        .unwrap()
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .unwrap();
    let path = q.dir.path().join(out);
    fs::write(&path, pem::encode(&leaf)).unwrap();
    path
}

#[test]
fn the_quickstart_runs_a_real_broker_and_its_clients() {
    let q = Quickstart::start();
    let config = q.config();
    let config = config.to_str().unwrap();

    // The broker's lines, exactly as printed.
    let lines = q.leafctl(&["kafka-config", "broker", "--listener", "SSL", "-c", config]);
    assert!(
        lines.contains("listener.name.ssl.ssl.keystore.password=${directory:"),
        "{lines}"
    );
    assert!(!lines.contains(PASSWORD), "no password is printed: {lines}");

    // Non-trivial mapping rules (CN, lower-cased, for the quickstart's client subjects); the
    // principals come from `leafctl principal` with the same rules.
    let rules = "RULE:^CN=([^,]*),OU=clients,O=leafd quickstart$/$1/L,DEFAULT";
    let client_cert = leaf_pem(&q, "client-key.pem", "client-leaf.pem");
    let shown = q.leafctl(&["principal", client_cert.to_str().unwrap(), "--rules", rules]);
    let principal = shown
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("User:")))
        .unwrap_or_else(|| panic!("no principal in {shown:?}"))
        .to_owned();
    assert_eq!(principal, "User:quickstart-client");

    let broker_ks = Store::pkcs12(q.tls("broker.p12"), PASSWORD);
    let broker_ts = Store::pkcs12(q.tls("truststore.p12"), PASSWORD);
    let mut kafka_config = KafkaConfig::new(&broker_ks, &broker_ts).standard_authorizer();
    for line in lines.lines() {
        kafka_config = kafka_config.property(line);
    }
    // After kafka-config's own rules (the last value wins in server.properties).
    let kafka_config = kafka_config.property(&format!(
        "listener.name.ssl.ssl.principal.mapping.rules={rules}"
    ));
    let mut kafka = kafka_config.start();
    let props = fs::read_to_string(kafka.server_properties_path()).unwrap();
    for line in lines.lines() {
        assert!(
            props.contains(line),
            "{line:?} is not in server.properties:\n{props}"
        );
    }

    // Topic and ACL as admin over SASL_SSL, trusting leafd's root.
    let admin = kafka.admin_client_properties(&broker_ts);
    let admin = kafka.write_properties("admin", &admin);
    kafka
        .client("admin-create-topic", &admin, &[TOPIC])
        .unwrap();
    kafka
        .client(
            "admin-acl-allow",
            &admin,
            &[&principal, TOPIC, "WRITE", "READ", "DESCRIBE"],
        )
        .unwrap();

    // The quickstart client as shipped: JKS keystore and truststore.
    let jks = kafka.ssl_client_properties(
        Some(&Store::jks(q.tls("client.jks"), PASSWORD)),
        &Store::jks(q.tls("client-truststore.jks"), PASSWORD),
    );
    let jks = kafka.write_properties("client-jks", &jks);
    assert_eq!(
        kafka.client("produce", &jks, &[TOPIC, "3"]),
        Ok("OK produced 3".to_owned())
    );
    // The same identity's PEM keystore (key and chain in one file, no password).
    let pem = kafka.ssl_client_properties(
        Some(&Store::pem(q.tls("client-key.pem"))),
        &Store::pem(q.tls("ca.pem")),
    );
    let pem = kafka.write_properties("client-pem", &pem);
    assert_eq!(
        kafka.client("produce", &pem, &[TOPIC, "2"]),
        Ok("OK produced 2".to_owned())
    );
    assert_eq!(
        kafka.client("consume", &pem, &[TOPIC, "5", "20000"]),
        Ok("OK consumed 5".to_owned())
    );

    // Another leafd client identity (PKCS12), authenticated but without an ACL: denied.
    let other = kafka.ssl_client_properties(
        Some(&Store::pkcs12(q.tls("other.p12"), PASSWORD)),
        &Store::pkcs12(q.tls("truststore.p12"), PASSWORD),
    );
    let other = kafka.write_properties("other", &other);
    let denied = kafka.client("produce", &other, &[TOPIC, "1"]).unwrap_err();
    assert!(
        denied.contains("TopicAuthorizationException"),
        "expected an authorization failure, got {denied}"
    );

    // A leaf the real host key signs for a subject the host was not given (the admin's, with
    // the broker's permitted name): the broker refuses the handshake.
    let rogue = rogue_keystore(&q);
    let rogue =
        kafka.ssl_client_properties(Some(&Store::pem(&rogue)), &Store::pem(q.tls("ca.pem")));
    let rogue = kafka.write_properties("rogue", &rogue);
    let refused = kafka.client("produce", &rogue, &[TOPIC, "1"]).unwrap_err();
    assert!(
        refused.contains("SslAuthenticationException"),
        "the broker must refuse a subject outside the host certificate: {refused}"
    );
    kafka.stop();
}

/// A PEM keystore (key, leaf, host certificate) for `CN=admin,OU=clients,O=leafd
/// quickstart` with the permitted name `localhost`, signed by the quickstart's
/// host key: what a thief of the host key could make.
fn rogue_keystore(q: &Quickstart) -> PathBuf {
    use leafd::vocab::{DnAttribute, San};
    let (key, leaf, host_chain) = common::keys::rogue_leaf(
        &q.dir.path().join("target/quickstart/state"),
        vec![
            (DnAttribute::Organization, "leafd quickstart".into()),
            (DnAttribute::OrganizationalUnit, "clients".into()),
            (DnAttribute::CommonName, "admin".into()),
        ],
        vec![San::Dns("localhost".into())],
    );
    let path = q.dir.path().join("rogue.pem");
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", key));
    let leaf = pem::encode(&pem::Pem::new("CERTIFICATE", leaf));
    fs::write(&path, format!("{key}{leaf}{host_chain}")).unwrap();
    path
}
