//! Masked queries on Apache Ballista (DESIGN §9).
//!
//! The gateway plans and checks every query as the caller, then, when a query is heavy
//! enough and a cluster is configured, hands the *physical* plan it checked to the
//! scheduler ([`client`]); executors run its stages. The policy travels inside that plan:
//! masks and barriers are encoded by [`codec`] as `(kind, version, key id)` and every
//! process reads the hash key from its own `MESHGATE_HASH_KEY`. [`process`] starts the
//! scheduler and executor with those codecs and meshgate's object stores.

pub mod client;
pub mod codec;
pub mod process;

use std::net::IpAddr;
use std::path::PathBuf;

pub use client::{Cluster, DistributedExec, Health, JobError, plan_for_cluster, scan_bytes};
pub use codec::{ClusterCodec, ClusterLogicalCodec};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the {what} would listen on or connect to {ip}, outside this machine: cluster ports \
         carry plans and unmasked intermediate rows and have no TLS yet, so meshgate keeps \
         them on loopback (127.0.0.1)"
    )]
    NotLoopback { what: String, ip: IpAddr },
    #[error("mesh.s3: {0}")]
    S3(String),
    #[error("cannot create the work folder {}: {source}", path.display())]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ballista: {0}")]
    Ballista(String),
}
