//! Configuration: typed per-file parse, drop-in merge, validation into [`Settings`].
//!
//! `load` reads the main file, then the drop-ins `<dir>/<stem>.d/*.toml` in file name
//! order (other files and dotfiles there are ignored). Each file is parsed on its own into typed file structs (`deny_unknown_fields`,
//! kebab-case), so errors keep their file, line and column. The files are then merged
//! (tables field by field, `[host.facts]` key by key, identities by name) and validated
//! into [`Settings`]. Anything wrong fails the whole load: there is no fallback.

mod error;
mod file;
mod merge;
mod names;
mod source;
mod validate;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use crate::settings::{self, *};
pub use error::Error;

use source::{Source, Sources};

/// What the config depends on outside the files: passed in, never read from globals by
/// the validation code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadEnv {
    /// systemd's `$CREDENTIALS_DIRECTORY`, where `password-credential` names are looked up
    /// (not needed by [`load_sources_only`], which reads none).
    pub credentials_directory: Option<PathBuf>,
    /// The kernel host name: the default for `[host] hostname`.
    pub hostname: String,
}

impl LoadEnv {
    /// Reads `$CREDENTIALS_DIRECTORY` and the kernel host name of this process.
    pub fn from_process() -> Self {
        let credentials_directory = std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            credentials_directory,
            hostname,
        }
    }
}

/// Loads, merges and validates the config at `path` and its drop-ins. Warnings (see
/// [`load_with_warnings`]) are logged with `tracing`.
pub fn load(path: &Path, env: &LoadEnv) -> Result<Settings, Error> {
    let (settings, warnings) = load_with_warnings(path, env)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

/// Like [`load`], but returns the warnings instead of logging them: config and password
/// files writable by group or others, a PEM keystore readable by everyone, no identities.
pub fn load_with_warnings(path: &Path, env: &LoadEnv) -> Result<(Settings, Vec<String>), Error> {
    load_in(path, env, Secrets::Read)
}

/// Loads and validates the config at `path` and its drop-ins like [`load_with_warnings`],
/// but reads no secret: no store password file, PKCS#11 PIN or SASL password, whether
/// from a `*-file` or a `*-credential`. For tools that need the configuration but no
/// password (`leafctl kafka-config`), so they run as any user who can read the config
/// files.
///
/// Every other check runs as in [`load`]; only what reading the secrets would find is not
/// checked (a missing, unreadable, empty or non-UTF-8 secret file, an unset
/// `env.credentials_directory`). In the result:
///
/// - every [`Output::password`] is `None`; [`Output::password_source`] says where the
///   password is;
/// - [`Pkcs11Settings::pin`] and [`KafkaSasl::password`] are empty placeholders (a load
///   that reads secrets never yields an empty one: empty secret files are refused).
///
/// The settings come wrapped in [`SettingsWithoutSecrets`], which hands out only a
/// reference: they are not [`Settings`] the daemon can run on, and the daemon loads with
/// [`load`] only.
pub fn load_sources_only(path: &Path, env: &LoadEnv) -> Result<SettingsWithoutSecrets, Error> {
    let (settings, warnings) = load_in(path, env, Secrets::SourcesOnly)?;
    Ok(SettingsWithoutSecrets { settings, warnings })
}

/// Settings loaded by [`load_sources_only`]: validated, but with no secret read (store
/// passwords `None`, PIN and SASL passwords empty placeholders). Deliberately not
/// convertible into an owned [`Settings`] the daemon could be started or reloaded with.
#[derive(Debug)]
pub struct SettingsWithoutSecrets {
    settings: Settings,
    warnings: Vec<String>,
}

impl SettingsWithoutSecrets {
    /// The validated settings, secrets left out.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The load's warnings, as [`load_with_warnings`] returns them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Whether validation reads secrets. Private to this module tree: [`load`] and
/// [`load_with_warnings`], which the daemon uses, always read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    /// Read every password, PIN and SASL password (the daemon, `leafctl validate`).
    Read,
    /// Resolve where they are, read none ([`load_sources_only`]).
    SourcesOnly,
}

fn load_in(path: &Path, env: &LoadEnv, secrets: Secrets) -> Result<(Settings, Vec<String>), Error> {
    let mut read = read_files::<file::FileConfig>(path)?;
    let mut merged = merge::Merged::default();
    for (index, parsed) in read.parsed.into_iter().enumerate() {
        merged.add(&read.sources, index, parsed)?;
    }
    let settings = validate::validate(&read.sources, merged, env, secrets, &mut read.warnings)?;
    Ok((settings, read.warnings))
}

/// What [`read_files`] read: every file's text (for positions) and its typed contents.
pub(crate) struct ReadFiles<F> {
    /// The files, main file first, then drop-ins in name order.
    pub sources: Sources,
    /// Each file parsed on its own, in the same order.
    pub parsed: Vec<F>,
    /// Files writable by group or others.
    pub warnings: Vec<String>,
}

/// The reusable half of a config loader: reads `path` and its drop-ins
/// (`<dir>/<stem>.d/*.toml` in name order) and parses each file on its own into the file
/// struct `F` (which should `deny_unknown_fields` and keep values `Spanned`), so every error
/// names file, line and column. Merging and validation are the caller's; another program's
/// config (a CA's, say) brings its own `F`.
pub(crate) fn read_files<F: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<ReadFiles<F>, Error> {
    let mut warnings = Vec::new();
    let mut sources = Sources::default();
    let mut parsed = Vec::new();
    for display in config_files(path)? {
        let text = std::fs::read_to_string(&display).map_err(|source| Error::Read {
            path: display.clone(),
            source,
        })?;
        warnings.extend(file_warnings(&display));
        let dir = std::path::absolute(&display)
            .map_err(|source| Error::Read {
                path: display.clone(),
                source,
            })?
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let index = sources.files.len();
        sources.files.push(Source { display, dir, text });
        let file: F = toml::from_str(&sources.files[index].text).map_err(|e| {
            let (path, line, column) = sources.locate(index, e.span().map_or(0, |span| span.start));
            Error::Parse {
                path,
                line,
                column,
                message: e.message().trim().replace('\n', "; "),
            }
        })?;
        parsed.push(file);
    }
    Ok(ReadFiles {
        sources,
        parsed,
        warnings,
    })
}

/// The main file, then `<dir of path>/<file stem>.d/*.toml` sorted by file name. A
/// missing drop-in directory means no drop-ins; other files and dotfiles are ignored.
fn config_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = vec![path.to_owned()];
    let Some(dir) = dropin_dir(path) else {
        return Ok(files);
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(source) => return Err(Error::ReadDir { path: dir, source }),
    };
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadDir {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let p = Path::new(&name);
        let hidden = name.as_encoded_bytes().starts_with(b".");
        if !hidden && p.extension().is_some_and(|e| e == "toml") {
            names.push(name);
        }
    }
    names.sort();
    files.extend(names.into_iter().map(|n| dir.join(n)));
    Ok(files)
}

