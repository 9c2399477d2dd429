//! Self-serve publishing: data checked against its contract (schema, column checks,
//! governance) before it replaces a product's files, atomically.
//!
//! A product's location is a symbolic link to a hidden folder beside it
//! (`orders/v1 -> orders/.v1.<stamp>`). A publish writes and checks a staging folder, then
//! renames a new link over the old one: a reader lists either the old folder or the new
//! one, never a mix, and a crash at any point leaves the old data served. The first publish
//! over a plain folder swaps it for the link in one `renameat2(RENAME_EXCHANGE)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::logical_expr::{cast, col};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use meshgate_contract::{Contract, StorageFormat};
use tracing::info;

use crate::MeshConfig;
use crate::checks::{ProductReport, check_data};
use crate::config::Location;
use crate::mesh::resolve;

/// Where the new data comes from.
pub enum Source {
    /// A Parquet or CSV file (by extension), as table `input`.
    File(PathBuf),
    /// A query over the file, e.g. `SELECT … FROM input WHERE …`.
    Query { from: PathBuf, sql: String },
    /// Rows computed already (a derived product's refresh), with key-value metadata for
    /// the files' footers (the lineage they were computed with).
    Batches {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        metadata: BTreeMap<String, String>,
    },
}

#[derive(Debug)]
pub struct Published {
    pub product: String,
    /// Where the new data is served from: the version folder of a Parquet product, the
    /// table of a Delta one (a path, or a URL for S3).
    pub location: String,
    pub report: ProductReport,
    /// Input columns the contract does not declare: not published.
    pub dropped_columns: Vec<String>,
    /// A Delta table: the version this publish committed.
    pub delta_version: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish: {0}")]
    Contract(String),
    #[error("cannot read the input {path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("the input does not fit the contract: {0}")]
    Schema(String),
    #[error("the data breaks its contract, nothing was published:\n{0}")]
    Rejected(String),
    #[error("publishing failed, the old data is still served: {0}")]
    Io(#[from] std::io::Error),
    #[error("the Delta commit failed, the table's last version is still served: {0}")]
    Delta(String),
    #[error("publishing failed, the old data is still served: {0}")]
    DataFusion(#[from] DataFusionError),
}

/// The variable the command line reads a [`Failpoint`] from: `before-swap`.
pub const FAILPOINT_ENV: &str = "MESHGATE_FAILPOINT";

/// Where a publish stops on purpose, for tests of crash safety (given by the command
/// line, never read here from the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failpoint {
    #[default]
    None,
    /// Abort the process once the data is staged and checked, before it is swapped in.
    AbortBeforeSwap,
}

impl Failpoint {
    /// The failpoint a `MESHGATE_FAILPOINT` value names.
    pub fn parse(value: &str) -> Option<Failpoint> {
        (value == "before-swap").then_some(Failpoint::AbortBeforeSwap)
    }
}

pub async fn publish(
    config: &MeshConfig,
    contract_file: &Path,
    source: Source,
) -> Result<Published, PublishError> {
    publish_with(config, contract_file, source, Failpoint::None).await
}

/// [`publish`], stopping at `failpoint`.
pub async fn publish_with(
    config: &MeshConfig,
    contract_file: &Path,
    source: Source,
    failpoint: Failpoint,
) -> Result<Published, PublishError> {
    let (contract, domain, location) =
        resolve(config, contract_file).map_err(PublishError::Contract)?;
    let product = format!(
        "{domain}.{} {}",
        contract.dataset.as_str(),
        contract.version
    );
    if contract.source.is_some() && !matches!(source, Source::Batches { .. }) {
        return Err(PublishError::Contract(format!(
            "{product} is derived from other products by its source.sql: publish it with \
             `meshgate publish --derived`, which computes it as its domain's service principal"
        )));
    }
    let ctx = SessionContext::new();
    let mut footer = BTreeMap::new();
    let df = match source {
        Source::File(p) => {
            register_input(&ctx, &p).await?;
            ctx.table("input").await?
        }
        Source::Query { from, sql } => {
            register_input(&ctx, &from).await?;
            ctx.sql(&sql).await?
        }
        Source::Batches {
            schema,
            batches,
            metadata,
        } => {
            footer = metadata;
            ctx.read_table(Arc::new(MemTable::try_new(schema, vec![batches])?))?
        }
    };
    let input_df = df.clone();
    let (df, dropped_columns) = conform(df, &contract)?;
    if contract.format == StorageFormat::Delta {
        return publish_delta(
            config,
            Delta {
                df,
                input_df: &input_df,
                contract: &contract,
                domain: &domain,
                location: &location,
            },
            failpoint,
            dropped_columns,
        )
        .await;
    }
    let location = match location {
        Location::Local(p) => p,
        Location::Url(u) => {
            return Err(PublishError::Contract(format!(
                "{product} is a Parquet folder at {u}: an object store has no atomic rename, \
                 so meshgate cannot swap in a new version there without readers seeing part \
                 of it. Store the product as a Delta table (format: delta), whose commits \
                 are atomic, or write the folder with your own tools"
            )));
        }
    };

    let dataset_dir = location
        .parent()
        .ok_or_else(|| PublishError::Contract(format!("bad location {}", location.display())))?
        .to_path_buf();
    std::fs::create_dir_all(&dataset_dir)?;
    let version = contract.version.to_string();
    clean_stale_staging(&dataset_dir, &version);
    let staging = dataset_dir.join(format!(".{version}.staging-{}", uuid::Uuid::new_v4()));
    let result = stage_and_check(&ctx, df, &staging, &contract, &domain, footer).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(match e {
                PublishError::Schema(m) => {
                    PublishError::Schema(match uncastable_column(&input_df, &contract).await {
                        Some(where_) => format!("{where_}: {m}"),
                        None => m,
                    })
                }
                other => other,
            });
        }
    };
    if failpoint == Failpoint::AbortBeforeSwap {
        std::process::abort();
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let folder = dataset_dir.join(format!(".{version}.{stamp}"));
    std::fs::rename(&staging, &folder)?;
    let previous = swap(&location, &folder)?;
    remove_older_than(&dataset_dir, &version, &folder, previous.as_deref());
    info!(%product, folder = %folder.display(), rows = report.rows, "published");
    Ok(Published {
        product,
        location: folder.display().to_string(),
        report,
        dropped_columns,
        delta_version: None,
    })
}

