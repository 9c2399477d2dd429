//! Finding contracts, resolving their locations and deciding what is served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::future::Either;
use futures::{FutureExt, StreamExt};
use meshgate_contract::{
    Contract, EffectivePolicy, Governance, load_governed_contract, peek_identity,
};
use tracing::{info, warn};

use crate::config::Location;
use crate::conformance::bind;
use crate::lineage::{Declared, Lineage, product_ref};
use crate::provider::{Entry, MeshCatalogProvider};
use crate::stores::MeshStores;
use crate::{CatalogError, ContractTable, MeshConfig, Product, Quarantine, Result};

/// One immutable snapshot of the mesh: what is served, what is quarantined and why.
#[derive(Debug)]
pub struct Mesh {
    config: MeshConfig,
    products: Vec<Arc<Product>>,
    tables: Vec<Arc<ContractTable>>,
    quarantined: Vec<Arc<Quarantine>>,
    /// Contracts edited into invalid ones whose last good version is still served.
    kept: Vec<Arc<Quarantine>>,
    catalog: Arc<MeshCatalogProvider>,
    epoch: String,
    stores: Arc<MeshStores>,
    /// What each contract file gave, kept for the next reload while the file is unchanged.
    parsed: HashMap<PathBuf, Parsed>,
    /// The table each unchanged served candidate was bound to.
    bound: HashMap<PathBuf, (Arc<Candidate>, Arc<ContractTable>)>,
    governance: Option<Stamp>,
    lineage: Arc<Lineage>,
}

/// How many products are bound at once at startup and on a reload that binds many.
const BINDS_AT_ONCE: usize = 16;

/// A file's size and modification time: a reload reads again only files whose stamp moved.
pub type Stamp = (u64, Option<SystemTime>);

fn stamp(file: &Path) -> Stamp {
    let meta = std::fs::metadata(file).ok();
    (
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
    )
}

type Outcome = std::result::Result<Arc<Candidate>, Arc<Quarantine>>;

#[derive(Debug, Clone)]
struct Parsed {
    stamp: Stamp,
    outcome: Outcome,
}

