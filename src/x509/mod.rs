//! Certificate profiles and inspection. Pure: no I/O, no clock; callers pass `now`.
//!
//! The profiles (root, host issuing CA with its name constraints, leaf) are built from
//! plain specs, so a CA reuses them without leafd's config. Signing goes through rcgen's
//! `SigningKey`, so this module never names a key backend: `keys::signer::BackendKey`
//! adapts a backend's key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyUsagePurpose, NameConstraints, PublicKeyData,
    SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::vocab::{DnAttribute, Eku, KeyAlgorithm, San, Subject, escape_rfc2253};

/// x509 errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or the signature failed.
    #[error("could not build certificate {what}")]
    Build {
        /// Which certificate.
        what: &'static str,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate could not be parsed.
    #[error("could not parse certificate {what}")]
    Parse {
        /// Which certificate.
        what: &'static str,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A name is not valid in a certificate.
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// A public key could not be read.
    #[error("invalid public key")]
    InvalidPublicKey,
}

/// Clock skew allowance: `notBefore` is set this far in the past (at most a tenth of the
/// lifetime, so short lifetimes keep most of their validity ahead of them).
pub const BACKDATE: Duration = Duration::from_secs(60);

/// A public key given as SubjectPublicKeyInfo DER, for certifying keys we don't hold.
pub struct SpkiPublicKey {
    raw: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl SpkiPublicKey {
    /// Parses an SPKI of the given algorithm.
    pub fn new(spki_der: &[u8], algorithm: KeyAlgorithm) -> Result<Self, Error> {
        Ok(Self {
            raw: raw_public_key(spki_der).ok_or(Error::InvalidPublicKey)?,
            algorithm,
        })
    }
}

impl PublicKeyData for SpkiPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen_alg()
    }
}

/// The subjectPublicKey bits of an SPKI.
pub fn raw_public_key(spki_der: &[u8]) -> Option<Vec<u8>> {
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    Some(spki.subject_public_key.data.to_vec())
}

fn odt(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// A random positive 127-bit serial from 16 random bytes.
pub fn serial_from_bytes(mut bytes: [u8; 16]) -> SerialNumber {
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so the DER encoding keeps 16 bytes
    SerialNumber::from_slice(&bytes)
}

/// Common CA parameters: CN-only subject, validity from `now` (backdated by [`BACKDATE`]).
fn ca_params(
    common_name: &str,
    constraints: BasicConstraints,
    now: SystemTime,
    validity: Duration,
    serial: [u8; 16],
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(constraints);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = odt(now - BACKDATE.min(validity / 10));
    p.not_after = odt(now + validity);
    p.serial_number = Some(serial_from_bytes(serial));
    p
}

/// Parameters for the embedded local root.
pub fn root_params(
    common_name: &str,
    now: SystemTime,
    validity: Duration,
    serial: [u8; 16],
) -> CertificateParams {
    ca_params(
        common_name,
        BasicConstraints::Unconstrained,
        now,
        validity,
        serial,
    )
}

/// What a host issuing certificate permits the host to certify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permitted {
    /// dNSName and iPAddress subtrees: the names its leaves may carry.
    pub names: Vec<San>,
    /// directoryName subtrees: the subjects its leaves may have (a subject also permits
    /// longer subjects below it, per RFC 5280).
    pub subjects: Vec<Subject>,
}

