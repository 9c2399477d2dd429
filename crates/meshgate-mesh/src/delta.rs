//! Products stored as Delta Lake tables (`format: delta`).
//!
//! A Delta table's folder also holds files its log has removed (overwritten, deleted,
//! compacted away), so the folder is never listed: the log's current snapshot names the
//! files, and they are read by the same Parquet scan, inside the same
//! [`crate::ProductScanExec`], as a folder's files are. The policy, the verifier and the
//! cluster codec therefore see nothing new.
//!
//! What the log adds is checked like a footer is: the table's schema against the contract,
//! the reader features it needs against what this reader does, and each file's path
//! against the table's location (a log may name any URL). A snapshot that breaks the
//! contract quarantines the product at load, and fails the query if a writer commits one
//! while it is served.
//!
//! Statistics from the log (row counts, and min/max/null counts of numbers and dates) are
//! given to the scan as a footer's would be: they prune files and plan joins, and the
//! product scan withholds them from callers who read a column masked or the rows filtered.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::scalar::ScalarValue;
use datafusion_datasource::compute_all_files_statistics;
use deltalake_core::DeltaTable;
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use meshgate_contract::{Contract, DeltaPin};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Reader features whose tables this reader reads correctly: they change how the log is
/// kept, which the Delta kernel handles, or add a type it reads (`timestampNtz`).
/// Anything else (deletion vectors, column mapping, type widening…) changes how data files
/// must be read, and such a table is quarantined rather than served wrong.
const SUPPORTED_READER_FEATURES: [&str; 4] = [
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "checkpointProtection",
];

/// Replaces the server's paths (and any credential) in a message by what callers see.
pub(crate) type Redact = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A bound Delta table: its log, and the snapshot queries read now.
pub(crate) struct DeltaFiles {
    redact: Redact,
    log: tokio::sync::Mutex<Log>,
    current: RwLock<Arc<Snapshot>>,
    /// Why the latest version is not served, while it breaks the contract.
    broken: RwLock<Option<String>>,
    pin: Option<DeltaPin>,
    /// The product's columns as the contract declares them, to check new snapshots.
    contract: Contract,
    url: ListingTableUrl,
    /// The product's schema (contract order) and how it maps onto the scan's.
    layout: Layout,
}

/// The table's log as last read, and what that reading found.
struct Log {
    table: DeltaTable,
    /// When the last look for new commits that found a snapshot to serve started. Scans
    /// that asked while it ran serve that snapshot instead of listing the log again one
    /// after the other. (A look that failed is not shared: each query sees its own.)
    last: Option<(Instant, Arc<Snapshot>)>,
}

/// One version of the table as the scan reads it.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    /// When that version was committed.
    pub committed_at: Option<SystemTime>,
    files: Vec<PartitionedFile>,
}

/// Partition columns are not in the data files; the scan appends them after the files'
/// columns. The product's columns stay in contract order through the scan's projection.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    file_schema: SchemaRef,
    partition_cols: Vec<FieldRef>,
    /// For each product column, its index in file columns ++ partition columns.
    scan_index: Vec<usize>,
}

