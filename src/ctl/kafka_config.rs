//! `leafctl kafka-config`: the `server.properties` lines that point a broker listener at an
//! identity's stores.
//!
//! Passwords are never printed: they are referenced through Kafka's
//! `DirectoryConfigProvider` (`${directory:DIR:FILE}`), which reads the very password file
//! leafd reads. Where each password is comes from the validated settings
//! ([`Output::password_source`]), loaded with [`crate::config::load_sources_only`], so no
//! password is read. [`render`] is pure; [`trailing_line_break`] is the only I/O: it
//! reads the last byte of a password file, if this user can.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{DnAttribute, Eku, Identity, Output, PasswordSource, StoreFormat};
use crate::kafka::dn::{self, Attribute, Jdk, Rdn, StringKind, Value};
use crate::kafka::principal::Mapper;

/// The fully qualified name of Kafka's directory config provider.
pub const DIRECTORY_PROVIDER: &str =
    "org.apache.kafka.common.config.provider.DirectoryConfigProvider";

/// Errors producing the settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener name cannot be used in a property name.
    #[error("invalid listener name {0:?}: use letters, digits, '_' and '-' only")]
    Listener(String),
    /// The identity writes no keystore.
    #[error("identity {0:?} writes no keystore; add an [[identity.keystore]] to its config")]
    NoKeystore(String),
}

/// The listener an identity's certificate serves, taken from the identity's config.
///
/// The listener of the identity's first `kafka` reload action, if it has one: the listener
/// whose stores leafd rotates, so `--listener` is then optional.
pub fn default_listener(identity: &Identity) -> Option<String> {
    identity.reload.actions.iter().find_map(|a| match a {
        crate::config::ReloadAction::Kafka(k) => Some(k.listener.clone()),
        _ => None,
    })
}

/// A store password as `render` needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRef {
    /// Where it comes from.
    pub source: PasswordSource,
    /// Whether a password file ends with a line break (`None`: not checked, e.g. the
    /// file is not readable by this user).
    pub trailing_line_break: Option<bool>,
}

/// The password of `output` as `render` needs it: its source from the settings and, for a
/// password file, whether it ends with a line break ([`trailing_line_break`]). `None` for
/// an output without a password (PEM).
pub fn password_ref(output: &Output) -> Option<PasswordRef> {
    let source = output.password_source.clone()?;
    let trailing_line_break = match &source {
        PasswordSource::File(file) => trailing_line_break(file),
        PasswordSource::Credential(_) => None,
    };
    Some(PasswordRef {
        source,
        trailing_line_break,
    })
}

/// What `render` works from.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The identity.
    pub identity: &'a Identity,
    /// The Kafka listener name, as in `listeners=` (any case).
    pub listener: &'a str,
    /// The main config file, named in the header.
    pub config_path: &'a Path,
    /// The password of the first keystore, if it has one.
    pub keystore_password: Option<PasswordRef>,
    /// The password of the first truststore, if it has one.
    pub truststore_password: Option<PasswordRef>,
}

/// Escapes a value for a Java `.properties` file (ISO-8859-1, backslash escapes).
pub fn property_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\t' => out.push_str(r"\t"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\u{c}' => out.push_str(r"\f"),
            ' ' if i == 0 => out.push_str(r"\ "),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
    out
}

