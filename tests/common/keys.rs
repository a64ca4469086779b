//! The key backend contract: every backend (soft, TPM, PKCS#11) must pass `contract`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a broken backend must panic with the reason"
)]

use leafd::keys::worker::KeyService;
use leafd::keys::{Error, KeyAlgorithm, KeyBackend, KeySpec};
use x509_parser::prelude::FromDer;

/// Verifies `sig` over `msg` with the SubjectPublicKeyInfo `spki`.
pub fn verify(alg: KeyAlgorithm, spki: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    let raw = info.subject_public_key.data.to_vec();
    let ring_alg: &dyn ring::signature::VerificationAlgorithm = match alg {
        KeyAlgorithm::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcdsaP384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        }
    };
    ring::signature::UnparsedPublicKey::new(ring_alg, raw)
        .verify(msg, sig)
        .is_ok()
}

/// What a backend promises beyond the trait.
pub struct Expect {
    /// Algorithms the backend must generate.
    pub algorithms: Vec<KeyAlgorithm>,
    /// Whether `info` must report the key as non-exportable (hardware backends).
    pub non_exportable: bool,
}

/// Runs the whole contract. `open` builds a fresh backend over the same persistent store,
/// as a restarted process would.
pub fn contract(
    open: std::sync::Arc<dyn Fn() -> Box<dyn KeyBackend> + Send + Sync>,
    expect: &Expect,
) {
    let mut b = open();
    for (n, alg) in expect.algorithms.iter().enumerate() {
        let label = format!("contract-{n}");
        // generate, read the public key, sign and verify
        let key = b
            .generate(&KeySpec {
                label: label.clone(),
                algorithm: *alg,
            })
            .unwrap();
        assert_eq!(key.algorithm, *alg);
        let spki = b.public_key(&key).unwrap();
        let sig = b.sign(&key, b"leafd contract").unwrap();
        assert!(
            verify(*alg, &spki, b"leafd contract", &sig),
            "{alg}: signature does not verify"
        );
        assert!(
            !verify(*alg, &spki, b"another message", &sig),
            "{alg}: signature verifies for the wrong message"
        );
        // a label names one key for its whole life
        assert!(
            b.generate(&KeySpec {
                label: label.clone(),
                algorithm: *alg
            })
            .is_err(),
            "{alg}: label reused"
        );
        // info reads the attributes back
        let info = b.info(&key).unwrap();
        assert_eq!(info.algorithm, *alg);
        assert_eq!(
            info.non_exportable, expect.non_exportable,
            "{alg}: non-exportable attribute"
        );
        // survives a restart of the owning process
        drop(b);
        b = open();
        let again = b
            .open(&label)
            .unwrap()
            .expect("key found again after restart");
        assert_eq!(again, key);
        assert_eq!(
            b.public_key(&again).unwrap(),
            spki,
            "{alg}: same public key after restart"
        );
        let sig = b.sign(&again, b"after restart").unwrap();
        assert!(verify(*alg, &spki, b"after restart", &sig));
        // destroy
        b.destroy(&again).unwrap();
        assert!(
            b.open(&label).unwrap().is_none(),
            "{alg}: key still there after destroy"
        );
        assert!(
            matches!(b.sign(&again, b"x"), Err(Error::NotFound(_))),
            "{alg}: sign after destroy"
        );
    }
    assert!(b.open("never-generated").unwrap().is_none());
    assert!(matches!(b.open("../escape"), Err(Error::InvalidLabel(_))));
    assert!(matches!(
        b.generate(&KeySpec {
            label: "Bad Label".into(),
            algorithm: KeyAlgorithm::EcdsaP256
        }),
        Err(Error::InvalidLabel(_))
    ));
    drop(b);
    queued_signing(open);
}

/// Many concurrent tasks queue signatures on one key thread; every one verifies.
fn queued_signing(open: std::sync::Arc<dyn Fn() -> Box<dyn KeyBackend> + Send + Sync>) {
    // The backend is built on the key thread, as the daemon does: it need not be Send.
    let (svc, thread) = KeyService::spawn(move || Ok(open())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spec = KeySpec {
            label: "queued".into(),
            algorithm: KeyAlgorithm::EcdsaP256,
        };
        let key = svc
            .with_backend(move |b| b.generate(&spec))
            .await
            .unwrap()
            .unwrap();
        let k = key.clone();
        let spki = svc
            .with_backend(move |b| b.public_key(&k))
            .await
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let (svc, key) = (svc.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let msg = format!("message {i}").into_bytes();
                let m = msg.clone();
                let sig = svc
                    .with_backend(move |b| b.sign(&key, &m))
                    .await
                    .unwrap()
                    .unwrap();
                (msg, sig)
            }));
        }
        for t in tasks {
            let (msg, sig) = t.await.unwrap();
            assert!(verify(KeyAlgorithm::EcdsaP256, &spki, &msg, &sig));
        }
        svc.with_backend(move |b| b.destroy(&key))
            .await
            .unwrap()
            .unwrap();
    });
    drop(svc);
    thread.join().unwrap();
}

/// What a thief of a soft host key could make: a leaf for `subject` (DER order) and `sans`,
/// signed by the host key in `state_dir` under the host certificate leafd recorded there.
/// Returns the leaf's PKCS#8 key, the leaf DER and the host chain as PEM.
pub fn rogue_leaf(
    state_dir: &std::path::Path,
    subject: Vec<(leafd::vocab::DnAttribute, String)>,
    sans: Vec<leafd::vocab::San>,
) -> (Vec<u8>, Vec<u8>, String) {
    use std::time::{Duration, SystemTime};
    let mut backend = leafd::keys::soft::SoftBackend::open(&state_dir.join("keys")).unwrap();
    let host_key = backend.open("host").unwrap().unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("state.json")).unwrap()).unwrap();
    let host_chain = state["host"]["chain_pem"].as_str().unwrap().to_owned();
    let host_der = pem::parse(&host_chain).unwrap().into_contents();
    let identity = leafd::config::Identity {
        name: "rogue".into(),
        subject,
        sans,
        key_type: KeyAlgorithm::EcdsaP256,
        ekus: vec![leafd::vocab::Eku::ServerAuth, leafd::vocab::Eku::ClientAuth],
        lifetime: Duration::from_secs(600),
        renewal: leafd::config::RenewalSettings {
            at: 0.66,
            jitter: 0.0,
            min_delay: Duration::from_secs(1),
        },
        allow_dn_change: false,
        allow_san_change: false,
        keystores: vec![],
        truststores: vec![],
        reload: Default::default(),
    };
    let minted = leafd::renew::mint::mint_leaf(
        &mut backend,
        &host_key,
        &host_der,
        &identity,
        SystemTime::now(),
    )
    .unwrap();
    (minted.key_pkcs8.to_vec(), minted.cert_der, host_chain)
}
