//! SAN and DN templates: `{name}` variables from host facts, `{{` and `}}` escapes.
//!
//! Pure: no I/O. Errors carry the byte offset inside the template so config errors can
//! point at the exact column.

use std::collections::BTreeMap;
use std::fmt;

/// Host facts: template variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `{hostname}`: short host name.
    pub hostname: String,
    /// `{fqdn}`: fully qualified name (defaults to the hostname).
    pub fqdn: String,
    /// `{broker_id}`.
    pub broker_id: Option<String>,
    /// `{cluster}`.
    pub cluster: Option<String>,
    /// `{region}`.
    pub region: Option<String>,
    /// `{zone}`.
    pub zone: Option<String>,
    /// User-defined facts, `{name}`.
    pub facts: BTreeMap<String, String>,
}

/// The built-in variables and the `[host]` key that sets each one.
pub const BUILTINS: [(&str, &str); 6] = [
    ("hostname", "hostname"),
    ("fqdn", "fqdn"),
    ("broker_id", "broker-id"),
    ("cluster", "cluster"),
    ("region", "region"),
    ("zone", "zone"),
];

/// One variable: its value, or the `[host]` key that would set it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Set(String),
    Unset { host_key: &'static str },
}

/// Template variables, built from [`HostFacts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    /// Built-ins in [`BUILTINS`] order.
    builtins: Vec<(&'static str, Var)>,
    /// User-defined facts.
    facts: BTreeMap<String, String>,
}

impl Vars {
    /// The variables of a host: the built-ins (`{hostname}`, `{fqdn}`, `{broker_id}`,
    /// `{cluster}`, `{region}`, `{zone}`) and the user-defined facts.
    pub fn new(host: &HostFacts) -> Self {
        let builtins = BUILTINS
            .iter()
            .map(|&(name, host_key)| {
                let value = match name {
                    "hostname" => Some(&host.hostname),
                    "fqdn" => Some(&host.fqdn),
                    "broker_id" => host.broker_id.as_ref(),
                    "cluster" => host.cluster.as_ref(),
                    "region" => host.region.as_ref(),
                    _ => host.zone.as_ref(),
                };
                let var = match value {
                    Some(v) => Var::Set(v.clone()),
                    None => Var::Unset { host_key },
                };
                (name, var)
            })
            .collect();
        Self {
            builtins,
            facts: host.facts.clone(),
        }
    }

    /// Whether `name` is a built-in variable.
    pub fn is_builtin(name: &str) -> bool {
        BUILTINS.iter().any(|(n, _)| *n == name)
    }

    /// All variable names, built-ins first, then facts in name order.
    pub fn names(&self) -> Vec<String> {
        self.builtins
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .chain(self.facts.keys().cloned())
            .collect()
    }

    /// Built-ins are looked up first; config validation refuses facts that shadow them.
    fn lookup(&self, name: &str) -> Option<Result<&str, &'static str>> {
        match self.builtins.iter().find(|(n, _)| *n == name) {
            Some((_, Var::Set(value))) => Some(Ok(value)),
            Some((_, Var::Unset { host_key })) => Some(Err(host_key)),
            None => self.facts.get(name).map(|v| Ok(v.as_str())),
        }
    }
}

/// A template that does not expand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` names no variable.
    #[error(
        "unknown template variable {{{name}}}; known variables: {}",
        NameList(known)
    )]
    Unknown {
        /// Byte offset of the `{`.
        offset: usize,
        /// The name inside the braces.
        name: String,
        /// Every variable name that exists.
        known: Vec<String>,
    },
    /// A built-in variable that the `[host]` table does not set.
    #[error("template variable {{{name}}} is not set; set {host_key} in [host]")]
    Unset {
        /// Byte offset of the `{`.
        offset: usize,
        /// The variable name.
        name: String,
        /// The `[host]` key that sets it.
        host_key: &'static str,
    },
    /// `{` with no closing `}`.
    #[error("unclosed '{{' in template; write '{{{{' for a literal '{{'")]
    Unclosed {
        /// Byte offset of the `{`.
        offset: usize,
    },
    /// `}` that closes nothing.
    #[error("unmatched '}}' in template; write '}}}}' for a literal '}}'")]
    Unmatched {
        /// Byte offset of the `}`.
        offset: usize,
    },
    /// The text between the braces is not a variable name.
    #[error("invalid template variable name {name:?}; names match [a-z][a-z0-9_]*")]
    BadName {
        /// Byte offset of the `{`.
        offset: usize,
        /// The text between the braces.
        name: String,
    },
}

impl TemplateError {
    /// Byte offset inside the template where the problem starts.
    pub fn offset(&self) -> usize {
        match self {
            Self::Unknown { offset, .. }
            | Self::Unset { offset, .. }
            | Self::Unclosed { offset }
            | Self::Unmatched { offset }
            | Self::BadName { offset, .. } => *offset,
        }
    }
}

/// `{a}, {b}` for error messages.
struct NameList<'a>(&'a [String]);

impl fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{{{name}}}")?;
        }
        Ok(())
    }
}

