//! The PKCS#11 backend against SoftHSM2: the backend contract, non-exportable keys, bad
//! inputs without retry storms, session loss, and a Kafka-style mutual-TLS handshake whose
//! leaves are signed by a host key in the token.
//!
//! Every test runs its body in a child process that sees its own `SOFTHSM2_CONF` (see
//! `common::softhsm::isolated`).

#![cfg(feature = "pkcs11")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code: failures panic; latency is measured on the wall clock"
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::java::{self, Store};
use common::keys::{Expect, contract, verify};
use common::softhsm::{self, SoftHsm};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use leafd::keys::pkcs11::{Pkcs11Backend, Pkcs11Config, TokenSelector};
use leafd::keys::{Error, KeyAlgorithm, KeyBackend, KeySpec};
use leafd::secret::Secret;

/// A second, independent handle on the module in this process, like another application
/// library would have. PKCS#11 state (initialization, login) is per process and module, so
/// it shares both with the backend.
struct Other {
    ctx: Pkcs11,
    slot: Slot,
}

impl Other {
    fn new(module: &std::path::Path, label: &str) -> Other {
        let ctx = Pkcs11::new(module).unwrap();
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == label)
            .expect("token present");
        Other { ctx, slot }
    }

    fn session(&self) -> Session {
        self.ctx.open_rw_session(self.slot).unwrap()
    }

    fn pin_locked(&self) -> bool {
        self.ctx
            .get_token_info(self.slot)
            .unwrap()
            .user_pin_locked()
    }
}

fn spec(label: &str, algorithm: KeyAlgorithm) -> KeySpec {
    KeySpec {
        label: label.into(),
        algorithm,
    }
}

fn fact<'a>(facts: &'a [(String, String)], name: &str) -> &'a str {
    facts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no fact {name:?} in {facts:?}"))
}

#[test]
fn pkcs11_backend_meets_the_contract() {
    softhsm::isolated("pkcs11_backend_meets_the_contract", |hsm| {
        let cfg = hsm.config();
        contract(
            Arc::new(move || -> Box<dyn KeyBackend> {
                Box::new(Pkcs11Backend::open(&cfg).unwrap())
            }),
            &Expect {
                algorithms: vec![KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384],
                non_exportable: true,
            },
        );
        // RSA is refused rather than half supported.
        let mut b = Pkcs11Backend::open(&hsm.config()).unwrap();
        for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::Rsa3072] {
            assert!(
                matches!(b.generate(&spec("rsa", alg)), Err(Error::Unsupported(a)) if a == alg)
            );
        }
    });
}

#[test]
fn pkcs11_host_key_refuses_export() {
    softhsm::isolated("pkcs11_host_key_refuses_export", |hsm| {
        let mut b = Pkcs11Backend::open(&hsm.config()).unwrap();
        let key = b.generate(&spec("host", KeyAlgorithm::EcdsaP256)).unwrap();
        let spki = b.public_key(&key).unwrap();
        let info = b.info(&key).unwrap();
        assert_eq!(info.backend, "pkcs11");
        assert!(info.non_exportable);
        let f = &info.facts;
        assert_eq!(fact(f, "sensitive"), "true");
        assert_eq!(fact(f, "extractable"), "false");
        assert_eq!(fact(f, "never-extractable"), "true");
        assert_eq!(fact(f, "always-sensitive"), "true");
        assert_eq!(fact(f, "local"), "true");
        assert_eq!(fact(f, "token"), hsm.label());
        assert_eq!(fact(f, "manufacturer"), "SoftHSM project");
        assert_eq!(fact(f, "model"), "SoftHSM v2");
        assert_eq!(fact(f, "module"), hsm.module().display().to_string());
        assert!(!fact(f, "serial").is_empty());
        drop(b);

        // Read the key with a plain cryptoki session: the value is withheld, and the
        // attributes that protect it cannot be relaxed.
        let other = Other::new(hsm.module(), hsm.label());
        let s = other.session();
        s.login(UserType::User, Some(&AuthPin::new(hsm.pin().into())))
            .unwrap();
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"host".to_vec()),
            ])
            .unwrap();
        let [private] = found.as_slice() else {
            panic!("expected one private key, found {found:?}")
        };
        let attrs = s
            .get_attributes(
                *private,
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Derive,
                    AttributeType::Unwrap,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        for expected in [
            Attribute::Extractable(false),
            Attribute::Sensitive(true),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
        ] {
            assert!(
                attrs.contains(&expected),
                "{expected:?} missing in {attrs:?}"
            );
        }
        assert!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "CKA_VALUE of the private key was readable"
        );
        assert!(
            s.update_attributes(*private, &[Attribute::Extractable(true)])
                .is_err()
        );
        assert!(
            s.update_attributes(*private, &[Attribute::Sensitive(false)])
                .is_err()
        );
        // Nor can it leave the token wrapped under a key of our choosing.
        let wrapping = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(true),
                ],
            )
            .unwrap();
        let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, *private);
        assert!(
            matches!(wrapped, Err(CkError::Pkcs11(RvError::KeyUnextractable, _))),
            "wrapping the host key: {wrapped:?}"
        );
        drop(s);

        // pkcs11-tool reads the same public key.
        let der = hsm.dir().join("pub.der");
        let out = hsm
            .pkcs11_tool()
            .args(["--read-object", "--type", "pubkey", "--label", "host", "-o"])
            .arg(&der)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&der).unwrap(),
            spki,
            "SPKI differs from pkcs11-tool's"
        );
    });
}

