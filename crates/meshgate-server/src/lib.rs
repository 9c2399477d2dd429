//! The gateway: Flight SQL over the policy-enforcing session, authentication, audit, and
//! the HTTP endpoints. This is the only crate that knows gRPC.

pub mod audit;
pub mod auth;
pub mod catalog;
mod catalog_page;
pub mod config;
mod flight;
mod gateway;
mod http;
mod metrics;
pub mod oidc;
pub mod pg;
pub mod query;
pub mod refresh;
mod reload;
mod session_options;
mod sla;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use meshgate_mesh::Mesh;
use meshgate_proto::catalog::catalog_service_server::CatalogServiceServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tracing::info;

pub use auth::ROLE_HEADER;
pub use config::{Secrets, ServerConfig, TlsConfig};
pub use flight::MeshFlightSql;
pub use gateway::Gateway;
pub use session_options::EXECUTION_HEADER;

/// HTTP/2 sizes for Flight connections, the same on both ends.
pub mod http2 {
    /// Receive windows sized for bulk results: with h2's 64 KiB default a loopback DoGet
    /// stalls on WINDOW_UPDATE round trips long before the CPU is busy.
    pub const STREAM_WINDOW: u32 = 8 << 20;
    pub const CONNECTION_WINDOW: u32 = 16 << 20;
    /// Frames this large keep per-frame overhead out of multi-megabyte Flight messages.
    pub const MAX_FRAME: u32 = 1 << 20;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot open the audit file {}: {error}", path.display())]
    Audit {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("distributed: {0}")]
    Cluster(String),
    #[error("cannot set up the query engine: {0}")]
    Engine(String),
    #[error("cannot read the TLS {what} {path}: {error}")]
    TlsFile {
        what: &'static str,
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("invalid TLS configuration: {0}")]
    Tls(tonic::transport::Error),
    #[error("invalid TLS configuration for the Postgres port: {0}")]
    PgTls(String),
    #[error("the Flight server stopped: {0}")]
    Transport(tonic::transport::Error),
}

/// A running gateway. Both listeners are bound before it is returned, so a test can
/// connect at once (no sleeps); dropping the handle does not stop it, `shutdown` does.
pub struct RunningServer {
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The Postgres port, when `pg_addr` is set.
    pub pg_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    flight: JoinHandle<Result<(), ServerError>>,
    http: JoinHandle<()>,
    /// SLA evaluation and contract reloading: stopped with the server.
    background: Vec<JoinHandle<()>>,
}

impl RunningServer {
    pub async fn start(
        mesh: Arc<Mesh>,
        config: ServerConfig,
        secrets: Secrets,
    ) -> Result<RunningServer, ServerError> {
        meshgate_mesh::install_crypto_provider();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(tls_identity(tls)?)
                .map_err(ServerError::Tls)?;
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| ServerError::Bind { addr, error })
        };
        let flight_listener = bind(config.flight_addr).await?;
        let http_listener = bind(config.http_addr).await?;
        let flight_addr = flight_listener.local_addr().expect("bound");
        let http_addr = http_listener.local_addr().expect("bound");
        let pg_listener = match config.pg_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let pg_addr = pg_listener.as_ref().map(|l| l.local_addr().expect("bound"));
        let pg_tls = config.tls.as_ref().map(pg_tls_acceptor).transpose()?;

        let config_tls = config.tls.is_some();
        let gateway = Arc::new(Gateway::new(mesh, config, secrets)?);
        let (tx, rx) = oneshot::channel::<()>();
        let (http_tx, http_rx) = tokio::sync::watch::channel(false);
        let service = FlightServiceServer::new(MeshFlightSql::new(Arc::clone(&gateway)))
            .max_decoding_message_size(16 << 20);
        let catalog_gateway = Arc::clone(&gateway);
        let flight = tokio::spawn(async move {
            builder
                .initial_stream_window_size(http2::STREAM_WINDOW)
                .initial_connection_window_size(http2::CONNECTION_WINDOW)
                .max_frame_size(http2::MAX_FRAME)
                .add_service(service)
                .add_service(CatalogServiceServer::new(catalog::MeshCatalogService::new(
                    Arc::clone(&catalog_gateway),
                )))
                // Without TCP_NODELAY, small gRPC frames wait on delayed ACKs (~40 ms each).
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(flight_listener).with_nodelay(Some(true)),
                    async {
                        let _ = rx.await;
                        let _ = http_tx.send(true);
                    },
                )
                .await
                .map_err(ServerError::Transport)
        });
        let interval = gateway.config.limits.sla_check_interval_secs;
        let sla = (interval > 0).then(|| {
            tokio::spawn(sla::run(
                Arc::clone(&gateway),
                std::time::Duration::from_secs(interval),
            ))
        });
        let every = gateway.config.reload_interval_secs;
        let reload = (every > 0).then(|| {
            tokio::spawn(reload::run(
                Arc::clone(&gateway),
                std::time::Duration::from_secs(every),
            ))
        });
        let refresher = gateway.config.refresh.then(|| {
            let refresher = refresh::Refresher::new(
                Arc::clone(&gateway.query),
                &gateway.config.service_principals,
            );
            let tick = std::time::Duration::from_secs(gateway.config.refresh_check_secs.max(1));
            tokio::spawn(refresher.run(tick))
        });
        let pg = pg_listener
            .map(|listener| tokio::spawn(pg::serve(listener, Arc::clone(&gateway), pg_tls)));
        let http = tokio::spawn(http::serve(http_listener, gateway, http_rx));
        info!(%flight_addr, %http_addr, pg_addr = ?pg_addr, tls = config_tls, "meshgate is serving");
        Ok(RunningServer {
            flight_addr,
            http_addr,
            pg_addr,
            shutdown: Some(tx),
            flight,
            http,
            background: [sla, reload, refresher, pg].into_iter().flatten().collect(),
        })
    }

    /// Stops accepting, lets running calls finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.http.await;
        self.flight.await.unwrap_or(Ok(()))
    }

    /// Runs until the Flight server stops (or `signal` fires).
    pub async fn wait(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        signal.await;
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.http.await;
        self.flight.await.unwrap_or(Ok(()))
    }
}

/// The Postgres port's TLS, from the same certificate and key as Flight's.
fn pg_tls_acceptor(tls: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let read = |what, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServerError::TlsFile {
            what,
            path: path.to_path_buf(),
            error: source,
        })
    };
    let invalid = |what: &str| ServerError::PgTls(what.to_string());
    let cert = read("certificate", &tls.cert)?;
    let key = read("key", &tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("{}: {e}", tls.cert.display())))?;
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .map_err(|e| invalid(&format!("{}: {e}", tls.key.display())))?
        .ok_or_else(|| invalid(&format!("{}: no private key", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reads the certificate and key up front, so a wrong path stops `serve` with the path in
/// the message instead of failing every handshake later.
fn tls_identity(tls: &TlsConfig) -> Result<ServerTlsConfig, ServerError> {
    let read = |what, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServerError::TlsFile {
            what,
            path: path.to_path_buf(),
            error: source,
        })
    };
    let cert = read("certificate", &tls.cert)?;
    let key = read("key", &tls.key)?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}