/// Opens the table's log at `location` (the pinned version if any) and checks it against
/// the contract. `Err` lists every problem, with the location as callers see it.
pub(crate) async fn bind(
    store: Arc<dyn ObjectStore>,
    contract: &Contract,
    schema: &(dyn Fn(&[Option<DataType>]) -> SchemaRef + Sync),
    location: &str,
    shown: &str,
    redact: Redact,
) -> std::result::Result<(DeltaFiles, SchemaRef), Vec<String>> {
    let url = ListingTableUrl::parse(location).map_err(|e| vec![e.to_string()])?;
    let failed = |e: &dyn std::fmt::Display| {
        vec![format!("Delta table {shown}: {}", redact(&e.to_string()))]
    };
    let table_url = url::Url::parse(url.as_str()).map_err(|e| failed(&e))?;
    let mut table = DeltaTable::new(log_store(store, &table_url).map_err(|e| failed(&e))?);
    let pin = contract.delta.clone();
    if let Some(DeltaPin::Timestamp(t)) = &pin
        && *t > chrono::Utc::now()
    {
        // It would resolve to whatever is latest when each replica loads: the same
        // contract serving different data.
        return Err(vec![format!(
            "Delta table {shown} is pinned {}, which is in the future; pin a past time or a \
             version, or leave the pin out to follow the latest commit",
            pin.as_ref().map(ToString::to_string).unwrap_or_default()
        )]);
    }
    let loaded = match &pin {
        None => table.load().await,
        Some(DeltaPin::Version(v)) => table.load_version(*v).await,
        Some(DeltaPin::Timestamp(t)) => table.load_with_datetime(*t).await,
    };
    if let Err(e) = loaded {
        return Err(vec![describe_load_error(&e, shown, &pin, redact.as_ref())]);
    }
    let (partitions, seen) = check_table(&table, contract, shown)?;
    let product_schema = schema(&seen);
    let layout = layout_of(&product_schema, &partitions);
    let mut snapshot = snapshot_of(&table, &url, &layout, shown)?;
    snapshot.committed_at = committed_at(&table, snapshot.version).await;
    Ok((
        DeltaFiles {
            redact,
            log: tokio::sync::Mutex::new(Log { table, last: None }),
            current: RwLock::new(Arc::new(snapshot)),
            broken: RwLock::default(),
            pin,
            contract: contract.clone(),
            url,
            layout,
        },
        product_schema,
    ))
}

/// The table's log over meshgate's own store for its bucket (or the local file system), so
/// the log is read and written with the mesh's S3 settings and credentials.
fn log_store(
    root: Arc<dyn ObjectStore>,
    table_url: &url::Url,
) -> std::result::Result<LogStoreRef, deltalake_core::DeltaTableError> {
    let config = StorageConfig::default();
    let prefixed = config.decorate_store(Arc::clone(&root), table_url)?;
    Ok(default_logstore(
        Arc::from(prefixed),
        root,
        table_url,
        &config,
    ))
}

fn describe_load_error(
    e: &deltalake_core::DeltaTableError,
    shown: &str,
    pin: &Option<DeltaPin>,
    redact: &(dyn Fn(&str) -> String + Send + Sync),
) -> String {
    use deltalake_core::DeltaTableError as E;
    match e {
        E::NotATable(_) => format!(
            "{shown} is not a Delta table (no _delta_log with a commit); \
             write it with a Delta writer, or leave format: delta out for a Parquet folder"
        ),
        _ => match pin {
            Some(pin) => format!(
                "the Delta log of {shown} cannot be read at {pin}: {}",
                redact(&e.to_string())
            ),
            None => format!(
                "the Delta log of {shown} cannot be read: {}",
                redact(&e.to_string())
            ),
        },
    }
}

/// The partition columns of a table that conforms, and the table's type of each contract
/// column (`None` where it lacks one).
type Checked = (Vec<String>, Vec<Option<DataType>>);

