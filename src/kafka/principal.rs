//! Kafka's `ssl.principal.mapping.rules` (KIP-371), as `SslPrincipalMapper` applies them.
//!
//! - The setting is a comma-separated list of `RULE:pattern/replacement/[L|U]` and
//!   `DEFAULT`; it is split and parsed with Kafka's own two regular expressions, so
//!   whitespace, empty entries, escaped `\/` and `\,` and malformed rules are treated as
//!   Kafka treats them (KAFKA-8860). Unset means `DEFAULT`.
//! - The rules are tried in order on the RFC 2253 subject ([`super::dn`]); the first rule
//!   whose pattern matches the whole subject (`matches()`) wins. Its result is
//!   `subject.replaceAll(pattern, replacement)`, then lower- or upper-cased for `/L` and
//!   `/U`. `DEFAULT` returns the subject unchanged.
//! - Before replacing, a `$n` naming a group the pattern does not have is turned into a
//!   literal `$n` (Kafka's `escapeLiteralBackReferences`, including how it shifts positions
//!   when there are several).
//! - No rule matching is an error (`NoMatchingRule`): the broker then rejects the
//!   connection. The principal Kafka uses is `User:` followed by the result.

use std::fmt;

use super::jregex::{self, JavaRegex};

/// Kafka's `RULE_PATTERN` (`SslPrincipalMapper.java`).
const RULE_PATTERN: &str = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)";

/// Mapping errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A rule is malformed (Kafka: `IllegalArgumentException("Invalid rule: …")`).
    #[error("invalid rule `{rule}`{}", unmatched.as_ref().map(|u| format!(", unmatched substring: `{u}`")).unwrap_or_default())]
    InvalidRule {
        /// The rule.
        rule: String,
        /// What follows the part that parsed, if anything did.
        unmatched: Option<String>,
    },
    /// A rule's pattern cannot be compiled (or evaluated faithfully).
    #[error("rule `{rule}` has an unusable pattern")]
    Pattern {
        /// The rule.
        rule: String,
        /// Why.
        #[source]
        source: jregex::Error,
    },
    /// Applying a rule's replacement failed, as it would in the broker.
    #[error("rule `{rule}` cannot be applied to {subject:?}")]
    Apply {
        /// The rule.
        rule: String,
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: jregex::Error,
    },
    /// No rule matched (Kafka: `NoMatchingRule`); the broker rejects the client.
    #[error("no rules apply to {subject}, rules {rules}")]
    NoMatchingRule {
        /// The subject.
        subject: String,
        /// The rules, as Kafka prints them.
        rules: String,
    },
}

/// Case conversion after a rule's replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Keep the case.
    Keep,
    /// `/L`: lower-case (English locale).
    Lower,
    /// `/U`: upper-case (English locale).
    Upper,
}

/// One rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// `DEFAULT`: the subject itself.
    Default,
    /// `RULE:pattern/replacement/[LU]`.
    Rewrite {
        /// The pattern.
        pattern: JavaRegex,
        /// The replacement.
        replacement: String,
        /// Case conversion.
        case: Case,
    },
}

impl fmt::Display for Rule {
    /// Kafka's `Rule.toString()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Default => f.write_str("DEFAULT"),
            Rule::Rewrite {
                pattern,
                replacement,
                case,
            } => {
                write!(f, "RULE:{}/{replacement}", pattern.as_str())?;
                match case {
                    Case::Keep => Ok(()),
                    Case::Lower => f.write_str("/L"),
                    Case::Upper => f.write_str("/U"),
                }
            }
        }
    }
}

