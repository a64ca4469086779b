//! SASL credentials and the client side of the PLAIN and SCRAM-SHA-256/512 mechanisms.
//!
//! Pure protocol logic without I/O: [`super::kafka`] carries the tokens in SaslAuthenticate
//! requests. The SCRAM client follows RFC 5802 and RFC 7677 the way Kafka's own
//! `ScramSaslClient` does: GS2 header `n,,` (no channel binding, no authzid), the user name
//! escaped as a `saslname`, the password used as its UTF-8 bytes (Kafka applies no SASLprep,
//! and neither do the credentials `kafka-configs` stores), and the server signature verified
//! before the exchange counts as done.
//!
//! DEVNOTE: SCRAM is implemented here on `ring` rather than taken from a crate. On
//! crates.io, `sasl` has no SHA-512 and `scram-rs` calls itself source-available, not open
//! source. `rsasl` has a SCRAM-SHA-512 client, but it accepts any non-zero iteration count
//! (Kafka's client refuses fewer than 4096, and a hostile server could otherwise ask for a
//! single iteration, or for billions), it would bring a second crypto stack (RustCrypto) next
//! to `ring` and a callback framework for three messages, and the tests use it as the
//! independent SCRAM server this client is checked against. The mechanism is small and fully
//! specified, and `ring` already provides PBKDF2, HMAC, the digests and the random nonce.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::{digest, hmac, pbkdf2};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Kafka's minimum SCRAM iteration count (`ScramMechanism.minIterations`, both hashes).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// The highest iteration count leafd computes. Kafka stores credentials with at most 16384
/// iterations; the cap (four times that) only stops a hostile server from making the daemon
/// burn CPU.
pub const MAX_SCRAM_ITERATIONS: u32 = 65_536;
/// Random bytes in the client nonce (encoded as 32 URL-safe base64 characters).
const NONCE_BYTES: usize = 24;