/// The contracts of `stamped` that have no outcome yet, read and checked on every core
/// (parsing thousands of contracts is most of a startup), in their order.
fn read_contracts(
    config: &MeshConfig,
    dir: &Path,
    stamped: &[(PathBuf, Stamp, Option<Outcome>)],
    governance: Option<&Governance>,
) -> Vec<Outcome> {
    let todo: Vec<&Path> = stamped
        .iter()
        .filter(|(_, _, done)| done.is_none())
        .map(|(file, _, _)| file.as_path())
        .collect();
    let read = |files: &[&Path]| -> Vec<Outcome> {
        files
            .iter()
            .map(|file| {
                candidate(config, dir, file, governance)
                    .map(Arc::new)
                    .map_err(|q| Arc::new(*q))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A few contracts (a reload) are not worth a thread.
    if threads == 1 || todo.len() < 64 {
        return read(&todo);
    }
    let chunk = todo.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = todo
            .chunks(chunk)
            .map(|part| scope.spawn(move || read(part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// A contract that parsed, on its way to being served.
#[derive(Debug)]
struct Candidate {
    contract: Contract,
    domain: String,
    /// The contract's grants under the governance policies that match it.
    policy: EffectivePolicy,
    file: PathBuf,
    location: Location,
    is_default_location: bool,
}

impl Mesh {
    /// Loads every contract under the configured folder. Only an unreadable contracts folder
    /// is an error: a broken contract or product is quarantined and the rest still served.
    pub async fn load(config: MeshConfig) -> Result<Mesh> {
        let stores = Arc::new(MeshStores::new(config.s3.clone()));
        Mesh::build(config, stores, None, &HashSet::new()).await
    }

    /// Reads the contracts folder and decides what is served. With a `previous` snapshot,
    /// a contract file whose stamp has not moved (and that is not in `stale`) is not read
    /// again, and its product, when it was served, keeps its bound table: a reload costs
    /// what changed, plus a walk of the folder and the checks that compare every contract
    /// with every other (names, overlapping locations), which are sorted, not pairwise.
    async fn build(
        config: MeshConfig,
        stores: Arc<MeshStores>,
        previous: Option<&Mesh>,
        stale: &HashSet<PathBuf>,
    ) -> Result<Mesh> {
        let dir = config.contracts_dir();
        let files = contract_files(&dir).map_err(|source| CatalogError::ContractsFolder {
            path: dir.clone(),
            error: source,
        })?;

        let governance_file = config.governance_file();
        let governance_stamp = governance_file.as_deref().map(stamp);
        // Every contract is checked against the governance rules: new rules, all read again.
        let previous = previous.filter(|p| p.governance == governance_stamp);
        let governance = match &governance_file {
            Some(path) => Some(Governance::load(path).map_err(CatalogError::Governance)?),
            None => None,
        };

        let stamped: Vec<(PathBuf, Stamp, Option<Outcome>)> = files
            .into_iter()
            .map(|file| {
                let stamp = stamp(&file);
                let unchanged = previous
                    .and_then(|p| p.parsed.get(&file))
                    .filter(|p| p.stamp == stamp && stamp.1.is_some() && !stale.contains(&file))
                    .map(|p| p.outcome.clone());
                (file, stamp, unchanged)
            })
            .collect();
        let read = read_contracts(&config, &dir, &stamped, governance.as_ref());

        let mut quarantined = Vec::new();
        let mut candidates = Vec::new();
        let mut parsed = HashMap::with_capacity(stamped.len());
        let mut read = read.into_iter();
        for (file, stamp, unchanged) in stamped {
            let outcome = match unchanged {
                Some(outcome) => outcome,
                None => read.next().expect("one outcome per contract read"),
            };
            match &outcome {
                Ok(c) => candidates.push(Arc::clone(c)),
                Err(q) => quarantined.push(Arc::clone(q)),
            }
            parsed.insert(file, Parsed { stamp, outcome });
        }
        refuse_conflicts(&config, &mut candidates, &mut quarantined);
        let lineage = Arc::new(derivations(&mut candidates, &mut quarantined).await);

        let ctx = session_context(&stores);
        let shared = Arc::new(config.clone());
        // Products are bound as tasks, several at a time: a bind waits on the store (a
        // listing, a footer) and decodes footers, which other cores can do meanwhile.
        // Results come back in the folder's order, so the snapshot does not depend on timing.
        let binds = futures::stream::iter(candidates.into_iter().map(|c| {
            let same = previous
                .and_then(|p| p.bound.get(&c.file))
                .filter(|(was, _)| Arc::ptr_eq(was, &c))
                .map(|(_, table)| Arc::clone(table));
            match same {
                // Kept as it was: no task.
                Some(table) => Either::Left(futures::future::ready((c, Ok((table, false))))),
                None => {
                    let (config, ctx) = (Arc::clone(&shared), ctx.clone());
                    let task = tokio::spawn(async move {
                        let outcome = bind_candidate(&config, &ctx, &c).await.map(|t| (t, true));
                        (c, outcome)
                    });
                    // A bind that panicked panics here, as before binds became tasks.
                    Either::Right(task.map(|done| {
                        done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
                    }))
                }
            }
        }))
        .buffered(BINDS_AT_ONCE);
        futures::pin_mut!(binds);
        let mut products = Vec::new();
        let mut tables = Vec::new();
        let mut bound = HashMap::new();
        while let Some(done) = binds.next().await {
            let (c, outcome) = done;
            match outcome {
                Ok((table, new)) => {
                    if new {
                        info!(product = %table.product().display_name(), "serving");
                    }
                    products.push(Arc::clone(table.product()));
                    tables.push(Arc::clone(&table));
                    bound.insert(c.file.clone(), (c, table));
                }
                Err(q) => quarantined.push(Arc::new(q)),
            }
        }
        for q in &quarantined {
            warn!(contract = %q.contract_file.display(), "{q}");
        }
        let catalog = Arc::new(MeshCatalogProvider::new(names(&tables, &quarantined)));
        Ok(Mesh {
            epoch: epoch(&products, &quarantined),
            config,
            products,
            tables,
            quarantined,
            kept: Vec::new(),
            catalog,
            stores,
            parsed,
            bound,
            governance: governance_stamp,
            lineage,
        })
    }

    /// Loads the mesh again from disk, reading only contracts that changed (see
    /// [`Mesh::reload_with`]).
    pub async fn reload(&self) -> Result<Mesh> {
        self.reload_with(&HashSet::new()).await
    }

    /// Loads the mesh again, reading the contracts that changed and those in `stale` (whose
    /// data moved: a location may now resolve elsewhere) and binding their products again;
    /// every other product keeps its table. A contract that was served and has since been
    /// edited into an invalid one keeps its last good version served (reported in
    /// [`Mesh::kept`]) rather than disappearing from under its consumers.
    pub async fn reload_with(&self, stale: &HashSet<PathBuf>) -> Result<Mesh> {
        let next = Mesh::build(
            self.config.clone(),
            Arc::clone(&self.stores),
            Some(self),
            stale,
        )
        .await?;
        let invalid = |q: &Quarantine| q.reasons.iter().all(|r| r.starts_with("invalid contract"));
        // New governance rules may refuse a contract that did not change: its last good
        // table was bound under the old rules' (looser) policy, so it is not kept.
        if self.governance != next.governance || !next.quarantined.iter().any(|q| invalid(q)) {
            return Ok(next);
        }
        let mut products = next.products;
        let mut tables = next.tables;
        let mut quarantined = Vec::new();
        let mut kept = Vec::new();
        let last_good: HashMap<&Path, &Arc<ContractTable>> = self
            .tables
            .iter()
            .map(|t| (t.product().contract_file.as_path(), t))
            .collect();
        for q in next.quarantined {
            match last_good.get(q.contract_file.as_path()) {
                Some(t) if invalid(&q) => {
                    warn!(contract = %q.contract_file.display(),
                        "invalid contract change; the last good version stays served: {q}");
                    products.push(Arc::clone(t.product()));
                    tables.push(Arc::clone(t));
                    kept.push(q);
                }
                _ => quarantined.push(q),
            }
        }
        let catalog = Arc::new(MeshCatalogProvider::new(names(&tables, &quarantined)));
        Ok(Mesh {
            epoch: epoch(&products, &quarantined),
            stores: next.stores,
            config: next.config,
            products,
            tables,
            quarantined,
            kept,
            catalog,
            parsed: next.parsed,
            bound: next.bound,
            governance: next.governance,
            lineage: next.lineage,
        })
    }

    /// Loads the mesh again knowing which files changed (contract files, or the governance
    /// rules), as the reloader's walk or file events tell it, and `stale` as in
    /// [`Mesh::reload_with`]. When every changed contract keeps its product's name, version
    /// and location, was served and still binds, and no derived product reads or is that
    /// product, nothing else can have changed: only those files are read and bound again
    /// and the rest of the snapshot is reused, at a cost that does not grow with the mesh
    /// beyond copying its indexes. Any other change (a file added or removed, a new name or
    /// location, an invalid edit, new governance rules) reloads as [`Mesh::reload_with`].
    pub async fn reload_files(
        &self,
        changed: &HashSet<PathBuf>,
        stale: &HashSet<PathBuf>,
    ) -> Result<Mesh> {
        if let Some(mesh) = self.patched(changed, stale).await {
            return Ok(mesh);
        }
        let all: HashSet<PathBuf> = changed.union(stale).cloned().collect();
        self.reload_with(&all).await
    }

    /// This snapshot with the products of `changed` and `stale` bound again, or `None` when
    /// the change may reach other products (see [`Mesh::reload_files`]).
    async fn patched(&self, changed: &HashSet<PathBuf>, stale: &HashSet<PathBuf>) -> Option<Mesh> {
        let governance_file = self.config.governance_file();
        if governance_file.as_deref().map(stamp) != self.governance {
            return None;
        }
        let governance = match &governance_file {
            Some(path) => Some(Governance::load(path).ok()?),
            None => None,
        };
        let dir = self.config.contracts_dir();
        let ctx = session_context(&self.stores);
        let mut parsed = self.parsed.clone();
        let mut bound = self.bound.clone();
        let mut replaced: HashMap<usize, Arc<ContractTable>> = HashMap::new();
        for file in changed.union(stale) {
            let Ok(old) = &self.parsed.get(file)?.outcome else {
                return None;
            };
            let (_, old_table) = self.bound.get(file).filter(|(c, _)| Arc::ptr_eq(c, old))?;
            let stamp = stamp(file);
            stamp.1?;
            let new = candidate(&self.config, &dir, file, governance.as_ref()).ok()?;
            let same_place = new.domain == old.domain
                && new.contract.dataset.as_str() == old.contract.dataset.as_str()
                && new.contract.version.0 == old.contract.version.0
                && new.is_default_location == old.is_default_location
                && location_key(&new.location) == location_key(&old.location);
            if !same_place || self.lineage_reaches(old) || new.contract.source.is_some() {
                return None;
            }
            let new = Arc::new(new);
            let table = bind_candidate(&self.config, &ctx, &new).await.ok()?;
            info!(product = %table.product().display_name(), "serving");
            replaced.insert(Arc::as_ptr(old_table) as usize, Arc::clone(&table));
            parsed.insert(
                file.clone(),
                Parsed {
                    stamp,
                    outcome: Ok(Arc::clone(&new)),
                },
            );
            bound.insert(file.clone(), (new, table));
        }
        let tables: Vec<Arc<ContractTable>> = self
            .tables
            .iter()
            .map(|t| Arc::clone(replaced.get(&(Arc::as_ptr(t) as usize)).unwrap_or(t)))
            .collect();
        let products: Vec<Arc<Product>> = tables.iter().map(|t| Arc::clone(t.product())).collect();
        Some(Mesh {
            epoch: epoch(&products, &self.quarantined),
            catalog: Arc::new(self.catalog.replaced(&replaced)),
            config: self.config.clone(),
            products,
            tables,
            quarantined: self.quarantined.clone(),
            kept: self.kept.clone(),
            stores: Arc::clone(&self.stores),
            parsed,
            bound,
            governance: self.governance,
            lineage: Arc::clone(&self.lineage),
        })
    }

    /// Whether a derived product is, or may read, `c`'s product: one whose SQL did not plan
    /// may do so once `c` changes, so it counts too.
    fn lineage_reaches(&self, c: &Candidate) -> bool {
        c.contract.source.is_some()
            || self.lineage.derivations().any(|d| {
                !d.problems.is_empty()
                    || d.inputs
                        .keys()
                        .any(|r| r.domain == c.domain && r.dataset == c.contract.dataset.as_str())
            })
    }

    /// Where product files are read from; every DataFusion runtime that scans this mesh's
    /// tables must use it.
    pub fn object_stores(&self) -> Arc<dyn ObjectStoreRegistry> {
        Arc::clone(&self.stores) as Arc<dyn ObjectStoreRegistry>
    }

    /// A plain DataFusion session over this mesh's object stores (checks, tools).
    pub fn session_context(&self) -> SessionContext {
        session_context(&self.stores)
    }

    /// Identifies what is served: the same contracts give the same epoch on every replica
    /// (local paths are left out), any change to a served contract gives another.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Contracts whose latest edit is invalid, while their last good version is served.
    pub fn kept(&self) -> &[Arc<Quarantine>] {
        &self.kept
    }

    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    pub fn products(&self) -> &[Arc<Product>] {
        &self.products
    }

    /// The served products' tables, unmasked: for the platform's own checks, never for
    /// callers (they go through the policy-enforcing session).
    pub fn tables(&self) -> &[Arc<ContractTable>] {
        &self.tables
    }

    pub fn quarantined(&self) -> &[Arc<Quarantine>] {
        &self.quarantined
    }

    /// Served and quarantined products by domain and dataset, newest version first.
    pub fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = listed(&self.tables, &self.quarantined).collect();
        all.sort_by_key(|e| {
            let (d, s, v) = e.key();
            (d, s, std::cmp::Reverse(v))
        });
        all
    }

    /// What every derived product is built from (see [`crate::lineage`]).
    pub fn lineage(&self) -> &Arc<Lineage> {
        &self.lineage
    }

    /// The `mesh` catalog for a DataFusion session.
    pub fn catalog(&self) -> Arc<MeshCatalogProvider> {
        Arc::clone(&self.catalog)
    }
}

/// The lineage of the derived candidates, planned over every valid contract; a derived
/// product whose SQL does not plan, loses a PII tag or reads itself is quarantined (its
/// data may hold what its contract no longer masks).
async fn derivations(
    candidates: &mut Vec<Arc<Candidate>>,
    quarantined: &mut Vec<Arc<Quarantine>>,
) -> Lineage {
    let declared: Vec<Declared<'_>> = candidates
        .iter()
        .map(|c| Declared {
            domain: &c.domain,
            contract: &c.contract,
            file: c.file.clone(),
            location: match &c.location {
                Location::Local(p) => Some(p.clone()),
                Location::Url(_) => None,
            },
        })
        .collect();
    let lineage = Lineage::of(&declared).await;
    drop(declared);
    candidates.retain(|c| {
        let Some(d) = lineage.upstream(&product_ref(&c.domain, &c.contract)) else {
            return true;
        };
        let mut reasons: Vec<String> = d
            .problems
            .iter()
            .map(|p| format!("derived product: {p}"))
            .collect();
        // Data the refresher did not compute under this contract's SQL and PII tags (an
        // edit since, or files swapped in by hand) waits for the next refresh.
        if let Some(location) = d.location.as_deref()
            && location.exists()
            && reasons.is_empty()
            && !crate::publish::RefreshStatus::vouches_for(location, &d.digest)
        {
            reasons.push(
                "derived product: its data was not computed by the refresher under this \
                 contract's source.sql and PII tags; it is served again after its next refresh"
                    .into(),
            );
        }
        if reasons.is_empty() {
            return true;
        }
        quarantined.push(Arc::new(quarantine_of(c, reasons)));
        false
    });
    lineage
}

fn session_context(stores: &Arc<MeshStores>) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::clone(stores) as Arc<dyn ObjectStoreRegistry>)
        .build_arc()
        .expect("a runtime with default settings");
    // The platform's own reads: checks see every row and statistic.
    let config = SessionConfig::new().with_extension(Arc::new(crate::CallerView::trusted()));
    SessionContext::new_with_config_rt(config, runtime)
}

/// Binds a candidate to its files, or says why it cannot be served.
async fn bind_candidate(
    config: &MeshConfig,
    ctx: &SessionContext,
    c: &Candidate,
) -> std::result::Result<Arc<ContractTable>, Quarantine> {
    let location = c.location.as_url();
    let shown = config.shown(&location);
    let missing = matches!(&c.location, Location::Local(p) if !p.is_dir());
    let bound = if missing {
        Err(vec![format!("location {shown} does not exist")])
    } else {
        bind(ctx, &c.contract, &c.policy, &location, &shown, &config.s3).await
    };
    // An object store has no folders: nothing under the prefix means it is missing.
    let bound = match bound {
        Ok(b) if b.files_found == 0 && matches!(c.location, Location::Url(_)) => {
            Err(vec![format!(
                "no Parquet files under {shown} (missing prefix or bucket?)"
            )])
        }
        other => other,
    };
    match bound {
        Ok(bound) => {
            let product = Arc::new(Product::new(
                c.contract.clone(),
                c.domain.clone(),
                c.file.clone(),
                location,
                bound.schema,
                c.policy.clone(),
                bound.row_filters,
            ));
            Ok(Arc::new(ContractTable::new(product, bound.files)))
        }
        Err(reasons) => {
            let reasons = reasons.iter().map(|r| config.s3.scrub(r)).collect();
            Err(quarantine_of(c, reasons))
        }
    }
}

/// SHA-256 over each served contract's digest (of the contract with its domain) and each
/// quarantined product's name, in a fixed order; 12 hex digits.
fn epoch(products: &[Arc<Product>], quarantined: &[Arc<Quarantine>]) -> String {
    use sha2::{Digest, Sha256};
    let mut served: Vec<&str> = products.iter().map(|p| p.digest()).collect();
    served.sort();
    let mut refused: Vec<String> = quarantined
        .iter()
        .map(|q| format!("{}.{}", q.domain, q.dataset))
        .collect();
    refused.sort();
    let mut h = Sha256::new();
    for s in served
        .into_iter()
        .chain(["\0quarantined"])
        .chain(refused.iter().map(String::as_str))
    {
        h.update(s.as_bytes());
        h.update([0xff]);
    }
    hex::encode(&h.finalize()[..6])
}

/// SQL names: `dataset_vN` for every version, `dataset` for the newest one. The newest
/// version wins the short name even when it is quarantined: silently serving an older
/// major under the same name would hand callers a schema they did not ask for.
fn names(
    tables: &[Arc<ContractTable>],
    quarantined: &[Arc<Quarantine>],
) -> BTreeMap<String, BTreeMap<String, Entry>> {
    let mut newest: HashMap<(String, String), u32> = HashMap::new();
    let entries: Vec<(String, String, u32, Entry)> = listed(tables, quarantined)
        .map(|e| {
            let (d, ds, v) = e.key();
            (d, ds, v, e)
        })
        .collect();
    for (d, ds, v, _) in &entries {
        let n = newest.entry((d.clone(), ds.clone())).or_insert(*v);
        *n = (*n).max(*v);
    }
    let mut out: BTreeMap<String, BTreeMap<String, Entry>> = BTreeMap::new();
    for (domain, dataset, v, entry) in entries {
        let schema = out.entry(domain.clone()).or_default();
        if v > 0 {
            schema
                .entry(format!("{dataset}_v{v}"))
                .or_insert_with(|| entry.clone());
        }
        if newest.get(&(domain, dataset.clone())) == Some(&v) {
            schema.entry(dataset).or_insert(entry);
        }
    }
    out
}

/// Served products, then quarantined contracts (without a version a contract still claims
/// its short name, so that the caller learns why).
fn listed<'a>(
    tables: &'a [Arc<ContractTable>],
    quarantined: &'a [Arc<Quarantine>],
) -> impl Iterator<Item = Entry> + 'a {
    let served = tables.iter().map(|t| Entry::Served(Arc::clone(t)));
    served.chain(
        quarantined
            .iter()
            .map(|q| Entry::Quarantined(Arc::clone(q))),
    )
}

/// Each contract file's (and the governance rules') [`Stamp`]: what a reloader compares
/// between two walks to find the files to pass to [`Mesh::reload_files`]. An unreadable
/// folder gives no files (every contract looks removed, which a reload then reports).
pub fn contract_stamps(config: &MeshConfig) -> HashMap<PathBuf, Stamp> {
    let mut files = contract_files(&config.contracts_dir()).unwrap_or_default();
    files.extend(config.governance_file());
    files
        .into_iter()
        .map(|f| {
            let s = stamp(&f);
            (f, s)
        })
        .collect()
}

/// The files added, removed or changed between two [`contract_stamps`].
pub fn changed_files(
    before: &HashMap<PathBuf, Stamp>,
    now: &HashMap<PathBuf, Stamp>,
) -> HashSet<PathBuf> {
    let moved = now.iter().filter(|(f, s)| before.get(*f) != Some(s));
    let removed = before.keys().filter(|f| !now.contains_key(*f));
    moved.map(|(f, _)| f).chain(removed).cloned().collect()
}

/// Every `*.yaml`/`*.yml` under `dir`, sorted, except the governance rules and alert rules.
pub fn contract_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, top: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // The entry's type as the folder listing gives it (no stat per file), links
            // followed as before.
            let kind = entry.file_type()?;
            let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
            if is_dir {
                if (!top || name != "alerts") && !name.starts_with('.') {
                    walk(&path, false, out)?;
                }
            } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
                && !(top && name.starts_with("governance."))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, true, &mut out)?;
    out.sort();
    Ok(out)
}