/// The protocol and the schema of the loaded snapshot against the contract. Returns which
/// columns are partition columns, and the table's type of each contract column (for a
/// bare `decimal`).
fn check_table(
    table: &DeltaTable,
    contract: &Contract,
    shown: &str,
) -> std::result::Result<Checked, Vec<String>> {
    let state = table
        .snapshot()
        .map_err(|e| vec![format!("Delta table {shown}: {e}")])?;
    let version = state.version();
    let mut problems = Vec::new();
    let protocol = state.protocol();
    let reader_version = protocol.min_reader_version();
    if reader_version > 3 {
        problems.push(format!(
            "Delta table {shown} (version {version}) needs reader version {reader_version}; \
             meshgate reads up to 3"
        ));
    }
    if reader_version == 2 {
        // Reader version 2 is column mapping, without a feature list.
        let mode = state
            .metadata()
            .configuration()
            .get("delta.columnMapping.mode")
            .cloned()
            .unwrap_or_else(|| "none".into());
        if mode != "none" {
            problems.push(format!(
                "Delta table {shown} (version {version}) uses column mapping (mode {mode}), \
                 which meshgate does not read yet"
            ));
        }
    }
    for feature in protocol.reader_features().unwrap_or_default() {
        let name = feature.to_string();
        if !SUPPORTED_READER_FEATURES.contains(&name.as_str()) {
            problems.push(format!(
                "Delta table {shown} (version {version}) needs the reader feature {name}, \
                 which meshgate does not support; it is quarantined rather than read wrong"
            ));
        }
    }
    let table_schema = state.snapshot().arrow_schema();
    let partition_cols = state.metadata().partition_columns();
    let mut seen = Vec::with_capacity(contract.schema.len());
    for col in &contract.schema {
        let Ok(field) = table_schema.field_with_name(col.name.as_str()) else {
            problems.push(format!(
                "Delta table {shown} (version {version}): column {} ({}) is missing",
                col.name, col.data_type
            ));
            seen.push(None);
            continue;
        };
        let ty = field.data_type();
        if !col.data_type.accepts(ty) {
            problems.push(format!(
                "Delta table {shown} (version {version}): column {} is {ty} in the table \
                 but {} in the contract",
                col.name, col.data_type
            ));
        }
        seen.push(Some(ty.clone()));
    }
    for p in partition_cols {
        // Partition values are written in the files' paths, which EXPLAIN shows callers
        // who read the column masked.
        if let Some(col) = contract.column(p)
            && (col.is_pii() || !col.tags.is_empty())
        {
            problems.push(format!(
                "Delta table {shown} (version {version}) is partitioned by {p}, which the \
                 contract marks PII or tags: its values are in every file's path; partition \
                 by a column that is not"
            ));
        }
    }
    if let Some(missing) = partition_cols.iter().find(|p| contract.column(p).is_none()) {
        // Its values are not in the files; a contract that leaves it out would serve rows
        // of every partition as if they were one.
        problems.push(format!(
            "Delta table {shown} (version {version}) is partitioned by {missing}, which the \
             contract does not declare"
        ));
    }
    if problems.is_empty() {
        Ok((partition_cols.to_vec(), seen))
    } else {
        Err(problems)
    }
}

fn layout_of(product: &SchemaRef, partition_cols: &[String]) -> Layout {
    let is_partition = |f: &Field| partition_cols.iter().any(|p| p == f.name());
    let file_fields: Vec<FieldRef> = product
        .fields()
        .iter()
        .filter(|f| !is_partition(f))
        .cloned()
        .collect();
    // In the log's order, as partition values are listed.
    let partition: Vec<FieldRef> = partition_cols
        .iter()
        .filter_map(|p| product.field_with_name(p).ok())
        .map(|f| Arc::new(f.clone()))
        .collect();
    let scan_index = product
        .fields()
        .iter()
        .map(|f| {
            if is_partition(f) {
                file_fields.len()
                    + partition
                        .iter()
                        .position(|p| p.name() == f.name())
                        .unwrap_or(0)
            } else {
                file_fields
                    .iter()
                    .position(|g| g.name() == f.name())
                    .unwrap_or(0)
            }
        })
        .collect();
    Layout {
        file_schema: Arc::new(Schema::new(file_fields)),
        partition_cols: partition,
        scan_index,
    }
}

