//! Proves the JDK store checker itself right, using stores made by openssl and keytool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: failing to set up or run the harness must panic"
)]

mod common;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, Weak};

use common::java::{self, Batch, JDK_MISSING, Store};

const PASSWORD: &str = "changeit";
const SERVER_SUBJECT: &str = "CN=server,O=leafd test";
const CLIENT_SUBJECT: &str = "CN=client,O=leafd test";
const HANDSHAKE_OK: &str =
    "OK TLSv1.3 server-saw=CN=client,O=leafd test client-saw=CN=server,O=leafd test";

const EXTENSIONS: &str = "\
[req]
distinguished_name = dn
[dn]
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
nameConstraints = critical,permitted;DNS:localhost,permitted;IP:127.0.0.1/255.255.255.255
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:localhost,IP:127.0.0.1
[evil]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:evil.example
";

/// Root CA → name-constrained intermediate → server, client and out-of-constraints leaves,
/// and every store the tests need. Shared by the tests running at the same time.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pkcs12(&self, name: &str) -> Store {
        Store::pkcs12(self.path(&format!("{name}.p12")), PASSWORD)
    }

    fn jks(&self, name: &str) -> Store {
        Store::jks(self.path(&format!("{name}.jks")), PASSWORD)
    }

    fn pem(&self, name: &str) -> Store {
        Store::pem(self.path(&format!("{name}-store.pem")))
    }

    fn truststore_pem(&self) -> Store {
        Store::pem(self.path("root.pem"))
    }
}

fn pki() -> Arc<Pki> {
    static SHARED: Mutex<Weak<Pki>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pki) = shared.upgrade() {
        return pki;
    }
    let pki = Arc::new(build_pki());
    *shared = Arc::downgrade(&pki);
    pki
}