fn candidate(
    config: &MeshConfig,
    dir: &Path,
    file: &Path,
    governance: Option<&Governance>,
) -> std::result::Result<Candidate, Box<Quarantine>> {
    let folder = file.strip_prefix(dir).ok().and_then(|rel| {
        let mut parts = rel.components();
        let first = parts.next()?;
        parts.next()?; // a file directly under contracts/ has no folder domain
        first.as_os_str().to_str().map(str::to_string)
    });
    let contract = match load_governed_contract(file, governance, folder.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let hint = std::fs::read_to_string(file)
                .map(|t| peek_identity(&t))
                .unwrap_or_default();
            return Err(Box::new(Quarantine {
                domain: folder
                    .or(hint.domain.map(|d| d.to_string()))
                    .unwrap_or_else(|| "unknown".into()),
                dataset: hint
                    .dataset
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| stem(file)),
                version: hint.version.map(|v| v.0),
                owner: hint.owner,
                contract_file: file.to_path_buf(),
                reasons: e
                    .diagnostics()
                    .iter()
                    .map(|d| {
                        let shown = meshgate_contract::Diagnostic {
                            file: config.shown(&d.file.display().to_string()).into(),
                            ..d.clone()
                        };
                        format!("invalid contract: {shown}")
                    })
                    .collect(),
            }));
        }
    };
    let declared = contract.domain.as_ref().map(|d| d.as_str().to_string());
    let reject = |reason: String, domain: String| {
        Box::new(Quarantine {
            domain,
            dataset: contract.dataset.as_str().to_string(),
            version: Some(contract.version.0),
            owner: Some(contract.owner.as_str().to_string()),
            contract_file: file.to_path_buf(),
            reasons: vec![reason],
        })
    };
    let domain = match (folder, declared) {
        (Some(f), Some(d)) if f != d => {
            return Err(reject(
                format!("contract declares domain {d} but lives in the folder of domain {f}"),
                f,
            ));
        }
        (Some(f), _) => f,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(reject(
                "no domain: put the contract under contracts/<domain>/ or set domain:".into(),
                "unknown".into(),
            ));
        }
    };

    let dataset = contract.dataset.as_str();
    let version = contract.version.to_string();
    let declared_location = contract.location.as_deref();
    // docs/DESIGN.md §4.7: a contract may only expose data under its own domain's root, also after
    // following symbolic links (local) or `..` segments (URLs).
    let (location, is_default_location, root, inside) = match config.domain_root(&domain) {
        Location::Local(root) => {
            let root = normalize(&root);
            let default = root.join(dataset).join(&version);
            let (location, is_default) = match declared_location {
                None => (Location::Local(default), true),
                Some(l) if l.contains("://") && !l.starts_with("file://") => {
                    (Location::Url(l.into()), false)
                }
                Some(l) => {
                    // A file:// URL is read as one (percent-escapes and dot segments
                    // resolved), exactly as the reader will resolve it.
                    let path = if l.starts_with("file://") {
                        let Some(p) = url::Url::parse(l).ok().and_then(|u| u.to_file_path().ok())
                        else {
                            return Err(reject(
                                format!("location {l:?} is not a valid file:// URL"),
                                domain,
                            ));
                        };
                        p
                    } else {
                        PathBuf::from(l)
                    };
                    let p = normalize(&config.resolve(&path));
                    let is_default = p == default;
                    (Location::Local(p), is_default)
                }
            };
            let inside = match &location {
                Location::Local(p) => p.starts_with(&root) && real(p).starts_with(real(&root)),
                Location::Url(_) => false,
            };
            (location, is_default, root.display().to_string(), inside)
        }
        Location::Url(root) => {
            // Both sides in the one spelling the reader resolves them to: `%2e%2e`, `..`,
            // doubled slashes and escapes cannot make a location look inside its root.
            let root = match canonical_url(&root) {
                Ok(r) => r,
                Err(e) => {
                    return Err(reject(
                        format!("the data root of domain {domain}: {e}"),
                        domain,
                    ));
                }
            };
            let default = format!("{root}/{dataset}/{version}");
            let (location, is_default) = match declared_location {
                None => (Location::Url(default), true),
                Some(l) => match canonical_url(l) {
                    Ok(l) => {
                        let is_default = l == default;
                        (Location::Url(l), is_default)
                    }
                    Err(e) => return Err(reject(format!("location {l:?}: {e}"), domain)),
                },
            };
            let inside = match &location {
                Location::Url(u) => u.starts_with(&format!("{root}/")),
                Location::Local(_) => false,
            };
            (location, is_default, root, inside)
        }
    };
    if !inside {
        return Err(reject(
            format!(
                "location {} is outside the data root {} of domain {domain}",
                config.shown(&location.as_url()),
                config.shown(&format!("{}/", root.trim_end_matches('/'))),
            ),
            domain,
        ));
    }
    let policy = match governance {
        Some(g) => g.effective(&contract, &domain),
        None => EffectivePolicy::of_contract(&contract),
    };
    Ok(Candidate {
        contract,
        domain,
        policy,
        file: file.to_path_buf(),
        location,
        is_default_location,
    })
}