/// The active files of the loaded version, checked to lie inside the table.
fn snapshot_of(
    table: &DeltaTable,
    url: &ListingTableUrl,
    layout: &Layout,
    shown: &str,
) -> std::result::Result<Snapshot, Vec<String>> {
    let state = table
        .snapshot()
        .map_err(|e| vec![format!("Delta table {shown}: {e}")])?;
    let version = state.version();
    let root = url.prefix().as_ref().trim_end_matches('/').to_string();
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for file in state.log_data().iter() {
        let path = file.path().into_owned();
        if !inside_table(&path) {
            problems.push(format!(
                "Delta table {shown} (version {version}) names a data file outside the table \
                 ({path}); only files under the product's location are served"
            ));
            continue;
        }
        if file.deletion_vector_descriptor().is_some() {
            problems.push(format!(
                "Delta table {shown} (version {version}): {path} has a deletion vector, which \
                 meshgate does not read yet"
            ));
            continue;
        }
        let mut values = Vec::with_capacity(layout.partition_cols.len());
        let raw = file.partition_values_map();
        for field in &layout.partition_cols {
            match partition_value(raw.get(field.name()).cloned().flatten(), field.data_type()) {
                Ok(v) => values.push(v),
                Err(e) => problems.push(format!(
                    "Delta table {shown} (version {version}): {path} has partition value \
                     {} = {e}",
                    field.name()
                )),
            }
        }
        let size = u64::try_from(file.size()).unwrap_or(0);
        let full = if root.is_empty() {
            path.clone()
        } else {
            format!("{root}/{path}")
        };
        let mut pf = PartitionedFile::new(Path::from(full.as_str()).to_string(), size);
        pf.object_meta.location = Path::from(full.as_str());
        if let Some(t) = chrono::DateTime::from_timestamp_millis(file.modification_time()) {
            pf.object_meta.last_modified = t;
        }
        pf.partition_values = values;
        let stats = file_statistics(file.stats().as_deref(), &layout.file_schema, size);
        let mut pf = pf.with_statistics(Arc::new(stats));
        // `with_statistics` says a partition value is never null, with one distinct value:
        // for a null one, every row is null and nothing else is known.
        let nulls: Vec<usize> = pf
            .partition_values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_null())
            .map(|(i, _)| layout.file_schema.fields().len() + i)
            .collect();
        if let Some(stats) = pf.statistics.as_mut().filter(|_| !nulls.is_empty()) {
            let stats = Arc::make_mut(stats);
            let rows = stats.num_rows;
            for i in nulls {
                stats.column_statistics[i] = ColumnStatistics {
                    null_count: rows,
                    ..ColumnStatistics::new_unknown()
                };
            }
        }
        files.push(pf);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Snapshot {
        version,
        committed_at: None,
        files,
    })
}

/// When `version` was committed: its commit file's time, which the log keeps also for a
/// version a checkpoint summarises.
async fn committed_at(table: &DeltaTable, version: u64) -> Option<SystemTime> {
    let commit = deltalake_core::logstore::commit_uri_from_version(Some(version));
    let meta = table.object_store().head(&commit).await.ok()?;
    let ms = u64::try_from(meta.last_modified.timestamp_millis()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// A path the log names relative to the table root, without a scheme and without `..`:
/// anything else could read another domain's data under this product's policy.
fn inside_table(path: &str) -> bool {
    !path.is_empty()
        && !path.contains("://")
        && !path.starts_with('/')
        && !path.split('/').any(|s| s == ".." || s == ".")
}

fn partition_value(raw: Option<String>, ty: &DataType) -> Result<ScalarValue, String> {
    match raw {
        None => ScalarValue::try_from(ty).map_err(|e| e.to_string()),
        Some(text) => ScalarValue::try_from_string(text.clone(), ty)
            .map_err(|_| format!("{text:?}, which is not a {ty}")),
    }
}

/// Statistics of one file from its `add` action, as a footer would give them: the row
/// count exactly, null counts exactly, and min/max (as bounds) only for integers and dates,
/// whose JSON form is exact. A writer truncates strings and timestamps, and a decimal
/// read through JSON numbers may round inward, so those stay unknown rather than wrong.
fn file_statistics(stats: Option<&str>, file_schema: &SchemaRef, size: u64) -> Statistics {
    let mut out = Statistics::new_unknown(file_schema);
    out.total_byte_size = Precision::Inexact(size as usize);
    let Some(json) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return out;
    };
    if let Some(n) = json.get("numRecords").and_then(|v| v.as_u64()) {
        out.num_rows = Precision::Exact(n as usize);
    }
    for (field, col) in file_schema.fields().iter().zip(&mut out.column_statistics) {
        let name = field.name().as_str();
        if let Some(n) = json
            .get("nullCount")
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_u64())
        {
            col.null_count = Precision::Exact(n as usize);
        }
        if !exact_in_stats(field.data_type()) {
            continue;
        }
        let bound = |key: &str| -> Precision<ScalarValue> {
            let Some(v) = json.get(key).and_then(|m| m.get(name)) else {
                return Precision::Absent;
            };
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return Precision::Absent,
            };
            ScalarValue::try_from_string(text, field.data_type())
                .map_or(Precision::Absent, Precision::Inexact)
        };
        *col = ColumnStatistics {
            min_value: bound("minValues"),
            max_value: bound("maxValues"),
            ..col.clone()
        };
    }
    out
}

