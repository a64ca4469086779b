//! Subject DN templates and SANs: parsing and checking. Pure, no I/O.
//!
//! A subject is written the way Kafka prints a principal (RFC 2253: CN first, `,`
//! between attributes, `\,` for a literal comma). Each attribute value is a template; it
//! is expanded after the DN is split, so a host fact that contains a comma cannot change
//! the DN's structure.

use std::net::IpAddr;

use crate::vocab::{DnAttribute, San};

/// A problem at a byte offset inside the string being parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameError {
    pub offset: usize,
    pub message: String,
}

fn fail<T>(offset: usize, message: impl Into<String>) -> Result<T, NameError> {
    Err(NameError {
        offset,
        message: message.into(),
    })
}

/// One attribute of a subject template, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnPart {
    pub attribute: DnAttribute,
    /// Byte offset of the attribute type.
    pub attribute_offset: usize,
    /// The value template with DN escapes removed.
    pub value: String,
    /// For each byte of `value` (and one past its end), its offset in the subject string.
    pub value_map: Vec<usize>,
}

impl DnPart {
    /// Offset in the subject string of byte `i` of the value.
    pub fn offset_of(&self, i: usize) -> usize {
        self.value_map
            .get(i)
            .or(self.value_map.last())
            .copied()
            .unwrap_or(self.attribute_offset)
    }
}

/// The attribute keywords accepted in subjects.
pub(crate) const DN_KEYWORDS: &str = "CN, O, OU, C, ST, L";

/// Characters that must be escaped in a value (RFC 2253 section 2.4).
const DN_SPECIALS: &[char] = &[',', '+', '"', '\\', '<', '>', ';'];

/// Splits a subject template into attributes. Empty input gives no attributes.
pub(crate) fn parse_dn(subject: &str) -> Result<Vec<DnPart>, NameError> {
    let mut parts = Vec::new();
    if subject.trim().is_empty() {
        return Ok(parts);
    }
    // Split on unescaped commas.
    let mut pieces: Vec<(usize, &str)> = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in subject.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            pieces.push((start, &subject[start..i]));
            start = i + 1;
        }
    }
    pieces.push((start, &subject[start..]));

    for (start, piece) in pieces {
        let lead = piece.len() - piece.trim_start().len();
        if piece.trim().is_empty() {
            return fail(
                start,
                "empty attribute in subject; write TYPE=value between commas",
            );
        }
        let Some(eq) = piece.find('=') else {
            return fail(
                start + lead,
                format!("expected TYPE=value in subject, found {:?}", piece.trim()),
            );
        };
        let keyword = piece[..eq].trim();
        let attribute_offset = start + lead;
        let Some(attribute) = DnAttribute::from_keyword(keyword) else {
            return fail(
                attribute_offset,
                format!("unsupported subject attribute {keyword:?}; supported: {DN_KEYWORDS}"),
            );
        };
        let (value, value_map) = unescape_value(start + eq + 1, &piece[eq + 1..])?;
        if value.is_empty() {
            return fail(
                start + eq + 1,
                format!("empty value for {} in subject", attribute.keyword()),
            );
        }
        parts.push(DnPart {
            attribute,
            attribute_offset,
            value,
            value_map,
        });
    }
    Ok(parts)
}