/// Parameters for a host issuing certificate: CA, pathlen 0, name-constrained to
/// `permitted` (names and subjects).
pub fn host_issuing_params(
    common_name: &str,
    permitted: &Permitted,
    now: SystemTime,
    validity: Duration,
    serial: [u8; 16],
) -> Result<CertificateParams, Error> {
    let mut p = ca_params(
        common_name,
        BasicConstraints::Constrained(0),
        now,
        validity,
        serial,
    );
    p.key_usages.push(KeyUsagePurpose::DigitalSignature);
    let mut subtrees = permitted_subtrees(&permitted.names);
    for subject in &permitted.subjects {
        let dn = distinguished_name(subject)?;
        if !subtrees.contains(&GeneralSubtree::DirectoryName(dn.clone())) {
            subtrees.push(GeneralSubtree::DirectoryName(dn));
        }
    }
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: subtrees,
        excluded_subtrees: Vec::new(),
    });
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Name-constraint subtrees permitting exactly `names` (a DNS subtree also permits names
/// below it, per RFC 5280; a wildcard `*.a.b` needs the subtree `a.b`). With no names (only
/// client identities whose CN is no DNS name) nothing usable is permitted: the reserved
/// `invalid` DNS subtree (RFC 6761) and the unspecified IPv4/IPv6 addresses, so the
/// extension still forbids every real name.
pub fn permitted_subtrees(names: &[San]) -> Vec<GeneralSubtree> {
    if names.is_empty() {
        return vec![
            GeneralSubtree::DnsName("invalid".to_owned()),
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [255; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [255; 16])),
        ];
    }
    let mut out: Vec<GeneralSubtree> = Vec::new();
    for n in names {
        let t = match n {
            San::Dns(d) => GeneralSubtree::DnsName(d.strip_prefix("*.").unwrap_or(d).to_owned()),
            San::Ip(IpAddr::V4(a)) => {
                GeneralSubtree::IpAddress(CidrSubnet::V4(a.octets(), [255; 4]))
            }
            San::Ip(IpAddr::V6(a)) => {
                GeneralSubtree::IpAddress(CidrSubnet::V6(a.octets(), [255; 16]))
            }
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Whether a name is inside the permitted names of a host issuing certificate.
pub fn name_permitted(name: &San, permitted: &[San]) -> bool {
    permitted.iter().any(|p| match (name, p) {
        (San::Ip(a), San::Ip(b)) => a == b,
        (San::Dns(n), San::Dns(c)) => {
            let c = c.strip_prefix("*.").unwrap_or(c);
            let n = n.strip_prefix("*.").unwrap_or(n);
            n == c || n.ends_with(&format!(".{c}"))
        }
        _ => false,
    })
}

/// Whether `subject` is inside one of the permitted subject subtrees: a permitted subject
/// is an RDN-wise prefix of it, values compared as Java and OpenSSL canonicalize them
/// (ASCII case and surrounding white space ignored).
pub fn subject_permitted(subject: &[(DnAttribute, String)], permitted: &[Subject]) -> bool {
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    permitted.iter().any(|p| {
        p.len() <= subject.len()
            && p.iter()
                .zip(subject)
                .all(|((pa, pv), (sa, sv))| pa == sa && same(pv, sv))
    })
}

/// Why a subject cannot be expressed in a host issuing certificate's constraints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CnError {
    /// The CN is an IP address: Java checks it as an iPAddress, OpenSSL as a DNS name.
    #[error(
        "CN {0:?} is an IP address: without a DNS SAN, Java checks it against the host \
         certificate's IP constraints and OpenSSL against its DNS constraints; give the \
         identity a DNS SAN or a CN that is no address"
    )]
    IpAddress(String),
    /// The CN looks like a DNS name to OpenSSL but is no valid dNSName.
    #[error(
        "CN {0:?} is checked as a DNS name by OpenSSL (it has dots) but is no valid DNS \
         name, so no name constraint can permit it; give the identity a DNS SAN or use \
         letters, digits and '-' only"
    )]
    NotDnsName(String),
}

/// The DNS name a host issuing certificate must permit for a leaf's CN.
///
/// Java PKIX (when the leaf has no DNS SAN) checks a CN that parses as a DNS name against
/// the issuer's dNSName constraints, and OpenSSL does so for a CN of two or more labels;
/// rustls-webpki never reads the CN. So a leaf without a DNS SAN whose CN is a DNS name
/// needs that name permitted (lower-cased); a CN that is no DNS name (spaces,
/// underscores, no dots) needs nothing. A CN that a validator would check but that no
/// constraint can permit is an error.
pub fn cn_name_constraint(
    subject: &[(DnAttribute, String)],
    sans: &[San],
) -> Result<Option<San>, CnError> {
    if sans.iter().any(|s| matches!(s, San::Dns(_))) {
        return Ok(None);
    }
    // The most specific CN: the last one in DER order.
    let Some((_, cn)) = subject
        .iter()
        .rev()
        .find(|(a, _)| *a == DnAttribute::CommonName)
    else {
        return Ok(None);
    };
    if cn.parse::<IpAddr>().is_ok() {
        return Err(CnError::IpAddress(cn.clone()));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if cn.len() <= 253 && cn.split('.').all(label_ok) {
        return Ok(Some(San::Dns(cn.to_ascii_lowercase())));
    }
    let openssl_dns = cn.contains('.')
        && cn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if openssl_dns {
        return Err(CnError::NotDnsName(cn.clone()));
    }
    Ok(None)
}

/// The subject as rcgen writes it: one RDN per attribute in DER order, UTF8String values
/// except `C` (PrintableString).
fn distinguished_name(subject: &[(DnAttribute, String)]) -> Result<DistinguishedName, Error> {
    let mut dn = DistinguishedName::new();
    for (attr, value) in subject {
        let v = match attr {
            DnAttribute::Country => DnValue::PrintableString(
                value
                    .as_str()
                    .try_into()
                    .map_err(|_| Error::InvalidName(value.clone()))?,
            ),
            _ => DnValue::Utf8String(value.clone()),
        };
        dn.push(dn_type(*attr), v);
    }
    Ok(dn)
}

fn dn_type(a: DnAttribute) -> DnType {
    match a {
        DnAttribute::CommonName => DnType::CommonName,
        DnAttribute::Organization => DnType::OrganizationName,
        DnAttribute::OrganizationalUnit => DnType::OrganizationalUnitName,
        DnAttribute::Country => DnType::CountryName,
        DnAttribute::State => DnType::StateOrProvinceName,
        DnAttribute::Locality => DnType::LocalityName,
    }
}

/// What a leaf certifies: the end-entity profile's inputs.
#[derive(Debug, Clone, Copy)]
pub struct LeafSpec<'a> {
    /// Subject DN in DER order, one attribute per RDN.
    pub subject: &'a [(DnAttribute, String)],
    /// Subject alternative names.
    pub sans: &'a [San],
    /// Extended key usages.
    pub ekus: &'a [Eku],
    /// The leaf key's algorithm (RSA keys also get keyEncipherment).
    pub key_type: KeyAlgorithm,
    /// Validity from `now`.
    pub lifetime: Duration,
    /// The issuer's notAfter: a leaf never outlives the certificate that signs it, so its
    /// notAfter is cut there.
    pub not_after_limit: Option<SystemTime>,
}

