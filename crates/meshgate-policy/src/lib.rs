//! Enforcing data contracts on queries: PII masks, row filters, and the refusal of anything
//! that is not a read of a data product (docs/DESIGN.md §3, §4).
//!
//! The entry point is [`MeshSession`]: a DataFusion session for one principal whose
//! analyzer rewrites every scan of a contract table into that product's policy before any
//! other operator sees its rows, and then verifies the result.

mod access;
mod bounded;
pub mod codec;
pub mod labels;
pub mod masks;
mod node;
mod rule;
mod session;
mod udf;
mod verify;
mod view;

pub use access::{Access, Policy, Principal, bind_attributes};
pub use masks::{HashKey, KeyTooShort};
pub use node::{AppliedPolicy, MeshQueryPlanner, applied_policies};
pub use rule::MeshPolicyRule;
pub use session::{MeshSession, SessionOptions};
pub use verify::{VerifyOptimized, VerifyPolicy, verify_physical};
pub use view::{CallerTable, METADATA_SCHEMAS};

use datafusion::error::DataFusionError;

/// A refusal by the policy. It crosses DataFusion as `DataFusionError::External`; callers
/// find it again with [`PolicyError::find`].
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "permission denied: {principal} has no grant on data product {product} (owner {owner})"
    )]
    PermissionDenied {
        product: String,
        owner: String,
        principal: String,
    },
    #[error(
        "{0} is not a data product: only the products of the mesh can be read (no files, URLs or other tables)"
    )]
    NotAProduct(String),
    #[error("only queries are allowed: meshgate is read-only ({0})")]
    NotAQuery(String),
    #[error(
        "{0}() is not available: it reveals how product files are stored (paths, row positions), which no role may see"
    )]
    RefusedFunction(String),
    /// The verifier found a scan the rule did not cover: a bug, never a user error.
    #[error("internal policy error: {0} is not under its policy")]
    Unenforced(String),
}

impl From<PolicyError> for DataFusionError {
    fn from(e: PolicyError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

impl PolicyError {
    /// The policy error inside a DataFusion error, however deeply it was wrapped.
    pub fn find(e: &DataFusionError) -> Option<&PolicyError> {
        match e.find_root() {
            DataFusionError::External(inner) => inner.downcast_ref(),
            _ => None,
        }
    }
}

/// How a failed query is reported: the class decides the status code a client sees, the
/// message is safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// No grant on a product (gRPC PERMISSION_DENIED, SQLSTATE 42501).
    PermissionDenied,
    /// A statement or source meshgate never serves (PERMISSION_DENIED / INVALID_ARGUMENT).
    Refused,
    /// The product exists but is quarantined (FAILED_PRECONDITION, SQLSTATE 55000).
    Quarantined,
    /// The caller's SQL is wrong (INVALID_ARGUMENT, SQLSTATE 42000).
    InvalidQuery,
    /// Resources ran out (RESOURCE_EXHAUSTED, SQLSTATE 53000).
    ResourcesExhausted,
    /// Anything else: a bug or an I/O failure; its text is for the log, not the caller.
    Internal,
}

impl ErrorClass {
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorClass::PermissionDenied | ErrorClass::Refused => "42501",
            ErrorClass::Quarantined => "55000",
            ErrorClass::InvalidQuery => "42000",
            ErrorClass::ResourcesExhausted => "53000",
            ErrorClass::Internal => "XX000",
        }
    }
}

/// Classifies a query error and renders its root cause without DataFusion's wrapping.
pub fn classify(e: &DataFusionError) -> (ErrorClass, String) {
    if let Some(p) = PolicyError::find(e) {
        let class = match p {
            PolicyError::PermissionDenied { .. } => ErrorClass::PermissionDenied,
            PolicyError::NotAProduct(_)
            | PolicyError::NotAQuery(_)
            | PolicyError::RefusedFunction(_) => ErrorClass::Refused,
            PolicyError::Unenforced(_) => ErrorClass::Internal,
        };
        return (class, p.to_string());
    }
    let root = e.find_root();
    if let DataFusionError::External(inner) = root
        && let Some(c @ meshgate_mesh::CatalogError::Quarantined(_)) = inner.downcast_ref()
    {
        return (ErrorClass::Quarantined, c.to_string());
    }
    (class_of(root), root.strip_backtrace())
}

/// Every kind of DataFusion error, named: a kind a new DataFusion adds fails the build
/// here instead of quietly becoming "internal".
fn class_of(e: &DataFusionError) -> ErrorClass {
    match e {
        // The statement: its text, its names, its types, what it computes on the values.
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::ArrowError(..)
        | DataFusionError::Execution(_) => ErrorClass::InvalidQuery,
        DataFusionError::ResourcesExhausted(_) => ErrorClass::ResourcesExhausted,
        // Files and stores (a product's data changed under the server, a store is down)
        // and engine bugs: nothing the caller can fix, and their text names paths.
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::External(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => ErrorClass::Internal,
        // Wrappers `find_root` did not see through: the class of what they wrap.
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            class_of(inner)
        }
        DataFusionError::Shared(inner) => class_of(inner),
        DataFusionError::Collection(errors) => {
            errors.first().map_or(ErrorClass::Internal, class_of)
        }
    }
}