/// Removes DN escapes from a raw value at `base` in the subject; trims unescaped spaces.
fn unescape_value(base: usize, raw: &str) -> Result<(String, Vec<usize>), NameError> {
    let mut value = String::new();
    let mut map = Vec::new();
    // Byte length of `value` up to the last character that must be kept (non-space or
    // escaped), used to trim unescaped trailing spaces.
    let mut keep = 0;
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = base + i;
        let (ch, escaped) = if c == '\\' {
            match chars.next() {
                Some((_, e)) if DN_SPECIALS.contains(&e) || e == '=' || e == '#' || e == ' ' => {
                    (e, true)
                }
                Some((_, e)) => {
                    return fail(
                        at,
                        format!(
                            "invalid escape \\{e} in subject; only , + \" \\ < > ; = # and space \
                             may be escaped"
                        ),
                    );
                }
                None => return fail(at, "subject ends with a lone backslash"),
            }
        } else {
            (c, false)
        };
        if !escaped {
            if ch == ' ' && value.is_empty() {
                continue;
            }
            if ch == '+' {
                return fail(
                    at,
                    "multi-valued RDNs are not supported; write \\+ for a literal plus sign",
                );
            }
            if DN_SPECIALS.contains(&ch) {
                return fail(
                    at,
                    format!("write \\{ch} for a literal {ch:?} in a subject value"),
                );
            }
            if ch == '#' && value.is_empty() {
                return fail(
                    at,
                    "hex-encoded (#...) subject values are not supported; write \\# for a \
                     literal '#'",
                );
            }
        }
        for _ in 0..ch.len_utf8() {
            map.push(at);
        }
        value.push(ch);
        if escaped || ch != ' ' {
            keep = value.len();
        }
    }
    value.truncate(keep);
    map.truncate(keep);
    // One past the end: where the value ends in the subject.
    map.push(map.last().map_or(base + raw.len(), |&m| m + 1));
    Ok((value, map))
}

/// Upper bounds from RFC 5280 appendix A (ub-*), in characters.
fn max_len(attribute: DnAttribute) -> usize {
    match attribute {
        DnAttribute::CommonName | DnAttribute::Organization | DnAttribute::OrganizationalUnit => 64,
        DnAttribute::Country => 2,
        DnAttribute::State | DnAttribute::Locality => 128,
    }
}

/// Checks an expanded attribute value. The error offset is inside `value`.
pub(crate) fn check_dn_value(attribute: DnAttribute, value: &str) -> Result<(), NameError> {
    let keyword = attribute.keyword();
    if value.is_empty() {
        return fail(0, format!("{keyword} expands to an empty value"));
    }
    if let Some((i, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return fail(i, format!("{keyword} contains the control character {c:?}"));
    }
    if attribute == DnAttribute::Country {
        if value.len() != 2 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return fail(
                0,
                format!(
                    "C must be a two-letter ISO 3166 country code such as \"DE\", not {value:?}"
                ),
            );
        }
        return Ok(());
    }
    let len = value.chars().count();
    if len > max_len(attribute) {
        return fail(
            0,
            format!(
                "{keyword} is {len} characters long; the limit is {}",
                max_len(attribute)
            ),
        );
    }
    Ok(())
}

/// How a SAN entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SanKind {
    /// No prefix: an IP literal becomes an iPAddress, anything else a dNSName.
    Auto,
    /// `dns:`
    Dns,
    /// `ip:`
    Ip,
}

/// Splits an optional `dns:` or `ip:` prefix (any case) off a SAN entry. Returns the kind
/// and the byte length of the prefix.
pub(crate) fn san_prefix(entry: &str) -> (SanKind, usize) {
    for (prefix, kind) in [("dns:", SanKind::Dns), ("ip:", SanKind::Ip)] {
        if entry
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            return (kind, prefix.len());
        }
    }
    (SanKind::Auto, 0)
}

/// Turns an expanded SAN (prefix removed) into a [`San`]. The error offset is inside
/// `value`.
pub(crate) fn parse_san(kind: SanKind, value: &str) -> Result<San, NameError> {
    let ip = value.parse::<IpAddr>();
    match (kind, ip) {
        (SanKind::Ip, Ok(ip)) | (SanKind::Auto, Ok(ip)) => Ok(San::Ip(ip)),
        (SanKind::Ip, Err(_)) => fail(0, format!("{value:?} is not an IP address")),
        (SanKind::Dns, Ok(_)) => fail(
            0,
            format!("{value:?} is an IP address; write it without the dns: prefix"),
        ),
        (SanKind::Dns, Err(_)) | (SanKind::Auto, Err(_)) => {
            let name = value.to_ascii_lowercase();
            check_dns_name(&name)?;
            Ok(San::Dns(name))
        }
    }
}