/// Parameters for a leaf as `identity` describes it, valid from `now` for its lifetime.
pub fn leaf_params(
    identity: &LeafSpec<'_>,
    now: SystemTime,
    serial: [u8; 16],
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = distinguished_name(identity.subject)?;
    p.subject_alt_names = identity
        .sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => d
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| Error::InvalidName(d.clone())),
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = if identity.key_type.is_rsa() {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    p.extended_key_usages = identity
        .ekus
        .iter()
        .map(|e| match e {
            Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    p.use_authority_key_identifier_extension = true;
    p.not_before = odt(now - BACKDATE.min(identity.lifetime / 10));
    let not_after = now + identity.lifetime;
    p.not_after = odt(identity
        .not_after_limit
        .map_or(not_after, |limit| not_after.min(limit)));
    p.serial_number = Some(serial_from_bytes(serial));
    Ok(p)
}

/// What leafd needs to know about a certificate it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Serial as lower-case hex.
    pub serial: String,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
    /// Subject in RFC 2253-like order (as Kafka prints the principal).
    pub subject: String,
    /// SANs.
    pub sans: Vec<San>,
    /// Permitted name constraints (host issuing certificates).
    pub permitted: Vec<San>,
    /// Permitted subject subtrees (host issuing certificates); subtrees with attributes
    /// leafd does not write are left out (they permit no subject leafd writes).
    pub permitted_subjects: Vec<Subject>,
    /// The name constraints use forms leafd does not write or check: excluded subtrees,
    /// other name types, IP ranges wider than one address.
    pub unsupported_constraints: bool,
    /// The subject as leafd's `Subject`, if every attribute is one leafd writes.
    pub subject_dn: Option<Subject>,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
}

/// Parses the fields leafd uses.
pub fn summarize(der: &[u8], what: &'static str) -> Result<CertSummary, Error> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::Parse {
        what,
        source: e.to_string().into(),
    })?;
    let to_time = |t: x509_parser::time::ASN1Time| {
        let ts = t.timestamp();
        if ts >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let mut sans = Vec::new();
    let mut permitted = Vec::new();
    let mut permitted_subjects = Vec::new();
    let mut unsupported_constraints = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => sans.push(San::Dns(d.to_ascii_lowercase())),
                        GeneralName::IPAddress(b) => {
                            if let Some(ip) = ip_from_bytes(b) {
                                sans.push(San::Ip(ip));
                            }
                        }
                        _ => {}
                    }
                }
            }
            ParsedExtension::NameConstraints(nc) => {
                unsupported_constraints |= nc.excluded_subtrees.is_some();
                for st in nc.permitted_subtrees.iter().flatten() {
                    match &st.base {
                        GeneralName::DNSName(d) => permitted.push(San::Dns(d.to_ascii_lowercase())),
                        GeneralName::IPAddress(b)
                            if (b.len() == 8 || b.len() == 32)
                                && b[b.len() / 2..].iter().all(|m| *m == 0xff) =>
                        {
                            if let Some(ip) = ip_from_bytes(&b[..b.len() / 2]) {
                                permitted.push(San::Ip(ip));
                            }
                        }
                        GeneralName::DirectoryName(name) => {
                            if let Some(subject) = subject_of(name) {
                                permitted_subjects.push(subject);
                            }
                        }
                        _ => unsupported_constraints = true,
                    }
                }
            }
            _ => {}
        }
    }
    Ok(CertSummary {
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: to_time(cert.validity().not_before),
        not_after: to_time(cert.validity().not_after),
        subject: rfc2253(&cert),
        sans,
        permitted,
        permitted_subjects,
        unsupported_constraints,
        subject_dn: subject_of(cert.subject()),
        spki: cert.public_key().raw.to_vec(),
    })
}