/// What a Delta publish commits, and where.
struct Delta<'a> {
    df: datafusion::dataframe::DataFrame,
    input_df: &'a datafusion::dataframe::DataFrame,
    contract: &'a Contract,
    domain: &'a str,
    location: &'a Location,
}

/// A product stored as a Delta table: the rows are checked in memory, then committed as
/// one new version of the table (every earlier file removed, the new ones added); readers
/// see the old version or the new one, never part of it. Local folders and S3 alike, through
/// the mesh's own stores and settings.
async fn publish_delta(
    config: &MeshConfig,
    delta: Delta<'_>,
    failpoint: Failpoint,
    dropped_columns: Vec<String>,
) -> Result<Published, PublishError> {
    let Delta {
        df,
        input_df,
        contract,
        domain,
        location,
    } = delta;
    let product = format!(
        "{domain}.{} {}",
        contract.dataset.as_str(),
        contract.version
    );
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = match df.collect().await {
        Ok(b) => b,
        Err(e) => {
            return Err(PublishError::Schema(
                match uncastable_column(input_df, contract).await {
                    Some(where_) => format!("{where_}: {e}"),
                    None => e.to_string(),
                },
            ));
        }
    };
    let staged = Arc::new(MemTable::try_new(
        Arc::clone(&schema),
        vec![batches.clone()],
    )?);
    let report = check_data(
        SessionContext::new(),
        staged,
        contract,
        domain,
        crate::checks::Written::Committed(Some(SystemTime::now())),
        SystemTime::now(),
    )
    .await?;
    let report = verdict(report)?;
    if failpoint == Failpoint::AbortBeforeSwap {
        std::process::abort();
    }
    let table_url = match location {
        Location::Local(p) => {
            std::fs::create_dir_all(p)?;
            url::Url::from_directory_path(p)
                .map_err(|()| PublishError::Contract(format!("bad location {}", p.display())))?
        }
        Location::Url(_) => url::Url::parse(&location.as_url()).map_err(|e| {
            PublishError::Contract(format!("bad location {}: {e}", location.as_url()))
        })?,
    };
    let shown = match location {
        Location::Local(p) => p.display().to_string(),
        Location::Url(u) => u.clone(),
    };
    // Object store errors may echo an access key id.
    let failed = |e: &dyn std::fmt::Display| PublishError::Delta(config.s3.scrub(&e.to_string()));
    let root = crate::stores::MeshStores::new(config.s3.clone())
        .get_store(&table_url)
        .map_err(|e| failed(&e))?;
    let version = crate::delta::publish(root, &table_url, schema, batches)
        .await
        .map_err(|e| failed(&e))?;
    info!(%product, version, location = %shown, rows = report.rows, "published a Delta version");
    Ok(Published {
        product,
        location: shown,
        report,
        dropped_columns,
        delta_version: Some(version),
    })
}

