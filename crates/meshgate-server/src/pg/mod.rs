//! The Postgres wire protocol, for BI tools and Postgres drivers: pgwire speaks the
//! protocol, and every statement goes through the same query path as Flight SQL.
//!
//! - `auth.rs`: login (SCRAM-SHA-256, or a password over TLS or from loopback)
//! - `session.rs`: a connection's session and the statements it answers itself
//! - `handler.rs`: queries, simple and extended protocol
//! - `catalog.rs`: `pg_catalog` and the functions clients call, in every session

mod auth;
mod catalog;
mod describe;
mod handler;
mod session;

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{PgWireServerHandlers, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::cancel::CancelRequest;
use tokio::net::TcpListener;
use tracing::{debug, warn};

pub use auth::ScramVerifier;
pub use catalog::PgCatalog;

use crate::gateway::Gateway;
use crate::query::QueryError;

/// The PostgreSQL version meshgate answers as: the one whose catalogs
/// datafusion-pg-catalog reproduces. Drivers choose their queries by it.
pub(crate) const SERVER_VERSION: &str = "16.6";
pub(crate) const SERVER_VERSION_NUM: &str = "160006";

/// The handlers every connection shares; what is a connection's own lives in its
/// session extensions (login state, [`session::Session`]).
pub(crate) struct PgService {
    gateway: Arc<Gateway>,
    pids: RandomPidSecretKeyGenerator,
    cancels: session::Cancels,
    me: Weak<PgService>,
}

impl PgService {
    fn me(&self) -> Arc<PgService> {
        self.me
            .upgrade()
            .expect("the service outlives its handlers")
    }
}

struct Handlers(Arc<PgService>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.0)
    }
}

#[async_trait]
impl CancelHandler for PgService {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancels.cancel(request.pid, &request.secret_key);
    }
}

/// Serves the Postgres port until the task is dropped. Each connection runs on its own
/// task; one that fails is logged and closed, the others go on.
pub(crate) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let service = Arc::new_cyclic(|me| PgService {
        gateway,
        pids: RandomPidSecretKeyGenerator::default(),
        cancels: session::Cancels::default(),
        me: Weak::clone(me),
    });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("postgres port: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let handlers = Handlers(Arc::clone(&service));
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                debug!(peer = %peer, "postgres connection ended: {e}");
            }
        });
    }
}

/// A failed statement as the client sees it: SQLSTATE from its kind.
pub(crate) fn error(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        e.sqlstate().into(),
        e.message.clone(),
    )))
}

/// A failure that ends the connection (a refused login).
pub(crate) fn fatal(e: &QueryError, code: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        e.message.clone(),
    )))
}