/// A name as leafd's `Subject` (DER order), if every attribute is one leafd writes.
fn subject_of(name: &x509_parser::x509::X509Name<'_>) -> Option<Subject> {
    let mut out = Vec::new();
    for rdn in name.iter() {
        for ava in rdn.iter() {
            let attr = DnAttribute::from_oid(&ava.attr_type().to_id_string())?;
            out.push((attr, ava.as_str().ok()?.to_owned()));
        }
    }
    Some(out)
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The subject as Java's `X500Principal.getName()` (RFC 2253) prints it, for the common
/// attributes leafd writes: last RDN first, `,` separators, special characters escaped.
fn rfc2253(cert: &X509Certificate<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in cert.subject().iter() {
        let mut avas = Vec::new();
        for ava in rdn.iter() {
            let oid = ava.attr_type().to_id_string();
            let key = DnAttribute::from_oid(&oid).map_or(oid.clone(), |a| a.keyword().to_owned());
            let value = ava.as_str().unwrap_or("").to_owned();
            avas.push(format!("{key}={}", escape_rfc2253(&value)));
        }
        parts.push(avas.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

pub use crate::vocab::subject_string;

/// PEM-encodes certificates.
pub fn to_pem(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Vec<(DnAttribute, String)> {
        vec![
            (DnAttribute::Organization, "Example, Inc.".into()),
            (DnAttribute::OrganizationalUnit, "kafka".into()),
            (DnAttribute::CommonName, "b1".into()),
        ]
    }

    #[test]
    fn name_constraints_cover_names_and_subdomains_only() {
        let permitted = vec![
            San::Dns("kafka.example.net".into()),
            San::Ip("127.0.0.1".parse().unwrap()),
        ];
        assert!(name_permitted(
            &San::Dns("kafka.example.net".into()),
            &permitted
        ));
        assert!(name_permitted(
            &San::Dns("b1.kafka.example.net".into()),
            &permitted
        ));
        assert!(!name_permitted(
            &San::Dns("evilkafka.example.net".into()),
            &permitted
        ));
        assert!(!name_permitted(&San::Dns("example.net".into()), &permitted));
        assert!(name_permitted(
            &San::Ip("127.0.0.1".parse().unwrap()),
            &permitted
        ));
        assert!(!name_permitted(
            &San::Ip("127.0.0.2".parse().unwrap()),
            &permitted
        ));
        // No names: only unusable subtrees.
        assert_eq!(permitted_subtrees(&[]).len(), 3);
        assert!(!name_permitted(&San::Dns("example.net".into()), &[]));
        // A wildcard SAN needs its parent as the subtree.
        let wild = vec![San::Dns("*.kafka.example.net".into())];
        assert_eq!(
            permitted_subtrees(&wild),
            vec![GeneralSubtree::DnsName("kafka.example.net".into())]
        );
        assert!(name_permitted(
            &San::Dns("*.kafka.example.net".into()),
            &wild
        ));
    }

    #[test]
    fn subjects_are_permitted_by_prefix_ignoring_case() {
        let s = subject();
        assert!(subject_permitted(&s, std::slice::from_ref(&s)));
        let mut upper = s.clone();
        upper[2].1 = " B1 ".into();
        assert!(subject_permitted(&upper, std::slice::from_ref(&s)));
        // A subtree permits longer subjects below it, never a sibling or a parent.
        assert!(subject_permitted(&s, &[s[..2].to_vec()]));
        let mut other = s.clone();
        other[2].1 = "admin".into();
        assert!(!subject_permitted(&other, std::slice::from_ref(&s)));
        assert!(!subject_permitted(&s[..2], std::slice::from_ref(&s)));
        assert!(!subject_permitted(&s, &[]));
    }

    #[test]
    fn a_cn_is_permitted_as_a_dns_name_only_where_validators_check_it() {
        let cn = |v: &str| {
            vec![
                (DnAttribute::Organization, "Example".to_owned()),
                (DnAttribute::CommonName, v.to_owned()),
            ]
        };
        let dns = |v: &str| San::Dns(v.to_owned());
        // No DNS SAN: a DNS-like CN must be permitted as a DNS name (Java, OpenSSL).
        assert_eq!(
            cn_name_constraint(&cn("Quickstart-Client"), &[]),
            Ok(Some(dns("quickstart-client")))
        );
        assert_eq!(
            cn_name_constraint(
                &cn("b1.kafka.example"),
                &[San::Ip("10.0.0.1".parse().unwrap())]
            ),
            Ok(Some(dns("b1.kafka.example")))
        );
        // With a DNS SAN the CN is never checked.
        assert_eq!(
            cn_name_constraint(&cn("anything.at_all"), &[dns("b1.example")]),
            Ok(None)
        );
        // Not a DNS name for anyone: nothing to permit.
        assert_eq!(cn_name_constraint(&cn("Kafka Client 1"), &[]), Ok(None));
        assert_eq!(cn_name_constraint(&cn("svc_account"), &[]), Ok(None));
        assert_eq!(cn_name_constraint(&[], &[]), Ok(None));
        // Checked by a validator but not expressible.
        assert!(matches!(
            cn_name_constraint(&cn("10.0.0.1"), &[]),
            Err(CnError::IpAddress(_))
        ));
        assert!(matches!(
            cn_name_constraint(&cn("svc_a.example"), &[]),
            Err(CnError::NotDnsName(_))
        ));
    }

    #[test]
    fn subject_prints_as_kafka_derives_the_principal() {
        assert_eq!(
            subject_string(&subject()),
            "CN=b1,OU=kafka,O=Example\\, Inc."
        );
        assert_eq!(escape_rfc2253(" a#b "), "\\ a#b\\ ");
        assert_eq!(escape_rfc2253("#x"), "\\#x");
    }

    #[test]
    fn host_and_leaf_certificates_carry_what_kafka_and_pkix_need() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let names = vec![
            San::Dns("b1.kafka.example.net".into()),
            San::Ip("127.0.0.1".parse().unwrap()),
        ];
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root = root_params("root", now, Duration::from_secs(86400 * 30), [7; 16])
            .self_signed(&root_key)
            .unwrap();
        let host_key = rcgen::KeyPair::generate().unwrap();
        let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
        let permitted = Permitted {
            names: names.clone(),
            subjects: vec![subject()],
        };
        let host =
            host_issuing_params("host", &permitted, now, Duration::from_secs(86400), [9; 16])
                .unwrap()
                .signed_by(&host_key, &root_issuer)
                .unwrap();
        let hs = summarize(host.der(), "host").unwrap();
        assert_eq!(hs.permitted, names);
        assert_eq!(hs.permitted_subjects, vec![subject()]);
        assert_eq!(hs.not_after, now + Duration::from_secs(86400));
        assert_eq!(hs.not_before, now - BACKDATE);

        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let host_issuer = rcgen::Issuer::from_ca_cert_der(host.der(), &host_key).unwrap();
        let subject = subject();
        let spec = LeafSpec {
            subject: &subject,
            sans: &names,
            ekus: &[Eku::ServerAuth, Eku::ClientAuth],
            key_type: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(3600),
            not_after_limit: None,
        };
        let leaf = leaf_params(&spec, now, [1; 16])
            .unwrap()
            .signed_by(&leaf_key, &host_issuer)
            .unwrap();
        let ls = summarize(leaf.der(), "leaf").unwrap();
        assert_eq!(ls.subject, "CN=b1,OU=kafka,O=Example\\, Inc.");
        assert_eq!(ls.sans, names);
        assert_eq!(ls.not_after, now + Duration::from_secs(3600));
        assert!(ls.serial.starts_with("01"), "{}", ls.serial);
        assert_eq!(ls.serial.len(), 32);
        let (_, parsed) = X509Certificate::from_der(leaf.der()).unwrap();
        assert!(!parsed.is_ca());
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);

        // A leaf never outlives its issuer.
        let limit = now + Duration::from_secs(600);
        let capped = LeafSpec {
            not_after_limit: Some(limit),
            ..spec
        };
        let leaf = leaf_params(&capped, now, [2; 16])
            .unwrap()
            .signed_by(&leaf_key, &host_issuer)
            .unwrap();
        assert_eq!(summarize(leaf.der(), "leaf").unwrap().not_after, limit);
    }
}