/// Escapes regular-expression metacharacters (and `/`, which ends a rule's pattern).
fn quote_regex(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if r"\.[]{}()*+?^$|/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The identity's subject as RDNs (UTF8String values, as leafd writes them).
fn subject_rdns(identity: &Identity) -> Vec<Rdn> {
    identity
        .subject
        .iter()
        .map(|(attribute, value)| {
            vec![Attribute {
                oid: match attribute {
                    DnAttribute::CommonName => "2.5.4.3",
                    DnAttribute::Organization => "2.5.4.10",
                    DnAttribute::OrganizationalUnit => "2.5.4.11",
                    DnAttribute::Country => "2.5.4.6",
                    DnAttribute::State => "2.5.4.8",
                    DnAttribute::Locality => "2.5.4.7",
                }
                .to_owned(),
                value: Value::Text(StringKind::Utf8, value.as_bytes().to_vec()),
            }]
        })
        .collect()
}

/// A mapping rule that turns subjects shaped like `rdns` (the same attributes around a
/// CN of any value) into that CN, with the principal it gives this subject. The rule is
/// checked with Kafka's own rule semantics before it is offered.
pub fn cn_rule(rdns: &[Rdn]) -> Option<(String, String)> {
    let is_cn = |rdn: &Rdn| rdn.len() == 1 && rdn[0].oid == "2.5.4.3";
    let cn_at = rdns.iter().position(is_cn)?;
    // In the RFC 2253 string the RDNs run last to first.
    let rendered: Vec<String> = rdns
        .iter()
        .rev()
        .map(|r| dn::render(std::slice::from_ref(r), Jdk::Jdk17))
        .collect();
    let at = rdns.len() - 1 - cn_at;
    let before: String = rendered[..at].iter().map(|r| format!("{r},")).collect();
    let after: String = rendered[at + 1..].iter().map(|r| format!(",{r}")).collect();
    let rule = format!(
        "RULE:^{}CN=(.*?){}$/$1/,DEFAULT",
        quote_regex(&before),
        quote_regex(&after)
    );
    let subject = dn::render(rdns, Jdk::Jdk17);
    let expected = rendered[at].strip_prefix("CN=")?.to_owned();
    let mapped = Mapper::parse(&rule).ok()?.map(&subject).ok()?;
    (mapped == expected).then_some((rule, mapped))
}

/// The `${directory:DIR:FILE}` reference to a password file, if Kafka can parse one for
/// this path (its variable syntax has no escapes for `:` and `}`).
fn directory_reference(file: &Path) -> Option<(String, String)> {
    let dir = file.parent()?.to_str()?;
    let name = file.file_name()?.to_str()?;
    if dir.is_empty() || dir.contains([':', '}']) || name.contains('}') {
        return None;
    }
    Some((dir.to_owned(), format!("${{directory:{dir}:{name}}}")))
}

struct Writer {
    out: String,
    prefix: String,
    allowed: Vec<String>,
    warned: Vec<PathBuf>,
}

impl Writer {
    fn comment(&mut self, text: &str) {
        for line in text.lines() {
            let _ = writeln!(self.out, "# {line}");
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.out, "{}{key}={}", self.prefix, property_value(value));
    }

    fn password(&mut self, which: &str, password: Option<&PasswordRef>) {
        let key = format!("ssl.{which}.password");
        let Some(p) = password else {
            return;
        };
        match &p.source {
            PasswordSource::File(file) => match directory_reference(file) {
                Some((dir, reference)) => {
                    if !self.allowed.contains(&dir) {
                        self.allowed.push(dir);
                    }
                    let note = match p.trailing_line_break {
                        Some(true) => Some(format!(
                            "WARNING: {} ends with a line break. leafd strips it but Kafka's\n\
                             DirectoryConfigProvider keeps it, so the broker would use another \
                             password.\nRemove it, for example: perl -pi -e 'chomp if eof' {}",
                            file.display(),
                            file.display()
                        )),
                        Some(false) => None,
                        None => Some(format!(
                            "{} is not readable here, so it was not checked for a trailing\n\
                             line break. It must have none: leafd strips one, Kafka's \
                             DirectoryConfigProvider\nkeeps it.",
                            file.display()
                        )),
                    };
                    if let Some(note) = note
                        && !self.warned.contains(file)
                    {
                        self.warned.push(file.clone());
                        self.comment(&note);
                    }
                    self.comment(&format!(
                        "The {which} password is read from {}\n(the broker's user needs read access).",
                        file.display()
                    ));
                    self.set(&key, &reference);
                }
                None => {
                    self.comment(&format!(
                        "The {which} password file {} cannot be referenced (Kafka's ${{...}}\n\
                         syntax allows no ':' or '}}' in the path): copy it to a plain path and set",
                        file.display()
                    ));
                    let _ = writeln!(
                        self.out,
                        "#{}{key}=${{directory:/etc/kafka/secrets:{}}}",
                        self.prefix,
                        file.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "password".to_owned())
                    );
                }
            },
            PasswordSource::Credential(name) => {
                self.comment(&format!(
                    "The {which} password is the systemd credential {name:?} of leafd.service,\n\
                     which Kafka cannot read. Store the same password in a file only the \
                     broker's\nuser can read, with no trailing line break (printf '%s' ...), \
                     add its\ndirectory to allowed.paths above, and uncomment:"
                ));
                let _ = writeln!(
                    self.out,
                    "#{}{key}=${{directory:/etc/kafka/secrets:{name}}}",
                    self.prefix
                );
            }
        }
    }

    fn store(&mut self, which: &str, output: &Output, password: Option<&PasswordRef>) {
        let what = match (which, output.format) {
            ("keystore", StoreFormat::Pem) => {
                "Keystore: PEM, the unencrypted PKCS#8 key followed by the chain, leaf first\n\
                 (Kafka 2.7+). Kafka refuses ssl.keystore.password for PEM, and ssl.key.password\n\
                 must stay unset because the key is not encrypted."
                    .to_owned()
            }
            ("keystore", format) => format!(
                "Keystore: {}, the key and its chain. The key has the store password, so\n\
                 ssl.key.password stays unset.",
                format.type_name()
            ),
            (_, StoreFormat::Pem) => {
                "Truststore: PEM, the trusted CA certificates (no password).".to_owned()
            }
            (_, format) => format!(
                "Truststore: {}, the trusted CA certificates. Keep the password: without it a\n\
                 PKCS12 truststore loads as empty.",
                format.type_name()
            ),
        };
        self.comment(&what);
        self.set(&format!("ssl.{which}.type"), output.format.type_name());
        self.set(
            &format!("ssl.{which}.location"),
            &output.path.display().to_string(),
        );
        if output.format != StoreFormat::Pem {
            self.password(which, password);
        }
    }
}