/// Two products may not claim the same or nested locations (versions of one product may).
/// The product whose location is its default one keeps its data; the others are refused.
///
/// Sorted, not pairwise: a mesh has thousands of products, and every pair of them would
/// cost seconds at startup and on every reload.
fn refuse_conflicts(
    config: &MeshConfig,
    candidates: &mut Vec<Arc<Candidate>>,
    quarantined: &mut Vec<Arc<Quarantine>>,
) {
    // Reasons per candidate, with the index of the other candidate, in the order of that
    // index (as a pairwise walk would find them).
    let mut reasons: Vec<Vec<(usize, String)>> = vec![Vec::new(); candidates.len()];

    // The same version of the same product defined twice: every later definition is refused.
    let mut defined: HashMap<(&str, &str, u32), Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        defined
            .entry((
                c.domain.as_str(),
                c.contract.dataset.as_str(),
                c.contract.version.0,
            ))
            .or_default()
            .push(i);
    }
    for same in defined.values() {
        for (n, &i) in same.iter().enumerate() {
            for &j in &same[..n] {
                let (a, b) = (&candidates[i], &candidates[j]);
                reasons[i].push((
                    j,
                    format!(
                        "{} v{} is also defined by {}",
                        a.contract.dataset,
                        a.contract.version.0,
                        config.shown(&b.file.display().to_string())
                    ),
                ));
            }
        }
    }

    // Overlapping locations. A location's key ends with a separator, so a key that is a
    // prefix of another names an enclosing folder (or the same one); in sorted order every
    // key follows the keys of the folders that enclose it, which a stack keeps.
    let mut keys: Vec<(String, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (location_key(&c.location), i))
        .collect();
    keys.sort();
    let mut enclosing: Vec<usize> = Vec::new();
    for (n, (key, j)) in keys.iter().enumerate() {
        while let Some(&top) = enclosing.last()
            && !key.starts_with(&keys[top].0)
        {
            enclosing.pop();
        }
        for &top in &enclosing {
            let i = keys[top].1;
            overlap(config, candidates, &mut reasons, i, *j);
            overlap(config, candidates, &mut reasons, *j, i);
        }
        enclosing.push(n);
    }

    let mut kept = Vec::new();
    for (c, mut r) in std::mem::take(candidates).into_iter().zip(reasons) {
        if r.is_empty() {
            kept.push(c);
        } else {
            r.sort_by_key(|(j, _)| *j);
            let reasons = r.into_iter().map(|(_, r)| r).collect();
            quarantined.push(Arc::new(quarantine_of(&c, reasons)));
        }
    }
    *candidates = kept;
}

