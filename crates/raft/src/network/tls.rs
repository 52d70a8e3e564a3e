//! TLS on the peer transport: every node presents its certificate, as a
//! server and as a client, and accepts only peers whose certificate the
//! cluster's authority signed (mutual TLS). Without it any process that
//! reaches the peer port could vote in elections and append to logs.

use std::fmt;

use strata_proto::error_chain;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

use crate::limits::TLS_HANDSHAKE_TIMEOUT;

/// The PEM material of a node's peer transport.
#[derive(Clone)]
pub struct PeerTls {
    /// This node's certificate (chain), presented to peers.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// The authority the peers' certificates are checked against.
    pub ca_pem: Vec<u8>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("PeerTls").field("cert_bytes", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

impl PeerTls {
    /// What the transport server accepts with: this node's identity, and a
    /// certificate from every connecting peer.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// What a connection to a peer checks and presents.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// Parses every part now, so that a bad file stops the node at start
    /// instead of failing each connection later.
    pub(crate) fn check(&self) -> Result<(), String> {
        Server::builder()
            .tls_config(self.server())
            .map_err(|e| format!("peer TLS (tls.cert_file, tls.key_file, tls.peer_ca_file): {}", error_chain(&e)))?;
        Endpoint::from_static("https://localhost")
            .tls_config(self.client())
            .map_err(|e| format!("peer TLS (tls.cert_file, tls.key_file, tls.peer_ca_file): {}", error_chain(&e)))?;
        Ok(())
    }
}
