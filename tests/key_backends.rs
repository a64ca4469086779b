//! The key backend contract run against every backend, plus backend-specific bad inputs.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::keys::{Expect, contract};
use leafd::keys::soft::SoftBackend;
use leafd::keys::{Error, KeyAlgorithm, KeyBackend, KeySpec};

#[test]
fn soft_backend_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let open = move || -> Box<dyn KeyBackend> { Box::new(SoftBackend::open(&path).unwrap()) };
    contract(
        std::sync::Arc::new(open),
        &Expect {
            algorithms: vec![
                KeyAlgorithm::EcdsaP256,
                KeyAlgorithm::EcdsaP384,
                KeyAlgorithm::Rsa2048,
            ],
            non_exportable: false,
        },
    );
}

#[test]
fn soft_key_files_are_private_and_corruption_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut b = SoftBackend::open(dir.path()).unwrap();
    b.generate(&KeySpec {
        label: "host".into(),
        algorithm: KeyAlgorithm::EcdsaP256,
    })
    .unwrap();
    let file = dir.path().join("host.key");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    std::fs::write(
        &file,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut b = SoftBackend::open(dir.path()).unwrap();
    let err = b.open("host").unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("host.key"), "{err}");
}