/// A location as a string that another location's key starts with exactly when that
/// location is the same folder or inside it: local paths component by component,
/// canonical URLs (see `canonical_url`) as they are; the two kinds never overlap.
fn location_key(location: &Location) -> String {
    match location {
        Location::Local(p) => {
            let mut key = String::from("L");
            for c in p.components() {
                key.push_str(&c.as_os_str().to_string_lossy());
                key.push('/');
            }
            key
        }
        Location::Url(_) => {
            let mut key = String::from("U");
            key.push_str(&location.as_url());
            key
        }
    }
}

/// `i`'s location overlaps `j`'s: refused unless both are versions of one product, or `i`
/// is at its default location and `j` is not.
fn overlap(
    config: &MeshConfig,
    candidates: &[Arc<Candidate>],
    reasons: &mut [Vec<(usize, String)>],
    i: usize,
    j: usize,
) {
    let (a, b) = (&candidates[i], &candidates[j]);
    let same_product = a.domain == b.domain && a.contract.dataset == b.contract.dataset;
    if !same_product && (!a.is_default_location || b.is_default_location) {
        reasons[i].push((
            j,
            format!(
                "location {} overlaps the location of {}.{} ({})",
                config.shown(&a.location.as_url()),
                b.domain,
                b.contract.dataset,
                config.shown(&b.file.display().to_string())
            ),
        ));
    }
}

fn quarantine_of(c: &Candidate, reasons: Vec<String>) -> Quarantine {
    Quarantine {
        domain: c.domain.clone(),
        dataset: c.contract.dataset.as_str().to_string(),
        version: Some(c.contract.version.0),
        owner: Some(c.contract.owner.as_str().to_string()),
        contract_file: c.file.clone(),
        reasons,
    }
}