async fn register_input(ctx: &SessionContext, path: &Path) -> Result<(), PublishError> {
    let bad = |message: String| PublishError::Input {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        return Err(bad("no such file".into()));
    }
    let name = path.to_string_lossy();
    let registered = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => {
            crate::conformance::check_local_footer(path).map_err(bad)?;
            ctx.register_parquet("input", name.as_ref(), ParquetReadOptions::default())
                .await
        }
        Some("csv") => {
            ctx.register_csv(
                "input",
                name.as_ref(),
                CsvReadOptions::new().has_header(true),
            )
            .await
        }
        _ => return Err(bad("expected a .parquet or .csv file".into())),
    };
    registered.map_err(|e| bad(e.to_string()))
}

/// The input as the contract's columns, in its order, cast to its types.
fn conform(
    df: datafusion::dataframe::DataFrame,
    contract: &Contract,
) -> Result<(datafusion::dataframe::DataFrame, Vec<String>), PublishError> {
    let fields = df.schema().fields().clone();
    let has = |n: &str| fields.iter().any(|f| f.name() == n);
    let missing: Vec<&str> = contract
        .schema
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !has(n))
        .collect();
    if !missing.is_empty() {
        return Err(PublishError::Schema(format!(
            "missing column(s) {}",
            missing.join(", ")
        )));
    }
    let dropped = fields
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| contract.column(n).is_none())
        .collect();
    let exprs = contract
        .schema
        .iter()
        .map(|c| {
            let name = c.name.as_str();
            let e = col(format!("\"{name}\""));
            match c.data_type.arrow_type() {
                Some(t) => cast(e, t).alias(name),
                None => e.alias(name),
            }
        })
        .collect::<Vec<_>>();
    Ok((df.select(exprs)?, dropped))
}

/// After a failed cast, finds the column (and a row count) that does not fit its type, so
/// that the error says where and not only what.
async fn uncastable_column(
    input: &datafusion::dataframe::DataFrame,
    contract: &Contract,
) -> Option<String> {
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{lit, try_cast};
    for c in &contract.schema {
        let Some(t) = c.data_type.arrow_type() else {
            continue;
        };
        let e = col(format!("\"{}\"", c.name.as_str()));
        let bad = input
            .clone()
            .filter(
                e.clone()
                    .is_not_null()
                    .and(try_cast(e, t.clone()).is_null()),
            )
            .and_then(|df| df.aggregate(vec![], vec![count(lit(1)).alias("n")]));
        let Ok(bad) = bad else { continue };
        let Ok(batches) = bad.collect().await else {
            continue;
        };
        let n = batches
            .first()
            .and_then(|b| {
                datafusion::arrow::array::AsArray::as_primitive_opt::<
                    datafusion::arrow::datatypes::Int64Type,
                >(b.column(0))
                .map(|a| a.value(0))
            })
            .unwrap_or(0);
        if n > 0 {
            return Some(format!(
                "column {} ({}): {n} value(s) are not {}",
                c.name.as_str(),
                c.data_type,
                c.data_type
            ));
        }
    }
    None
}

