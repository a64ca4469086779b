//! Subject names exactly as the JDK's `X500Principal.getName()` prints them: the string
//! Kafka's `DefaultKafkaPrincipalBuilder` maps to a principal.
//!
//! The JDK's RFC 2253 form (`sun.security.x509.AVA.toRFC2253String`):
//!
//! - RDNs last to first, joined by `,`; the attributes of a multi-valued RDN in their
//!   encoded order, joined by `+`.
//! - Keywords only for `CN`, `C`, `L`, `ST`, `O`, `OU`, `STREET`, `DC` and `UID`; every
//!   other attribute (`emailAddress`, `serialNumber`, …) as its dotted OID, and then the
//!   value as `#` and the lower-case hex of its DER encoding.
//! - A value that is not a PrintableString, T61String, IA5String, GeneralString,
//!   BMPString or UTF8String (say a UniversalString) is also printed as `#hex`.
//! - In a string value, each of `, = + < > # ; " \` gets a backslash (anywhere, not just
//!   where RFC 2253 requires it), NUL becomes `\00`, and every leading and trailing space
//!   or carriage return gets a backslash. Nothing else is escaped.
//! - String bytes are decoded per [`Jdk`]: JDK 17 decodes every string type as UTF-8;
//!   newer JDKs decode BMPString as UTF-16 and the 8-bit types as ISO-8859-1.

use crate::vocab::DnAttribute;
use x509_parser::asn1_rs::{Class, ToDer};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// Errors reading a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The certificate cannot be parsed.
    #[error("could not parse the certificate")]
    Certificate {
        /// The parser's message.
        reason: String,
    },
    /// A value cannot be re-encoded.
    #[error("could not encode an attribute value")]
    Encode,
    /// An RFC 2253 string is malformed.
    #[error("malformed distinguished name {name:?}: {reason}")]
    Syntax {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Which JDK's decoding of string values to reproduce. They differ only for BMPString
/// and for non-ASCII bytes in the 8-bit string types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jdk {
    /// JDK 17 (checked with 17.0.15): every string type's bytes are read as UTF-8.
    #[default]
    Jdk17,
    /// Later JDKs (checked with 25): BMPString as UTF-16BE, PrintableString, T61String,
    /// IA5String and GeneralString as ISO-8859-1, UTF8String as UTF-8.
    Later,
}

/// The string types the JDK prints as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringKind {
    /// UTF8String (tag 12).
    Utf8,
    /// PrintableString (tag 19).
    Printable,
    /// T61String / TeletexString (tag 20).
    T61,
    /// IA5String (tag 22).
    Ia5,
    /// GeneralString (tag 27).
    General,
    /// BMPString (tag 30).
    Bmp,
}

impl StringKind {
    fn from_tag(tag: u32) -> Option<Self> {
        Some(match tag {
            12 => Self::Utf8,
            19 => Self::Printable,
            20 => Self::T61,
            22 => Self::Ia5,
            27 => Self::General,
            30 => Self::Bmp,
            _ => return None,
        })
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string type the JDK prints as text: its content bytes.
    Text(StringKind, Vec<u8>),
    /// Anything else: the complete DER encoding (tag, length, content).
    Der(Vec<u8>),
}

/// One attribute type and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute type as a dotted OID, e.g. `2.5.4.3`.
    pub oid: String,
    /// The value.
    pub value: Value,
}

/// A relative distinguished name: one attribute, or several for a multi-valued RDN.
pub type Rdn = Vec<Attribute>;

/// The RFC 2253 keywords the JDK uses beyond the attributes leafd writes
/// ([`DnAttribute`]), by OID.
const MORE_KEYWORDS: [(&str, &str); 3] = [
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

fn keyword(oid: &str) -> Option<&'static str> {
    DnAttribute::from_oid(oid)
        .map(DnAttribute::keyword)
        .or_else(|| {
            MORE_KEYWORDS
                .iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, k)| *k)
        })
}