/// What a URL path segment may hold unescaped (RFC 3986 "unreserved").
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An object-store URL in the one spelling every check compares and the reader reads:
/// scheme and bucket in lower case, path segments percent-decoded and resolved as the URL
/// standard resolves them (`..`, `%2e%2e`), empty segments (`//`) dropped, no trailing
/// slash. Segments that decode to a separator or a dot segment, and credentials, queries
/// or fragments, are refused: no second spelling of a location is accepted.
pub(crate) fn canonical_url(location: &str) -> std::result::Result<String, String> {
    let url = url::Url::parse(location.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in a location".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a location has no query or fragment".into());
    }
    let bucket = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("no bucket: s3://bucket/prefix/")?
        .to_ascii_lowercase();
    let mut segments = Vec::new();
    for raw in url.path_segments().into_iter().flatten() {
        let segment = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| format!("segment {raw:?} is not UTF-8"))?;
        match segment.as_ref() {
            "" => continue,
            "." | ".." => return Err(format!("segment {raw:?} is a dot segment")),
            s if s.contains(['/', '\\']) => {
                return Err(format!("segment {raw:?} hides a path separator"));
            }
            s => segments.push(s.to_string()),
        }
    }
    let mut out = format!("{}://{bucket}", url.scheme());
    for s in &segments {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(s, UNRESERVED));
    }
    Ok(out)
}

/// `a/./b/../c` → `a/c`, without touching the file system.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The path with its existing prefix resolved through symbolic links.
fn real(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(rest.into_iter().rev());
    out
}

fn stem(file: &Path) -> String {
    file.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("unknown")
        .to_string()
}

