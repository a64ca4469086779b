//! `status.json` in the state directory: the [`Status`] snapshot, rewritten after every
//! change.

use crate::atomic::{FileSpec, write_atomic};
pub use crate::status::*;
use std::path::{Path, PathBuf};

/// Where the snapshot lives.
pub fn path(state_directory: &Path) -> PathBuf {
    state_directory.join("status.json")
}

/// Writes the snapshot (0640: readable by the admin group the directory lets in).
pub fn write(state_directory: &Path, status: &Status) -> Result<(), super::Error> {
    let p = path(state_directory);
    let err = |e: Box<dyn std::error::Error + Send + Sync>| super::Error::Save {
        path: p.display().to_string(),
        source: e,
    };
    let bytes = serde_json::to_vec_pretty(status).map_err(|e| err(e.into()))?;
    write_atomic(
        &p,
        &bytes,
        &FileSpec {
            mode: 0o640,
            owner: None,
            group: None,
        },
    )
    .map_err(|e| err(e.into()))?;
    Ok(())
}

/// Reads the snapshot.
pub fn read(state_directory: &Path) -> Result<Status, String> {
    let p = path(state_directory);
    let bytes = std::fs::read(&p)
        .map_err(|e| format!("could not read {}: {e} (is leafd running?)", p.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("could not parse {}: {e}", p.display()))
}