impl Rule {
    /// The principal name this rule gives `subject`, or `None` if it does not match.
    pub fn apply(&self, subject: &str) -> Result<Option<String>, Error> {
        let Rule::Rewrite {
            pattern,
            replacement,
            case,
        } = self
        else {
            return Ok(Some(subject.to_owned()));
        };
        if !pattern.matches(subject) {
            return Ok(None);
        }
        let replacement = escape_literal_back_references(replacement, pattern.group_count())
            .map_err(|source| self.apply_error(subject, source))?;
        let result = pattern
            .replace_all(subject, &replacement)
            .map_err(|source| self.apply_error(subject, source))?;
        Ok(Some(match case {
            Case::Keep => result,
            Case::Lower => result.to_lowercase(),
            Case::Upper => result.to_uppercase(),
        }))
    }

    fn apply_error(&self, subject: &str, source: jregex::Error) -> Error {
        Error::Apply {
            rule: self.to_string(),
            subject: subject.to_owned(),
            source,
        }
    }
}

/// Kafka's `escapeLiteralBackReferences`: every `$n` whose group does not exist (after
/// dropping trailing digits while the number is 10 or more) gets a backslash in front.
/// Like Kafka, it scans the original string but inserts into the edited one, so from the
/// second insertion on the backslash lands one position further left per earlier one.
fn escape_literal_back_references(
    unescaped: &str,
    group_count: usize,
) -> Result<String, jregex::Error> {
    if group_count == 0 {
        return Ok(unescaped.to_owned());
    }
    let refs = JavaRegex::new(r"\$(\d+)")?;
    // Kafka indexes Java strings by UTF-16 unit; work on those units to insert at the
    // same places.
    let mut value: Vec<u16> = unescaped.encode_utf16().collect();
    for caps in refs.find_all(unescaped) {
        let Some(digits) = caps.get(1) else { continue };
        let number = digits.as_str();
        if number.starts_with('0') {
            continue;
        }
        // Integer.parseInt overflows above i32::MAX: Kafka throws there.
        let mut index: u64 = match number.parse::<i32>() {
            Ok(n) => u64::try_from(n).unwrap_or(0),
            Err(_) => {
                return Err(jregex::Error::Replacement {
                    replacement: unescaped.to_owned(),
                    reason: format!("For input string: \"{number}\""),
                });
            }
        };
        let groups = group_count as u64;
        while index > groups && index >= 10 {
            index /= 10;
        }
        if index > groups {
            let group_start = unescaped[..digits.start()].encode_utf16().count();
            let at = group_start.saturating_sub(1).min(value.len());
            value.insert(at, u16::from(b'\\'));
        }
    }
    Ok(String::from_utf16_lossy(&value))
}

/// The rules of one listener.
#[derive(Debug, Clone)]
pub struct Mapper {
    rules: Vec<Rule>,
}

impl Default for Mapper {
    /// `DEFAULT`, what Kafka uses when the setting is unset.
    fn default() -> Self {
        Self {
            rules: vec![Rule::Default],
        }
    }
}

impl fmt::Display for Mapper {
    /// Kafka's list form: `[RULE:…, DEFAULT]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        f.write_str("]")
    }
}