/// `<dir of path>/<file stem>.d`: `leafd.toml` has its drop-ins in `leafd.d`.
pub fn dropin_dir(path: &Path) -> Option<PathBuf> {
    let stem = path.file_stem()?;
    let mut name = stem.to_owned();
    name.push(".d");
    Some(path.parent().unwrap_or(Path::new("")).join(name))
}

/// Warnings about a config or password file that group or others can write: whoever can
/// write it controls what leafd issues. Returns nothing if the file cannot be inspected
/// (reading it reports that).
pub fn file_warnings(path: &Path) -> Vec<String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let mode = meta.permissions().mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        (false, true) => "others",
        (false, false) => return Vec::new(),
    };
    vec![format!(
        "{} is writable by {who} (mode {mode:04o}); make it writable by its owner only",
        path.display()
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_env_has_the_kernel_hostname() {
        let env = LoadEnv::from_process();
        let kernel = nix::unistd::gethostname().unwrap();
        assert_eq!(env.hostname, kernel.to_string_lossy());
    }

    #[test]
    fn sources_only_load_locates_the_password_and_reads_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leafd.toml");
        std::fs::write(
            &path,
            "[[identity]]\nname = \"b\"\nsans = [\"b.example\"]\n[[identity.keystore]]\n\
             format = \"pkcs12\"\npath = \"b.p12\"\npassword-file = \"no-such.pass\"\n",
        )
        .unwrap();
        let env = LoadEnv {
            credentials_directory: None,
            hostname: "h".into(),
        };
        let loaded = load_sources_only(&path, &env).unwrap();
        let output = &loaded.settings().identities[0].keystores[0];
        assert!(output.password.is_none());
        assert_eq!(
            output.password_source,
            Some(PasswordSource::File(dir.path().join("no-such.pass")))
        );
        // The daemon's load reads it, and fails.
        assert!(matches!(load(&path, &env), Err(Error::PasswordFile { .. })));
    }

    #[test]
    fn dropin_dir_is_named_after_the_stem() {
        assert_eq!(
            dropin_dir(Path::new("/etc/leafd/leafd.toml")),
            Some(PathBuf::from("/etc/leafd/leafd.d"))
        );
        assert_eq!(
            dropin_dir(Path::new("quickstart.toml")),
            Some(PathBuf::from("quickstart.d"))
        );
    }
}
