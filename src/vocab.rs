//! The shared vocabulary: names and keys as every layer speaks of them. Pure data, no I/O.
//!
//! Subject DN attributes (with their RFC 2253 keyword and OID), subject alternative names,
//! extended key usages, key algorithms, store formats (with the type names Kafka and the
//! JDK use) and what a key backend reports about a key. leafd's config, its certificate
//! profiles, Kafka's principal rules and a CA's policy all use these types.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (default).
    #[serde(rename = "p256")]
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    #[serde(rename = "p384")]
    EcdsaP384,
    /// RSA 2048, PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// RSA 3072, PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa3072")]
    Rsa3072,
}

impl KeyAlgorithm {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "p256",
            Self::EcdsaP384 => "p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "p256" => Some(Self::EcdsaP256),
            "p384" => Some(Self::EcdsaP384),
            "rsa2048" => Some(Self::Rsa2048),
            "rsa3072" => Some(Self::Rsa3072),
            _ => None,
        }
    }

    /// The rcgen signature algorithm a key of this type signs with.
    pub fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 | Self::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// Whether this is an RSA algorithm (leaves then also get keyEncipherment).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts about a key as read back from its backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Backend name (`soft`, `tpm`, `pkcs11`).
    pub backend: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// Whether the backend refuses to export the private key.
    pub non_exportable: bool,
    /// Backend-specific facts (device, token, file).
    pub facts: Vec<(String, String)>,
}

/// Subject DN attribute types leafd writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnAttribute {
    /// `CN`
    CommonName,
    /// `O`
    Organization,
    /// `OU`
    OrganizationalUnit,
    /// `C`
    Country,
    /// `ST`
    State,
    /// `L`
    Locality,
}

impl DnAttribute {
    /// Every attribute type, in the order config errors list them.
    pub const ALL: [Self; 6] = [
        Self::CommonName,
        Self::Organization,
        Self::OrganizationalUnit,
        Self::Country,
        Self::State,
        Self::Locality,
    ];

    /// The RFC 2253 keyword: `CN`, `O`, `OU`, `C`, `ST` or `L`.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::CommonName => "CN",
            Self::Organization => "O",
            Self::OrganizationalUnit => "OU",
            Self::Country => "C",
            Self::State => "ST",
            Self::Locality => "L",
        }
    }

    /// The attribute type's OID in dotted form (X.520).
    pub fn oid(self) -> &'static str {
        match self {
            Self::CommonName => "2.5.4.3",
            Self::Organization => "2.5.4.10",
            Self::OrganizationalUnit => "2.5.4.11",
            Self::Country => "2.5.4.6",
            Self::State => "2.5.4.8",
            Self::Locality => "2.5.4.7",
        }
    }

    /// Parses an RFC 2253 keyword, ignoring ASCII case.
    pub fn from_keyword(keyword: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.keyword().eq_ignore_ascii_case(keyword))
    }

    /// The attribute with this dotted OID.
    pub fn from_oid(oid: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.oid() == oid)
    }
}

/// A subject DN in DER order (most general RDN first), one attribute per RDN.
pub type Subject = Vec<(DnAttribute, String)>;

/// Escapes an attribute value per RFC 2253 section 2.4.
pub fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Renders a subject (DER order) as Kafka prints it (RFC 2253: last RDN first).
pub fn subject_string(subject: &[(DnAttribute, String)]) -> String {
    let mut parts: Vec<String> = subject
        .iter()
        .map(|(a, v)| format!("{}={}", a.keyword(), escape_rfc2253(v)))
        .collect();
    parts.reverse();
    parts.join(",")
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum San {
    /// dNSName, lower-cased.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
}

/// Extended key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    /// id-kp-serverAuth
    ServerAuth,
    /// id-kp-clientAuth
    ClientAuth,
}

/// Keystore and truststore file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFormat {
    /// PKCS#12 (PBES2/AES-256-CBC, PBKDF2-HMAC-SHA256, HMAC-SHA256 MAC).
    Pkcs12,
    /// Java JKS.
    Jks,
    /// PEM: keystore = PKCS#8 key then chain (leaf first); truststore = CA bundle.
    Pem,
}

impl StoreFormat {
    /// The type name Kafka's `ssl.keystore.type` and the JDK's `KeyStore.getInstance` use.
    pub const fn type_name(self) -> &'static str {
        match self {
            Self::Pkcs12 => "PKCS12",
            Self::Jks => "JKS",
            Self::Pem => "PEM",
        }
    }
}

/// Whether `name` is a valid identity name: `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn is_valid_identity_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_attributes_round_trip_by_keyword_and_oid() {
        for a in DnAttribute::ALL {
            assert_eq!(DnAttribute::from_keyword(a.keyword()), Some(a));
            assert_eq!(
                DnAttribute::from_keyword(&a.keyword().to_lowercase()),
                Some(a)
            );
            assert_eq!(DnAttribute::from_oid(a.oid()), Some(a));
        }
        assert_eq!(DnAttribute::from_keyword("DC"), None);
    }

    #[test]
    fn subjects_print_as_kafka_does() {
        let s = vec![
            (DnAttribute::Organization, "Example, Inc".to_owned()),
            (DnAttribute::CommonName, " b1".to_owned()),
        ];
        assert_eq!(subject_string(&s), "CN=\\ b1,O=Example\\, Inc");
    }

    #[test]
    fn store_type_names() {
        assert_eq!(StoreFormat::Pkcs12.type_name(), "PKCS12");
        assert_eq!(StoreFormat::Jks.type_name(), "JKS");
        assert_eq!(StoreFormat::Pem.type_name(), "PEM");
    }
}
