//! The connection to the TPM: parsing the TCTI, opening the ESAPI context, the `swtpm:`
//! busy probe, and running an operation with one reconnect after a lost connection.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;

use tss_esapi::Context;
use tss_esapi::constants::PropertyTag;
use tss_esapi::tcti_ldr::TctiNameConf;

use super::error::{Detail, Failure, Step, TssError};
use super::{BACKEND, PROBE_TIMEOUT, TpmBackend};
use crate::keys::Error;

/// Parses the configured TCTI, such as `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=P`.
pub(super) fn parse_tcti(tcti: &str) -> Result<TctiNameConf, Error> {
    TctiNameConf::from_str(tcti).map_err(|e| Error::Device {
        backend: BACKEND,
        operation: "parse the TCTI",
        retryable: false,
        source: Box::new(Detail::with_source(
            format!("invalid TCTI {tcti:?}"),
            TssError::from(e),
        )),
    })
}

impl TpmBackend {
    /// Opens the ESAPI context if there is none; `swtpm:` TCTIs are probed each time.
    pub(super) fn connect(&mut self) -> Result<&mut Context, Error> {
        if let TctiNameConf::Swtpm(_) = self.tcti {
            // The swtpm TCTI opens a connection for every command, and the ESAPI waits for
            // it without a limit: check the simulator answers before every operation.
            probe_swtpm(&self.tcti_text).map_err(|source| self.unavailable(source))?;
        }
        match self.ctx {
            Some(ref mut ctx) => Ok(ctx),
            None => {
                let mut ctx = Context::new(self.tcti.clone())
                    .map_err(|e| self.unavailable(Box::new(TssError::from(e))))?;
                if self.tpm_facts.is_empty() {
                    self.tpm_facts = read_tpm_facts(&mut ctx);
                }
                Ok(self.ctx.insert(ctx))
            }
        }
    }

    fn unavailable(&self, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            what: format!("TPM at TCTI {:?}", self.tcti_text),
            source,
        }
    }

    /// Runs `f` with a connected context and the parent handle. If the connection turns out
    /// to be broken, reconnects once and runs `f` once more.
    pub(super) fn run<T>(
        &mut self,
        mut f: impl FnMut(&mut Context, Option<u32>) -> Result<T, Step>,
    ) -> Result<T, Failure> {
        let parent = self.parent;
        let mut reconnected = false;
        loop {
            let ctx = self.connect().map_err(Failure::Connect)?;
            match f(ctx, parent) {
                Ok(v) => return Ok(v),
                Err(step) if step.error.connection_lost() => {
                    // The context is useless now; the next call opens a new one.
                    self.ctx = None;
                    if reconnected {
                        return Err(Failure::Step(step));
                    }
                    tracing::warn!(backend = BACKEND, "TPM connection lost; reconnecting once");
                    reconnected = true;
                }
                Err(step) => return Err(Failure::Step(step)),
            }
        }
    }
}

/// Manufacturer and firmware version, as facts for `info`. Best effort: a TPM that cannot
/// say is still usable.
fn read_tpm_facts(ctx: &mut Context) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    if let Ok(Some(m)) = ctx.get_tpm_property(PropertyTag::Manufacturer) {
        let text: String = m
            .to_be_bytes()
            .iter()
            .filter(|b| b.is_ascii_graphic() || **b == b' ')
            .map(|b| char::from(*b))
            .collect();
        facts.push(("manufacturer".into(), text.trim().to_owned()));
    }
    if let (Ok(Some(v1)), Ok(Some(v2))) = (
        ctx.get_tpm_property(PropertyTag::FirmwareVersion1),
        ctx.get_tpm_property(PropertyTag::FirmwareVersion2),
    ) {
        facts.push((
            "firmware".into(),
            format!("{}.{}.{}.{}", v1 >> 16, v1 & 0xffff, v2 >> 16, v2 & 0xffff),
        ));
    }
    facts
}

/// Sends `TPM2_GetRandom` to a `swtpm:` TCTI's server port and waits for the answer, so a
/// simulator held by another client is reported instead of blocking the ESAPI forever.
fn probe_swtpm(tcti: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let conf = tcti.strip_prefix("swtpm").unwrap_or(tcti);
    let conf = conf.strip_prefix(':').unwrap_or(conf);
    let (mut host, mut port) = ("localhost".to_owned(), 2321u16);
    for part in conf.split(',') {
        if let Some(h) = part.strip_prefix("host=") {
            h.clone_into(&mut host);
        } else if let Some(p) = part.strip_prefix("port=") {
            port = p
                .parse()
                .map_err(|_| Detail::new(format!("invalid port {p:?}")))?;
        }
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Detail::new(format!("{host} has no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| Detail::with_source(format!("cannot connect to swtpm at {addr}"), e))?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    // TPM2_GetRandom(2): tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested.
    stream.write_all(&[
        0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x02,
    ])?;
    let mut header = [0u8; 10];
    match stream.read_exact(&mut header) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(Detail::new(format!(
                "swtpm at {addr} accepted the connection but did not answer within {}s: it \
                 serves one client at a time and another client holds it",
                PROBE_TIMEOUT.as_secs()
            ))
            .into())
        }
        Err(e) => {
            Err(Detail::with_source(format!("swtpm at {addr} closed the connection"), e).into())
        }
    }
}