fn oid_of_keyword(keyword: &str) -> Option<&'static str> {
    DnAttribute::from_keyword(keyword)
        .map(DnAttribute::oid)
        .or_else(|| {
            MORE_KEYWORDS
                .iter()
                .find(|(_, k)| k.eq_ignore_ascii_case(keyword))
                .map(|(o, _)| *o)
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(kind: StringKind, bytes: &[u8], jdk: Jdk) -> String {
    match (jdk, kind) {
        (Jdk::Jdk17, _) | (Jdk::Later, StringKind::Utf8) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        (Jdk::Later, StringKind::Bmp) => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| match c {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0xFFFD,
                })
                .collect();
            String::from_utf16_lossy(&units)
        }
        (Jdk::Later, _) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// One value, escaped the JDK's way.
fn escape_value(value: &str) -> String {
    let mut escaped: Vec<char> = Vec::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\0' => escaped.extend(['\\', '0', '0']),
            c => escaped.push(c),
        }
    }
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.len() - escaped.iter().rev().take_while(|c| blank(c)).count();
    let mut out = String::with_capacity(escaped.len() + 2);
    for (i, c) in escaped.into_iter().enumerate() {
        if i < lead || i >= trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn render_attribute(a: &Attribute, jdk: Jdk) -> String {
    let key = keyword(&a.oid).unwrap_or(&a.oid);
    match &a.value {
        Value::Text(kind, bytes) if keyword(&a.oid).is_some() => {
            format!("{key}={}", escape_value(&decode(*kind, bytes, jdk)))
        }
        Value::Text(kind, bytes) => format!("{key}=#{}", hex(&text_der(*kind, bytes))),
        Value::Der(der) => format!("{key}=#{}", hex(der)),
    }
}

/// The DER encoding of a string value (for the `#hex` form of unnamed attributes).
fn text_der(kind: StringKind, bytes: &[u8]) -> Vec<u8> {
    let tag: u8 = match kind {
        StringKind::Utf8 => 12,
        StringKind::Printable => 19,
        StringKind::T61 => 20,
        StringKind::Ia5 => 22,
        StringKind::General => 27,
        StringKind::Bmp => 30,
    };
    let mut der = vec![tag];
    let len = bytes.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        der.push(0x80 | (be.len() - skip) as u8);
        der.extend_from_slice(&be[skip..]);
    }
    der.extend_from_slice(bytes);
    der
}

/// Renders RDNs given in DER order (most general first) as `X500Principal.getName()`.
pub fn render(rdns: &[Rdn], jdk: Jdk) -> String {
    rdns.iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|a| render_attribute(a, jdk))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The attributes of a parsed X.509 name, in DER order.
pub fn from_x509_name(name: &X509Name<'_>) -> Result<Vec<Rdn>, Error> {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut attributes = Vec::new();
        for ava in rdn.iter() {
            let any = ava.attr_value();
            let text = (any.header.class() == Class::Universal && !any.header.is_constructed())
                .then(|| StringKind::from_tag(any.header.tag().0))
                .flatten();
            let value = match text {
                Some(kind) => Value::Text(kind, any.data.to_vec()),
                None => Value::Der(any.to_der_vec().map_err(|_| Error::Encode)?),
            };
            attributes.push(Attribute {
                oid: ava.attr_type().to_id_string(),
                value,
            });
        }
        rdns.push(attributes);
    }
    Ok(rdns)
}

/// The subject of a DER certificate, as RDNs in DER order.
pub fn certificate_subject(der: &[u8]) -> Result<Vec<Rdn>, Error> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::Certificate {
        reason: e.to_string(),
    })?;
    from_x509_name(cert.subject())
}