fn exact_in_stats(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Date32
    )
}

impl DeltaFiles {
    pub(crate) fn url(&self) -> &ListingTableUrl {
        &self.url
    }

    /// The snapshot being served, without looking for a newer one.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().expect("not poisoned"))
    }

    /// Why the latest version found is not served (it breaks the contract), until a
    /// newer one that does not is found.
    pub(crate) fn broken(&self) -> Option<String> {
        self.broken.read().expect("not poisoned").clone()
    }

    /// The latest snapshot: an unpinned product reads what the last commit made, as any
    /// Delta reader does. A new version is checked against the contract before it is
    /// read; one that breaks it fails the query with the reason.
    pub(crate) async fn latest(&self, name: &str) -> Result<Arc<Snapshot>> {
        if self.pin.is_some() {
            return Ok(self.snapshot());
        }
        let asked = Instant::now();
        let mut log = self.log.lock().await;
        // A look at the log that started after this scan asked is as fresh as its own.
        if let Some((started, snapshot)) = &log.last
            && *started >= asked
        {
            return Ok(Arc::clone(snapshot));
        }
        let started = Instant::now();
        let answer = self.look(&mut log.table, name).await;
        log.last = answer.as_ref().ok().map(|s| (started, Arc::clone(s)));
        answer
    }

    /// Lists the log for commits after the snapshot served, and checks a new one.
    async fn look(&self, table: &mut DeltaTable, name: &str) -> Result<Arc<Snapshot>> {
        let latest = table
            .get_latest_version()
            .await
            .map_err(|e| self.delta_error(name, &e))?;
        let served = self.snapshot();
        if latest == served.version {
            return Ok(served);
        }
        // The log may already be at `latest` from a query that found it breaks the
        // contract: it is checked again, and the older snapshot is never served instead.
        if table.version() != Some(latest) {
            table
                .update_incremental(None)
                .await
                .map_err(|e| self.delta_error(name, &e))?;
        }
        let bound = self.layout.product_schema();
        let checked = check_table(table, &self.contract, name).and_then(|(partitions, seen)| {
            // A bare `decimal` is served in the precision it was bound with.
            for ((col, seen), field) in self.contract.schema.iter().zip(&seen).zip(bound.fields()) {
                if col.data_type == meshgate_contract::ColumnType::Decimal
                    && seen.as_ref() != Some(field.data_type())
                {
                    return Err(vec![format!(
                        "column {} is {} in the new version but was bound as {}; pin \
                         decimal(p,s) in the contract",
                        col.name,
                        seen.as_ref().map(ToString::to_string).unwrap_or_default(),
                        field.data_type()
                    )]);
                }
            }
            let layout = layout_of(&self.layout.product_schema(), &partitions);
            if layout != self.layout {
                return Err(vec![format!(
                    "Delta table of {name} changed its partition columns"
                )]);
            }
            snapshot_of(table, &self.url, &self.layout, name)
        });
        let checked = match checked {
            Ok(mut snapshot) => {
                snapshot.committed_at = committed_at(table, snapshot.version).await;
                let snapshot = Arc::new(snapshot);
                *self.current.write().expect("not poisoned") = Arc::clone(&snapshot);
                Ok(snapshot)
            }
            Err(problems) => Err(format!(
                "its latest Delta version ({latest}) breaks the contract: {}",
                (self.redact)(&problems.join("; "))
            )),
        };
        *self.broken.write().expect("not poisoned") = checked.as_ref().err().cloned();
        checked.map_err(|reason| DataFusionError::Plan(format!("{name} is not served: {reason}")))
    }

    /// The Parquet scan of one snapshot's files, with the product's columns in contract
    /// order whatever the files' and partitions' order.
    pub(crate) async fn scan(
        &self,
        state: &dyn Session,
        snapshot: &Snapshot,
        projection: Option<&[usize]>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let layout = &self.layout;
        let indices: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| layout.scan_index[i]).collect(),
            None => layout.scan_index.clone(),
        };
        if snapshot.files.is_empty() {
            let schema = layout
                .product_schema()
                .project(projection.unwrap_or(&(0..layout.scan_index.len()).collect::<Vec<_>>()))?;
            return Ok(Arc::new(EmptyExec::new(Arc::new(schema))));
        }
        let table_schema = TableSchemaBuilder::from(&layout.file_schema)
            .with_table_partition_cols(layout.partition_cols.clone())
            .build();
        let format = ParquetFormat::default();
        let mut all: Vec<Field> = layout
            .file_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        all.extend(layout.partition_cols.iter().map(|f| f.as_ref().clone()));
        let groups = FileGroup::new(snapshot.files.clone())
            .split_files(state.config().target_partitions().max(1));
        let (groups, statistics) =
            compute_all_files_statistics(groups, Arc::new(Schema::new(all)), true, false)?;
        let config =
            FileScanConfigBuilder::new(self.url.object_store(), format.file_source(table_schema))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(Some(indices))?
                .with_limit(limit)
                .build();
        format.create_physical_plan(state, config).await
    }
}

