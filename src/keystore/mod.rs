//! TEMPORARY stand-in until the keystore module lands.
#![allow(missing_docs)]
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not write {0}")]
    Write(String, #[source] std::io::Error),
}
pub struct FileSpec { pub mode: u32, pub owner: Option<u32>, pub group: Option<u32> }
pub struct WriteOutcome { pub mtime: SystemTime }
pub fn write_atomic(path: &Path, contents: &[u8], spec: &FileSpec) -> Result<WriteOutcome, Error> {
    let e = |x| Error::Write(path.display().to_string(), x);
    let tmp = path.with_extension("tmp-x");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(spec.mode).open(&tmp).map_err(e)?;
    f.write_all(contents).map_err(e)?;
    f.sync_all().map_err(e)?;
    std::fs::rename(&tmp, path).map_err(e)?;
    Ok(WriteOutcome { mtime: SystemTime::now() })
}
use crate::config::{Output, StoreFormat};
use crate::secret::Secret;
use zeroize::Zeroizing;
pub struct KeyMaterial<'a> { pub key_pkcs8_der: &'a [u8], pub chain_der: &'a [Vec<u8>] }
pub fn encode_keystore(_f: StoreFormat, m: &KeyMaterial, _alias: &str, _p: Option<&Secret>) -> Result<Zeroizing<Vec<u8>>, Error> { Ok(Zeroizing::new(m.key_pkcs8_der.to_vec())) }
pub fn encode_truststore(_f: StoreFormat, r: &[Vec<u8>], _alias: &str, _p: Option<&Secret>) -> Result<Vec<u8>, Error> { Ok(r.concat()) }
pub fn verify_keystore(_f: StoreFormat, _b: &[u8], _p: Option<&Secret>, _c: &[Vec<u8>]) -> Result<(), Error> { Ok(()) }
pub fn verify_truststore(_f: StoreFormat, _b: &[u8], _p: Option<&Secret>, _c: &[Vec<u8>]) -> Result<(), Error> { Ok(()) }
pub fn write_output(o: &Output, bytes: &[u8]) -> Result<WriteOutcome, Error> { write_atomic(&o.path, bytes, &FileSpec{mode:o.mode, owner:o.owner, group:o.group}) }
