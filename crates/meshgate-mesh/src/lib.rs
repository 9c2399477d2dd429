//! The mesh catalog: contracts bound to their data (Parquet folders or Delta tables) and exposed as SQL tables.
//!
//! [`Mesh::load`] discovers every contract under the contracts folder, resolves each to its
//! location, checks that its files conform, and keeps what it found as an immutable
//! snapshot. Products that conform are served as [`ContractTable`]s, which expose exactly
//! the contract's columns with the contract's types. Everything else is quarantined with a
//! diagnosis, and a query that names it is told why; the rest of the mesh is unaffected.

pub mod checks;
mod config;
mod conformance;
mod delta;
pub mod lineage;
mod mesh;
mod provider;
pub mod publish;
pub mod scan;
pub mod stores;
mod table;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::{Location, MeshConfig};
pub use delta::Snapshot as DeltaSnapshot;
pub use mesh::{Mesh, Stamp, changed_files, contract_files, contract_stamps};
pub use provider::{CATALOG, Entry, MeshCatalogProvider};
pub use scan::{
    CallerView, Disclosure, ProductScanExec, ScanView, part_of_row_filter, same_predicate,
};
pub use table::{ContractTable, Product};

/// Makes ring the process's TLS crypto provider, as tonic's TLS and the S3 client are
/// built with. The Delta kernel's HTTP client compiles in aws-lc-rs as well, and with two
/// providers rustls no longer picks one by itself: every TLS entry point calls this first
/// (installing it again is a no-op).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a product is not served, and whom to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub domain: String,
    pub dataset: String,
    /// `None` when the contract was too broken to tell.
    pub version: Option<u32>,
    pub owner: Option<String>,
    pub contract_file: PathBuf,
    pub reasons: Vec<String>,
}

impl fmt::Display for Quarantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data product {}.{}", self.domain, self.dataset)?;
        if let Some(v) = self.version {
            write!(f, " v{v}")?;
        }
        write!(f, " is quarantined")?;
        if let Some(owner) = &self.owner {
            write!(f, " (owner {owner})")?;
        }
        write!(f, ": {}", self.reasons.join("; "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Carried through DataFusion as `DataFusionError::External` so that the server can map
    /// it to FAILED_PRECONDITION.
    #[error("{0}")]
    Quarantined(Arc<Quarantine>),
    #[error("cannot read the contracts folder {}: {error}", path.display())]
    ContractsFolder {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Without valid rules nothing can be checked, so nothing is served (fail closed).
    #[error("the governance rules are invalid, so no product can be served:\n{0}")]
    Governance(meshgate_contract::ContractError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