/// The `server.properties` lines for `request`.
pub fn render(request: &Request<'_>) -> Result<String, Error> {
    let identity = request.identity;
    let listener = request.listener;
    if listener.is_empty()
        || !listener
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::Listener(listener.to_owned()));
    }
    let keystore = identity
        .keystores
        .first()
        .ok_or_else(|| Error::NoKeystore(identity.name.clone()))?;
    let mut w = Writer {
        out: String::new(),
        prefix: format!("listener.name.{}.", listener.to_lowercase()),
        allowed: Vec::new(),
        warned: Vec::new(),
    };
    w.comment(&format!(
        "Kafka broker settings for leafd identity {:?} on listener {}, from {}.\n\
         Store passwords are referenced, never copied.",
        identity.name,
        listener.to_uppercase(),
        request.config_path.display()
    ));
    if !identity.ekus.contains(&Eku::ServerAuth) {
        w.comment(
            "WARNING: this identity's certificate has no server-auth extended key usage;\n\
             clients will refuse it as a broker certificate. Add \"server-auth\" to its eku.",
        );
    }
    let mut body = Writer {
        out: String::new(),
        prefix: w.prefix.clone(),
        allowed: Vec::new(),
        warned: Vec::new(),
    };
    body.out.push('\n');
    body.store("keystore", keystore, request.keystore_password.as_ref());
    for other in identity.keystores.iter().skip(1) {
        body.comment(&format!(
            "(This identity also writes the {} keystore {}.)",
            other.format.type_name(),
            other.path.display()
        ));
    }
    body.out.push('\n');
    match identity.truststores.first() {
        Some(truststore) => {
            body.store(
                "truststore",
                truststore,
                request.truststore_password.as_ref(),
            );
        }
        None => body.comment(
            "This identity writes no truststore: point ssl.truststore.* at the CA bundle\n\
             that issued your clients' certificates.",
        ),
    }
    body.out.push('\n');
    body.comment(
        "Clients must present a certificate (mutual TLS); \"requested\" makes it optional.",
    );
    body.set("ssl.client.auth", "required");
    match cn_rule(&subject_rdns(identity)) {
        Some((rule, principal)) => {
            body.comment(&format!(
                "Principals: certificates with subjects shaped like this identity's map to their\n\
                 CN; others keep the full subject (DEFAULT). This identity itself becomes\n\
                 User:{principal} (list it in super.users if brokers use it between themselves)."
            ));
            body.set("ssl.principal.mapping.rules", &rule);
        }
        None => {
            body.comment(
                "Principals: this subject has no single-valued CN to map to, so principals stay\n\
                 the full RFC 2253 subject.",
            );
            body.set("ssl.principal.mapping.rules", "DEFAULT");
        }
    }

    let needs_provider = body.out.contains("${directory:");
    if needs_provider {
        w.out.push('\n');
        w.comment(
            "Config provider for the password references (broker-wide, Kafka 2.3+). If\n\
             server.properties already sets config.providers, add \"directory\" to that list\n\
             instead; if the broker JVM sets -Dorg.apache.kafka.automatic.config.providers,\n\
             it must include this class.",
        );
        let _ = writeln!(w.out, "config.providers=directory");
        let _ = writeln!(
            w.out,
            "config.providers.directory.class={DIRECTORY_PROVIDER}"
        );
        w.comment(
            "Kafka 3.8+ lets the provider read only these directories; older brokers ignore it.",
        );
        if body.allowed.is_empty() {
            let _ = writeln!(
                w.out,
                "#config.providers.directory.param.allowed.paths=/etc/kafka/secrets"
            );
        } else {
            let _ = writeln!(
                w.out,
                "config.providers.directory.param.allowed.paths={}",
                property_value(&body.allowed.join(","))
            );
        }
    }
    w.out.push_str(&body.out);
    Ok(w.out)
}

