//! What a Kafka broker derives from a certificate, reproduced exactly. Pure: no I/O.
//!
//! - [`dn`]: the subject as the JDK's `X500Principal.getName()` prints it (RFC 2253 the
//!   JDK's way), which is the string Kafka's `DefaultKafkaPrincipalBuilder` starts from.
//! - [`principal`]: Kafka's `ssl.principal.mapping.rules` (`SslPrincipalMapper`).
//! - [`jregex`]: the `java.util.regex` behaviour those rules rely on, on the `regex` crate.

pub mod dn;
pub mod jregex;
pub mod principal;
