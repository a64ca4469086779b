//! Config source files and positions inside them: byte spans to line and column.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::Error;

/// One config file as read.
#[derive(Debug)]
pub(crate) struct Source {
    /// The path as shown in errors (derived from the path the caller passed).
    pub display: PathBuf,
    /// The absolute directory relative paths in this file resolve against.
    pub dir: PathBuf,
    /// The file contents.
    pub text: String,
}

/// All files read, in merge order. Values carry an index into this list.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub files: Vec<Source>,
}

/// A value and where it was written: file index and byte span of the value.
#[derive(Debug, Clone)]
pub(crate) struct At<T> {
    pub file: usize,
    pub span: Range<usize>,
    pub value: T,
}

impl<T> At<T> {
    pub fn new(file: usize, spanned: Spanned<T>) -> Self {
        let span = spanned.span();
        Self {
            file,
            span,
            value: spanned.into_inner(),
        }
    }

    /// The same position with another value.
    pub fn with<U>(&self, value: U) -> At<U> {
        At {
            file: self.file,
            span: self.span.clone(),
            value,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// File offset of byte `inner` of a decoded string value whose token spans `span`.
///
/// When the token's body is the decoded text verbatim (no escapes), the result points at
/// the exact character; otherwise at the start of the value.
pub(crate) fn string_offset(text: &str, span: &Range<usize>, decoded: &str, inner: usize) -> usize {
    let Some(raw) = text.get(span.clone()) else {
        return span.start;
    };
    for delim in ["\"\"\"", "'''", "\"", "'"] {
        if raw.len() >= 2 * delim.len() && raw.starts_with(delim) && raw.ends_with(delim) {
            let mut body = &raw[delim.len()..raw.len() - delim.len()];
            let mut skip = delim.len();
            if delim.len() == 3 {
                // A newline right after the opening delimiter is not part of the value.
                for nl in ["\r\n", "\n"] {
                    if let Some(b) = body.strip_prefix(nl) {
                        body = b;
                        skip += nl.len();
                        break;
                    }
                }
            }
            if body == decoded && inner <= body.len() {
                return span.start + skip + inner;
            }
            return span.start;
        }
    }
    span.start
}

impl Sources {
    pub fn path(&self, file: usize) -> &Path {
        self.files
            .get(file)
            .map_or(Path::new("<unknown>"), |s| s.display.as_path())
    }

    pub fn dir(&self, file: usize) -> &Path {
        self.files
            .get(file)
            .map_or(Path::new("/"), |s| s.dir.as_path())
    }

    fn text(&self, file: usize) -> &str {
        self.files.get(file).map_or("", |s| s.text.as_str())
    }

    /// (path, line, column) of a byte offset in a file.
    pub fn locate(&self, file: usize, offset: usize) -> (PathBuf, usize, usize) {
        let (line, column) = line_column(self.text(file), offset);
        (self.path(file).to_owned(), line, column)
    }

    /// `path:line:column`, for messages that refer to another place.
    pub fn describe<T>(&self, at: &At<T>) -> String {
        let (path, line, column) = self.locate(at.file, at.span.start);
        format!("{}:{line}:{column}", path.display())
    }

    /// An `Invalid` error at the start of a value.
    pub fn invalid<T>(&self, at: &At<T>, message: impl Into<String>) -> Error {
        self.invalid_at(at.file, at.span.start, message)
    }

    /// An `Invalid` error at byte `inner` of a string value (exact when the value has no
    /// escapes).
    pub fn invalid_in(&self, at: &At<String>, inner: usize, message: impl Into<String>) -> Error {
        let offset = string_offset(self.text(at.file), &at.span, &at.value, inner);
        self.invalid_at(at.file, offset, message)
    }

    /// An `Invalid` error at a file offset.
    pub fn invalid_at(&self, file: usize, offset: usize, message: impl Into<String>) -> Error {
        let (path, line, column) = self.locate(file, offset);
        Error::Invalid {
            path,
            line,
            column,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_column(text, 12), (2, 6));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn string_offsets_map_into_the_token() {
        let text = r#"k = "ab{x}""#;
        let span = 4..text.len();
        assert_eq!(string_offset(text, &span, "ab{x}", 2), 7);
        let text = "k = 'ab{x}'";
        assert_eq!(string_offset(text, &span, "ab{x}", 2), 7);
        // With an escape the body differs from the value: point at the value start.
        let text = r#"k = "a\tb{x}""#;
        let span = 4..text.len();
        assert_eq!(string_offset(text, &span, "a\tb{x}", 3), 4);
        let text = "k = \"\"\"\nab{x}\"\"\"";
        let span = 4..text.len();
        assert_eq!(string_offset(text, &span, "ab{x}", 2), 10);
    }
}