#[test]
fn pkcs11_opens_a_key_provisioned_with_pkcs11_tool() {
    softhsm::isolated("pkcs11_opens_a_key_provisioned_with_pkcs11_tool", |hsm| {
        let out = hsm
            .pkcs11_tool()
            .args([
                "--login",
                "--pin",
                hsm.pin(),
                "--keypairgen",
                "--key-type",
                "EC:secp384r1",
            ])
            .args([
                "--label",
                "provisioned",
                "--id",
                "01",
                "--usage-sign",
                "--sensitive",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut b = Pkcs11Backend::open(&hsm.config()).unwrap();
        let key = b
            .open("provisioned")
            .unwrap()
            .expect("provisioned key found");
        assert_eq!(key.algorithm, KeyAlgorithm::EcdsaP384);
        let spki = b.public_key(&key).unwrap();
        let sig = b.sign(&key, b"hello").unwrap();
        assert!(verify(key.algorithm, &spki, b"hello", &sig));
        assert!(b.info(&key).unwrap().non_exportable);
        // The label is taken: generate refuses it.
        assert!(
            b.generate(&spec("provisioned", KeyAlgorithm::EcdsaP256))
                .is_err()
        );
    });
}

#[test]
fn pkcs11_wrong_pin_fails_once_without_locking_the_token() {
    softhsm::isolated(
        "pkcs11_wrong_pin_fails_once_without_locking_the_token",
        |hsm| {
            // Through the spy, which logs every call the backend makes.
            let wrong = Pkcs11Config {
                module: hsm.spy_module(),
                pin: Secret::new("999999".into()),
                ..hsm.config()
            };
            let err = Pkcs11Backend::open(&wrong).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Auth {
                        backend: "pkcs11",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(!err.is_retryable());
            assert_eq!(hsm.login_calls(), 1, "C_Login must be called exactly once");
            let shown = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
            assert!(
                !shown.contains("999999") && !shown.contains(hsm.pin()),
                "PIN leaked: {shown}"
            );
            assert!(format!("{wrong:?}").contains("redacted"));

            // The token is not locked: the right PIN still works.
            let right = Pkcs11Config {
                module: hsm.spy_module(),
                ..hsm.config()
            };
            let mut b = Pkcs11Backend::open(&right).unwrap();
            assert_eq!(hsm.login_calls(), 2);
            let key = b.generate(&spec("host", KeyAlgorithm::EcdsaP256)).unwrap();
            let other = Other::new(hsm.module(), hsm.label());
            assert!(!other.pin_locked());

            // The PIN changes under the running backend, which then loses its login: it tries the
            // old PIN once, then never again.
            let s = other.session(); // logged in already: login state is shared in the process
            s.set_pin(
                &AuthPin::new(hsm.pin().into()),
                &AuthPin::new("135790".into()),
            )
            .unwrap();
            s.logout().unwrap();
            let err = b.sign(&key, b"msg").unwrap_err();
            assert!(matches!(err, Error::Auth { .. }), "{err:?}");
            assert_eq!(hsm.login_calls(), 3);
            for _ in 0..5 {
                let err = b.sign(&key, b"msg").unwrap_err();
                assert!(matches!(err, Error::Auth { .. }), "{err:?}");
                assert!(b.open("host").is_err());
            }
            assert_eq!(hsm.login_calls(), 3, "the backend retried a rejected PIN");
            assert!(!other.pin_locked());
            let shown = format!("{err} {err:?} {b:?}");
            assert!(
                !shown.contains(hsm.pin()) && !shown.contains("135790"),
                "PIN leaked: {shown}"
            );
        },
    );
}

#[test]
fn pkcs11_missing_token_or_module_is_unavailable() {
    softhsm::isolated("pkcs11_missing_token_or_module_is_unavailable", |hsm| {
        let cfg = Pkcs11Config {
            token: TokenSelector::Label("no-such-token".into()),
            ..hsm.config()
        };
        let err = Pkcs11Backend::open(&cfg).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    backend: "pkcs11",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"no-such-token\""), "{err}");
        assert!(err.is_retryable());
        // The cause lists the tokens that are there.
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains(hsm.label()), "{cause}");

        let cfg = Pkcs11Config {
            token: TokenSelector::Serial("0000000000000000".into()),
            ..hsm.config()
        };
        let err = Pkcs11Backend::open(&cfg).unwrap_err();
        assert!(
            err.to_string().contains("serial \"0000000000000000\""),
            "{err}"
        );

        let module = PathBuf::from("/nonexistent/lib/libpkcs11-nowhere.so");
        let cfg = Pkcs11Config {
            module: module.clone(),
            ..hsm.config()
        };
        let err = Pkcs11Backend::open(&cfg).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&module.display().to_string()),
            "{err}"
        );
        // A file that is not a shared library at all.
        let cfg = Pkcs11Config {
            module: hsm.conf(),
            ..hsm.config()
        };
        let err = Pkcs11Backend::open(&cfg).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("softhsm2.conf"), "{err}");

        // Selecting by serial number works.
        let other = Other::new(hsm.module(), hsm.label());
        let serial = other
            .ctx
            .get_token_info(other.slot)
            .unwrap()
            .serial_number()
            .to_owned();
        let cfg = Pkcs11Config {
            token: TokenSelector::Serial(serial),
            ..hsm.config()
        };
        let mut b = Pkcs11Backend::open(&cfg).unwrap();
        b.generate(&spec("by-serial", KeyAlgorithm::EcdsaP256))
            .unwrap();
    });
}

