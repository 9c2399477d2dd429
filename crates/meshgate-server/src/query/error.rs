//! How a statement fails, in words every protocol can carry: Flight maps the kind to a
//! gRPC status, Postgres to a SQLSTATE.

use std::fmt;

use datafusion::error::DataFusionError;
use meshgate_policy::{ErrorClass, classify};
use tracing::{error, warn};

use crate::audit::redact_text;

/// What kind of failure, named as the canonical status codes are (google.rpc.Code), which
/// both gRPC and the audit log use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No valid identity.
    Unauthenticated,
    /// No grant on a product, or a statement or function meshgate never serves.
    PermissionDenied,
    /// The caller's SQL, parameters or options are wrong.
    InvalidArgument,
    /// The product is quarantined, or the gateway is not set up for what was asked.
    FailedPrecondition,
    /// Memory, concurrency or queueing limits.
    ResourceExhausted,
    /// The query timeout.
    DeadlineExceeded,
    /// The client went away.
    Cancelled,
    /// The cluster could not run the query; trying again may work.
    Unavailable,
    /// A bug or an I/O failure: the message is only an id, the log has the rest.
    Internal,
}

impl ErrorKind {
    /// The name the audit log records as the outcome.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unauthenticated => "Unauthenticated",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::FailedPrecondition => "FailedPrecondition",
            ErrorKind::ResourceExhausted => "ResourceExhausted",
            ErrorKind::DeadlineExceeded => "DeadlineExceeded",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl ErrorKind {
    /// The PostgreSQL SQLSTATE of this kind of failure.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::Unauthenticated => "28000",
            ErrorKind::PermissionDenied => "42501",
            ErrorKind::InvalidArgument => "42000",
            ErrorKind::FailedPrecondition => "55000",
            ErrorKind::ResourceExhausted => "53000",
            ErrorKind::DeadlineExceeded => "57014",
            ErrorKind::Cancelled => "57014",
            ErrorKind::Unavailable => "08006",
            ErrorKind::Internal => "XX000",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed statement or request: its kind, and a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub kind: ErrorKind,
    pub message: String,
    /// PostgreSQL's own code when it is finer than the kind's (drivers branch on
    /// "undefined table" or "syntax error"); see [`QueryError::sqlstate`].
    pub code: Option<&'static str>,
    /// Seconds after which trying again may succeed (a quota or the queue).
    pub retry_after: Option<u64>,
}

impl QueryError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        QueryError {
            kind,
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The SQLSTATE a Postgres client is told.
    pub fn sqlstate(&self) -> &'static str {
        self.code.unwrap_or(self.kind.sqlstate())
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        QueryError::new(ErrorKind::InvalidArgument, message)
    }

    /// An internal error as the caller sees it: an id. The log has what failed, without
    /// values.
    pub fn internal(what: &str) -> Self {
        let id = uuid::Uuid::new_v4();
        error!(error_id = %id, "internal error: {}", redact_text(what));
        QueryError::new(ErrorKind::Internal, format!("internal error (id {id})"))
    }

    /// A panic inside the engine (DataFusion, arrow) as an internal error, not a dropped
    /// call.
    pub fn panicked(panic: Box<dyn std::any::Any + Send>) -> Self {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        QueryError::internal(&format!("panic: {what}"))
    }

    /// A query error, local or from the cluster: one mapping, so that the same failure
    /// reads the same wherever it ran.
    pub fn from_datafusion(e: &DataFusionError) -> Self {
        let (class, message) = match meshgate_cluster::JobError::find(e) {
            Some(meshgate_cluster::JobError::Unavailable(why)) => {
                let id = uuid::Uuid::new_v4();
                warn!(error_id = %id, "the cluster failed a query: {}", redact_text(why));
                return QueryError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the cluster could not run this query (id {id}): try again, or ask for \
                         local execution"
                    ),
                );
            }
            // A job that failed because of the query reads as it would here.
            Some(meshgate_cluster::JobError::Query { error, class, .. }) => (*class, error.clone()),
            None => classify(e),
        };
        let kind = match class {
            ErrorClass::PermissionDenied | ErrorClass::Refused => ErrorKind::PermissionDenied,
            ErrorClass::Quarantined => ErrorKind::FailedPrecondition,
            ErrorClass::InvalidQuery => ErrorKind::InvalidArgument,
            ErrorClass::ResourcesExhausted => ErrorKind::ResourceExhausted,
            ErrorClass::Internal => return QueryError::internal(&message),
        };
        let code = (kind == ErrorKind::InvalidArgument)
            .then(|| invalid_code(e.find_root()))
            .flatten();
        QueryError {
            code,
            ..QueryError::new(kind, message)
        }
    }
}

/// PostgreSQL's code for an invalid statement, where DataFusion's error says which.
fn invalid_code(e: &DataFusionError) -> Option<&'static str> {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::SQL(..) => Some("42601"),
        DataFusionError::SchemaError(err, _) => match err.as_ref() {
            SchemaError::FieldNotFound { .. } => Some("42703"),
            SchemaError::AmbiguousReference { .. } => Some("42702"),
            _ => None,
        },
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("not found") => {
            Some("42P01")
        }
        DataFusionError::Plan(m) if m.starts_with("Invalid function") => Some("42883"),
        DataFusionError::NotImplemented(_) => Some("0A000"),
        DataFusionError::ArrowError(err, _) => match err.as_ref() {
            arrow::error::ArrowError::DivideByZero => Some("22012"),
            arrow::error::ArrowError::CastError(_) => Some("22P02"),
            _ => None,
        },
        _ => None,
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        QueryError::from_datafusion(&e)
    }
}

/// Runs `f` so that a panic in it is an internal error with an id.
pub(crate) async fn unwinding<T>(
    f: impl std::future::Future<Output = Result<T, QueryError>>,
) -> Result<T, QueryError> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(f)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(QueryError::panicked(p)))
}
