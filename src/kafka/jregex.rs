//! `java.util.regex` behaviour on the `regex` crate, for Kafka's principal mapping rules.
//!
//! Kafka compiles each rule's pattern with `Pattern.compile`, tests it with
//! `Matcher.matches()` and rewrites with `String.replaceAll`. [`JavaRegex`] gives the same
//! answers:
//!
//! - The pattern is translated so it means what it means in Java: `\w`, `\d`, `\s` and
//!   the POSIX classes (`\p{Alpha}` …) are ASCII-only, `.` excludes Java's line
//!   terminators, `\h`, `\v`, `\e`, octal `\0nn`, `\cX` and `\Q…\E` are rewritten, and an
//!   escaped punctuation character is always that character (Rust reads `\<` and `\>` as
//!   word boundaries).
//! - Constructs with no equivalent (look-around, back-references, atomic groups,
//!   possessive quantifiers, the `s`, `d`, `u`, `U` and `c` flags, `\G`, `\Z`, `\R`, `\X`)
//!   are refused with [`Error::Unsupported`] rather than evaluated differently.
//! - [`JavaRegex::replace_all`] walks matches the way `Matcher.find()` does (an empty
//!   match right after a non-empty one counts) and expands the replacement the way
//!   `Matcher.appendReplacement` does (`$n` takes as many digits as name an existing
//!   group, `${name}`, `\x` is a literal `x`).
//!
//! Remaining differences, all outside what certificate subjects contain: `$` also matches
//! before a final line terminator in Java; `(?i)` folds non-ASCII letters too; `\b` follows
//! the `regex` crate's Unicode word characters.

use regex::{Captures, Regex};

/// Why a pattern or replacement cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The pattern uses a construct whose Java meaning cannot be reproduced here.
    #[error("{construct} in pattern {pattern:?} is not supported by leafctl")]
    Unsupported {
        /// The pattern.
        pattern: String,
        /// What it uses.
        construct: String,
    },
    /// Java would reject the pattern.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Invalid {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The translated pattern does not compile.
    #[error("invalid pattern {pattern:?}")]
    Compile {
        /// The pattern.
        pattern: String,
        /// The `regex` crate's error.
        #[source]
        source: regex::Error,
    },
    /// `appendReplacement` would throw.
    #[error("illegal replacement {replacement:?}: {reason}")]
    Replacement {
        /// The replacement string.
        replacement: String,
        /// What is wrong with it (Java's message).
        reason: String,
    },
}

/// Java's `.` without DOTALL: anything but `\n`, `\r`, U+0085, U+2028 and U+2029.
const DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
/// Java's `\s`: `[ \t\n\x0B\f\r]`.
const SPACE: &str = r"[\t\n\x0B\x0C\r ]";
const NOT_SPACE: &str = r"[^\t\n\x0B\x0C\r ]";
/// Java's `\h`.
const HSPACE: &str = r"[ \t\x{A0}\x{1680}\x{180E}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}]";
const NOT_HSPACE: &str = r"[^ \t\x{A0}\x{1680}\x{180E}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}]";
/// Java's `\v`.
const VSPACE: &str = r"[\n\x0B\x0C\r\x{85}\x{2028}\x{2029}]";
const NOT_VSPACE: &str = r"[^\n\x0B\x0C\r\x{85}\x{2028}\x{2029}]";

/// Java's POSIX character classes (ASCII-only unless UNICODE_CHARACTER_CLASS is set).
fn posix_class(name: &str) -> Option<&'static str> {
    Some(match name {
        "Lower" => "a-z",
        "Upper" => "A-Z",
        "ASCII" => r"\x00-\x7F",
        "Alpha" => "A-Za-z",
        "Digit" => "0-9",
        "Alnum" => "0-9A-Za-z",
        "Punct" => r"!-/:-@\[-`\{-~",
        "Graph" => r"!-~",
        "Print" => r"\x20-~",
        "Blank" => r" \t",
        "Cntrl" => r"\x00-\x1F\x7F",
        "XDigit" => "0-9A-Fa-f",
        "Space" => r"\t\n\x0B\x0C\r ",
        _ => return None,
    })
}