async fn stage_and_check(
    ctx: &SessionContext,
    df: datafusion::dataframe::DataFrame,
    staging: &Path,
    contract: &Contract,
    domain: &str,
    footer: BTreeMap<String, String>,
) -> Result<ProductReport, PublishError> {
    std::fs::create_dir_all(staging)?;
    let url = format!("{}/", staging.display());
    let options = TableParquetOptions {
        key_value_metadata: footer.into_iter().map(|(k, v)| (k, Some(v))).collect(),
        ..Default::default()
    };
    df.write_parquet(&url, DataFrameWriteOptions::new(), Some(options))
        .await
        .map_err(|e| PublishError::Schema(e.to_string()))?;
    let table_url = ListingTableUrl::parse(&url)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()));
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    let table = Arc::new(ListingTable::try_new(config)?);
    let report = check_data(
        SessionContext::new(),
        table,
        contract,
        domain,
        crate::checks::Written::Files(staging),
        SystemTime::now(),
    )
    .await?;
    verdict(report)
}

/// The report of checks on data about to be published, or why it may not be.
fn verdict(report: ProductReport) -> Result<ProductReport, PublishError> {
    let mut problems = Vec::new();
    // Without an SLA, every row must pass every check.
    let required = report.quality_sla.unwrap_or(1.0);
    if report.quality < required {
        problems.push(format!(
            "  quality {:.3}% is below {:.3}%",
            report.quality * 100.0,
            required * 100.0
        ));
        for c in report.checks.iter().filter(|c| c.failing_rows > 0) {
            problems.push(format!(
                "  {} {}: {} failing rows",
                c.column, c.check, c.failing_rows
            ));
        }
    }
    for f in &report.pii_findings {
        problems.push(format!(
            "  governance: {} is not PII but {} rows look like {}",
            f.column, f.rows, f.looks_like
        ));
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(PublishError::Rejected(problems.join("\n")))
    }
}

/// What the last refresh of a derived product did, kept beside its data (hidden, like
/// its folders) so that every replica's SLA evaluation sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefreshStatus {
    /// When the attempt started (RFC 3339).
    pub attempted_at: String,
    /// When the data now served was computed; `None` if no refresh ever succeeded.
    pub succeeded_at: Option<String>,
    /// Why the last attempt failed; `None` when it published.
    pub error: Option<String>,
    pub rows: Option<u64>,
    pub duration_ms: u64,
    /// The contract's data digest the served data was computed under
    /// (`lineage::data_digest`).
    #[serde(default)]
    pub digest: Option<String>,
    /// The folder the served data was published to: data swapped in by any other means
    /// does not match it.
    #[serde(default)]
    pub folder: Option<String>,
}

impl RefreshStatus {
    /// Whether the data now at `location` is what the refresher computed under a contract
    /// whose data digest is `digest`.
    pub fn vouches_for(location: &Path, digest: &str) -> bool {
        let Some(status) = RefreshStatus::read(location) else {
            return false;
        };
        let linked = std::fs::read_link(
            location
                .to_str()
                .map_or(location, |l| Path::new(l.trim_end_matches('/'))),
        )
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()));
        status.digest.as_deref() == Some(digest)
            && status.folder.is_some()
            && status.folder == linked
    }
}