/// Parses an RFC 2253 string (such as the subjects in leafd's status) into RDNs in DER
/// order. String values become UTF8Strings (what leafd writes); `#hex` values keep their
/// DER encoding. Keywords are the JDK's RFC 2253 ones (any case) or dotted OIDs.
pub fn parse(name: &str) -> Result<Vec<Rdn>, Error> {
    let err = |reason: &str| Error::Syntax {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut rdns: Vec<Rdn> = Vec::new();
    if name.is_empty() {
        return Ok(rdns);
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    let mut rdn: Rdn = Vec::new();
    loop {
        // Attribute type.
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            i += 1;
        }
        if i == bytes.len() {
            return Err(err("an attribute has no '='"));
        }
        let key = name[start..i].trim();
        let oid = match oid_of_keyword(key) {
            Some(oid) => oid.to_owned(),
            None if !key.is_empty()
                && key
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                key.to_owned()
            }
            None => return Err(err(&format!("unknown attribute type {key:?}"))),
        };
        i += 1;
        // Value.
        let value = if bytes.get(i) == Some(&b'#') {
            i += 1;
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            let digits = &name[start..i];
            if digits.is_empty() || digits.len() % 2 != 0 {
                return Err(err("a #hex value needs an even number of hex digits"));
            }
            let der = (0..digits.len())
                .step_by(2)
                .map(|k| u8::from_str_radix(&digits[k..k + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| err("bad hex digits"))?;
            Value::Der(der)
        } else {
            let mut value: Vec<u8> = Vec::new();
            while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'+' {
                if bytes[i] == b'\\' {
                    let next = *bytes.get(i + 1).ok_or_else(|| err("trailing backslash"))?;
                    let pair = bytes
                        .get(i + 1..i + 3)
                        .filter(|p| p.iter().all(u8::is_ascii_hexdigit));
                    if let Some(pair) = pair {
                        let hexpair = std::str::from_utf8(pair).map_err(|_| err("bad escape"))?;
                        value.push(u8::from_str_radix(hexpair, 16).map_err(|_| err("bad escape"))?);
                        i += 3;
                    } else {
                        value.push(next);
                        i += 2;
                    }
                } else {
                    value.push(bytes[i]);
                    i += 1;
                }
            }
            Value::Text(StringKind::Utf8, value)
        };
        rdn.push(Attribute { oid, value });
        match bytes.get(i) {
            None => {
                rdns.push(std::mem::take(&mut rdn));
                break;
            }
            Some(b'+') => i += 1,
            Some(_) => {
                rdns.push(std::mem::take(&mut rdn));
                i += 1;
            }
        }
    }
    rdns.reverse();
    Ok(rdns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8(oid: &str, v: &str) -> Attribute {
        Attribute {
            oid: oid.into(),
            value: Value::Text(StringKind::Utf8, v.as_bytes().to_vec()),
        }
    }

    fn cn(v: &str) -> String {
        render(&[vec![utf8("2.5.4.3", v)]], Jdk::Jdk17)
    }

    // Expected strings were printed by OpenJDK 17.0.15 and 25 (identical for these).
    #[test]
    fn escapes_like_the_jdk() {
        assert_eq!(cn("a\0b"), r"CN=a\00b");
        assert_eq!(cn("#x"), r"CN=\#x");
        assert_eq!(cn("  lead"), r"CN=\ \ lead");
        assert_eq!(cn("trail  "), r"CN=trail\ \ ");
        assert_eq!(cn("\rcr"), "CN=\\\rcr");
        assert_eq!(cn("a=b#c"), r"CN=a\=b\#c");
        assert_eq!(cn("   "), r"CN=\ \ \ ");
        assert_eq!(cn(r#"x<y>z;"q"\"#), r#"CN=x\<y\>z\;\"q\"\\"#);
        assert_eq!(cn("é ü"), "CN=é ü");
        assert_eq!(cn("Example, Inc."), r"CN=Example\, Inc.");
    }

    #[test]
    fn order_keywords_and_hex() {
        let rdns = vec![
            vec![utf8("2.5.4.10", "Example")],
            vec![utf8("2.5.4.11", "kafka")],
            vec![
                utf8("2.5.4.3", "x"),
                utf8("0.9.2342.19200300.100.1.1", "42"),
            ],
        ];
        assert_eq!(render(&rdns, Jdk::Jdk17), "CN=x+UID=42,OU=kafka,O=Example");
        // serialNumber (PrintableString "42") has no RFC 2253 keyword.
        let serial = Attribute {
            oid: "2.5.4.5".into(),
            value: Value::Text(StringKind::Printable, b"42".to_vec()),
        };
        assert_eq!(render(&[vec![serial]], Jdk::Jdk17), "2.5.4.5=#13023432");
        // A UniversalString is not a string the JDK prints.
        let universal = Attribute {
            oid: "2.5.4.3".into(),
            value: Value::Der(vec![0x1c, 0x08, 0, 0, 0, 0x61, 0, 0, 0, 0x62]),
        };
        assert_eq!(
            render(&[vec![universal]], Jdk::Jdk17),
            "CN=#1c080000006100000062"
        );
    }

    #[test]
    fn jdk_decoding_differs_for_bmp_and_t61() {
        let bmp = vec![vec![Attribute {
            oid: "2.5.4.3".into(),
            value: Value::Text(
                StringKind::Bmp,
                "héllo".encode_utf16().flat_map(u16::to_be_bytes).collect(),
            ),
        }]];
        assert_eq!(
            render(&bmp, Jdk::Jdk17),
            "CN=\\00h\\00\u{fffd}\\00l\\00l\\00o"
        );
        assert_eq!(render(&bmp, Jdk::Later), "CN=héllo");
        let t61 = vec![vec![Attribute {
            oid: "2.5.4.3".into(),
            value: Value::Text(StringKind::T61, vec![0xe9, b'A']),
        }]];
        assert_eq!(render(&t61, Jdk::Jdk17), "CN=\u{fffd}A");
        assert_eq!(render(&t61, Jdk::Later), "CN=éA");
    }

    #[test]
    fn parse_round_trips_leafd_subjects() {
        for s in [
            "CN=b1,OU=kafka,O=Example",
            r"CN=a\,b,O=Example\, Inc.",
            "CN=x+UID=42,DC=example,DC=com",
            "CN=é",
            r"CN=\#x\=y",
            "2.5.4.5=#13023432,CN=z",
        ] {
            assert_eq!(render(&parse(s).unwrap(), Jdk::Jdk17), s);
        }
        // leafd's own escaping (only where RFC 2253 requires) comes out the JDK's way.
        assert_eq!(
            render(&parse("CN=a#b=c").unwrap(), Jdk::Jdk17),
            r"CN=a\#b\=c"
        );
        assert_eq!(
            render(&parse(r"CN=\41\c3\a9").unwrap(), Jdk::Jdk17),
            "CN=Aé"
        );
        let rdns = parse("CN=b1,O=Example").unwrap();
        assert_eq!(rdns[0][0].oid, "2.5.4.10");
        assert!(parse("CN").is_err());
        assert!(parse("FOO=x").is_err());
        assert!(parse(r"CN=x\").is_err());
        assert!(parse("CN=#123").is_err());
        assert_eq!(parse("").unwrap(), Vec::<Rdn>::new());
    }
}
