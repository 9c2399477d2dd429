//! Mutual TLS on every cluster connection.
//!
//! Whoever can reach the scheduler can submit any plan, and whoever can reach an
//! executor's Flight port can read shuffle files, which hold rows before the final
//! projection of a query (unmasked columns a later stage drops). So a cluster off
//! loopback needs both sides authenticated: each process presents a certificate signed
//! by the cluster's own CA and accepts only peers that do the same. That CA must be
//! dedicated to the cluster: every certificate it signs is inside the trust boundary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::EndpointOverrideFn;
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_endpoint};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::ClusterError;

/// Where a process finds its TLS material (`--tls-*`, or `distributed.tls` of the gateway).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the cluster's CA; peers must present a certificate it signed.
    pub ca: PathBuf,
    /// PEM: this process's certificate chain, valid for the host others dial it by.
    pub cert: PathBuf,
    /// PEM: the private key of `cert`.
    pub key: PathBuf,
}

/// The loaded material; cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls { .. }")
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClusterError> {
    let bad = |reason: String| ClusterError::Tls {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let ok = if what == "key" {
        PrivateKeyDer::from_pem_slice(&pem).is_ok()
    } else {
        CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok())
    };
    if !ok {
        return Err(bad(format!("no PEM {what} in it")));
    }
    Ok(pem)
}

impl ClusterTls {
    /// Reads and checks the three files, naming the one that is wrong.
    pub fn load(files: &TlsFiles) -> Result<ClusterTls, ClusterError> {
        meshgate_mesh::install_crypto_provider();
        let ca = read("CA certificate", &files.ca)?;
        let cert = read("certificate", &files.cert)?;
        let key = read("key", &files.key)?;
        let tls = ClusterTls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        };
        // A key that does not match its certificate fails here, at start, not at the
        // first connection.
        tonic::transport::Server::builder()
            .tls_config(tls.server())
            .map_err(|e| ClusterError::Tls {
                what: "certificate and key",
                path: files.cert.clone(),
                reason: format!("{e:?}"),
            })?;
        Ok(tls)
    }

    /// Serves with this identity and demands a client certificate signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            // Before a peer is authenticated, it may not hold a connection open for long.
            .timeout(Duration::from_secs(10))
    }

    /// Trusts only the cluster's CA (not the system's roots) and presents this identity.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }

    /// `endpoint` with TLS; an `http://` one (Ballista dials the scheduler and the
    /// executors' task ports that way, whatever `use_tls` says) becomes `https://`, so
    /// with TLS configured no cluster connection it opens is in the clear.
    pub fn secure(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        let endpoint = if endpoint.uri().scheme_str() == Some("https") {
            endpoint
        } else {
            let authority = endpoint
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            // An endpoint's settings cannot be read back: Ballista's defaults, as it
            // builds those connections.
            create_grpc_client_endpoint(
                format!("https://{authority}"),
                Some(&GrpcClientConfig::default()),
            )?
        };
        endpoint.tls_config(self.client())
    }

    /// [`Self::secure`] in the shape Ballista's processes and clients take.
    pub fn endpoint_override(&self) -> EndpointOverrideFn {
        let tls = self.clone();
        Arc::new(move |endpoint| Ok(tls.secure(endpoint)?))
    }
}