/// A SASL mechanism leafd can authenticate with, as in Kafka's `sasl.mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (RFC 4616): the password is sent as is, so use it only over TLS
    /// (`SASL_SSL`) or on a loopback listener.
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism name sent in SaslHandshake, e.g. `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SASL credentials for the broker's admin listener. `Debug` shows the password redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism; the broker must have it in `sasl.enabled.mechanisms`.
    pub mechanism: SaslMechanism,
    /// The user name (for SCRAM, the name the credential was created for).
    pub username: String,
    /// The password.
    pub password: Secret,
}

impl Sasl {
    /// Credentials for `mechanism`.
    pub fn new(mechanism: SaslMechanism, username: impl Into<String>, password: Secret) -> Self {
        Self {
            mechanism,
            username: username.into(),
            password,
        }
    }
}

/// The PLAIN initial response: an empty authzid, the user name and the password, separated by
/// NUL bytes. Wiped on drop.
pub(crate) fn plain_token(username: &str, password: &Secret) -> Zeroizing<Vec<u8>> {
    let password = password.expose().as_bytes();
    let mut token = Zeroizing::new(Vec::with_capacity(username.len() + password.len() + 2));
    token.push(0);
    token.extend_from_slice(username.as_bytes());
    token.push(0);
    token.extend_from_slice(password);
    token
}

/// Why a SCRAM exchange failed on the client side.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScramError {
    /// The server ended the exchange with `e=<value>` in its final message.
    ServerError(String),
    /// A server message is malformed or fails a check (nonce, iteration count, signature).
    Verification(String),
}

#[derive(Clone, Copy, Debug)]
enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// A fresh client nonce: random bytes from the system generator, URL-safe base64 (printable
/// and free of `,`, as RFC 5802 requires).
pub(crate) fn random_nonce() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; NONCE_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The RFC 5802 `saslname` form of a user name: `=` becomes `=3D` and `,` becomes `=2C`.
pub(crate) fn saslname(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

/// The client side of one SCRAM exchange.
#[derive(Clone, Debug)]
pub(crate) struct ScramClient {
    hash: ScramHash,
    nonce: String,
    client_first_bare: String,
}

/// The parsed server-first message.
#[derive(Clone, Debug)]
pub(crate) struct ServerFirst {
    raw: String,
    nonce: String,
    salt: Vec<u8>,
    iterations: NonZeroU32,
}

/// What the server-final message is checked against.
pub(crate) struct ServerCheck {
    server_key: hmac::Key,
    auth_message: Vec<u8>,
}

impl fmt::Debug for ServerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCheck").finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client for `mechanism` (which must be a SCRAM mechanism) with the given nonce
    /// (see [`random_nonce`]). Returns `None` for PLAIN.
    pub(crate) fn new(mechanism: SaslMechanism, username: &str, nonce: String) -> Option<Self> {
        let hash = match mechanism {
            SaslMechanism::Plain => return None,
            SaslMechanism::ScramSha256 => ScramHash::Sha256,
            SaslMechanism::ScramSha512 => ScramHash::Sha512,
        };
        let client_first_bare = format!("n={},r={nonce}", saslname(username));
        Some(Self {
            hash,
            nonce,
            client_first_bare,
        })
    }

    /// The client-first message: GS2 header `n,,` and the bare message.
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Parses and checks the server-first message: the server nonce must extend ours and the
    /// iteration count must lie within [`MIN_SCRAM_ITERATIONS`]..=[`MAX_SCRAM_ITERATIONS`].
    pub(crate) fn server_first(&self, message: &[u8]) -> Result<ServerFirst, ScramError> {
        let bad = |what: &str| {
            ScramError::Verification(format!("malformed server-first message: {what}"))
        };
        let raw = std::str::from_utf8(message).map_err(|_| bad("not UTF-8"))?;
        if raw.starts_with("m=") {
            return Err(ScramError::Verification(
                "the server requires an unsupported SCRAM extension".to_owned(),
            ));
        }
        let mut attributes = raw.split(',');
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| bad("no nonce"))?;
        let salt = attributes
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .ok_or_else(|| bad("no salt"))?;
        let iterations = attributes
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .ok_or_else(|| bad("no iteration count"))?;
        if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(bad("the nonce is not printable"));
        }
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Verification(
                "the server nonce does not extend the client nonce".to_owned(),
            ));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| bad("the salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("empty salt"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("the iteration count is not a number"))?;
        if iterations < MIN_SCRAM_ITERATIONS {
            return Err(ScramError::Verification(format!(
                "the server asks for {iterations} iterations, fewer than the minimum \
                 {MIN_SCRAM_ITERATIONS}"
            )));
        }
        if iterations > MAX_SCRAM_ITERATIONS {
            return Err(ScramError::Verification(format!(
                "the server asks for {iterations} iterations, more than the maximum \
                 {MAX_SCRAM_ITERATIONS}"
            )));
        }
        let iterations = NonZeroU32::new(iterations).ok_or_else(|| bad("zero iterations"))?;
        Ok(ServerFirst {
            raw: raw.to_owned(),
            nonce: nonce.to_owned(),
            salt,
            iterations,
        })
    }

    /// The client-final message with the proof, and what the server-final message must
    /// prove. Runs PBKDF2, so call it off the async runtime's threads.
    pub(crate) fn client_final(
        &self,
        server_first: &ServerFirst,
        password: &Secret,
    ) -> (Vec<u8>, ServerCheck) {
        let hash = self.hash;
        let len = hash.len();
        // SaltedPassword := Hi(password, salt, i), which is PBKDF2 with dkLen = hLen.
        let mut salted = Zeroizing::new([0u8; digest::MAX_OUTPUT_LEN]);
        pbkdf2::derive(
            hash.pbkdf2(),
            server_first.iterations,
            &server_first.salt,
            password.expose().as_bytes(),
            &mut salted[..len],
        );
        let salted_key = hmac::Key::new(hash.hmac(), &salted[..len]);
        let mut client_key =
            Zeroizing::new(hmac::sign(&salted_key, b"Client Key").as_ref().to_vec());
        let stored_key = digest::digest(hash.digest(), &client_key);
        let server_key =
            hmac::Key::new(hash.hmac(), hmac::sign(&salted_key, b"Server Key").as_ref());

        // "biws" is base64("n,,"): no channel binding, no authzid.
        let without_proof = format!("c=biws,r={}", server_first.nonce);
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, server_first.raw
        )
        .into_bytes();
        let client_signature = hmac::sign(
            &hmac::Key::new(hash.hmac(), stored_key.as_ref()),
            &auth_message,
        );
        for (k, s) in client_key.iter_mut().zip(client_signature.as_ref()) {
            *k ^= s;
        }
        let proof = STANDARD.encode(&*client_key);
        let message = format!("{without_proof},p={proof}").into_bytes();
        (
            message,
            ServerCheck {
                server_key,
                auth_message,
            },
        )
    }
}

impl ServerCheck {
    /// Checks the server-final message: `v=` must carry the server signature for this
    /// exchange; `e=` reports the server's error.
    pub(crate) fn verify(&self, message: &[u8]) -> Result<(), ScramError> {
        let raw = std::str::from_utf8(message).map_err(|_| {
            ScramError::Verification("malformed server-final message: not UTF-8".to_owned())
        })?;
        let first = raw.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| {
                ScramError::Verification(
                    "malformed server-final message: no server signature".to_owned(),
                )
            })?;
        hmac::verify(&self.server_key, &self.auth_message, &signature).map_err(|_| {
            ScramError::Verification(
                "the server signature does not verify: the broker does not hold this \
                 credential (or is not the broker)"
                    .to_owned(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    /// The SCRAM-SHA-256 example of RFC 7677, section 3.
    #[test]
    fn rfc7677_example() {
        let client = ScramClient::new(
            SaslMechanism::ScramSha256,
            "user",
            "rOprNGfwEbeRWgbNEkqO".to_owned(),
        )
        .unwrap();
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let first = client
            .server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        let (last, check) = client.client_final(&first, &secret("pencil"));
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        check
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let err = check
            .verify(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(matches!(err, ScramError::Verification(m) if m.contains("does not verify")));
        assert_eq!(
            check.verify(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".to_owned()))
        );
        assert!(check.verify(b"x=1").is_err());
    }

    #[test]
    fn user_names_are_escaped() {
        assert_eq!(saslname("a=b,c"), "a=3Db=2Cc");
        let client = ScramClient::new(SaslMechanism::ScramSha512, "x,=y", "N".to_owned()).unwrap();
        assert_eq!(client.client_first(), b"n,,n=x=2C=3Dy,r=N");
        assert!(ScramClient::new(SaslMechanism::Plain, "u", "N".to_owned()).is_none());
    }

    #[test]
    fn server_first_checks() {
        let client = ScramClient::new(SaslMechanism::ScramSha512, "u", "abc".to_owned()).unwrap();
        let check = |m: &str| client.server_first(m.as_bytes()).map(drop);
        check("r=abcdef,s=c2FsdA==,i=4096").unwrap();
        let verification = |m: &str| match check(m) {
            Err(ScramError::Verification(reason)) => reason,
            other => panic!("{m}: {other:?}"),
        };
        assert!(verification("r=xbcdef,s=c2FsdA==,i=4096").contains("nonce"));
        assert!(verification("r=abc,s=c2FsdA==,i=4096").contains("nonce"));
        assert!(verification("r=abcdef,s=c2FsdA==,i=4095").contains("minimum 4096"));
        assert!(verification("r=abcdef,s=c2FsdA==,i=9999999").contains("maximum"));
        assert!(verification("m=x,r=abcdef,s=c2FsdA==,i=4096").contains("extension"));
        assert!(verification("r=abcdef,s=!!,i=4096").contains("base64"));
        assert!(verification("r=abcdef,i=4096").contains("salt"));
        assert!(verification("r=abcdef,s=c2FsdA==,i=-1").contains("number"));
    }

    #[test]
    fn plain_token_layout() {
        assert_eq!(&plain_token("u", &secret("p"))[..], b"\0u\0p");
    }

    #[test]
    fn nonces_are_fresh_and_printable() {
        let (a, b) = (random_nonce().unwrap(), random_nonce().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_graphic() && c != b','));
    }

    #[test]
    fn debug_redacts_the_password() {
        let sasl = Sasl::new(SaslMechanism::ScramSha512, "admin", secret("hunter2"));
        let debug = format!("{sasl:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("admin"), "{debug}");
    }
}