/// Whether the password file `file` ends with a line break (`None` if it is no regular
/// file or this user cannot read it). Only its last byte is read (`pread` at the size
/// from `fstat`), never the password: at most one byte of it, which is compared and
/// wiped. The same test as the loader's `trim_end_matches(['\n', '\r'])`.
pub fn trailing_line_break(file: &Path) -> Option<bool> {
    use std::os::unix::fs::FileExt as _;
    // Stat first: opening a FIFO for reading would block.
    if !std::fs::metadata(file).ok()?.is_file() {
        return None;
    }
    let opened = std::fs::File::open(file).ok()?;
    let Some(last) = opened.metadata().ok()?.len().checked_sub(1) else {
        return Some(false);
    };
    let mut byte = zeroize::Zeroizing::new([0u8; 1]);
    opened.read_exact_at(&mut byte[..], last).ok()?;
    Some(matches!(byte[0], b'\n' | b'\r'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::RenewalSettings;
    use crate::vocab::KeyAlgorithm;

    fn output(format: StoreFormat, path: &str) -> Output {
        Output {
            format,
            path: PathBuf::from(path),
            password: None,
            password_source: None,
            alias: "a".into(),
            owner: None,
            group: None,
            mode: 0o600,
        }
    }

    fn identity(keystore: StoreFormat, truststore: StoreFormat) -> Identity {
        Identity {
            name: "broker".into(),
            subject: vec![
                (DnAttribute::Organization, "Example, Inc.".into()),
                (DnAttribute::OrganizationalUnit, "kafka".into()),
                (DnAttribute::CommonName, "b1.example.com".into()),
            ],
            sans: Vec::new(),
            key_type: KeyAlgorithm::EcdsaP256,
            ekus: vec![Eku::ServerAuth, Eku::ClientAuth],
            lifetime: Duration::from_secs(3600),
            renewal: RenewalSettings {
                at: 0.66,
                jitter: 0.05,
                min_delay: Duration::from_secs(60),
            },
            allow_dn_change: false,
            allow_san_change: false,
            keystores: vec![output(keystore, "/var/lib/kafka/tls/broker.ks")],
            truststores: vec![output(truststore, "/var/lib/kafka/tls/trust.ts")],
            reload: Default::default(),
        }
    }

    #[test]
    fn default_listener_is_the_first_kafka_reload() {
        use crate::config::{KafkaReload, KafkaReloadMode, KafkaSecurity, ReloadAction};
        let mut i = identity(StoreFormat::Pkcs12, StoreFormat::Pkcs12);
        assert_eq!(default_listener(&i), None);
        let kafka = |listener: &str| {
            ReloadAction::Kafka(KafkaReload {
                bootstrap: "127.0.0.1:9093".parse().unwrap(),
                broker_id: 1,
                listener: listener.into(),
                mode: KafkaReloadMode::Alternate,
                security: KafkaSecurity::Plaintext,
                timeout: Duration::from_secs(1),
            })
        };
        i.reload.actions = vec![
            ReloadAction::Systemd {
                unit: "kafka.service".into(),
                restart: false,
            },
            kafka("INTERNAL"),
            kafka("EXTERNAL"),
        ];
        assert_eq!(default_listener(&i).as_deref(), Some("INTERNAL"));
    }

    /// Parses `key=value` lines the way java.util.Properties reads these simple ones.
    fn properties(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.replace(r"\\", "\\"))
            })
            .collect()
    }

    fn file_ref(path: &str, trailing: bool) -> Option<PasswordRef> {
        Some(PasswordRef {
            source: PasswordSource::File(PathBuf::from(path)),
            trailing_line_break: Some(trailing),
        })
    }

    #[test]
    fn pkcs12_with_password_files() {
        let id = identity(StoreFormat::Pkcs12, StoreFormat::Pkcs12);
        let text = render(&Request {
            identity: &id,
            listener: "SSL",
            config_path: Path::new("/etc/leafd/leafd.toml"),
            keystore_password: file_ref("/etc/leafd/broker.pass", false),
            truststore_password: file_ref("/etc/leafd/trust.pass", true),
        })
        .unwrap();
        let p = properties(&text);
        let l = "listener.name.ssl.";
        assert_eq!(p["config.providers"], "directory");
        assert_eq!(p["config.providers.directory.class"], DIRECTORY_PROVIDER);
        assert_eq!(
            p["config.providers.directory.param.allowed.paths"],
            "/etc/leafd"
        );
        assert_eq!(p[&format!("{l}ssl.keystore.type")], "PKCS12");
        assert_eq!(
            p[&format!("{l}ssl.keystore.location")],
            "/var/lib/kafka/tls/broker.ks"
        );
        assert_eq!(
            p[&format!("{l}ssl.keystore.password")],
            "${directory:/etc/leafd:broker.pass}"
        );
        assert_eq!(
            p[&format!("{l}ssl.truststore.password")],
            "${directory:/etc/leafd:trust.pass}"
        );
        assert_eq!(p[&format!("{l}ssl.client.auth")], "required");
        assert!(!p.contains_key(&format!("{l}ssl.key.password")));
        let rule = &p[&format!("{l}ssl.principal.mapping.rules")];
        // The subject prints as O=Example\, Inc.: the pattern matches that backslash.
        assert_eq!(
            rule,
            r"RULE:^CN=(.*?),OU=kafka,O=Example\\, Inc\.$/$1/,DEFAULT"
        );
        assert!(text.contains(r"O=Example\\\\, Inc\\.$"), "{text}");
        assert_eq!(
            Mapper::parse(rule)
                .unwrap()
                .map(r"CN=b2.example.com,OU=kafka,O=Example\, Inc.")
                .unwrap(),
            "b2.example.com"
        );
        assert!(text.contains("WARNING: /etc/leafd/trust.pass ends with a line break"));
        assert!(text.contains("User:b1.example.com"), "{text}");
    }

    #[test]
    fn pem_has_no_passwords() {
        let id = identity(StoreFormat::Pem, StoreFormat::Pem);
        let text = render(&Request {
            identity: &id,
            listener: "internal",
            config_path: Path::new("/etc/leafd/leafd.toml"),
            keystore_password: None,
            truststore_password: None,
        })
        .unwrap();
        let p = properties(&text);
        assert_eq!(p["listener.name.internal.ssl.keystore.type"], "PEM");
        assert_eq!(p["listener.name.internal.ssl.truststore.type"], "PEM");
        assert!(!text.contains("password="), "{text}");
        assert!(!p.contains_key("config.providers"));
        assert!(
            text.contains("ssl.key.password\n# must stay unset"),
            "{text}"
        );
    }

    #[test]
    fn credentials_get_instructions() {
        let id = identity(StoreFormat::Jks, StoreFormat::Jks);
        let cred = Some(PasswordRef {
            source: PasswordSource::Credential("broker-pass".into()),
            trailing_line_break: None,
        });
        let text = render(&Request {
            identity: &id,
            listener: "SSL",
            config_path: Path::new("/etc/leafd/leafd.toml"),
            keystore_password: cred.clone(),
            truststore_password: cred,
        })
        .unwrap();
        let p = properties(&text);
        assert_eq!(p["listener.name.ssl.ssl.keystore.type"], "JKS");
        assert!(!p.contains_key("listener.name.ssl.ssl.keystore.password"));
        assert!(
            text.contains("systemd credential \"broker-pass\""),
            "{text}"
        );
        assert!(
            text.contains("#listener.name.ssl.ssl.keystore.password=${directory:/etc/kafka/secrets:broker-pass}"),
            "{text}"
        );
        assert!(
            text.contains("#config.providers.directory.param.allowed.paths="),
            "{text}"
        );
    }

    #[test]
    fn listener_names_are_checked_and_lower_cased() {
        let id = identity(StoreFormat::Pem, StoreFormat::Pem);
        let request = |listener| Request {
            identity: &id,
            listener,
            config_path: Path::new("x"),
            keystore_password: None,
            truststore_password: None,
        };
        assert!(matches!(render(&request("a b")), Err(Error::Listener(_))));
        assert!(matches!(render(&request("")), Err(Error::Listener(_))));
        assert!(
            render(&request("CLIENT_TLS"))
                .unwrap()
                .contains("listener.name.client_tls.ssl")
        );
        assert_eq!(default_listener(&id), None);
    }

    #[test]
    fn property_values_are_escaped() {
        assert_eq!(property_value(r"a\b"), r"a\\b");
        assert_eq!(property_value(" x"), r"\ x");
        assert_eq!(property_value("é"), r"\u00E9");
        assert_eq!(property_value("😀"), r"\uD83D\uDE00");
    }

    #[test]
    fn cn_rules_for_other_shapes() {
        let rdn = |oid: &str, v: &str| {
            vec![Attribute {
                oid: oid.into(),
                value: Value::Text(StringKind::Utf8, v.as_bytes().to_vec()),
            }]
        };
        // CN first in DER order: last in the string.
        let (rule, principal) = cn_rule(&[rdn("2.5.4.3", "x/y"), rdn("2.5.4.10", "O")]).unwrap();
        assert_eq!(rule, r"RULE:^O=O,CN=(.*?)$/$1/,DEFAULT");
        assert_eq!(principal, "x/y");
        let (_, principal) = cn_rule(&[rdn("2.5.4.3", "a,b")]).unwrap();
        assert_eq!(principal, r"a\,b");
        assert!(cn_rule(&[rdn("2.5.4.10", "O")]).is_none());
    }

    // Which definition of an identity the password sources come from is the loader's
    // merge now: tests/config.rs `sources_only_load_follows_the_last_definition`.

    #[test]
    fn password_refs_come_from_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        std::fs::write(&file, "secret\n").unwrap();
        let mut o = output(StoreFormat::Pkcs12, "/k.p12");
        assert_eq!(password_ref(&o), None);
        o.password_source = Some(PasswordSource::File(file.clone()));
        assert_eq!(
            password_ref(&o),
            Some(PasswordRef {
                source: PasswordSource::File(file),
                trailing_line_break: Some(true),
            })
        );
        o.password_source = Some(PasswordSource::Credential("c".into()));
        assert_eq!(
            password_ref(&o),
            Some(PasswordRef {
                source: PasswordSource::Credential("c".into()),
                trailing_line_break: None,
            })
        );
    }

    #[test]
    fn trailing_line_breaks_are_found_from_the_last_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p");
        std::fs::write(&p, "secret\n").unwrap();
        assert_eq!(trailing_line_break(&p), Some(true));
        std::fs::write(&p, "secret\r").unwrap();
        assert_eq!(trailing_line_break(&p), Some(true));
        std::fs::write(&p, "secret").unwrap();
        assert_eq!(trailing_line_break(&p), Some(false));
        std::fs::write(&p, "").unwrap();
        assert_eq!(trailing_line_break(&p), Some(false));
        assert_eq!(trailing_line_break(&dir.path().join("missing")), None);
        assert_eq!(trailing_line_break(dir.path()), None);
    }

    #[test]
    fn unchecked_password_files_get_a_note() {
        let id = identity(StoreFormat::Pkcs12, StoreFormat::Pkcs12);
        let unchecked = Some(PasswordRef {
            source: PasswordSource::File(PathBuf::from("/etc/leafd/broker.pass")),
            trailing_line_break: None,
        });
        let text = render(&Request {
            identity: &id,
            listener: "SSL",
            config_path: Path::new("/etc/leafd/leafd.toml"),
            keystore_password: unchecked.clone(),
            truststore_password: unchecked,
        })
        .unwrap();
        let p = properties(&text);
        assert_eq!(
            p["listener.name.ssl.ssl.keystore.password"],
            "${directory:/etc/leafd:broker.pass}"
        );
        assert_eq!(
            text.matches("/etc/leafd/broker.pass is not readable here")
                .count(),
            1,
            "{text}"
        );
        assert!(!text.contains("WARNING"), "{text}");
    }
}
