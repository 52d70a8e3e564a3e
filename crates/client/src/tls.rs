//! [`Tls`]: how a client reaches brokers whose client port speaks TLS
//! (`tls.*` in the server's configuration).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// How long a TLS handshake with a broker may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS to the brokers: the authority their certificates must be signed by
/// and, for brokers that require one (`tls.client_ca_file`), this client's
/// own certificate. Each broker's certificate must name the host of the
/// address the client reaches it at (the bootstrap address, then the
/// address the broker advertises), as a DNS name or an IP address.
#[derive(Clone)]
pub struct Tls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Tls").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts brokers whose certificate the authority in `ca_pem` (PEM)
    /// signed.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Tls {
        Tls { ca_pem: ca_pem.into(), identity: None }
    }

    /// Also presents this certificate and its private key (PEM) to the
    /// brokers: mutual TLS.
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Tls {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Reads the authority's certificate and, when given, this client's
    /// certificate and key from PEM files.
    pub fn from_files(ca: &Path, cert_and_key: Option<(&Path, &Path)>) -> Result<Tls> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| Error::Invalid(format!("cannot read the TLS {what} {}: {e}", path.display())))
        };
        let tls = Tls::new(read("authority certificate", ca)?);
        Ok(match cert_and_key {
            Some((cert, key)) => tls.identity(read("certificate", cert)?, read("key", key)?),
            None => tls,
        })
    }

    pub(crate) fn config(&self) -> ClientTlsConfig {
        let config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).timeout(HANDSHAKE_TIMEOUT);
        match &self.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }

    /// Parses every part, so that a bad file fails when the client is
    /// made rather than at each connection.
    pub(crate) fn check(&self) -> Result<()> {
        Endpoint::from_static("https://localhost")
            .tls_config(self.config())
            .map(drop)
            .map_err(|e| Error::Invalid(format!("unusable TLS settings: {}", strata_proto::error_chain(&e))))
    }
}
