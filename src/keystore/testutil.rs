//! Test helpers: a small rcgen PKI, and running keytool and openssl on encoded stores.

use std::io::ErrorKind;
use std::process::{Command, Output};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};

use crate::vocab::StoreFormat;

const JDK_MISSING: &str =
    "JDK missing: run 'apt-get install -y --no-install-recommends default-jdk-headless'";
const OPENSSL_MISSING: &str = "OpenSSL missing: run 'apt-get install -y openssl'";

/// root → intermediate → leaf. `chain` is `[leaf, intermediate]`, `roots` is `[root]`.
pub(crate) struct Pki {
    pub chain: Vec<Vec<u8>>,
    pub roots: Vec<Vec<u8>>,
    pub leaf_key_pkcs8: Vec<u8>,
}

fn ca_params(cn: String) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "leafd tests");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

pub(crate) fn pki() -> Pki {
    pki_with(&rcgen::PKCS_ECDSA_P256_SHA256)
}

pub(crate) fn pki_with(alg: &'static SignatureAlgorithm) -> Pki {
    let tag: u32 = rand::random();
    let root_key = KeyPair::generate_for(alg).unwrap();
    let root_params = ca_params(format!("leafd test root {tag:08x}"));
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let inter_key = KeyPair::generate_for(alg).unwrap();
    let inter_params = ca_params(format!("leafd test host CA {tag:08x}"));
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = Issuer::new(inter_params, inter_key);

    let leaf_key = KeyPair::generate_for(alg).unwrap();
    let mut leaf_params = CertificateParams::new(vec!["broker1.example.com".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "broker1.example.com");
    leaf_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = leaf_params.signed_by(&leaf_key, &inter_issuer).unwrap();

    Pki {
        chain: vec![leaf.der().to_vec(), inter.der().to_vec()],
        roots: vec![root.der().to_vec()],
        leaf_key_pkcs8: leaf_key.serialize_der(),
    }
}

fn run(cmd: &mut Command, missing: &str) -> Output {
    match cmd.env("LC_ALL", "C.UTF-8").output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{missing}"),
        Err(e) => panic!("could not run {cmd:?}: {e}"),
    }
}

fn store_type(format: &StoreFormat) -> &'static str {
    assert!(
        *format != StoreFormat::Pem,
        "keytool does not read PEM stores"
    );
    format.type_name()
}

fn temp_store(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}

/// `keytool -list` on the bytes; returns the output whatever the status.
pub(crate) fn keytool_raw(
    format: &StoreFormat,
    bytes: &[u8],
    password: &str,
    extra: &[&str],
) -> Output {
    let file = temp_store(bytes);
    run(
        Command::new("keytool")
            .arg("-list")
            .args(extra)
            .arg("-keystore")
            .arg(file.path())
            .args(["-storetype", store_type(format), "-storepass", password]),
        JDK_MISSING,
    )
}

/// `keytool -list` that must succeed; returns stdout and stderr.
pub(crate) fn keytool(
    format: &StoreFormat,
    bytes: &[u8],
    password: &str,
    extra: &[&str],
) -> String {
    let out = keytool_raw(format, bytes, password, extra);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keytool -list failed: {text}");
    text
}

/// `keytool -importkeystore` into a fresh store of the same type: Java must decrypt the
/// private key with the store password, as Kafka's `KeyManagerFactory.init` does.
pub(crate) fn keytool_import(format: &StoreFormat, bytes: &[u8], password: &str) {
    let src = temp_store(bytes);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy");
    let out = run(
        Command::new("keytool")
            .arg("-importkeystore")
            .arg("-srckeystore")
            .arg(src.path())
            .args([
                "-srcstoretype",
                store_type(format),
                "-srcstorepass",
                password,
            ])
            .arg("-destkeystore")
            .arg(&dest)
            .args([
                "-deststoretype",
                store_type(format),
                "-deststorepass",
                password,
            ])
            .arg("-noprompt"),
        JDK_MISSING,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "keytool -importkeystore failed: {text}"
    );
    assert!(text.contains("1 entries successfully imported"), "{text}");
    assert!(text.contains("0 entries failed or cancelled"), "{text}");
}

/// `openssl pkcs12 -info -nodes` that must succeed; returns stdout and stderr.
pub(crate) fn openssl(bytes: &[u8], password: &str) -> String {
    let file = temp_store(bytes);
    let out = run(
        Command::new("openssl")
            .args(["pkcs12", "-in"])
            .arg(file.path())
            .args(["-passin", &format!("pass:{password}"), "-nodes", "-info"]),
        OPENSSL_MISSING,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl pkcs12 failed: {text}");
    text
}