/// Translates a Java pattern into `regex` syntax with the same meaning.
pub fn translate(pattern: &str) -> Result<String, Error> {
    let unsupported = |construct: &str| Error::Unsupported {
        pattern: pattern.to_owned(),
        construct: construct.to_owned(),
    };
    let invalid = |reason: &str| Error::Invalid {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    let mut class_depth = 0usize;
    // The previous token was a quantifier: a following `+` makes it possessive.
    let mut after_quantifier = false;
    while i < chars.len() {
        let c = chars[i];
        let was_quantifier = std::mem::take(&mut after_quantifier);
        match c {
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return Err(invalid("trailing backslash"));
                };
                i += 2;
                match n {
                    'Q' => {
                        let rest: String = chars[i..].iter().collect();
                        let (literal, consumed) = match rest.find("\\E") {
                            Some(end) => (&rest[..end], end + 2),
                            None => (rest.as_str(), rest.len()),
                        };
                        out.push_str(&regex::escape(literal));
                        i += rest[..consumed].chars().count();
                    }
                    'w' => out.push_str("[0-9A-Za-z_]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    's' => out.push_str(SPACE),
                    'S' => out.push_str(NOT_SPACE),
                    'h' => out.push_str(HSPACE),
                    'H' => out.push_str(NOT_HSPACE),
                    'v' => out.push_str(VSPACE),
                    'V' => out.push_str(NOT_VSPACE),
                    'e' => out.push_str(r"\x1B"),
                    'p' | 'P' => {
                        let (name, len) = if chars.get(i) == Some(&'{') {
                            let close = chars[i..]
                                .iter()
                                .position(|&c| c == '}')
                                .ok_or_else(|| invalid("unclosed character family"))?;
                            (
                                chars[i + 1..i + close].iter().collect::<String>(),
                                close + 1,
                            )
                        } else {
                            let one = chars
                                .get(i)
                                .ok_or_else(|| invalid("illegal character family"))?;
                            (one.to_string(), 1)
                        };
                        i += len;
                        if let Some(set) = posix_class(&name) {
                            out.push_str(if n == 'p' { "[" } else { "[^" });
                            out.push_str(set);
                            out.push(']');
                        } else if name.starts_with("java") || name.starts_with("In") {
                            return Err(unsupported(&format!("\\{n}{{{name}}}")));
                        } else {
                            out.push('\\');
                            out.push(n);
                            out.push('{');
                            out.push_str(&name);
                            out.push('}');
                        }
                    }
                    '0' => {
                        // Java: \0n, \0nn, \0mnn (m <= 3).
                        let digits: String = chars[i..]
                            .iter()
                            .take(3)
                            .take_while(|c| ('0'..='7').contains(*c))
                            .collect();
                        let digits = if digits.len() == 3 && digits.as_bytes()[0] > b'3' {
                            &digits[..2]
                        } else {
                            &digits[..]
                        };
                        if digits.is_empty() {
                            return Err(invalid("illegal octal escape sequence"));
                        }
                        i += digits.len();
                        let value = u32::from_str_radix(digits, 8)
                            .map_err(|_| invalid("illegal octal escape sequence"))?;
                        out.push_str(&format!("\\x{{{value:X}}}"));
                    }
                    'c' => {
                        let Some(&x) = chars.get(i) else {
                            return Err(invalid("illegal control escape sequence"));
                        };
                        i += 1;
                        out.push_str(&format!("\\x{{{:X}}}", u32::from(x) ^ 64));
                    }
                    'x' | 'u' | 't' | 'n' | 'r' | 'f' | 'a' | 'A' | 'z' | 'b' | 'B' => {
                        out.push('\\');
                        out.push(n);
                    }
                    '1'..='9' | 'k' => return Err(unsupported("a back-reference")),
                    'G' | 'Z' | 'R' | 'X' | 'N' => return Err(unsupported(&format!("\\{n}"))),
                    other if other.is_ascii_alphanumeric() => {
                        return Err(invalid(&format!("illegal escape sequence \\{other}")));
                    }
                    other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
                }
            }
            '[' => {
                class_depth += 1;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` right after the opening bracket is a literal in both dialects.
                if chars.get(i) == Some(&']') {
                    out.push_str(r"\]");
                    i += 1;
                }
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(']');
                i += 1;
            }
            '-' | '~' if class_depth > 0 && chars.get(i + 1) == Some(&c) => {
                return Err(unsupported(&format!("{c}{c} in a character class")));
            }
            '.' if class_depth == 0 => {
                out.push_str(DOT);
                i += 1;
            }
            '(' if class_depth == 0 && chars.get(i + 1) == Some(&'?') => {
                let rest: String = chars[i + 2..].iter().collect();
                if rest.starts_with(':') {
                    out.push_str("(?:");
                    i += 3;
                } else if rest.starts_with('<')
                    && rest[1..].starts_with(|c: char| c.is_ascii_alphabetic())
                {
                    out.push_str("(?<");
                    i += 3;
                } else if rest.starts_with(['=', '!', '<', '>']) {
                    return Err(unsupported("look-around or an atomic group"));
                } else {
                    let flags: String = rest
                        .chars()
                        .take_while(|c| !matches!(c, ')' | ':'))
                        .collect();
                    if let Some(bad) = flags.chars().find(|c| !matches!(c, 'i' | 'm' | 'x' | '-')) {
                        if "sduUc".contains(bad) {
                            return Err(unsupported(&format!("the inline flag {bad}")));
                        }
                        return Err(invalid(&format!("unknown inline modifier {bad}")));
                    }
                    out.push_str("(?");
                    out.push_str(&flags);
                    i += 2 + flags.chars().count();
                }
            }
            '*' | '+' | '?' if class_depth == 0 => {
                if c == '+' && was_quantifier {
                    return Err(unsupported("a possessive quantifier"));
                }
                // `x*?` is lazy: the `?` ends the quantifier.
                after_quantifier = !(c == '?' && was_quantifier);
                out.push(c);
                i += 1;
            }
            '}' if class_depth == 0 => {
                after_quantifier = true;
                out.push(c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A compiled Java pattern.
#[derive(Debug, Clone)]
pub struct JavaRegex {
    source: String,
    find: Regex,
    whole: Regex,
}

impl JavaRegex {
    /// Compiles `pattern` as `Pattern.compile` would (see the module docs for what is
    /// refused).
    pub fn new(pattern: &str) -> Result<Self, Error> {
        let translated = translate(pattern)?;
        let compile = |re: &str| {
            Regex::new(re).map_err(|source| Error::Compile {
                pattern: pattern.to_owned(),
                source,
            })
        };
        Ok(Self {
            source: pattern.to_owned(),
            find: compile(&translated)?,
            whole: compile(&format!(r"\A(?:{translated})\z"))?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Java's `groupCount()`.
    pub fn group_count(&self) -> usize {
        self.find.captures_len().saturating_sub(1)
    }

    /// `Matcher.matches()`: the whole input matches.
    pub fn matches(&self, text: &str) -> bool {
        self.whole.is_match(text)
    }

    /// `Matcher.lookingAt()`: the captures of the match anchored at the start, if any.
    pub fn looking_at<'t>(&self, text: &'t str) -> Option<Captures<'t>> {
        self.find
            .captures_at(text, 0)
            .filter(|c| c.get(0).is_some_and(|m| m.start() == 0))
    }

    /// The matches `Matcher.find()` returns one after the other.
    pub fn find_all<'t>(&self, text: &'t str) -> Vec<Captures<'t>> {
        let mut found = Vec::new();
        let mut from = 0;
        while from <= text.len() {
            let Some(caps) = self.find.captures_at(text, from) else {
                break;
            };
            let Some(m) = caps.get(0) else { break };
            from = if m.is_empty() {
                // Java moves one character on after an empty match.
                m.end() + text[m.end()..].chars().next().map_or(1, char::len_utf8)
            } else {
                m.end()
            };
            found.push(caps);
        }
        found
    }

    /// `text.replaceAll(pattern, replacement)`.
    pub fn replace_all(&self, text: &str, replacement: &str) -> Result<String, Error> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in self.find_all(text) {
            let Some(m) = caps.get(0) else { continue };
            out.push_str(&text[last..m.start()]);
            self.append_replacement(&caps, replacement, &mut out)?;
            last = m.end();
        }
        out.push_str(&text[last..]);
        Ok(out)
    }

    /// `Matcher.appendReplacement`'s expansion of `replacement` for one match.
    fn append_replacement(
        &self,
        caps: &Captures<'_>,
        replacement: &str,
        out: &mut String,
    ) -> Result<(), Error> {
        let err = |reason: String| Error::Replacement {
            replacement: replacement.to_owned(),
            reason,
        };
        let group_count = self.group_count();
        let r: Vec<char> = replacement.chars().collect();
        let mut i = 0;
        while i < r.len() {
            match r[i] {
                '\\' => {
                    let Some(&c) = r.get(i + 1) else {
                        return Err(err("character to be escaped is missing".to_owned()));
                    };
                    out.push(c);
                    i += 2;
                }
                '$' => {
                    i += 1;
                    let Some(&next) = r.get(i) else {
                        return Err(err(
                            "Illegal group reference: group index is missing".to_owned()
                        ));
                    };
                    let group = if next == '{' {
                        i += 1;
                        let name: String = r[i..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphanumeric())
                            .collect();
                        i += name.len();
                        if name.is_empty() {
                            return Err(err("named capturing group has 0 length name".to_owned()));
                        }
                        if r.get(i) != Some(&'}') {
                            return Err(err(
                                "named capturing group is missing trailing '}'".to_owned()
                            ));
                        }
                        i += 1;
                        if name.starts_with(|c: char| c.is_ascii_digit()) {
                            return Err(err(format!(
                                "capturing group name {{{name}}} starts with digit character"
                            )));
                        }
                        match caps.name(&name) {
                            Some(m) => {
                                out.push_str(m.as_str());
                                continue;
                            }
                            None if self.find.capture_names().flatten().any(|n| n == name) => {
                                continue;
                            }
                            None => return Err(err(format!("No group with name {{{name}}}"))),
                        }
                    } else {
                        let Some(first) = next.to_digit(10) else {
                            return Err(err("Illegal group reference".to_owned()));
                        };
                        i += 1;
                        let mut group = first as usize;
                        // Take further digits while they still name an existing group.
                        while let Some(d) = r.get(i).and_then(|c| c.to_digit(10)) {
                            let longer = group * 10 + d as usize;
                            if longer > group_count {
                                break;
                            }
                            group = longer;
                            i += 1;
                        }
                        group
                    };
                    if group > group_count {
                        return Err(err(format!("No group {group}")));
                    }
                    if let Some(m) = caps.get(group) {
                        out.push_str(m.as_str());
                    }
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> JavaRegex {
        JavaRegex::new(p).unwrap()
    }

    #[test]
    fn replace_all_counts_the_empty_match_at_the_end_like_java() {
        // "abc".replaceAll(".*", "x") is "xx" in Java.
        assert_eq!(re(".*").replace_all("abc", "x").unwrap(), "xx");
        // "CN=a".replaceAll("a|", "x") is "xCxNx=xx".
        assert_eq!(re("a|").replace_all("CN=a", "x").unwrap(), "xCxNx=xx");
        assert_eq!(re("[a-z]+").replace_all("abc", "$0$0").unwrap(), "abcabc");
    }

    #[test]
    fn matches_is_whole_input_and_find_is_leftmost_first() {
        let r = re("a|ab");
        assert!(r.matches("ab"));
        // replaceAll finds "a" first, like Java's backtracking order.
        assert_eq!(r.replace_all("ab", "x").unwrap(), "xb");
    }

    #[test]
    fn java_classes_are_ascii() {
        assert!(!re(r"\w+").matches("Müller"));
        assert!(re(r"\p{L}+").matches("Müller"));
        assert!(!re(r"\p{Alpha}+").matches("é"));
        assert!(re(r"\p{Alpha}+").matches("abc"));
        assert!(!re(r"\s").matches("\u{a0}"));
        assert!(re(r"\h").matches("\u{a0}"));
        assert!(!re(".").matches("\r"));
        assert!(re("[.]").matches("."));
        assert!(re(r"[\w-]+").matches("a-b_c"));
    }

    #[test]
    fn escaped_punctuation_is_literal() {
        assert!(re(r"\<\>").matches("<>"));
        assert!(re(r"CN=a\,b").matches("CN=a,b"));
        assert!(re(r"\/").matches("/"));
        assert!(re(r"\Qa.b(\E.").matches("a.b(c"));
        assert!(re(r"\0101\x42\u0043\e").matches("ABC\u{1b}"));
        assert!(re(r"\cA").matches("\u{1}"));
    }

    #[test]
    fn unsupported_constructs_are_refused() {
        for p in [
            r"(?=a)a",
            r"(?<!a)b",
            r"(?>a)",
            r"(a)\1",
            r"\k<x>",
            "a++",
            "a{2}+",
            "(?s).",
            r"\Z",
            r"\p{javaLowerCase}",
            "[a--b]",
        ] {
            assert!(
                matches!(JavaRegex::new(p), Err(Error::Unsupported { .. })),
                "{p}: {:?}",
                JavaRegex::new(p).map(|r| r.as_str().to_owned())
            );
        }
        assert!(matches!(JavaRegex::new(r"\q"), Err(Error::Invalid { .. })));
        assert!(matches!(JavaRegex::new("a\\"), Err(Error::Invalid { .. })));
        assert!(matches!(JavaRegex::new("(a"), Err(Error::Compile { .. })));
        // Lazy quantifiers, counted repetition and named groups are fine.
        assert!(re("a*?b{1,2}?(?<n>c)(?i:D)").matches("abcd"));
    }

    #[test]
    fn replacement_follows_append_replacement() {
        let r = re("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)");
        let text = "abcdefghijk";
        // $11 names group 11; $1x is group 1 then "x".
        assert_eq!(r.replace_all(text, "$11$1x").unwrap(), "kax");
        let r = re("(a)(b)");
        // $12 is group 1 then "2": there is no group 12.
        assert_eq!(r.replace_all("ab", "$12").unwrap(), "a2");
        assert_eq!(r.replace_all("ab", r"\$1\\").unwrap(), r"$1\");
        assert_eq!(
            r.replace_all("ab", "$3"),
            Err(Error::Replacement {
                replacement: "$3".into(),
                reason: "No group 3".into()
            })
        );
        assert!(r.replace_all("ab", "$").is_err());
        assert!(r.replace_all("ab", "$x").is_err());
        assert!(r.replace_all("ab", "\\").is_err());
        let r = re("(?<cn>[a-z]+)(x)?");
        assert_eq!(r.replace_all("abc", "${cn}-$2-").unwrap(), "abc--");
        assert!(r.replace_all("abc", "${nope}").is_err());
        // No match: no expansion, so no error either (like Java).
        assert_eq!(re("z").replace_all("abc", "$9").unwrap(), "abc");
    }

    #[test]
    fn looking_at_is_anchored_at_the_start() {
        let r = re("b+");
        assert!(r.looking_at("abb").is_none());
        assert_eq!(r.looking_at("bba").unwrap().get(0).unwrap().as_str(), "bb");
    }
}