#[test]
fn pkcs11_recovers_a_lost_session() {
    softhsm::isolated("pkcs11_recovers_a_lost_session", |hsm| {
        let cfg = Pkcs11Config {
            module: hsm.spy_module(),
            ..hsm.config()
        };
        let mut b = Pkcs11Backend::open(&cfg).unwrap();
        let key = b.generate(&spec("host", KeyAlgorithm::EcdsaP256)).unwrap();
        let spki = b.public_key(&key).unwrap();
        assert_eq!(hsm.login_calls(), 1);

        // Another handle logs the process out: every session loses its login.
        let other = Other::new(hsm.module(), hsm.label());
        other.session().logout().unwrap();
        let sig = b.sign(&key, b"after logout").unwrap();
        assert!(verify(key.algorithm, &spki, b"after logout", &sig));
        assert_eq!(hsm.login_calls(), 2, "one new login after the logout");
        // Private objects are invisible when logged out: `open` must not say "no such key".
        other.session().logout().unwrap();
        assert!(b.open("host").unwrap().is_some());
        assert_eq!(hsm.login_calls(), 3);

        // Another handle finalizes the module: all sessions close, the library forgets
        // everything (like a device reset). The backend initializes it again.
        Pkcs11::new(hsm.module()).unwrap().finalize().unwrap();
        let sig = b.sign(&key, b"after finalize").unwrap();
        assert!(verify(key.algorithm, &spki, b"after finalize", &sig));
        assert_eq!(hsm.login_calls(), 4);

        // Finalized and initialized again behind the backend's back: the module is up, but
        // the backend's session handle is gone (CKR_SESSION_HANDLE_INVALID).
        let again = Pkcs11::new(hsm.module()).unwrap();
        again.clone().finalize().unwrap();
        again
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let sig = b.sign(&key, b"after reset").unwrap();
        assert!(verify(key.algorithm, &spki, b"after reset", &sig));
        assert_eq!(hsm.login_calls(), 5);
        let log = std::fs::read_to_string(hsm.spy_log()).unwrap();
        for rv in ["CKR_CRYPTOKI_NOT_INITIALIZED", "CKR_SESSION_HANDLE_INVALID"] {
            assert!(log.contains(rv), "the backend never saw {rv}");
        }

        // Steady state: no more logins.
        for i in 0..10 {
            b.sign(&key, format!("m{i}").as_bytes()).unwrap();
        }
        assert_eq!(hsm.login_calls(), 5);
    });
}