impl Mapper {
    /// Parses an `ssl.principal.mapping.rules` value.
    pub fn parse(rules: &str) -> Result<Self, Error> {
        // Both are fixed patterns that translate and compile; a failure would be a bug
        // here, reported as an invalid rule rather than a panic.
        let splitter =
            JavaRegex::new(&format!(r"\s*({RULE_PATTERN})\s*(,\s*|$)")).map_err(|source| {
                Error::Pattern {
                    rule: rules.to_owned(),
                    source,
                }
            })?;
        let parser = JavaRegex::new(RULE_PATTERN).map_err(|source| Error::Pattern {
            rule: rules.to_owned(),
            source,
        })?;
        // Java's String.trim(): every char up to U+0020.
        let trimmed = rules.trim_matches(|c: char| c <= ' ');
        let mut parsed = Vec::new();
        for caps in splitter.find_all(trimmed) {
            let rule = caps.get(1).map_or("", |m| m.as_str());
            let Some(m) = parser.looking_at(rule) else {
                return Err(Error::InvalidRule {
                    rule: rule.to_owned(),
                    unmatched: None,
                });
            };
            let end = m.get(0).map_or(0, |g| g.end());
            if end != rule.len() {
                return Err(Error::InvalidRule {
                    rule: rule.to_owned(),
                    unmatched: Some(rule[end..].to_owned()),
                });
            }
            if m.get(1).is_some() {
                parsed.push(Rule::Default);
            } else if let Some(pattern) = m.get(2) {
                let replacement = m.get(4).map_or("", |g| g.as_str()).to_owned();
                let case = match m.get(6).map(|g| g.as_str()) {
                    Some("L") => Case::Lower,
                    Some("U") => Case::Upper,
                    _ => Case::Keep,
                };
                let pattern =
                    JavaRegex::new(pattern.as_str()).map_err(|source| Error::Pattern {
                        rule: rule.to_owned(),
                        source,
                    })?;
                parsed.push(Rule::Rewrite {
                    pattern,
                    replacement,
                    case,
                });
            }
            // Anything else is an empty entry, which Kafka ignores.
        }
        Ok(Self { rules: parsed })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The principal name for `subject` (an RFC 2253 subject as the JDK prints it).
    pub fn map(&self, subject: &str) -> Result<String, Error> {
        for rule in &self.rules {
            if let Some(name) = rule.apply(subject)? {
                return Ok(name);
            }
        }
        Err(Error::NoMatchingRule {
            subject: subject.to_owned(),
            rules: self.to_string(),
        })
    }
}

/// The principal Kafka's `DefaultKafkaPrincipalBuilder` gives a client whose certificate
/// has `subject`: `User:` and the mapped name.
pub fn kafka_principal(mapper: &Mapper, subject: &str) -> Result<String, Error> {
    Ok(format!("User:{}", mapper.map(subject)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(rules: &str) -> Mapper {
        Mapper::parse(rules).unwrap()
    }

    // The cases of Kafka's SslPrincipalMapperTest.

    #[test]
    fn valid_rules() {
        for rules in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            assert!(Mapper::parse(rules).is_ok(), "{rules}");
        }
    }

    #[test]
    fn invalid_rules() {
        for rules in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
        ] {
            assert!(
                matches!(Mapper::parse(rules), Err(Error::InvalidRule { .. })),
                "{rules}"
            );
        }
        assert_eq!(
            Mapper::parse("RULE:a/b/L/U").unwrap_err().to_string(),
            "invalid rule `RULE:a/b/L/U`, unmatched substring: `/U`"
        );
    }

    #[test]
    fn ssl_principal_mapper() {
        let m = mapper(
            &[
                "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
                "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
                "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
                "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
                "DEFAULT",
            ]
            .join(", "),
        );
        assert_eq!(m.map("CN=Duke,OU=ServiceUsers,O=Org,C=US").unwrap(), "duke");
        assert_eq!(
            m.map("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US").unwrap(),
            "duke@sme"
        );
        assert_eq!(m.map("cn=duke,ou=sme,dc=mycp,dc=com").unwrap(), "DUKE@SME");
        assert_eq!(
            m.map("cN=duke,OU=JavaSoft,O=Sun Microsystems").unwrap(),
            "DUKE"
        );
        assert_eq!(
            m.map("OU=JavaSoft,O=Sun Microsystems,C=US").unwrap(),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );
    }

    fn splits(expected: &str, rules: &str) {
        assert_eq!(mapper(rules).to_string(), expected, "{rules:?}");
    }

    #[test]
    fn rules_splitting() {
        splits("[]", "");
        splits("[DEFAULT]", "DEFAULT");
        splits("[RULE:/]", "RULE://");
        splits("[RULE:/.*]", "RULE:/.*/");
        splits("[RULE:/.*/L]", "RULE:/.*/L");
        splits("[RULE:/, DEFAULT]", "RULE://,DEFAULT");
        splits("[RULE:/, DEFAULT]", "  RULE:// ,  DEFAULT  ");
        splits(
            "[RULE:   /     , DEFAULT]",
            "  RULE:   /     / ,  DEFAULT  ",
        );
        splits(
            "[RULE:  /     /U, DEFAULT]",
            "  RULE:  /     /U   ,DEFAULT  ",
        );
        splits(
            "[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]",
            "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
        );
        // Empty rules are ignored.
        splits("[]", ",   , , ,      , , ,   ");
        splits("[RULE:/, DEFAULT]", ",,RULE://,,,DEFAULT,,");
        splits(
            "[RULE: /   , DEFAULT]",
            ",  , RULE: /   /    ,,,   DEFAULT, ,   ",
        );
        splits(
            "[RULE:   /  /U, DEFAULT]",
            "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,",
        );
        // Escape sequences.
        splits(r"[RULE:\/\\\(\)\n\t/\/\/]", r"RULE:\/\\\(\)\n\t/\/\//");
        splits(
            r"[RULE:\**\/+/*/L, RULE:\/*\**/**]",
            r"RULE:\**\/+/*/L,RULE:\/*\**/**/",
        );
        // Rules rule.
        splits(
            r"[RULE:,RULE:,/,RULE:,\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
            r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
        );
    }

    #[test]
    fn comma_with_whitespace() {
        let m = mapper(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT");
        assert_eq!(
            m.map(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz").unwrap(),
            r"Tkac\, Adam"
        );
    }

    #[test]
    fn no_matching_rule_is_an_error() {
        let m = mapper("RULE:^CN=(.*)$/$1/");
        assert_eq!(m.map("CN=a").unwrap(), "a");
        assert_eq!(
            m.map("O=x").unwrap_err().to_string(),
            "no rules apply to O=x, rules [RULE:^CN=(.*)$/$1]"
        );
        assert!(matches!(
            Mapper::parse("").unwrap().map("CN=a"),
            Err(Error::NoMatchingRule { .. })
        ));
        assert_eq!(
            kafka_principal(&Mapper::default(), "CN=a,O=b").unwrap(),
            "User:CN=a,O=b"
        );
    }

    #[test]
    fn missing_groups_become_literals_like_kafka() {
        // One group: $4 is a literal "$4".
        let m = mapper("RULE:^CN=([a-z]+)$/$1@$4/");
        assert_eq!(m.map("CN=abc").unwrap(), "abc@$4");
        // $12 with one group: 12 -> 1 (truncated), so it is group 1 followed by "2".
        let m = mapper("RULE:^CN=([a-z]+)$/$12/");
        assert_eq!(m.map("CN=abc").unwrap(), "abc2");
        // Kafka's shifting insertions: the second backslash lands one to the left, which
        // leaves "$6" a group reference again, and the broker fails on it.
        let m = mapper("RULE:^CN=([a-z]+)$/$5$6/");
        assert!(matches!(m.map("CN=abc"), Err(Error::Apply { .. })));
        // No groups at all: Kafka leaves the replacement alone and Java throws.
        let m = mapper("RULE:^CN=abc$/$1/");
        assert!(matches!(m.map("CN=abc"), Err(Error::Apply { .. })));
        assert_eq!(
            escape_literal_back_references("$5$6", 1).unwrap(),
            r"\$\5$6"
        );
    }

    #[test]
    fn whole_string_match_then_replace_all() {
        // The pattern must match the whole subject, but the replacement applies to every
        // match replaceAll finds.
        let m = mapper("RULE:[a-z]+/x/");
        assert!(matches!(m.map("ab,c"), Err(Error::NoMatchingRule { .. })));
        assert_eq!(m.map("abc").unwrap(), "x");
        let m = mapper("RULE:.*/x/");
        assert_eq!(m.map("abc").unwrap(), "xx");
    }

    #[test]
    fn case_conversion() {
        assert_eq!(mapper("RULE:(.*)/$1/U").map("CN=é").unwrap(), "CN=É");
        assert_eq!(mapper("RULE:(.*)/$1/L").map("CN=ÄB").unwrap(), "cn=äb");
    }
}