impl Layout {
    /// The product's schema, rebuilt from the layout (contract order).
    fn product_schema(&self) -> SchemaRef {
        let mut all: Vec<&FieldRef> = self.file_schema.fields().iter().collect();
        all.extend(self.partition_cols.iter());
        let mut fields = vec![None; self.scan_index.len()];
        for (product_index, scan_index) in self.scan_index.iter().enumerate() {
            fields[product_index] = Some(all[*scan_index].as_ref().clone());
        }
        Arc::new(Schema::new(
            fields.into_iter().flatten().collect::<Vec<_>>(),
        ))
    }
}

/// Commits `batches` as the table's new content at `table_url` (a local folder or an S3
/// prefix, through `root`, the store of its bucket): one version that removes every file
/// of the previous one and adds the new files, or the table's first version. Files are
/// written before the commit and are not part of the table until it lands; a failed
/// commit leaves no version (its files are removed). Returns the version committed.
pub(crate) async fn publish(
    root: Arc<dyn ObjectStore>,
    table_url: &url::Url,
    schema: SchemaRef,
    batches: Vec<datafusion::arrow::array::RecordBatch>,
) -> std::result::Result<u64, deltalake_core::DeltaTableError> {
    use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
    use deltalake_core::kernel::transaction::CommitBuilder;
    use deltalake_core::kernel::{Action, MetadataExt, StructType};
    use deltalake_core::operations::create::CreateBuilder;
    use deltalake_core::protocol::{DeltaOperation, SaveMode};
    use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};

    let log_store = log_store(root, table_url)?;
    let mut table = DeltaTable::new(Arc::clone(&log_store));
    let exists = table.verify_deltatable_existence().await?;
    if exists {
        table.load().await?;
    }
    let kernel: StructType = schema.as_ref().try_into_kernel()?;
    // The new version is the contract's columns, in the table's partitioning and with its
    // settings (which columns get statistics).
    let (partitions, configuration) = match exists {
        true => {
            let metadata = table.snapshot()?.metadata();
            (
                metadata.partition_columns().to_vec(),
                metadata.configuration().clone(),
            )
        }
        false => (vec![], Default::default()),
    };
    // The writer takes its schema, partitioning and settings from a table's snapshot, and
    // the existing table's may hold columns the contract does not declare (or there is
    // none yet): it is given those of the version to commit, made in memory, and writes
    // through this table's store.
    let target = CreateBuilder::new()
        .with_location("memory:///")
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(partitions)
        .with_configuration(configuration.into_iter().map(|(k, v)| (k, Some(v))))
        .await?;
    let mut staging = DeltaTable::new(Arc::clone(&log_store));
    staging.state = target.state;
    let mut writer = RecordBatchWriter::for_table(&staging)?;
    for batch in batches {
        writer.write(batch).await?;
    }
    let adds = writer.flush().await?;
    let written: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
    let committed = async {
        if exists {
            let state = table.snapshot()?;
            let mut actions: Vec<Action> = state
                .log_data()
                .iter()
                .map(|f| Action::Remove(f.remove_action(true)))
                .collect();
            actions.extend(adds.into_iter().map(Action::Add));
            // Columns the contract does not declare (a writer merged them in) go with
            // the files that held them.
            if *state.schema() != kernel {
                actions.push(Action::Metadata(
                    state.metadata().clone().with_schema(&kernel)?,
                ));
            }
            let operation = DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate: None,
            };
            // No checkpoint or log clean-up after the commit: their failure would read as
            // the commit's, and the files of a version that did land would be removed.
            let properties = deltalake_core::kernel::transaction::CommitProperties::default()
                .with_create_checkpoint(false)
                .with_cleanup_expired_logs(Some(false));
            let done = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(state), table.log_store(), operation)
                .await?;
            Ok(done.version())
        } else {
            let created = CreateBuilder::new()
                .with_log_store(Arc::clone(&log_store))
                .with_columns(kernel.fields().cloned())
                .with_actions(adds.into_iter().map(Action::Add))
                .await?;
            Ok(created.version().unwrap_or(0))
        }
    }
    .await;
    if committed.is_err() {
        // Files no version names are invisible to readers; removing them is tidying,
        // and only once it is sure that the commit did not land after all.
        if !may_have_landed(&table, &log_store, &written).await {
            let store = log_store.object_store(None);
            for path in written.iter().filter_map(|p| Path::from_url_path(p).ok()) {
                let _ = store.delete(&path).await;
            }
        }
    }
    committed
}