#[test]
fn pkcs11_sign_latency() {
    softhsm::isolated("pkcs11_sign_latency", |hsm| {
        let mut b = Pkcs11Backend::open(&hsm.config()).unwrap();
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let key = b.generate(&spec(&format!("lat-{alg}"), alg)).unwrap();
            b.sign(&key, b"warm-up").unwrap();
            let n = 200u32;
            let start = Instant::now();
            for i in 0..n {
                b.sign(&key, &i.to_be_bytes()).unwrap();
            }
            let per = start.elapsed() / n;
            println!("pkcs11 {alg} sign with SoftHSM: {per:?} per signature");
            assert!(
                per < Duration::from_millis(50),
                "{alg}: {per:?} per signature"
            );
        }
    });
}

/// Host key in SoftHSM → host issuing certificate from the embedded local CA → broker and
/// client leaves signed by the token → PKCS#12 stores → Java mutual TLS, as Kafka loads them.
#[test]
fn pkcs11_host_key_signs_leaves_that_java_accepts() {
    softhsm::isolated("pkcs11_host_key_signs_leaves_that_java_accepts", |hsm| {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            java_round_trip(hsm, alg);
        }
    });
}

fn java_round_trip(hsm: &SoftHsm, alg: KeyAlgorithm) {
    use leafd::config::{IssuerSettings, LoadEnv};
    use leafd::issuer::HostCertRequest;
    use leafd::issuer::local::LocalCa;
    use leafd::renew::engine::required_names;
    use leafd::renew::mint::{encode_outputs, mint_leaf};

    let root = hsm.dir().join(format!("java-{alg}"));
    std::fs::create_dir_all(root.join("tls")).unwrap();
    std::fs::write(root.join("store.pass"), "changeit\n").unwrap();
    let identity = |name: &str, subject: &str, san: &str| {
        format!(
            r#"
[[identity]]
name = "{name}"
subject = "{subject}"
sans = [{san}]

[[identity.keystore]]
format = "pkcs12"
path = "{tls}/{name}.p12"
password-file = "{pass}"

[[identity.truststore]]
format = "pkcs12"
path = "{tls}/{name}-trust.p12"
password-file = "{pass}"
"#,
            tls = root.join("tls").display(),
            pass = root.join("store.pass").display(),
        )
    };
    let config = format!(
        "[daemon]\nstate-directory = \"{}\"\n\n[host]\nhostname = \"broker1\"\n{}{}",
        root.join("state").display(),
        identity(
            "broker",
            "CN=localhost,OU=kafka,O=leafd test",
            r#""localhost", "127.0.0.1""#
        ),
        identity(
            "client",
            "CN=app-orders,OU=apps,O=leafd test",
            r#""app-orders.leafd.test""#
        ),
    );
    let path = root.join("leafd.toml");
    std::fs::write(&path, config).unwrap();
    let env = LoadEnv {
        credentials_directory: None,
        hostname: "broker1".into(),
    };
    let settings = leafd::config::load(&path, &env).unwrap();

    let now = SystemTime::now();
    let IssuerSettings::Local(ca_settings) = &settings.issuer;
    let ca = LocalCa::open_or_create(&root.join("state/ca"), ca_settings, now).unwrap();
    let mut backend = Pkcs11Backend::open(&hsm.config()).unwrap();
    let host_key = backend
        .generate(&spec(&format!("host-{alg}"), alg))
        .unwrap();
    let req = HostCertRequest {
        spki_der: backend.public_key(&host_key).unwrap(),
        algorithm: alg,
        names: required_names(&settings),
        subjects: leafd::renew::engine::required_subjects(&settings),
        hostname: "broker1".into(),
    };
    let issued = ca.issue(&req, now).unwrap();
    let host_cert = issued.chain[0].clone();

    for identity in &settings.identities {
        let minted = mint_leaf(&mut backend, &host_key, &host_cert, identity, now).unwrap();
        for e in encode_outputs(identity, &minted, &issued.chain, &issued.roots).unwrap() {
            leafd::keystore::write_output(e.output, &e.bytes).unwrap();
        }
    }
    let store = |file: &str| Store::pkcs12(root.join("tls").join(file), "changeit");
    let line = java::handshake(
        &store("broker.p12"),
        &store("broker-trust.p12"),
        &store("client.p12"),
        &store("client-trust.p12"),
        "127.0.0.1",
    )
    .unwrap_or_else(|e| panic!("{alg}: handshake failed: {e}"));
    println!("{alg}: {line}");
    assert!(line.starts_with("OK TLSv1.3"), "{line}");
    assert!(
        line.contains("server-saw=CN=app-orders,OU=apps,O=leafd test"),
        "{line}"
    );
    assert!(
        line.contains("client-saw=CN=localhost,OU=kafka,O=leafd test"),
        "{line}"
    );
}