/// The contract at `file` checked as `Mesh::load` would (format, governance, domain,
/// location inside the domain's root), with its domain and location. For publishing.
pub(crate) fn resolve(
    config: &MeshConfig,
    file: &Path,
) -> std::result::Result<(Contract, String, Location), String> {
    let governance = match config.governance_file() {
        Some(path) => Some(Governance::load(&path).map_err(|e| e.to_string())?),
        None => None,
    };
    let dir = config.contracts_dir();
    let file = std::path::absolute(file).map_err(|e| e.to_string())?;
    let dir = std::path::absolute(&dir).map_err(|e| e.to_string())?;
    let c = candidate(config, &dir, &file, governance.as_ref()).map_err(|q| q.to_string())?;
    Ok((c.contract, c.domain, c.location))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::ProductRef;
    use datafusion::catalog::CatalogProvider;

    #[test]
    fn every_spelling_of_a_location_has_one_canonical_form() {
        let c = |u: &str| canonical_url(u);
        let same = "s3://mesh/inventory/stock_levels/v1";
        for spelling in [
            "s3://mesh/inventory/stock_levels/v1",
            "s3://mesh/inventory/stock_levels/v1/",
            "s3://MESH/inventory/stock_levels/v1",
            "s3://mesh//inventory///stock_levels/v1//",
            "s3://mesh/inventory/%73tock_levels/v1",
            "s3://mesh/inventory/./stock_levels/v1",
            "s3://mesh/inventory/x/../stock_levels/v1",
            "s3://mesh/inventory/x/%2e%2e/stock_levels/v1",
            "s3://mesh/inventory/x/%2E%2e/stock_levels/v1",
        ] {
            assert_eq!(c(spelling).as_deref(), Ok(same), "{spelling}");
        }
        // Climbing out is resolved, so the domain-root check sees where it lands.
        assert_eq!(
            c("s3://mesh/inventory/%2e%2e/customers/customer_profiles/v1").unwrap(),
            "s3://mesh/customers/customer_profiles/v1"
        );
        // `%252e` is the two characters `%2e`, a name like any other.
        assert_eq!(
            c("s3://mesh/inventory/%252e%252e").unwrap(),
            "s3://mesh/inventory/%252e%252e"
        );
        for refused in [
            "s3://mesh/inventory/a%2Fb",
            "s3://key:secret@mesh/x",
            "s3://mesh/x?versionId=1",
            "s3:///x",
            "not a url",
        ] {
            assert!(c(refused).is_err(), "{refused} accepted");
        }
    }

    fn mesh_on_s3(
        dir: &Path,
        contracts: &[(&str, &str, &str)],
    ) -> Vec<std::result::Result<Candidate, Box<Quarantine>>> {
        let mut config = MeshConfig::at(dir);
        config.data = PathBuf::from("s3://mesh");
        let mut out = Vec::new();
        for (domain, dataset, location) in contracts {
            let folder = dir.join("contracts").join(domain);
            std::fs::create_dir_all(&folder).unwrap();
            let file = folder.join(format!("{dataset}.yaml"));
            std::fs::write(
                &file,
                format!(
                    "dataset: {dataset}\nversion: v1\nowner: team@company.com\n\
                     location: {location}\nschema:\n  - name: id\n    type: string\n\
                     access_policy:\n  - role: data_analyst\n    permission: read\n"
                ),
            )
            .unwrap();
            out.push(candidate(&config, &dir.join("contracts"), &file, None));
        }
        out
    }

    #[test]
    fn no_spelling_escapes_the_domain_root_or_hides_an_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let escapes = mesh_on_s3(
            dir.path(),
            &[
                (
                    "inventory",
                    "a",
                    "s3://mesh/inventory/%2e%2e/customers/customer_profiles/v1/",
                ),
                (
                    "inventory",
                    "b",
                    "s3://mesh/inventory/x/../../customers/customer_profiles/v1/",
                ),
                ("inventory", "c", "s3://mesh/inventoryX/stock/"),
                ("inventory", "d", "s3://other-bucket/inventory/stock/"),
            ],
        );
        for r in escapes {
            let q = r.expect_err("an escape was accepted");
            assert!(q.reasons[0].contains("outside the data root"), "{q}");
        }
        let config = {
            let mut c = MeshConfig::at(dir.path());
            c.data = PathBuf::from("s3://mesh");
            c
        };
        let mut candidates: Vec<Arc<Candidate>> = mesh_on_s3(
            dir.path(),
            &[
                ("inventory", "stock", "s3://mesh/inventory/stock/v1/"),
                ("inventory", "copy", "s3://mesh//inventory//stock/v1"),
                (
                    "inventory",
                    "nested",
                    "s3://mesh/inventory/stock/v1/%2e/old",
                ),
                ("inventory", "apart", "s3://mesh/inventory/stockpile/v1"),
            ],
        )
        .into_iter()
        .map(|r| Arc::new(r.unwrap_or_else(|q| panic!("{q}"))))
        .collect();
        let mut quarantined = Vec::new();
        refuse_conflicts(&config, &mut candidates, &mut quarantined);
        let refused: Vec<&str> = quarantined.iter().map(|q| q.dataset.as_str()).collect();
        assert!(
            refused.contains(&"copy") && refused.contains(&"nested"),
            "{refused:?}"
        );
        // A name that only shares a prefix is not nested.
        assert!(!refused.contains(&"apart"), "{refused:?}");
    }

    fn local_candidate(
        dir: &Path,
        file: &str,
        dataset: &str,
        location: Option<&str>,
    ) -> Arc<Candidate> {
        let config = MeshConfig::at(dir);
        let folder = dir.join("contracts/inventory");
        std::fs::create_dir_all(&folder).unwrap();
        let location = location
            .map(|l| {
                std::fs::create_dir_all(dir.join(l)).unwrap();
                format!("location: {}\n", dir.join(l).display())
            })
            .unwrap_or_default();
        let file = folder.join(file);
        std::fs::write(
            &file,
            format!(
                "dataset: {dataset}\nversion: v1\nowner: team@company.com\n{location}\
                 schema:\n  - name: id\n    type: string\n\
                 access_policy:\n  - role: data_analyst\n    permission: read\n"
            ),
        )
        .unwrap();
        let c = candidate(&config, &dir.join("contracts"), &file, None);
        Arc::new(c.unwrap_or_else(|q| panic!("{q}")))
    }

    #[test]
    fn nested_and_duplicate_local_products_are_refused_and_neighbours_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut candidates = vec![
            local_candidate(d, "stock.yaml", "stock", None),
            local_candidate(
                d,
                "inside.yaml",
                "inside",
                Some("sample-data/inventory/stock/v1/old"),
            ),
            local_candidate(d, "stock_again.yaml", "stock", None),
            local_candidate(d, "stockpile.yaml", "stockpile", None),
            local_candidate(d, "above.yaml", "above", Some("sample-data/inventory")),
        ];
        let mut quarantined = Vec::new();
        refuse_conflicts(&MeshConfig::at(d), &mut candidates, &mut quarantined);
        let kept: Vec<&str> = candidates
            .iter()
            .map(|c| c.contract.dataset.as_str())
            .collect();
        // The product at its default location keeps it; a neighbour sharing a name prefix
        // is not nested.
        assert_eq!(kept, ["stock", "stockpile"]);
        let reasons = |file: &str| {
            quarantined
                .iter()
                .find(|q| q.contract_file.ends_with(file))
                .map(|q| q.reasons.clone())
                .unwrap_or_default()
        };
        let again = reasons("stock_again.yaml");
        assert!(
            again[0].contains("stock v1 is also defined by"),
            "{again:?}"
        );
        assert!(reasons("inside.yaml")[0].contains("overlaps the location of inventory.stock"));
        // A folder above three products overlaps each of them, in their order.
        let above = reasons("above.yaml");
        assert_eq!(above.len(), 4, "{above:?}");
        assert!(above[0].contains("inventory.stock "), "{above:?}");
        assert!(above[3].contains("inventory.stockpile "), "{above:?}");
    }

    /// A contract `inventory/<dataset>.yaml` and one Parquet file at its default location.
    fn write_product(dir: &Path, dataset: &str, extra: &str) -> PathBuf {
        use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
        use datafusion::parquet::arrow::ArrowWriter;
        let data = dir.join(format!("sample-data/inventory/{dataset}/v1"));
        std::fs::create_dir_all(&data).unwrap();
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
        let out = std::fs::File::create(data.join("part-0.parquet")).unwrap();
        let mut w = ArrowWriter::try_new(out, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        write_contract(dir, dataset, extra)
    }

    fn write_contract(dir: &Path, dataset: &str, extra: &str) -> PathBuf {
        let folder = dir.join("contracts/inventory");
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join(format!("{dataset}.yaml"));
        std::fs::write(
            &file,
            format!(
                "dataset: {dataset}\nversion: v1\nowner: team@company.com\n{extra}\
                 schema:\n  - name: id\n    type: string\n    pii: false\n\
                 access_policy:\n  - role: data_analyst\n    permission: read\n"
            ),
        )
        .unwrap();
        file
    }

    /// The table serving `dataset` in `mesh`.
    fn table(mesh: &Mesh, dataset: &str) -> Arc<ContractTable> {
        let found = mesh
            .tables()
            .iter()
            .find(|t| t.product().dataset() == dataset);
        Arc::clone(found.unwrap_or_else(|| panic!("{dataset} is not served")))
    }

    fn same(a: &Mesh, b: &Mesh, dataset: &str) -> bool {
        Arc::ptr_eq(&table(a, dataset), &table(b, dataset))
    }

    #[tokio::test]
    async fn a_reload_reads_and_binds_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for dataset in ["a", "b", "c"] {
            write_product(d, dataset, "");
        }
        let m0 = Mesh::load(MeshConfig::at(d)).await.unwrap();
        assert_eq!(m0.tables().len(), 3, "{:?}", m0.quarantined());

        // Nothing changed: every table kept, the same epoch.
        let m1 = m0.reload().await.unwrap();
        assert!(["a", "b", "c"].iter().all(|ds| same(&m0, &m1, ds)));
        assert_eq!(m0.epoch(), m1.epoch());

        // One contract edited: only its product is bound again, and the epoch moves.
        write_contract(d, "b", "description: stock levels\n");
        let m2 = m1.reload().await.unwrap();
        assert!(same(&m1, &m2, "a") && same(&m1, &m2, "c"));
        assert!(!same(&m1, &m2, "b"));
        assert_eq!(
            table(&m2, "b").product().contract.description.as_deref(),
            Some("stock levels")
        );
        assert_ne!(m1.epoch(), m2.epoch());

        // A new contract inside a's location overlaps it: refused, a keeps its table.
        std::fs::create_dir_all(d.join("sample-data/inventory/a/v1/sub")).unwrap();
        let location = d.join("sample-data/inventory/a/v1/sub");
        write_contract(d, "inner", &format!("location: {}\n", location.display()));
        let m3 = m2.reload().await.unwrap();
        let inner = m3.quarantined().iter().find(|q| q.dataset == "inner");
        let reasons = &inner.expect("inner is quarantined").reasons;
        assert!(
            reasons.iter().any(|r| r.contains("overlaps")),
            "{reasons:?}"
        );
        assert!(same(&m2, &m3, "a") && same(&m2, &m3, "b"));

        // A location the reloader saw move (a publish) is bound again though its contract
        // did not change.
        let a = d.join("contracts/inventory/a.yaml");
        let m4 = m3.reload_with(&HashSet::from([a])).await.unwrap();
        assert!(!same(&m3, &m4, "a") && same(&m3, &m4, "b"));

        // An edit into an invalid contract keeps the last good table.
        std::fs::write(d.join("contracts/inventory/c.yaml"), "dataset: [c\n").unwrap();
        let m5 = m4.reload().await.unwrap();
        assert!(same(&m4, &m5, "c"));
        assert_eq!(m5.kept().len(), 1);
        let m6 = m5.reload().await.unwrap();
        assert!(same(&m5, &m6, "c"), "still kept on the next reload");

        // New governance rules: every contract is read and bound again.
        std::fs::write(d.join("contracts/governance.yaml"), "explicit_pii: true\n").unwrap();
        let m7 = m6.reload().await.unwrap();
        assert!(!same(&m6, &m7, "a") && !same(&m6, &m7, "b"));

        // A policy that denies what a's contract grants: a is refused at once, not kept
        // under the policy it was bound with; the others are bound under the new floor.
        std::fs::write(
            d.join("contracts/governance.yaml"),
            "policies:\n  - name: no-a\n    match: {domains: [inventory]}\n    deny: true\n    \
             roles: [data_analyst]\n",
        )
        .unwrap();
        let m8 = m7.reload().await.unwrap();
        assert!(m8.tables().is_empty(), "{:?}", m8.tables().len());
        assert!(m8.kept().is_empty());
        assert!(
            m8.quarantined()
                .iter()
                .any(|q| q.dataset == "a" && q.reasons.iter().any(|r| r.contains("no-a")))
        );
    }

    /// `reload_files` as the reloader calls it after its walk found `changed`.
    async fn reload_found(mesh: &Mesh, changed: &[&Path]) -> Mesh {
        let changed = changed.iter().map(|p| p.to_path_buf()).collect();
        mesh.reload_files(&changed, &HashSet::new()).await.unwrap()
    }

    /// What a fresh start on the same folder serves: names, what they resolve to, epoch.
    async fn agrees_with_a_fresh_load(mesh: &Mesh) {
        let fresh = Mesh::load(mesh.config().clone()).await.unwrap();
        assert_eq!(mesh.epoch(), fresh.epoch());
        let names = |m: &Mesh| {
            let catalog = m.catalog();
            let mut out = Vec::new();
            let domains: Vec<String> = CatalogProvider::schema_names(&*catalog);
            for domain in domains {
                let schema = CatalogProvider::schema(&*catalog, &domain).unwrap();
                for t in schema.table_names() {
                    let served = catalog.served(&domain, &t);
                    let digest = served.map(|t| t.product().digest().to_string());
                    out.push((domain.clone(), t, digest));
                }
            }
            out.sort();
            out
        };
        assert_eq!(names(mesh), names(&fresh));
        assert_eq!(mesh.quarantined().len(), fresh.quarantined().len());
    }

    #[tokio::test]
    async fn an_edit_found_by_the_reloader_binds_that_product_alone_and_no_less() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for dataset in ["a", "b", "c"] {
            write_product(d, dataset, "");
        }
        let m0 = Mesh::load(MeshConfig::at(d)).await.unwrap();

        // A description edited: b alone bound again, under both of its names, and the
        // snapshot is the one a fresh start would serve.
        let b = write_contract(d, "b", "description: stock levels\n");
        let m1 = reload_found(&m0, &[&b]).await;
        assert!(same(&m0, &m1, "a") && same(&m0, &m1, "c") && !same(&m0, &m1, "b"));
        let catalog = m1.catalog();
        for name in ["b", "b_v1"] {
            let served = catalog.served("inventory", name).unwrap();
            assert!(Arc::ptr_eq(&served, &table(&m1, "b")), "{name}");
        }
        assert_eq!(
            table(&m1, "b").product().contract.description.as_deref(),
            Some("stock levels")
        );
        assert_ne!(m0.epoch(), m1.epoch());
        agrees_with_a_fresh_load(&m1).await;

        // A new major version changes the names: the whole folder is read, b_v2 is served
        // under the short name and nothing else is touched.
        let data = d.join("sample-data/inventory/b");
        std::fs::create_dir_all(data.join("v2")).unwrap();
        std::fs::copy(
            data.join("v1/part-0.parquet"),
            data.join("v2/part-0.parquet"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&b)
            .unwrap()
            .replace("version: v1", "version: v2");
        std::fs::write(&b, text).unwrap();
        let m2 = reload_found(&m1, &[&b]).await;
        assert_eq!(table(&m2, "b").product().version(), 2);
        assert!(m2.catalog().served("inventory", "b_v2").is_some());
        assert!(same(&m1, &m2, "a"));
        agrees_with_a_fresh_load(&m2).await;

        // An edit into an invalid contract keeps the last good version, as a full reload.
        let c = d.join("contracts/inventory/c.yaml");
        std::fs::write(&c, "dataset: [c\n").unwrap();
        let m3 = reload_found(&m2, &[&c]).await;
        assert!(same(&m2, &m3, "c"));
        assert_eq!(m3.kept().len(), 1);

        // A removed contract: its product is no longer served.
        std::fs::remove_file(&c).unwrap();
        let m4 = reload_found(&m3, &[&c]).await;
        assert!(m4.catalog().served("inventory", "c").is_none());
        assert!(m4.kept().is_empty());
        agrees_with_a_fresh_load(&m4).await;

        // A product a derived product reads: a tag added to a's column must reach the
        // derived product's checks, so the lineage is computed again (not reused).
        let derived = d.join("contracts/inventory/from_a.yaml");
        std::fs::write(
            &derived,
            "dataset: from_a\nversion: v1\nowner: team@company.com\nsource:\n  sql: \
             SELECT id FROM inventory.a\n  refresh: 1 hour\nschema:\n  - name: id\n    \
             type: string\n    pii: false\naccess_policy:\n  - role: data_analyst\n    \
             permission: read\n",
        )
        .unwrap();
        let m5 = reload_found(&m4, &[&derived]).await;
        let from_a = ProductRef {
            domain: "inventory".into(),
            dataset: "from_a".into(),
            version: 1,
        };
        let problems = |m: &Mesh| m.lineage().upstream(&from_a).unwrap().problems.clone();
        assert!(problems(&m5).is_empty(), "{:?}", problems(&m5));
        let a = d.join("contracts/inventory/a.yaml");
        let text = std::fs::read_to_string(&a)
            .unwrap()
            .replace("    pii: false\n", "    pii: false\n    tags: [finance]\n");
        std::fs::write(&a, text).unwrap();
        let m6 = reload_found(&m5, &[&a]).await;
        assert!(
            problems(&m6).iter().any(|p| p.contains("tagged finance")),
            "{:?}",
            problems(&m6)
        );
        agrees_with_a_fresh_load(&m6).await;
    }

    #[tokio::test]
    async fn contracts_read_on_several_threads_are_decided_in_the_folders_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..80 {
            write_product(d, &format!("p{i:02}"), "");
        }
        // A second definition of p00, sorted last: the later file is the one refused.
        let first = std::fs::read_to_string(d.join("contracts/inventory/p00.yaml")).unwrap();
        std::fs::write(d.join("contracts/inventory/zz.yaml"), first).unwrap();
        let mesh = Mesh::load(MeshConfig::at(d)).await.unwrap();
        assert_eq!(mesh.tables().len(), 80);
        let refused: Vec<_> = mesh
            .quarantined()
            .iter()
            .map(|q| &q.contract_file)
            .collect();
        assert_eq!(refused, [&d.join("contracts/inventory/zz.yaml")]);
        let files: Vec<_> = mesh
            .tables()
            .iter()
            .map(|t| t.product().contract_file.clone())
            .collect();
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(files, sorted, "served in the folder's order");
    }
}