/// Whether a commit naming `written` (file names no other writer uses) may be in the log
/// after a commit that reported failure: any version since the one it read may be its own
/// (its response lost) or another writer's. True when that cannot be told.
async fn may_have_landed(table: &DeltaTable, log_store: &LogStoreRef, written: &[String]) -> bool {
    let Some(probe) = written.first() else {
        return false;
    };
    let from = table.version().map_or(0, |v| v + 1);
    let Ok(latest) = log_store.get_latest_version(from).await else {
        // No log where there was none: nothing landed. A log that cannot be read: unknown.
        return table.version().is_some();
    };
    for version in from..=latest {
        match log_store.read_commit_entry(version).await {
            Ok(Some(commit)) if !commit.windows(probe.len()).any(|w| w == probe.as_bytes()) => {}
            Ok(None) => {}
            _ => return true,
        }
    }
    false
}

impl DeltaFiles {
    /// A failure to read the log, as callers may see it: no server path, no credential.
    fn delta_error(&self, name: &str, e: &deltalake_core::DeltaTableError) -> DataFusionError {
        tracing::warn!("cannot read the Delta log of {name}: {e}");
        DataFusionError::Execution(format!(
            "cannot read the Delta log of {name}: {}",
            (self.redact)(&e.to_string())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    /// An in-memory store that counts listings (how the log is polled for new commits).
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        lists: AtomicUsize,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(prefix)
        }
        fn list_with_offset(
            &self,
            prefix: Option<&Path>,
            offset: &Path,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list_with_offset(prefix, offset)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn ids(values: &[i64]) -> (SchemaRef, Vec<datafusion::arrow::array::RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let batch = datafusion::arrow::array::RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(datafusion::arrow::array::Int64Array::from(
                values.to_vec(),
            ))],
        )
        .unwrap();
        (schema, vec![batch])
    }

    #[tokio::test]
    async fn scans_that_ask_together_share_one_look_at_the_log_and_later_ones_see_new_commits() {
        let store = Arc::new(Counting::default());
        let root: Arc<dyn ObjectStore> = Arc::clone(&store) as _;
        let location = "memory:///shop/ids/v1/";
        let url = url::Url::parse(location).unwrap();
        let (schema, batches) = ids(&[1, 2]);
        assert_eq!(
            publish(Arc::clone(&root), &url, Arc::clone(&schema), batches)
                .await
                .unwrap(),
            0
        );
        let contract = meshgate_contract::parse_contract(
            std::path::Path::new("ids.yaml"),
            "dataset: ids\nversion: v1\nowner: a@example.com\nformat: delta\n\
             schema:\n  - {name: id, type: long}\n",
        )
        .unwrap();
        let exposed = Arc::clone(&schema);
        let (files, _) = bind(
            Arc::clone(&root),
            &contract,
            &move |_| Arc::clone(&exposed),
            location,
            "shop.ids",
            Arc::new(str::to_string),
        )
        .await
        .unwrap();

        // Eight scans at once: not eight listings one after the other.
        let before = store.lists.load(Ordering::SeqCst);
        let snapshots = futures::future::join_all((0..8).map(|_| files.latest("shop.ids"))).await;
        let looks = store.lists.load(Ordering::SeqCst) - before;
        assert!(snapshots.iter().all(|s| s.as_ref().unwrap().version == 0));
        assert!(
            (1..=2).contains(&looks),
            "{looks} listings for 8 scans at once"
        );

        // A scan that asks after a commit landed looks again and reads it.
        let (_, batches) = ids(&[3]);
        assert_eq!(publish(root, &url, schema, batches).await.unwrap(), 1);
        let before = store.lists.load(Ordering::SeqCst);
        assert_eq!(files.latest("shop.ids").await.unwrap().version, 1);
        assert!(store.lists.load(Ordering::SeqCst) > before);
    }

    #[test]
    fn only_relative_paths_inside_the_table_are_served() {
        assert!(inside_table("part-0001.parquet"));
        assert!(inside_table("region=EU/part-0001.parquet"));
        for escape in [
            "",
            "/etc/passwd",
            "../other_domain/v1/part.parquet",
            "a/../../b.parquet",
            "./x.parquet",
            "s3://other-bucket/data.parquet",
            "file:///srv/data/customers/v1/part.parquet",
        ] {
            assert!(!inside_table(escape), "{escape}");
        }
    }

    #[test]
    fn statistics_keep_exact_counts_and_only_bounds_a_writer_does_not_truncate() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("day", DataType::Date32, true),
        ]));
        let stats = file_statistics(
            Some(
                r#"{"numRecords":3,"minValues":{"id":1,"name":"a","day":"2026-01-01"},
                    "maxValues":{"id":9,"name":"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz","day":"2026-02-01"},
                    "nullCount":{"id":0,"name":1,"day":0}}"#,
            ),
            &schema,
            100,
        );
        assert_eq!(stats.num_rows, Precision::Exact(3));
        let id = &stats.column_statistics[0];
        assert_eq!(
            id.min_value,
            Precision::Inexact(ScalarValue::Int64(Some(1)))
        );
        assert_eq!(
            id.max_value,
            Precision::Inexact(ScalarValue::Int64(Some(9)))
        );
        let name = &stats.column_statistics[1];
        assert_eq!(name.null_count, Precision::Exact(1));
        assert_eq!(
            name.max_value,
            Precision::Absent,
            "a truncated string is no bound"
        );
        assert!(matches!(
            stats.column_statistics[2].max_value,
            Precision::Inexact(ScalarValue::Date32(Some(_)))
        ));
        // No stats at all: the row count is unknown, never zero.
        let none = file_statistics(None, &schema, 100);
        assert_eq!(none.num_rows, Precision::Absent);
    }
}
