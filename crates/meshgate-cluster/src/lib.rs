//! Masked queries on Apache Ballista (docs/DESIGN.md §9).
//!
//! The gateway plans and checks every query as the caller, then, when a query is heavy
//! enough and a cluster is configured, hands the *physical* plan it checked to the
//! scheduler ([`job`]); executors run its stages. The policy travels inside that plan:
//! masks are encoded by [`codec`] as `(kind, version, key id)`, product scans with what they
//! may disclose, and every process reads the hash key itself (`MESHGATE_HASH_KEY` or its
//! key file), never from the plan. The scheduler and executor processes live in
//! `meshgate-node`, so the gateway does not link them; [`tls`] puts mutual TLS on every
//! cluster connection when the cluster leaves loopback, and [`reach`] refuses a clear
//! connection off loopback.

pub mod codec;
pub mod job;
pub mod reach;
pub mod tls;

use std::path::PathBuf;

pub use codec::{ClusterCodec, ClusterLogicalCodec};
pub use job::{Cluster, DistributedExec, Health, JobError, plan_for_cluster, scan_bytes};
pub use reach::{check_reach, is_loopback_host};
pub use tls::{ClusterTls, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the {what} would listen on or connect to {host}, outside this machine: cluster \
         ports carry plans and unmasked intermediate rows, so off loopback they need mutual \
         TLS (--tls-ca, --tls-cert, --tls-key)"
    )]
    NotLoopback { what: String, host: String },
    #[error("cluster TLS {what} {}: {reason}", path.display())]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}
