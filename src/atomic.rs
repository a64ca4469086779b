//! Atomic file writes: every file leafd writes goes through here (keystores, truststores,
//! state, status, the metrics textfile, the local CA and key files).
//!
//! [`write_atomic`] replaces a file with a strictly newer millisecond mtime; [`create_new`]
//! stores a file that must not exist yet (a key file: a label names one key for its life).
//!
//! The new contents go to `.<name>.tmp-<random>` in the target's directory, created with
//! `O_CREAT|O_EXCL` and mode 0600 (so the file is never more open than that), then are
//! written, `fchown`ed, `fchmod`ed, given their mtime and `fsync`ed. The file is then
//! `rename`d over the target and the directory is `fsync`ed. On failure before the rename
//! the temporary file is removed and the old file is untouched.
//!
//! Kafka rebuilds a listener's SSL context only if
//! `Files.getLastModifiedTime(path).toMillis()` differs from the value it saw at the last
//! load (`DefaultSslEngineFactory.FileBasedStore.modified()`), so two writes within the
//! same millisecond must still differ: the new mtime is `max(now, old + 1 ms)`.
//!
//! The target path itself is replaced: if it is a symlink, the link is replaced by a
//! regular file, not followed.

use std::ffi::OsString;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors of an atomic write. Messages name the target path, never the contents.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target path has no file name.
    #[error("cannot write {path}: the path does not name a file")]
    InvalidPath {
        /// The target path.
        path: PathBuf,
    },
    /// The existing file's metadata could not be read.
    #[error("could not read the metadata of {path}")]
    ReadMetadata {
        /// The target path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be created (directory missing, not a directory, not
    /// writable, full).
    #[error("could not create a temporary file in {dir}")]
    CreateTemp {
        /// The target's directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the temporary file failed.
    #[error("could not write the new contents of {path} to {temp}")]
    Write {
        /// The target path.
        path: PathBuf,
        /// The temporary file.
        temp: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `fchown` failed (leafd not allowed to give the file away, or unknown id).
    #[error("could not change the owner or group of the new {path}")]
    Chown {
        /// The target path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `fchmod` failed.
    #[error("could not set mode {mode:04o} on the new {path}")]
    Chmod {
        /// The target path.
        path: PathBuf,
        /// The requested mode.
        mode: u32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Setting the modification time failed.
    #[error("could not set the modification time of the new {path}")]
    SetMtime {
        /// The target path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The filesystem did not keep a modification time newer than the old file's, so Kafka
    /// would not notice the change.
    #[error("could not give the new {path} a modification time newer than the file it replaces")]
    MtimeNotAdvanced {
        /// The target path.
        path: PathBuf,
    },
    /// `fsync` of the temporary file failed.
    #[error("could not sync the new contents of {path} to disk")]
    Sync {
        /// The target path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `rename` failed; the old file is untouched.
    #[error("could not rename {temp} into place as {path}")]
    Rename {
        /// The temporary file (already removed again).
        temp: PathBuf,
        /// The target path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file was replaced, but the directory could not be synced: the rename may not
    /// survive a crash.
    #[error("replaced {path} but could not sync directory {dir}")]
    SyncDir {
        /// The target path.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The new file could not be linked into place because a file of that name exists
    /// (or linking failed otherwise); nothing was replaced.
    #[error("could not create {path}")]
    Link {
        /// The target path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether retrying the same write later might succeed: transient I/O failures (disk
    /// full, interrupted, I/O error), not permission or path problems.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ReadMetadata { source, .. }
            | Self::CreateTemp { source, .. }
            | Self::Write { source, .. }
            | Self::Chown { source, .. }
            | Self::Chmod { source, .. }
            | Self::SetMtime { source, .. }
            | Self::Sync { source, .. }
            | Self::Rename { source, .. }
            | Self::SyncDir { source, .. } => io_retryable(source),
            Self::Link { source, .. } => {
                source.kind() != io::ErrorKind::AlreadyExists && io_retryable(source)
            }
            Self::InvalidPath { .. } | Self::MtimeNotAdvanced { .. } => false,
        }
    }
}

/// Whether an I/O error is worth retrying: not for permission, path or filesystem-type
/// problems, which need the operator.
pub fn io_retryable(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    !matches!(
        e.kind(),
        K::PermissionDenied
            | K::NotFound
            | K::NotADirectory
            | K::IsADirectory
            | K::ReadOnlyFilesystem
            | K::InvalidInput
            | K::Unsupported
            | K::CrossesDevices
    )
}

/// Mode and ownership of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// Permission bits (`0o7777` at most), applied with `fchmod`, so the umask does not
    /// narrow them.
    pub mode: u32,
    /// Owner uid to `fchown` to, if set.
    pub owner: Option<u32>,
    /// Group gid to `fchown` to, if set.
    pub group: Option<u32>,
}

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The new file's modification time, as the filesystem stored it.
    pub mtime: SystemTime,
}

/// How many names to try when a temporary name is already taken.
const CREATE_ATTEMPTS: usize = 8;

/// Removes the temporary file on drop unless disarmed (after the rename).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove temporary file");
            }
        }
    }
}

fn temp_prefix(file_name: &std::ffi::OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    prefix
}

fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> Result<(File, TempGuard), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut name = temp_prefix(file_name);
        name.push(format!("{:016x}", rand::random::<u64>()));
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, TempGuard { path, armed: true })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < CREATE_ATTEMPTS => {}
            Err(source) => {
                return Err(Error::CreateTemp {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Whole milliseconds since the epoch, as Java's `FileTime.toMillis()` (times before the
/// epoch count as 0, which any real time is newer than).
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The old file's mtime in milliseconds, if there is an old file.
fn previous_mtime_ms(path: &Path) -> Result<Option<u64>, Error> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mtime = meta.modified().map_err(|source| Error::ReadMetadata {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(Some(millis(mtime)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadMetadata {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Gives `file` an mtime whose milliseconds are strictly greater than `previous_ms`:
/// `max(now, previous + 1 ms)`, or the next whole second if the filesystem keeps only
/// seconds. Returns the stored mtime.
fn set_newer_mtime(
    file: &File,
    path: &Path,
    previous_ms: Option<u64>,
) -> Result<SystemTime, Error> {
    let now = SystemTime::now();
    let mut candidates = vec![match previous_ms {
        Some(old) if millis(now) <= old => from_millis(old.saturating_add(1)),
        _ => now,
    }];
    if let Some(old) = previous_ms {
        candidates.push(from_millis(
            (old / 1000).saturating_add(1).saturating_mul(1000),
        ));
    }
    for target in candidates {
        file.set_times(FileTimes::new().set_modified(target))
            .map_err(|source| Error::SetMtime {
                path: path.to_path_buf(),
                source,
            })?;
        let stored = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|source| Error::SetMtime {
                path: path.to_path_buf(),
                source,
            })?;
        if previous_ms.is_none_or(|old| millis(stored) > old) {
            return Ok(stored);
        }
    }
    Err(Error::MtimeNotAdvanced {
        path: path.to_path_buf(),
    })
}

/// Atomically replaces `path` with `contents`, owned and moded as `spec` says, with a
/// millisecond mtime strictly newer than the replaced file's.
///
/// On an error before the rename, the old file is untouched and no temporary file is
/// left. [`Error::SyncDir`] is the one error after the rename: the new file is in place but
/// the rename may not survive a crash. Concurrent writers of the same path are not
/// supported (the last rename wins).
pub fn write_atomic(path: &Path, contents: &[u8], spec: &FileSpec) -> Result<WriteOutcome, Error> {
    let (mut guard, dir, mtime) = write_temp(path, contents, spec, true)?;
    // write_temp sets an mtime when asked to, so this is always `Some`.
    let mtime = mtime.ok_or_else(|| Error::MtimeNotAdvanced {
        path: path.to_path_buf(),
    })?;
    fs::rename(&guard.path, path).map_err(|source| Error::Rename {
        temp: guard.path.clone(),
        path: path.to_path_buf(),
        source,
    })?;
    guard.armed = false;
    sync_dir(path, dir)?;
    Ok(WriteOutcome { mtime })
}

/// Stores `contents` as the new file `path` with `mode`, refusing to replace an existing
/// file: temp file, write, `fchmod`, `fsync`, hard link into place, `fsync` the directory.
/// A hard link, unlike a rename, fails if the name exists. No temporary file is left.
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let spec = FileSpec {
        mode,
        owner: None,
        group: None,
    };
    let (guard, dir, _) = write_temp(path, contents, &spec, false)?;
    fs::hard_link(&guard.path, path).map_err(|source| Error::Link {
        path: path.to_path_buf(),
        source,
    })?;
    // The guard removes the temporary name; the new name keeps the file.
    drop(guard);
    sync_dir(path, dir)
}

/// The common first half of both writes: a temporary file next to `path` holding
/// `contents`, owned and moded as `spec` says, with (if `newer_mtime`) a millisecond mtime
/// strictly newer than `path`'s, synced to disk. Returns its guard, the directory and the
/// mtime set.
fn write_temp<'p>(
    path: &'p Path,
    contents: &[u8],
    spec: &FileSpec,
    newer_mtime: bool,
) -> Result<(TempGuard, &'p Path, Option<SystemTime>), Error> {
    let file_name = path.file_name().ok_or_else(|| Error::InvalidPath {
        path: path.to_path_buf(),
    })?;
    let dir = parent_dir(path);
    let (mut file, guard) = create_temp(dir, file_name)?;
    file.write_all(contents).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        temp: guard.path.clone(),
        source,
    })?;
    if spec.owner.is_some() || spec.group.is_some() {
        std::os::unix::fs::fchown(&file, spec.owner, spec.group).map_err(|source| {
            Error::Chown {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    // After fchown, which may clear set-id bits.
    let mode = spec.mode & 0o7777;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|source| Error::Chmod {
            path: path.to_path_buf(),
            mode,
            source,
        })?;
    let mtime = if newer_mtime {
        let previous = previous_mtime_ms(path)?;
        Some(set_newer_mtime(&file, path, previous)?)
    } else {
        None
    };
    file.sync_all().map_err(|source| Error::Sync {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((guard, dir, mtime))
}

/// The directory a relative or absolute file path lives in.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(path: &Path, dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::SyncDir {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            source,
        })
}

/// Deletes temporary files `.<file_name>.tmp-*` left in `dir` by a crash during
/// [`write_atomic`]. Best effort: failures are logged and skipped. Returns how many files
/// were removed. Do not call it while a write to the same file may be in progress.
pub fn remove_stale_temps(dir: &Path, file_name: &str) -> usize {
    let prefix = temp_prefix(file_name.as_ref());
    let prefix = prefix.as_encoded_bytes();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Nothing written there yet (the first write creates the directory).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not list directory for stale temporary files");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().starts_with(prefix) {
            continue;
        }
        // file_type does not follow symlinks: only regular files are ours.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(path = %entry.path().display(), "removed stale temporary file");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove stale temporary file");
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    use proptest::prelude::*;

    use super::*;

    fn spec(mode: u32) -> FileSpec {
        FileSpec {
            mode,
            owner: None,
            group: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Root ignores permission bits and may chown freely, which hides the failures some
    /// tests provoke. As root, runs the test `name` (in this module) again in a child
    /// process as `nobody` and returns true; otherwise returns false and the caller runs
    /// the test body itself.
    fn rerun_as_nobody(name: &str) -> bool {
        if !is_root() {
            return false;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([&format!("atomic::tests::{name}"), "--exact"])
            .uid(65534)
            .gid(65534)
            .env("TMPDIR", "/tmp")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{name} as nobody failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        true
    }

    #[test]
    fn writes_contents_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks.p12");
        for mode in [0o600, 0o640, 0o444, 0o644] {
            write_atomic(&path, b"hello", &spec(mode)).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"hello");
            assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, mode);
        }
        assert_eq!(names(dir.path()), vec!["ks.p12"]);
    }

    #[test]
    fn mode_is_not_narrowed_by_umask() {
        // The process umask is usually 022; 0666 survives only through fchmod.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"x", &spec(0o666)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o666);
    }

    #[test]
    fn owner_and_group_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        // Our own ids work for everyone; as root, also give the file away.
        let (owner, group) = if is_root() {
            (65534, 65534)
        } else {
            (uid, gid)
        };
        let s = FileSpec {
            mode: 0o640,
            owner: Some(owner),
            group: Some(group),
        };
        write_atomic(&path, b"x", &s).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (owner, group));
        assert_eq!(meta.mode() & 0o7777, 0o640);
    }

    #[test]
    fn chown_failure_leaves_old_file() {
        if rerun_as_nobody("chown_failure_leaves_old_file") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let s = FileSpec {
            mode: 0o600,
            owner: Some(0),
            group: None,
        };
        let e = write_atomic(&path, b"new", &s).unwrap_err();
        assert!(matches!(e, Error::Chown { .. }), "{e:?}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["f"]);
    }

    #[test]
    fn mtime_strictly_increases_even_within_one_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ts.jks");
        let mut last = None;
        // Far more writes than milliseconds pass: each must still be newer.
        for i in 0..50u32 {
            let out = write_atomic(&path, &i.to_be_bytes(), &spec(0o600)).unwrap();
            let on_disk = fs::metadata(&path).unwrap().modified().unwrap();
            assert_eq!(out.mtime, on_disk);
            let ms = millis(on_disk);
            if let Some(prev) = last {
                assert!(ms > prev, "write {i}: {ms} <= {prev}");
            }
            last = Some(ms);
        }
    }

    #[test]
    fn mtime_newer_than_a_future_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let future = SystemTime::now() + Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(future)
            .unwrap();
        let out = write_atomic(&path, b"new", &spec(0o600)).unwrap();
        assert_eq!(millis(out.mtime), millis(future) + 1);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let e = write_atomic(&missing.join("ks.p12"), b"x", &spec(0o600)).unwrap_err();
        assert!(matches!(e, Error::CreateTemp { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("could not create a temporary file in {}", missing.display())
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn parent_that_is_a_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("regular");
        fs::write(&file, b"old").unwrap();
        let e = write_atomic(&file.join("ks.p12"), b"x", &spec(0o600)).unwrap_err();
        let Error::CreateTemp { dir: d, source } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(d, &file);
        assert_eq!(source.kind(), io::ErrorKind::NotADirectory);
        assert_eq!(fs::read(&file).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["regular"]);
    }

    #[test]
    fn rename_failure_removes_temp_and_keeps_old() {
        // The target is a non-empty directory: rename(2) fails after the temp file exists.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ks.p12");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"old").unwrap();
        let e = write_atomic(&target, b"new", &spec(0o600)).unwrap_err();
        assert!(matches!(e, Error::Rename { .. }), "{e:?}");
        assert!(e.to_string().starts_with("could not rename "), "{e}");
        assert!(
            e.to_string()
                .ends_with(&format!("into place as {}", target.display()))
        );
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["ks.p12"]);
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let e = write_atomic(Path::new("/"), b"x", &spec(0o600)).unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{e:?}");
    }

    /// A directory without write permission (run as `nobody` when the tests run as root).
    #[test]
    fn read_only_directory_is_a_clear_error_and_keeps_old_file() {
        if rerun_as_nobody("read_only_directory_is_a_clear_error_and_keeps_old_file") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks.p12");
        fs::write(&path, b"old contents").unwrap();
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o500)).unwrap();
        let e = write_atomic(&path, b"new contents", &spec(0o600)).unwrap_err();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        let Error::CreateTemp { source, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            e.to_string(),
            format!(
                "could not create a temporary file in {}",
                dir.path().display()
            )
        );
        assert!(!e.is_retryable());
        assert_eq!(fs::read(&path).unwrap(), b"old contents");
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(names(dir.path()), vec!["ks.p12"]);
    }

    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(".ks.p12.tmp-0123456789abcdef"), b"x").unwrap();
        fs::write(d.join(".ks.p12.tmp-aa"), b"x").unwrap();
        fs::write(d.join(".other.tmp-aa"), b"x").unwrap();
        fs::write(d.join("ks.p12"), b"x").unwrap();
        fs::create_dir(d.join(".ks.p12.tmp-dir")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.join(".ks.p12.tmp-link")).unwrap();
        assert_eq!(remove_stale_temps(d, "ks.p12"), 2);
        assert_eq!(
            names(d),
            vec![
                ".ks.p12.tmp-dir",
                ".ks.p12.tmp-link",
                ".other.tmp-aa",
                "ks.p12"
            ]
        );
        assert_eq!(remove_stale_temps(&d.join("missing"), "ks.p12"), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_contents_round_trip(contents in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            fs::write(&path, b"previous").unwrap();
            write_atomic(&path, &contents, &spec(0o600)).unwrap();
            prop_assert_eq!(fs::read(&path).unwrap(), contents);
            prop_assert_eq!(names(dir.path()), vec!["f".to_owned()]);
        }
    }
}
