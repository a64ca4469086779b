//! Merging parsed files: tables field by field, facts key by key, identities by name.
//!
//! Every merged value keeps the file and span it was written at, so that validation
//! errors point at the file and line the bad value came from.

use std::collections::BTreeMap;

use super::error::Error;
use super::file::{FileConfig, IdentityFile, Scalar};
use super::source::{At, Sources};

/// All files merged; not yet validated.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub daemon: DaemonMerged,
    pub host: HostMerged,
    pub key: KeyMerged,
    pub issuer: IssuerMerged,
    pub metrics: MetricsMerged,
    /// Identities in order, each with the file it was written in.
    pub identities: Vec<(usize, IdentityFile)>,
}

#[derive(Debug, Default)]
pub(crate) struct DaemonMerged {
    pub state_directory: Option<At<String>>,
    pub log_level: Option<At<String>>,
    pub testing_short_lifetimes: Option<At<bool>>,
}

#[derive(Debug, Default)]
pub(crate) struct HostMerged {
    pub hostname: Option<At<String>>,
    pub fqdn: Option<At<String>>,
    pub broker_id: Option<At<Scalar>>,
    pub cluster: Option<At<String>>,
    pub region: Option<At<String>>,
    pub zone: Option<At<String>>,
    /// Fact name to (name as written, value).
    pub facts: BTreeMap<String, (At<String>, At<Scalar>)>,
}

#[derive(Debug, Default)]
pub(crate) struct KeyMerged {
    pub backend: Option<At<String>>,
    pub algorithm: Option<At<String>>,
    pub tpm_tcti: Option<At<String>>,
    pub tpm_parent: Option<At<Scalar>>,
    pub pkcs11_module: Option<At<String>>,
    pub pkcs11_token_label: Option<At<String>>,
    pub pkcs11_token_serial: Option<At<String>>,
    pub pkcs11_pin_file: Option<At<String>>,
    pub pkcs11_pin_credential: Option<At<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct IssuerMerged {
    pub kind: Option<At<String>>,
    pub host_cert_validity: Option<At<String>>,
    pub root_validity: Option<At<String>>,
    pub root_common_name: Option<At<String>>,
    pub constrain_subjects: Option<At<bool>>,
}

#[derive(Debug, Default)]
pub(crate) struct MetricsMerged {
    pub textfile: Option<At<String>>,
    pub listen: Option<At<String>>,
}

/// Later files win: a field set in `src` replaces the merged one.
fn set<T>(dst: &mut Option<At<T>>, file: usize, src: Option<toml::Spanned<T>>) {
    if let Some(v) = src {
        *dst = Some(At::new(file, v));
    }
}

impl Merged {
    /// Merges file number `file` (an index into `sources`) over what is there.
    pub fn add(&mut self, sources: &Sources, file: usize, config: FileConfig) -> Result<(), Error> {
        if let Some(d) = config.daemon {
            set(&mut self.daemon.state_directory, file, d.state_directory);
            set(&mut self.daemon.log_level, file, d.log_level);
            set(
                &mut self.daemon.testing_short_lifetimes,
                file,
                d.testing_short_lifetimes,
            );
        }
        if let Some(h) = config.host {
            set(&mut self.host.hostname, file, h.hostname);
            set(&mut self.host.fqdn, file, h.fqdn);
            set(&mut self.host.broker_id, file, h.broker_id);
            set(&mut self.host.cluster, file, h.cluster);
            set(&mut self.host.region, file, h.region);
            set(&mut self.host.zone, file, h.zone);
            for (name, value) in h.facts.unwrap_or_default() {
                let name = At::new(file, name);
                let value = At::new(file, value);
                self.host.facts.insert(name.value.clone(), (name, value));
            }
        }
        if let Some(k) = config.key {
            set(&mut self.key.backend, file, k.backend);
            set(&mut self.key.algorithm, file, k.algorithm);
            if let Some(t) = k.tpm {
                set(&mut self.key.tpm_tcti, file, t.tcti);
                set(&mut self.key.tpm_parent, file, t.parent);
            }
            if let Some(p) = k.pkcs11 {
                set(&mut self.key.pkcs11_module, file, p.module);
                // The token and the PIN are each one choice: a later file's choice replaces
                // the earlier one whole.
                if p.token_label.is_some() || p.token_serial.is_some() {
                    self.key.pkcs11_token_label = None;
                    self.key.pkcs11_token_serial = None;
                }
                set(&mut self.key.pkcs11_token_label, file, p.token_label);
                set(&mut self.key.pkcs11_token_serial, file, p.token_serial);
                if p.pin_file.is_some() || p.pin_credential.is_some() {
                    self.key.pkcs11_pin_file = None;
                    self.key.pkcs11_pin_credential = None;
                }
                set(&mut self.key.pkcs11_pin_file, file, p.pin_file);
                set(&mut self.key.pkcs11_pin_credential, file, p.pin_credential);
            }
        }
        if let Some(i) = config.issuer {
            set(&mut self.issuer.kind, file, i.kind);
            set(
                &mut self.issuer.host_cert_validity,
                file,
                i.host_cert_validity,
            );
            set(&mut self.issuer.root_validity, file, i.root_validity);
            set(&mut self.issuer.root_common_name, file, i.root_common_name);
            set(
                &mut self.issuer.constrain_subjects,
                file,
                i.constrain_subjects,
            );
        }
        if let Some(m) = config.metrics {
            set(&mut self.metrics.textfile, file, m.textfile);
            set(&mut self.metrics.listen, file, m.listen);
        }

        // Identities: a name seen in an earlier file is replaced whole, in place; a name
        // seen twice in the same file is an error; new names append.
        let first_in_this_file = self.identities.len();
        let mut seen_here: Vec<(String, At<()>)> = Vec::new();
        for identity in config.identity {
            let name = identity.name.get_ref().clone();
            let at = At {
                file,
                span: identity.name.span(),
                value: (),
            };
            if let Some((_, first)) = seen_here.iter().find(|(n, _)| *n == name) {
                return Err(sources.invalid(
                    &at,
                    format!(
                        "duplicate identity name {name:?} (first defined at {})",
                        sources.describe(first)
                    ),
                ));
            }
            seen_here.push((name.clone(), at));
            let earlier = self.identities[..first_in_this_file]
                .iter()
                .position(|(_, i)| *i.name.get_ref() == name);
            match earlier {
                Some(index) => self.identities[index] = (file, identity),
                None => self.identities.push((file, identity)),
            }
        }
        Ok(())
    }
}