impl RefreshStatus {
    /// The status file of the product at `location` (`<dataset>/.<version>.refresh.json`).
    pub fn file(location: &Path) -> Option<PathBuf> {
        let location = Path::new(location.to_str()?.trim_end_matches('/'));
        let version = location.file_name()?.to_str()?;
        Some(location.parent()?.join(format!(".{version}.refresh.json")))
    }

    /// The status of the product at `location`; `None` when it was never refreshed.
    pub fn read(location: &Path) -> Option<RefreshStatus> {
        let text = std::fs::read(RefreshStatus::file(location)?).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the status beside the data, atomically (a reader sees the old or the new).
    pub fn write(&self, location: &Path) -> std::io::Result<()> {
        let file = RefreshStatus::file(location)
            .ok_or_else(|| std::io::Error::other("a location without a parent"))?;
        std::fs::create_dir_all(file.parent().expect("a parent"))?;
        let tmp = file.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, file)
    }
}

/// Held while one process refreshes a product: a second refresher on the same files
/// (another replica, or a second `meshgate refresh`) skips it instead of racing.
pub struct RefreshLock(#[allow(dead_code)] std::fs::File);

impl RefreshLock {
    /// `None` when another process holds the lock.
    pub fn try_acquire(location: &Path) -> std::io::Result<Option<RefreshLock>> {
        let status = RefreshStatus::file(location)
            .ok_or_else(|| std::io::Error::other("a location without a parent"))?;
        std::fs::create_dir_all(status.parent().expect("a parent"))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(status.with_extension("lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RefreshLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Where the data of the product in `contract_file` is published (a local folder).
pub fn local_location(config: &MeshConfig, contract_file: &Path) -> Result<PathBuf, PublishError> {
    match resolve(config, contract_file).map_err(PublishError::Contract)? {
        (_, _, Location::Local(p)) => Ok(p),
        (_, _, Location::Url(u)) => {
            Err(PublishError::Contract(format!("{u} is not a local folder")))
        }
    }
}

/// Points `location` at `folder` atomically; returns the folder it pointed at before.
fn swap(location: &Path, folder: &Path) -> std::io::Result<Option<PathBuf>> {
    let dataset_dir = folder.parent().expect("folder has a parent");
    let target = folder.file_name().expect("folder has a name");
    let link = dataset_dir.join(format!(".link-{}", uuid::Uuid::new_v4()));
    std::os::unix::fs::symlink(target, &link)?;
    match std::fs::symlink_metadata(location) {
        Ok(m) if m.is_dir() => {
            // A plain folder (the first publish): exchange it with the link in one step,
            // then keep it under a hidden name like any previous version.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &link,
                rustix::fs::CWD,
                location,
                rustix::fs::RenameFlags::EXCHANGE,
            )?;
            let name = location
                .file_name()
                .expect("location has a name")
                .to_string_lossy();
            let kept = dataset_dir.join(format!(".{name}.original"));
            std::fs::rename(&link, &kept)?;
            Ok(Some(kept))
        }
        Ok(_) => {
            let previous = std::fs::read_link(location)
                .ok()
                .map(|p| dataset_dir.join(p));
            std::fs::rename(&link, location)?;
            Ok(previous)
        }
        Err(_) => {
            std::fs::rename(&link, location)?;
            Ok(None)
        }
    }
}

/// Keeps the new folder and the one before it (queries that listed it may still read it);
/// removes older versions' folders.
fn remove_older_than(dir: &Path, version: &str, current: &Path, previous: Option<&Path>) {
    let prefix = format!(".{version}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let keep = p == current || Some(p.as_path()) == previous || name.contains(".staging-");
        if name.starts_with(&prefix) && !keep && p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Staging folders of publishes that died more than an hour ago.
fn clean_stale_staging(dir: &Path, version: &str) {
    let prefix = format!(".{version}.staging-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if e.file_name().to_string_lossy().starts_with(&prefix) && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