fn build_pki() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("leafd-java-harness-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name);
    std::fs::write(p("ext.cnf"), EXTENSIONS).unwrap();

    for name in ["root", "intermediate", "server", "client", "evil"] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &s(&p(&format!("{name}.key"))),
        ]);
    }
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-config",
        &s(&p("ext.cnf")),
        "-extensions",
        "root",
        "-key",
        &s(&p("root.key")),
        "-subj",
        "/CN=leafd test root CA",
        "-days",
        "30",
        "-out",
        &s(&p("root.pem")),
    ]);
    let signed = [
        (
            "intermediate",
            "root",
            "/CN=leafd test intermediate CA",
            "intermediate",
            "2",
        ),
        (
            "server",
            "intermediate",
            "/O=leafd test/CN=server",
            "leaf",
            "3",
        ),
        (
            "client",
            "intermediate",
            "/O=leafd test/CN=client",
            "leaf",
            "4",
        ),
        ("evil", "intermediate", "/O=leafd test/CN=evil", "evil", "5"),
    ];
    for (name, issuer, subject, section, serial) in signed {
        openssl(&[
            "req",
            "-new",
            "-config",
            &s(&p("ext.cnf")),
            "-key",
            &s(&p(&format!("{name}.key"))),
            "-subj",
            subject,
            "-out",
            &s(&p(&format!("{name}.csr"))),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&p(&format!("{name}.csr"))),
            "-CA",
            &s(&p(&format!("{issuer}.pem"))),
            "-CAkey",
            &s(&p(&format!("{issuer}.key"))),
            "-set_serial",
            serial,
            "-days",
            "30",
            "-extfile",
            &s(&p("ext.cnf")),
            "-extensions",
            section,
            "-out",
            &s(&p(&format!("{name}.pem"))),
        ]);
    }
    let read = |name: &str| std::fs::read_to_string(p(name)).unwrap();
    for name in ["server", "client", "evil"] {
        let chain = read(&format!("{name}.pem")) + &read("intermediate.pem");
        std::fs::write(p(&format!("{name}-chain.pem")), &chain).unwrap();
        let key = read(&format!("{name}.key"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        std::fs::write(p(&format!("{name}-store.pem")), key + &chain).unwrap();
    }
    for name in ["server", "client"] {
        openssl(&[
            "pkcs12",
            "-export",
            "-in",
            &s(&p(&format!("{name}.pem"))),
            "-inkey",
            &s(&p(&format!("{name}.key"))),
            "-certfile",
            &s(&p("intermediate.pem")),
            "-name",
            name,
            "-passout",
            &format!("pass:{PASSWORD}"),
            "-out",
            &s(&p(&format!("{name}.p12"))),
        ]);
        keytool(&[
            "-importkeystore",
            "-srckeystore",
            &s(&p(&format!("{name}.p12"))),
            "-srcstoretype",
            "PKCS12",
            "-srcstorepass",
            PASSWORD,
            "-destkeystore",
            &s(&p(&format!("{name}.jks"))),
            "-deststoretype",
            "JKS",
            "-deststorepass",
            PASSWORD,
        ]);
    }
    for (file, kind) in [("trust.p12", "PKCS12"), ("trust.jks", "JKS")] {
        keytool(&[
            "-importcert",
            "-noprompt",
            "-alias",
            "leafd-test-root",
            "-file",
            &s(&p("root.pem")),
            "-keystore",
            &s(&p(file)),
            "-storetype",
            kind,
            "-storepass",
            PASSWORD,
        ]);
    }
    openssl(&[
        "pkcs12",
        "-export",
        "-nokeys",
        "-in",
        &s(&p("root.pem")),
        "-passout",
        &format!("pass:{PASSWORD}"),
        "-out",
        &s(&p("nokeys.p12")),
    ]);
    Pki { dir }
}

fn s(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn openssl(args: &[&str]) {
    let out = output("openssl", args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keytool(args: &[&str]) {
    let mut all = vec!["-J-XX:TieredStopAtLevel=1", "-J-Xshare:auto"];
    all.extend_from_slice(args);
    let out = match Command::new("keytool").args(&all).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{JDK_MISSING} (keytool not found)"),
        Err(e) => panic!("cannot run keytool: {e}"),
    };
    assert!(
        out.status.success(),
        "keytool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keystore_ok() -> String {
    format!("OK keystore key-entries=1 chain-length=2 subject={SERVER_SUBJECT}")
}

#[test]
fn loads_every_keystore_type() {
    let pki = pki();
    for store in [pki.pkcs12("server"), pki.jks("server"), pki.pem("server")] {
        assert_eq!(java::load_keystore(&store), Ok(keystore_ok()), "{store:?}");
    }
    let client = java::load_keystore(&pki.pkcs12("client")).unwrap();
    assert!(
        client.ends_with(&format!("subject={CLIENT_SUBJECT}")),
        "{client}"
    );
}

#[test]
fn loads_every_truststore_type() {
    let pki = pki();
    let p12 = Store::pkcs12(pki.path("trust.p12"), PASSWORD);
    let jks_without_password = Store::jks(pki.path("trust.jks"), PASSWORD).with_password(None);
    for store in [p12, jks_without_password, pki.truststore_pem()] {
        assert_eq!(
            java::load_truststore(&store),
            Ok("OK truststore trusted=1".to_owned()),
            "{store:?}"
        );
    }
}

#[test]
fn handshake_with_pkcs12_stores() {
    let pki = pki();
    let trust = Store::pkcs12(pki.path("trust.p12"), PASSWORD);
    let result = java::handshake(
        &pki.pkcs12("server"),
        &trust,
        &pki.pkcs12("client"),
        &trust,
        "127.0.0.1",
    );
    assert_eq!(result, Ok(HANDSHAKE_OK.to_owned()));
}

#[test]
fn handshake_with_jks_stores() {
    let pki = pki();
    let trust = Store::jks(pki.path("trust.jks"), PASSWORD);
    let result = java::handshake(
        &pki.jks("server"),
        &trust,
        &pki.jks("client"),
        &trust,
        "127.0.0.1",
    );
    assert_eq!(result, Ok(HANDSHAKE_OK.to_owned()));
}

#[test]
fn handshake_with_pem_stores() {
    let pki = pki();
    let trust = pki.truststore_pem();
    let result = java::handshake(
        &pki.pem("server"),
        &trust,
        &pki.pem("client"),
        &trust,
        "127.0.0.1",
    );
    assert_eq!(result, Ok(HANDSHAKE_OK.to_owned()));
}

#[test]
fn handshake_checks_the_host_name() {
    let pki = pki();
    let trust = pki.truststore_pem();
    let (server, client) = (pki.pkcs12("server"), pki.pem("client"));
    let mut batch = Batch::new();
    let localhost = batch.handshake(&server, &trust, &client, &trust, "localhost");
    assert_eq!(localhost, Ok(HANDSHAKE_OK.to_owned()));
    let other = batch
        .handshake(&server, &trust, &client, &trust, "other.example")
        .unwrap_err();
    assert!(
        other.contains("No subject alternative DNS name matching other.example"),
        "{other}"
    );
    let evil = batch
        .handshake(&pki.pem("evil"), &trust, &client, &trust, "127.0.0.1")
        .unwrap_err();
    assert!(evil.contains("name constraints check failed"), "{evil}");
}

#[test]
fn wrong_password_fails() {
    let pki = pki();
    let p12 = pki.pkcs12("server").with_password(Some("wrong"));
    let err = java::load_keystore(&p12).unwrap_err();
    assert!(
        err.starts_with("FAIL IOException: keystore password was incorrect"),
        "{err}"
    );
    let jks = pki.jks("server").with_password(Some("wrong"));
    let err = java::load_keystore(&jks).unwrap_err();
    assert!(
        err.starts_with("FAIL IOException: Keystore was tampered with, or password was incorrect"),
        "{err}"
    );
    let trust = Store::pkcs12(pki.path("trust.p12"), "wrong");
    let err = java::load_truststore(&trust).unwrap_err();
    assert!(err.contains("password was incorrect"), "{err}");
}

#[test]
fn keystore_without_password_fails_like_kafka() {
    let pki = pki();
    let err = java::load_keystore(&pki.pkcs12("server").with_password(None)).unwrap_err();
    assert!(err.contains("key store password is not specified"), "{err}");
}

#[test]
fn openssl_nokeys_truststore_has_no_trusted_entries() {
    let pki = pki();
    let err = java::load_truststore(&Store::pkcs12(pki.path("nokeys.p12"), PASSWORD)).unwrap_err();
    assert!(
        err.starts_with(
            "FAIL InvalidAlgorithmParameterException: the trustAnchors parameter must be non-empty"
        ),
        "{err}"
    );
}

#[test]
fn keytool_pkcs12_truststore_without_password_is_empty() {
    let pki = pki();
    let trust = Store::pkcs12(pki.path("trust.p12"), PASSWORD).with_password(None);
    let err = java::load_truststore(&trust).unwrap_err();
    assert!(
        err.contains("trustAnchors parameter must be non-empty"),
        "{err}"
    );
}

#[test]
fn name_constraints_are_enforced_by_pkix_and_openssl() {
    let pki = pki();
    let root = pki.path("root.pem");
    assert_eq!(
        java::pkix(&pki.path("server-chain.pem"), &root),
        Ok("OK".to_owned())
    );
    let err = java::pkix(&pki.path("evil-chain.pem"), &root).unwrap_err();
    assert!(err.contains("name constraints check failed"), "{err}");

    let verify = |leaf: &str| {
        output(
            "openssl",
            &[
                "verify",
                "-CAfile",
                &s(&root),
                "-untrusted",
                &s(&pki.path("intermediate.pem")),
                &s(&pki.path(leaf)),
            ],
        )
    };
    assert!(verify("server.pem").status.success());
    let evil = verify("evil.pem");
    assert!(!evil.status.success());
    let text = String::from_utf8_lossy(&evil.stdout) + String::from_utf8_lossy(&evil.stderr);
    assert!(text.contains("permitted subtree violation"), "{text}");
}

#[test]
fn pem_keystore_with_password_fails() {
    let pki = pki();
    let store = pki.pem("server").with_password(Some(PASSWORD));
    let err = java::load_keystore(&store).unwrap_err();
    assert!(
        err.contains("key store password cannot be specified with PEM format"),
        "{err}"
    );
    let trust = pki.truststore_pem().with_password(Some(PASSWORD));
    let err = java::load_truststore(&trust).unwrap_err();
    assert!(
        err.contains("trust store password cannot be specified for PEM format"),
        "{err}"
    );
}

#[test]
fn batch_runs_three_commands() {
    let pki = pki();
    let mut batch = Batch::new();
    let pem_keystore = [
        "load",
        "--role",
        "keystore",
        "--type",
        "PEM",
        "--path",
        &s(&pki.path("server-store.pem")),
    ];
    let nokeys = [
        "load",
        "--role",
        "truststore",
        "--type",
        "PKCS12",
        "--path",
        &s(&pki.path("nokeys.p12")),
    ];
    let evil = [
        "pkix",
        "--chain",
        &s(&pki.path("evil-chain.pem")),
        "--trust",
        &s(&pki.path("root.pem")),
    ];
    let results: Vec<Result<String, String>> = [&pem_keystore[..], &nokeys[..], &evil[..]]
        .into_iter()
        .map(|args| batch.run(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>()))
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], Ok(keystore_ok()));
    assert!(
        results[1].as_ref().unwrap_err().contains("trustAnchors"),
        "{results:?}"
    );
    assert!(
        results[2]
            .as_ref()
            .unwrap_err()
            .contains("name constraints"),
        "{results:?}"
    );
    assert_eq!(
        batch.load_keystore(&pki.pkcs12("server")),
        Ok(keystore_ok()),
        "the batch JVM keeps going after failures"
    );
}
