//! Derived products computed again on schedule: each one's SQL runs through the query
//! path as its domain's service principal (so its inputs are masked and filtered exactly
//! as that principal reads them), and the rows are published with the producers' publish
//! path (cast to the contract, checked, swapped in atomically).
//!
//! One refresher per mesh: `meshgate refresh` as its own process, or `meshgate serve
//! --refresh` on one replica. A lock file beside each product makes a second refresher
//! skip what the first is computing, and the status file beside it tells every replica's
//! SLA evaluation how the last attempt went. A failed refresh publishes nothing: the last
//! good data stays served, ages, and breaches the freshness SLA; the failure itself is
//! audited and shown in the product's SLA status.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use meshgate_mesh::lineage::{Derivation, ProductRef};
use meshgate_mesh::publish::{Failpoint, RefreshLock, RefreshStatus, Source, publish_with};
use meshgate_policy::Principal;
use tracing::{info, warn};

use crate::audit::{AuditRecord, redact_sql, redact_text};
use crate::config::ServicePrincipal;
use crate::query::{ErrorKind, Execution, QueryEngine, QueryError};

/// The footer key of a derived product's files: the lineage they were computed with.
pub const LINEAGE_KEY: &str = "meshgate.lineage";

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("{product} is not a derived product of this mesh")]
    NotDerived { product: String },
    #[error("{product} cannot be refreshed: {}", problems.join("; "))]
    Refused {
        product: ProductRef,
        problems: Vec<String>,
    },
    #[error("domain {domain} has no service principal (service_principals in meshgate.yaml)")]
    NoPrincipal { domain: String },
    #[error("{product} is published to an object store; refreshing writes local folders only")]
    NotLocal { product: ProductRef },
    #[error("another refresher is computing {product}")]
    Busy { product: ProductRef },
    #[error("its query failed: {0}")]
    Query(QueryError),
    #[error(transparent)]
    Publish(#[from] meshgate_mesh::publish::PublishError),
    #[error("cannot write its status: {0}")]
    Io(#[from] std::io::Error),
}

/// One successful refresh.
#[derive(Debug)]
pub struct Refreshed {
    pub product: ProductRef,
    pub rows: u64,
    pub folder: PathBuf,
    pub duration: Duration,
}

/// Runs derived products' SQL as their domains' service principals.
pub struct Refresher {
    engine: Arc<QueryEngine>,
    principals: BTreeMap<String, Principal>,
}

impl Refresher {
    /// A refresher of its own (`meshgate refresh`, `publish --derived`): the query path
    /// without any listener, with the deployment's limits and the gateway's hash key (a
    /// hashed input must hash as the gateway hashes it, or it no longer joins), auditing
    /// to `audit_file` (not the gateway's: each process keeps its own chain).
    pub fn standalone(
        mesh: Arc<meshgate_mesh::Mesh>,
        config: &crate::ServerConfig,
        key: meshgate_policy::HashKey,
        audit_file: Option<&std::path::Path>,
    ) -> Result<Refresher, crate::ServerError> {
        let audit = crate::audit::AuditLog::open(audit_file).map_err(|error| {
            crate::ServerError::Audit {
                path: audit_file.map(PathBuf::from).unwrap_or_default(),
                error,
            }
        })?;
        let options = crate::query::EngineOptions {
            limits: config.limits.clone(),
            ..Default::default()
        };
        let engine = QueryEngine::new(mesh, options, Arc::new(key), None, audit)
            .map_err(|e| crate::ServerError::Engine(e.message))?;
        Ok(Refresher::new(Arc::new(engine), &config.service_principals))
    }

    /// Refreshes the derived product of `contract_file` now.
    pub async fn refresh_contract(
        &self,
        contract_file: &std::path::Path,
    ) -> Result<Refreshed, RefreshError> {
        let wanted = std::fs::canonicalize(contract_file).unwrap_or(contract_file.into());
        let lineage = Arc::clone(self.engine.mesh().lineage());
        let found = lineage.derivations().find(|d| {
            std::fs::canonicalize(&d.contract_file).unwrap_or(d.contract_file.clone()) == wanted
        });
        match found {
            Some(d) => self.refresh(&d.clone()).await,
            None => Err(RefreshError::NotDerived {
                product: contract_file.display().to_string(),
            }),
        }
    }

    pub fn new(engine: Arc<QueryEngine>, principals: &BTreeMap<String, ServicePrincipal>) -> Self {
        Refresher {
            engine,
            principals: principals
                .iter()
                .map(|(domain, p)| (domain.clone(), p.principal(domain)))
                .collect(),
        }
    }

    /// Refreshes the derived product named `domain.dataset` (newest version) or
    /// `domain.dataset_vN`, now, whatever its schedule.
    pub async fn refresh_named(&self, name: &str) -> Result<Refreshed, RefreshError> {
        let mesh = self.engine.mesh();
        let lineage = Arc::clone(mesh.lineage());
        let wanted = |d: &&Derivation| {
            let p = &d.product;
            name == format!("{}.{}_v{}", p.domain, p.dataset, p.version)
                || name == format!("{}.{}", p.domain, p.dataset)
        };
        // By the short name, the newest version.
        let found = lineage
            .derivations()
            .filter(wanted)
            .max_by_key(|d| d.product.version)
            .cloned();
        match found {
            Some(d) => self.refresh(&d).await,
            None => Err(RefreshError::NotDerived {
                product: name.to_string(),
            }),
        }
    }

    /// Computes `d` again and publishes it; the status file and the audit trail say how
    /// it went either way.
    pub async fn refresh(&self, d: &Derivation) -> Result<Refreshed, RefreshError> {
        let product = d.product.clone();
        let Some(location) = d.location.clone() else {
            return Err(RefreshError::NotLocal { product });
        };
        let Some(_lock) = RefreshLock::try_acquire(&location)? else {
            return Err(RefreshError::Busy { product });
        };
        let started = Instant::now();
        let attempted_at = Utc::now();
        let previous = RefreshStatus::read(&location);
        let result = self.compute_and_publish(d).await;
        let status = match &result {
            Ok(r) => RefreshStatus {
                attempted_at: attempted_at.to_rfc3339(),
                succeeded_at: Some(attempted_at.to_rfc3339()),
                error: None,
                rows: Some(r.rows),
                duration_ms: started.elapsed().as_millis() as u64,
                digest: Some(d.digest.clone()),
                folder: r
                    .folder
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string()),
            },
            // What the served data was computed under stays as it was.
            Err(e) => {
                let previous = previous.unwrap_or(RefreshStatus {
                    attempted_at: String::new(),
                    succeeded_at: None,
                    error: None,
                    rows: None,
                    duration_ms: 0,
                    digest: None,
                    folder: None,
                });
                RefreshStatus {
                    attempted_at: attempted_at.to_rfc3339(),
                    // Literals in an error may quote the data.
                    error: Some(redact_text(&e.to_string())),
                    duration_ms: started.elapsed().as_millis() as u64,
                    ..previous
                }
            }
        };
        status.write(&location)?;
        match &result {
            Ok(r) => info!(product = %product, rows = r.rows, ms = status.duration_ms, "refreshed"),
            Err(e) => {
                warn!(product = %product, "refresh failed, the last good data stays served: {e}")
            }
        }
        result
    }

    async fn compute_and_publish(&self, d: &Derivation) -> Result<Refreshed, RefreshError> {
        let started = Instant::now();
        let product = d.product.clone();
        if !d.problems.is_empty() {
            return Err(RefreshError::Refused {
                product,
                problems: d.problems.clone(),
            });
        }
        let principal = self
            .principals
            .get(&d.product.domain)
            .cloned()
            .ok_or_else(|| RefreshError::NoPrincipal {
                domain: d.product.domain.clone(),
            })?;
        let mut record = AuditRecord::new(&principal, "refresher", "refresh", "internal");
        record.sql = Some(redact_sql(&d.sql));
        let run = async {
            let planned = self
                .engine
                .plan(&principal, &d.sql, None, Some(Execution::Local))
                .await?;
            let schema = Arc::clone(&planned.wire_schema);
            let permit = self.engine.slot(&principal).await?;
            let batches: Vec<_> = self
                .engine
                .execute(planned, permit, record.clone(), Instant::now())?
                .try_collect()
                .await?;
            Ok::<_, QueryError>((schema, batches))
        };
        let (schema, batches) = match run.await {
            Ok(r) => r,
            Err(e) => {
                // Failures before the stream started are not audited by it.
                self.engine.audit_now(record, started, Err(&e));
                return Err(RefreshError::Query(e));
            }
        };
        let lineage = serde_json::to_string(&d.columns).unwrap_or_default();
        let source = Source::Batches {
            schema,
            batches,
            metadata: BTreeMap::from([(LINEAGE_KEY.to_string(), lineage)]),
        };
        let mesh = self.engine.mesh();
        let published =
            publish_with(mesh.config(), &d.contract_file, source, Failpoint::None).await;
        let mut publish_record = AuditRecord::new(&principal, "refresher", "publish", "internal");
        publish_record.datasets = vec![format!("{product} publish")];
        match published {
            Ok(p) => {
                publish_record.rows = p.report.rows;
                self.engine.audit_now(publish_record, started, Ok(()));
                // Serve it here at once; other replicas' reloaders see the status file.
                let stale = HashSet::from([d.contract_file.clone()]);
                if let Ok(next) = mesh.reload_with(&stale).await {
                    self.engine.set_mesh(Arc::new(next));
                }
                Ok(Refreshed {
                    product,
                    rows: p.report.rows,
                    folder: PathBuf::from(p.location),
                    duration: started.elapsed(),
                })
            }
            Err(e) => {
                let failure = QueryError::new(ErrorKind::FailedPrecondition, e.to_string());
                self.engine
                    .audit_now(publish_record, started, Err(&failure));
                Err(RefreshError::Publish(e))
            }
        }
    }

    /// Refreshes every derived product whose last attempt is older than its interval,
    /// inputs before what reads them; returns what it did.
    pub async fn refresh_due(&self) -> Vec<(ProductRef, Result<Refreshed, RefreshError>)> {
        // Contracts as they are now (a reload reads only what changed).
        match self.engine.mesh().reload().await {
            Ok(mesh) => self.engine.set_mesh(Arc::new(mesh)),
            Err(e) => warn!("cannot reload the contracts, refreshing as they were: {e}"),
        }
        let lineage = Arc::clone(self.engine.mesh().lineage());
        let now = Utc::now();
        let mut out = Vec::new();
        for d in lineage.in_refresh_order() {
            if !is_due(d, now) {
                continue;
            }
            // The newest mesh: an input refreshed a moment ago is read as published.
            let current = Arc::clone(self.engine.mesh().lineage());
            let Some(d) = current.upstream(&d.product).cloned() else {
                continue;
            };
            let result = self.refresh(&d).await;
            out.push((d.product, result));
        }
        out
    }

    /// Refreshes what is due every `tick`, for ever.
    pub async fn run(self, tick: Duration) {
        loop {
            for (product, result) in self.refresh_due().await {
                if let Err(RefreshError::Busy { .. }) = result {
                    info!(%product, "another refresher has it");
                }
            }
            tokio::time::sleep(tick).await;
        }
    }
}

/// Due when never attempted, or when the last attempt is at least one interval old.
fn is_due(d: &Derivation, now: DateTime<Utc>) -> bool {
    let Some(location) = &d.location else {
        return false;
    };
    let Some(status) = RefreshStatus::read(location) else {
        return true;
    };
    // The contract changed since: its data waits, quarantined, for this refresh.
    if status.digest.as_deref() != Some(d.digest.as_str()) && status.error.is_none() {
        return true;
    }
    match DateTime::parse_from_rfc3339(&status.attempted_at) {
        Ok(at) => (now - at.with_timezone(&Utc)).to_std().unwrap_or_default() >= d.refresh,
        Err(_) => true,
    }
}