/// Whether `name` is a valid variable name: `[a-z][a-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Expands `{name}` variables; `{{` and `}}` stand for literal braces.
pub fn expand(template: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut pos = 0;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let at = pos + i;
        let tail = &rest[i..];
        let consumed = if tail.starts_with("{{") {
            out.push('{');
            2
        } else if tail.starts_with("}}") {
            out.push('}');
            2
        } else if tail.starts_with('}') {
            return Err(TemplateError::Unmatched { offset: at });
        } else {
            let Some(close) = tail.find('}') else {
                return Err(TemplateError::Unclosed { offset: at });
            };
            let name = &tail[1..close];
            if !is_valid_name(name) {
                return Err(TemplateError::BadName {
                    offset: at,
                    name: name.to_owned(),
                });
            }
            match vars.lookup(name) {
                Some(Ok(value)) => out.push_str(value),
                Some(Err(host_key)) => {
                    return Err(TemplateError::Unset {
                        offset: at,
                        name: name.to_owned(),
                        host_key,
                    });
                }
                None => {
                    return Err(TemplateError::Unknown {
                        offset: at,
                        name: name.to_owned(),
                        known: vars.names(),
                    });
                }
            }
            close + 1
        };
        rest = &tail[consumed..];
        pos = at + consumed;
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes braces so that [`expand`] gives back `text` unchanged.
pub fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host() -> HostFacts {
        HostFacts {
            hostname: "kafka-1".into(),
            fqdn: "kafka-1.example.net".into(),
            broker_id: Some("1".into()),
            cluster: Some("prod".into()),
            region: None,
            zone: None,
            facts: [("rack".to_owned(), "r12".to_owned())].into(),
        }
    }

    #[test]
    fn expands_builtins_and_facts() {
        let vars = Vars::new(&host());
        assert_eq!(
            expand("b{broker_id}.{cluster}.{rack}.example.net", &vars).unwrap(),
            "b1.prod.r12.example.net"
        );
        assert_eq!(expand("{fqdn}", &vars).unwrap(), "kafka-1.example.net");
        assert_eq!(expand("{hostname}", &vars).unwrap(), "kafka-1");
        assert_eq!(expand("", &vars).unwrap(), "");
    }

    #[test]
    fn brace_escapes() {
        let vars = Vars::new(&host());
        assert_eq!(expand("{{x}}", &vars).unwrap(), "{x}");
        assert_eq!(expand("a{{{hostname}}}b", &vars).unwrap(), "a{kafka-1}b");
        assert_eq!(expand("}}{{", &vars).unwrap(), "}{");
    }

    #[test]
    fn unknown_variable_lists_known_ones() {
        let vars = Vars::new(&host());
        let err = expand("x.{nope}.y", &vars).unwrap_err();
        assert_eq!(err.offset(), 2);
        assert_eq!(
            err.to_string(),
            "unknown template variable {nope}; known variables: {hostname}, {fqdn}, \
             {broker_id}, {cluster}, {region}, {zone}, {rack}"
        );
    }

    #[test]
    fn unset_variable_names_the_host_key() {
        let vars = Vars::new(&host());
        let err = expand("{fqdn}-{region}", &vars).unwrap_err();
        assert_eq!(err.offset(), 7);
        assert_eq!(
            err.to_string(),
            "template variable {region} is not set; set region in [host]"
        );
        let mut h = host();
        h.broker_id = None;
        let err = expand("b{broker_id}", &Vars::new(&h)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template variable {broker_id} is not set; set broker-id in [host]"
        );
    }

    #[test]
    fn syntax_errors_have_offsets() {
        let vars = Vars::new(&host());
        let cases = [
            (
                "ab{fqdn",
                2,
                "unclosed '{' in template; write '{{' for a literal '{'",
            ),
            (
                "ab}",
                2,
                "unmatched '}' in template; write '}}' for a literal '}'",
            ),
            (
                "a{}",
                1,
                "invalid template variable name \"\"; names match [a-z][a-z0-9_]*",
            ),
            (
                "é{FQDN}",
                2,
                "invalid template variable name \"FQDN\"; names match [a-z][a-z0-9_]*",
            ),
            (
                "{a{b}",
                0,
                "invalid template variable name \"a{b\"; names match [a-z][a-z0-9_]*",
            ),
        ];
        for (template, offset, message) in cases {
            let err = expand(template, &vars).unwrap_err();
            assert_eq!(err.offset(), offset, "{template}");
            assert_eq!(err.to_string(), message, "{template}");
        }
    }

    #[test]
    fn names() {
        assert!(is_valid_name("rack"));
        assert!(is_valid_name("r2_d2"));
        assert!(!is_valid_name("2r"));
        assert!(!is_valid_name("Rack"));
        assert!(!is_valid_name("rack-id"));
        assert!(!is_valid_name(""));
        assert!(Vars::is_builtin("broker_id"));
        assert!(!Vars::is_builtin("rack"));
    }

    proptest! {
        #[test]
        fn text_without_braces_is_unchanged(s in "[^{}]*") {
            prop_assert_eq!(expand(&s, &Vars::new(&host())).unwrap(), s);
        }

        #[test]
        fn escaped_text_expands_to_itself(s in any::<String>()) {
            prop_assert_eq!(expand(&escape(&s), &Vars::new(&host())).unwrap(), s);
        }

        #[test]
        fn never_panics_and_offsets_are_in_bounds(s in any::<String>()) {
            if let Err(e) = expand(&s, &Vars::new(&host())) {
                prop_assert!(e.offset() < s.len());
                prop_assert!(s.is_char_boundary(e.offset()));
            }
        }

        #[test]
        fn never_panics_on_brace_heavy_input(s in "[{}a-z_A-Z0-9é]{0,40}") {
            if let Err(e) = expand(&s, &Vars::new(&host())) {
                prop_assert!(e.offset() < s.len());
            }
        }
    }
}
