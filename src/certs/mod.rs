//! Certificates as TLS material: generation (rcgen), parsing and checks
//! (x509-parser), the SAN list, a certificate directory and its watcher, and
//! the resolver that serves them. Nothing here talks to a cluster; the
//! cluster side (the certificate Secret, caBundle injection, the rotation
//! controller) is [`cluster`].
//!
//! The flow is always the same whoever issues the certificate: PEM files are
//! read into a [`PemBundle`], checked into a [`LoadedCert`], and installed in
//! the [`ServingCert`] that rustls asks for every new handshake. A candidate
//! that fails the checks never replaces a good certificate.

mod check;
pub mod cluster;
mod dir;
mod generate;
mod resolver;
mod standalone;
mod verify;
mod watch;

use std::{fmt, net::IpAddr, path::PathBuf};

use zeroize::Zeroizing;

pub use crate::readiness::Check;
pub use check::{CertInfo, Inspection, LoadedCert, rfc3339};
pub use dir::{Ensured, ensure_self_managed, read_bundle, write_bundle};
pub use generate::{CA_VALIDITY, CertificateAuthority, renewal_due, renewal_time};
pub use resolver::{Refusal, ServingCert};
pub use standalone::StandaloneCerts;
pub use verify::TrustRoots;
pub use watch::{POLL_WITH_EVENTS, reload_from_dir, spawn_dir_watcher};

/// File names inside a cert directory, as in a `kubernetes.io/tls` Secret
/// and an OpenShift serving-cert Secret.
pub const TLS_CRT: &str = "tls.crt";
/// The serving certificate's private key.
pub const TLS_KEY: &str = "tls.key";
/// The CA bundle clients use to verify the serving certificate.
pub const CA_CRT: &str = "ca.crt";
/// The CA's private key, present only when keyhook manages its own CA.
pub const CA_KEY: &str = "ca.key";

/// The Service the kube-apiserver dials to reach keyhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// Service name.
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// Cluster DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
}

impl ServiceIdentity {
    /// The name the apiserver puts in SNI and verifies: `<svc>.<ns>.svc`.
    pub fn apiserver_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }

    /// Every name a client inside the cluster may use for the Service, the
    /// apiserver's own first.
    pub fn dns_names(&self) -> Vec<String> {
        let Self {
            name,
            namespace,
            cluster_domain,
        } = self;
        vec![
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.{cluster_domain}"),
            format!("{name}.{namespace}"),
            name.clone(),
        ]
    }

    /// The full SAN list of a serving certificate: the Service names, then
    /// `extra`, then (for a local run) `localhost` and `127.0.0.1`.
    pub fn san_list(&self, extra: &[SubjectAltName], standalone: bool) -> Vec<SubjectAltName> {
        let mut sans: Vec<SubjectAltName> = self
            .dns_names()
            .into_iter()
            .map(SubjectAltName::Dns)
            .collect();
        if standalone {
            sans.push(SubjectAltName::Dns("localhost".into()));
            sans.push(SubjectAltName::Ip(IpAddr::from([127, 0, 0, 1])));
        }
        for san in extra {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        sans
    }
}

/// One subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name, possibly a `*.` wildcard.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl SubjectAltName {
    /// Whether a certificate carrying this SAN is valid for `host`, with the
    /// single-label wildcard rule TLS clients apply.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            SubjectAltName::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            SubjectAltName::Dns(name) => match name.strip_prefix("*.") {
                Some(suffix) => host.split_once('.').is_some_and(|(label, rest)| {
                    !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
                }),
                None => name.eq_ignore_ascii_case(host),
            },
        }
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(name) => f.write_str(name),
            SubjectAltName::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A PEM-encoded private key. Its `Debug` never shows the key, and its memory
/// is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text, for writing it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// The PEM files of a cert directory or TLS Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBundle {
    /// Serving certificate (leaf first, then any intermediates).
    pub tls_crt: String,
    /// Serving certificate's private key.
    pub tls_key: PrivateKeyPem,
    /// CA certificates that clients trust; more than one during a CA rotation.
    pub ca_crt: String,
    /// The CA's private key, when keyhook is the CA.
    pub ca_key: Option<PrivateKeyPem>,
}

/// What went wrong with certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate directory cannot be written (`--cert-dir`).
    #[error("cannot write certificates to {}: {reason}; choose a writable directory with --cert-dir", dir.display())]
    Unwritable {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// PEM or DER content that does not parse.
    #[error("{what}: {reason}")]
    Parse {
        /// Which input (e.g. `tls.crt`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    /// rcgen refused to build a certificate.
    #[error("generating {what}: {source}")]
    Generate {
        /// The certificate being generated.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
}

impl Error {
    fn parse(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Parse {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ServiceIdentity {
        ServiceIdentity {
            name: "keyhook".into(),
            namespace: "secrets".into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn san_list_has_every_service_form_then_extras() {
        let extra = vec![SubjectAltName::Dns("hooks.example.com".into())];
        let names: Vec<String> = identity()
            .san_list(&extra, true)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "keyhook.secrets.svc",
                "keyhook.secrets.svc.cluster.local",
                "keyhook.secrets",
                "keyhook",
                "localhost",
                "127.0.0.1",
                "hooks.example.com"
            ]
        );
        assert_eq!(identity().san_list(&[], false).len(), 4);
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let wildcard = SubjectAltName::Dns("*.secrets.svc".into());
        assert!(wildcard.matches("keyhook.secrets.svc"));
        assert!(!wildcard.matches("secrets.svc"));
        assert!(!wildcard.matches("a.keyhook.secrets.svc"));
        assert!(SubjectAltName::Ip("127.0.0.1".parse().unwrap()).matches("127.0.0.1"));
    }

    #[test]
    fn private_keys_never_print() {
        let key = PrivateKeyPem::new("-----BEGIN PRIVATE KEY-----\nsecret".into());
        assert_eq!(format!("{key:?}"), "PrivateKeyPem([redacted])");
    }
}
