//! Masked queries on Apache Ballista (docs/DESIGN.md §9).
//!
//! The gateway plans and checks every query as the caller, then, when a query is heavy
//! enough and a cluster is configured, hands the *physical* plan it checked to the
//! scheduler ([`client`]); executors run its stages. The policy travels inside that plan:
//! masks are encoded by [`codec`] as `(kind, version, key id)`, product scans with what they
//! may disclose, and every process reads the hash key itself (`MESHGATE_HASH_KEY` or its
//! key file), never from the plan. [`process`] starts the
//! scheduler and executor with those codecs and meshgate's object stores; [`tls`] puts
//! mutual TLS on every cluster connection when the cluster leaves loopback.

pub mod client;
pub mod codec;
pub mod process;
pub mod tls;

use std::path::PathBuf;

pub use client::{Cluster, DistributedExec, Health, JobError, plan_for_cluster, scan_bytes};
pub use codec::{ClusterCodec, ClusterLogicalCodec};
pub use tls::{ClusterTls, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the {what} would listen on or connect to {host}, outside this machine: cluster \
         ports carry plans and unmasked intermediate rows, so off loopback they need mutual \
         TLS (--tls-ca, --tls-cert, --tls-key)"
    )]
    NotLoopback { what: String, host: String },
    #[error(
        "TLS needs pull scheduling (--scheduling pull, the default with TLS): Ballista's \
         push-mode task port has no TLS"
    )]
    PushWithTls,
    #[error(
        "an executor bound to every interface needs --external-host: the name the scheduler, \
         the gateway and other executors reach it by (its certificate's name)"
    )]
    NoExternalHost,
    #[error("cluster TLS {what} {}: {reason}", path.display())]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("mesh.s3: {0}")]
    S3(String),
    #[error("cannot create the work folder {}: {error}", path.display())]
    WorkDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("ballista: {0}")]
    Ballista(String),
}