/// Checks a lower-cased DNS name: LDH labels of 1 to 63 characters, no leading or
/// trailing hyphen, at most 253 characters, and `*` only as the whole leftmost label of a
/// name with at least two more labels.
pub(crate) fn check_dns_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return fail(0, "SAN expands to an empty name");
    }
    if name.len() > 253 {
        return fail(
            0,
            format!(
                "DNS name is {} characters long; the limit is 253",
                name.len()
            ),
        );
    }
    if let Some((i, c)) = name.char_indices().find(|(_, c)| !c.is_ascii()) {
        return fail(
            i,
            format!(
                "DNS name {name:?} contains {c:?}; write internationalised names in their xn-- form"
            ),
        );
    }
    if name.ends_with('.') {
        return fail(
            name.len() - 1,
            format!("DNS name {name:?} ends with a dot; leave it out"),
        );
    }
    let labels: Vec<&str> = name.split('.').collect();
    let mut offset = 0;
    for (n, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return fail(offset, format!("DNS name {name:?} has an empty label"));
        }
        if *label == "*" && n == 0 {
            if labels.len() < 3 {
                return fail(
                    0,
                    format!("wildcard DNS name {name:?} needs at least two labels after \"*.\""),
                );
            }
        } else {
            if let Some(i) = label.find('*') {
                return fail(
                    offset + i,
                    format!(
                        "'*' is only allowed as the whole leftmost label, as in \"*.example.net\", not in {name:?}"
                    ),
                );
            }
            if label.len() > 63 {
                return fail(
                    offset,
                    format!(
                        "DNS label {label:?} is {} characters long; the limit is 63",
                        label.len()
                    ),
                );
            }
            if let Some(i) = label
                .bytes()
                .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
            {
                let c = char::from(label.as_bytes()[i]);
                return fail(
                    offset + i,
                    format!("DNS name {name:?} contains {c:?}; labels use a-z, 0-9 and '-'"),
                );
            }
            if label.starts_with('-') || label.ends_with('-') {
                return fail(
                    offset,
                    format!("DNS label {label:?} starts or ends with '-'"),
                );
            }
        }
        offset += label.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dn(s: &str) -> Vec<(DnAttribute, String)> {
        parse_dn(s)
            .unwrap()
            .into_iter()
            .map(|p| (p.attribute, p.value))
            .collect()
    }

    #[test]
    fn parses_kafka_order() {
        use DnAttribute::*;
        assert_eq!(
            dn("CN={fqdn},OU=kafka,O=Example"),
            vec![
                (CommonName, "{fqdn}".into()),
                (OrganizationalUnit, "kafka".into()),
                (Organization, "Example".into())
            ]
        );
        assert_eq!(
            dn(" cn = a b , O=Example\\, Inc.,C=DE,ST=Bayern,L=M"),
            vec![
                (CommonName, "a b".into()),
                (Organization, "Example, Inc.".into()),
                (Country, "DE".into()),
                (State, "Bayern".into()),
                (Locality, "M".into()),
            ]
        );
        assert_eq!(dn("CN=a\\+b\\ "), vec![(CommonName, "a+b ".into())]);
        assert_eq!(dn(""), vec![]);
    }

    #[test]
    fn value_offsets_track_escapes() {
        let parts = parse_dn("CN=x,O=a\\,b{zone}").unwrap();
        let o = &parts[1];
        assert_eq!(o.value, "a,b{zone}");
        assert_eq!(o.attribute_offset, 5);
        // `{` is byte 3 of the value and byte 11 of the subject; `,` maps to its `\`.
        assert_eq!(o.offset_of(3), 11);
        assert_eq!(o.offset_of(1), 8);
        assert_eq!(o.offset_of(0), 7);
    }

    #[test]
    fn dn_errors() {
        let cases = [
            ("CN=a,", 5, "empty attribute"),
            (
                "CN=a,XX=b",
                5,
                "unsupported subject attribute \"XX\"; supported: CN, O, OU, C, ST, L",
            ),
            ("CN=a,emailAddress=x@y", 5, "unsupported subject attribute"),
            ("CN=a,O", 5, "expected TYPE=value"),
            ("CN=", 3, "empty value for CN"),
            ("CN=a+UID=1", 4, "multi-valued RDNs are not supported"),
            ("CN=a\\x", 4, "invalid escape \\x"),
            ("CN=a\\", 4, "lone backslash"),
            ("CN=#04", 3, "hex-encoded"),
            ("CN=a\"b", 4, "write \\\" for a literal"),
        ];
        for (subject, offset, message) in cases {
            let err = parse_dn(subject).unwrap_err();
            assert_eq!(err.offset, offset, "{subject}: {err:?}");
            assert!(err.message.contains(message), "{subject}: {err:?}");
        }
    }

    #[test]
    fn dn_values() {
        assert!(check_dn_value(DnAttribute::Country, "DE").is_ok());
        assert!(check_dn_value(DnAttribute::Country, "de").is_err());
        assert!(check_dn_value(DnAttribute::Country, "DEU").is_err());
        assert!(check_dn_value(DnAttribute::CommonName, &"x".repeat(64)).is_ok());
        assert!(check_dn_value(DnAttribute::CommonName, &"x".repeat(65)).is_err());
        assert!(check_dn_value(DnAttribute::CommonName, "a\nb").is_err());
        assert!(check_dn_value(DnAttribute::CommonName, "").is_err());
    }

    #[test]
    fn sans() {
        assert_eq!(
            parse_san(SanKind::Auto, "Kafka-1.Example.NET").unwrap(),
            San::Dns("kafka-1.example.net".into())
        );
        assert_eq!(
            parse_san(SanKind::Auto, "127.0.0.1").unwrap(),
            San::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_san(SanKind::Ip, "::1").unwrap(),
            San::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            parse_san(SanKind::Dns, "localhost").unwrap(),
            San::Dns("localhost".into())
        );
        assert_eq!(
            parse_san(SanKind::Auto, "*.kafka.example.net").unwrap(),
            San::Dns("*.kafka.example.net".into())
        );
        assert!(parse_san(SanKind::Ip, "localhost").is_err());
        assert!(parse_san(SanKind::Dns, "10.0.0.1").is_err());
        assert_eq!(san_prefix("DNS:x"), (SanKind::Dns, 4));
        assert_eq!(san_prefix("ip:x"), (SanKind::Ip, 3));
        assert_eq!(san_prefix("::1"), (SanKind::Auto, 0));
    }

    #[test]
    fn dns_errors() {
        let cases = [
            ("", 0, "empty name"),
            ("a..b", 2, "empty label"),
            ("a.b.", 3, "ends with a dot"),
            ("*.net", 0, "at least two labels"),
            ("a.*.net", 2, "whole leftmost label"),
            ("x*.a.net", 1, "whole leftmost label"),
            ("a_b.net", 1, "contains '_'"),
            ("-a.net", 0, "starts or ends with '-'"),
            ("bücher.de", 1, "xn-- form"),
        ];
        for (name, offset, message) in cases {
            let err = check_dns_name(name).unwrap_err();
            assert_eq!(err.offset, offset, "{name}: {err:?}");
            assert!(err.message.contains(message), "{name}: {err:?}");
        }
        assert!(check_dns_name(&format!("{}.net", "a".repeat(63))).is_ok());
        assert!(check_dns_name(&format!("{}.net", "a".repeat(64))).is_err());
    }

    proptest! {
        #[test]
        fn dn_parser_never_panics(s in any::<String>()) {
            if let Ok(parts) = parse_dn(&s) {
                for p in parts {
                    prop_assert_eq!(p.value_map.len(), p.value.len() + 1);
                    for i in 0..=p.value.len() {
                        prop_assert!(p.offset_of(i) <= s.len());
                    }
                }
            } else if let Err(e) = parse_dn(&s) {
                prop_assert!(e.offset <= s.len());
            }
        }

        #[test]
        fn san_parser_never_panics(s in any::<String>()) {
            let (kind, n) = san_prefix(&s);
            if let Err(e) = parse_san(kind, &s[n..]) {
                prop_assert!(e.offset <= s.len() - n);
            }
        }
    }
}
