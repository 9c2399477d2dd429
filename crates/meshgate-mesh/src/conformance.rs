//! Binding a contract to its files: does what is on disk keep the contract's promise?

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::{DFSchema, DataFusionError};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::stores::S3Config;
use crate::table::Files;
use meshgate_contract::{ColumnType, Contract, EffectivePolicy, Source, StorageFormat};

/// A product's files, checked against its contract.
pub(crate) struct Bound {
    pub(crate) schema: SchemaRef,
    pub(crate) row_filters: BTreeMap<String, Expr>,
    pub(crate) files: Files,
    /// How many Parquet files the location holds (a Delta table: always at least its log).
    pub(crate) files_found: usize,
}

/// Reads every Parquet footer under `location` and checks it against the contract.
/// `Err` lists every problem found, each naming the file (under `shown`, the location as
/// callers may see it) and the column.
pub(crate) async fn bind(
    ctx: &SessionContext,
    contract: &Contract,
    policy: &EffectivePolicy,
    location: &str,
    shown: &str,
    s3: &S3Config,
) -> Result<Bound, Vec<String>> {
    let one = |e: String| vec![e];
    // Errors of the store and the reader name the server's paths: they are said in the
    // log, and the reasons callers see name the location as shown.
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!("{what} {location}: {}", s3.scrub(&e.to_string()));
        one(format!(
            "{what} {shown}: {}",
            redact_paths(&s3.scrub(&e.to_string()), location, shown)
        ))
    };
    let url = ListingTableUrl::parse(location).map_err(|e| failed("invalid location", &e))?;
    let store = ctx
        .runtime_env()
        .object_store(url.object_store())
        .map_err(|e| failed("cannot reach", &e))?;
    if contract.format == StorageFormat::Delta {
        let redact: crate::delta::Redact = {
            let (s3, location, shown) = (s3.clone(), location.to_string(), shown.to_string());
            Arc::new(move |text: &str| redact_paths(&s3.scrub(text), &location, &shown))
        };
        let (table, schema) = crate::delta::bind(
            store,
            contract,
            &|seen| exposed_schema(contract, seen),
            location,
            shown,
            redact,
        )
        .await?;
        let row_filters = row_filters(ctx, policy, &schema)?;
        return Ok(Bound {
            schema,
            row_filters,
            files: Files::Delta(Box::new(table)),
            files_found: 1,
        });
    }
    let state = ctx.state();
    let files: Vec<_> = url
        .list_all_files(&state, store.as_ref(), "parquet")
        .await
        .map_err(|e| failed("cannot list", &e))?
        .try_collect()
        .await
        .map_err(|e| failed("cannot list", &e))?;

    let format = ParquetFormat::default();
    let mut problems = Vec::new();
    // Per column, the file types seen (to settle bare `decimal`s).
    let mut seen: Vec<Option<DataType>> = vec![None; contract.schema.len()];
    for meta in &files {
        let name = format!("{shown}{}", relative(&url, meta.location.as_ref()));
        if let Err(e) = check_footer(store.as_ref(), meta).await {
            problems.push(format!(
                "file {name} is not readable Parquet: {}",
                redact_paths(&e.to_string(), location, shown)
            ));
            continue;
        }
        let file_schema = match format
            .infer_schema(&state, &store, std::slice::from_ref(meta))
            .await
        {
            Ok(schema) => schema,
            Err(e) => {
                problems.push(format!(
                    "file {name} is not readable Parquet: {}",
                    redact_paths(&e.to_string(), location, shown)
                ));
                continue;
            }
        };
        for (i, col) in contract.schema.iter().enumerate() {
            let Ok(field) = file_schema.field_with_name(col.name.as_str()) else {
                problems.push(format!(
                    "file {name}: column {} ({}) is missing",
                    col.name, col.data_type
                ));
                continue;
            };
            let ty = field.data_type();
            if !col.data_type.accepts(ty) {
                problems.push(format!(
                    "file {name}: column {} is {ty} in the file but {} in the contract",
                    col.name, col.data_type
                ));
            } else if col.data_type == ColumnType::Decimal {
                match &seen[i] {
                    Some(prev) if prev != ty => problems.push(format!(
                        "file {name}: column {} is {ty} but other files hold {prev}; \
                         pin decimal(p,s) in the contract",
                        col.name
                    )),
                    _ => seen[i] = Some(ty.clone()),
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let schema = exposed_schema(contract, &seen);
    let row_filters = row_filters(ctx, policy, &schema)?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::clone(&schema));
    let table = ListingTable::try_new(config).map_err(|e| one(e.to_string()))?;
    Ok(Bound {
        schema,
        row_filters,
        files: Files::Listing(Box::new(table)),
        files_found: files.len(),
    })
}

/// What SQL sees: the contract's columns in its order, each in the type it is served as;
/// a bare `decimal` takes the precision the data has (`seen`, per column).
fn exposed_schema(contract: &Contract, seen: &[Option<DataType>]) -> SchemaRef {
    let fields: Vec<Field> = contract
        .schema
        .iter()
        .zip(seen.iter().cloned())
        .map(|(col, seen)| {
            let ty = col.data_type.scan_type().unwrap_or(match seen {
                Some(DataType::Decimal256(p, s)) => DataType::Decimal256(p, s),
                Some(DataType::Decimal128(p, s)) => DataType::Decimal128(p, s),
                // No file yet: the widest decimal that Decimal128 holds.
                _ => DataType::Decimal128(38, 10),
            });
            // Everything is nullable: `required` is a data check, not a schema promise the
            // engine could optimise on and get wrong for a file that breaks it.
            Field::new(col.name.as_str(), ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Plans each role's row filters against the exposed schema, once, so that a filter that
/// does not type-check quarantines the product instead of failing every query. A role's
/// filters (its grant's and those of governance policies) are joined with AND.
fn row_filters(
    ctx: &SessionContext,
    policy: &EffectivePolicy,
    schema: &SchemaRef,
) -> Result<BTreeMap<String, Expr>, Vec<String>> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| vec![e.to_string()])?;
    // Coerced and constants folded once here (`region = 'EU'` compares with a literal of
    // the column's type), not on every batch the filter sees.
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(df_schema.clone()))
            .build(),
    );
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (role, p) in &policy.roles {
        let mut all = Vec::new();
        for (source, sql) in &p.row_filters {
            match plan_row_filter(ctx, sql, &df_schema, &simplifier) {
                Ok(e) => all.push(e),
                Err(e) => problems.push(match source {
                    Source::Contract => {
                        format!("row_filter of role {role} ({sql}) is not a valid predicate: {e}")
                    }
                    Source::Policy(_) => format!(
                        "{source} filters role {role} by {sql}, which is not a valid predicate \
                         over this product: {e}"
                    ),
                }),
            }
        }
        if let Some(e) = all.into_iter().reduce(Expr::and) {
            out.insert(role.clone(), e);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// One row filter, typed against the product's columns. Its `:user.<name>` references
/// become parameters named so, typed by the column each is compared with; such a filter
/// is coerced but not simplified here (folding `x IN ($1)` into `x = $1` would lose the
/// attribute's other values), it is bound per caller.
fn plan_row_filter(
    ctx: &SessionContext,
    sql: &str,
    schema: &DFSchema,
    simplifier: &ExprSimplifier,
) -> datafusion::common::Result<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let filter = meshgate_contract::row_filter_sql(sql).map_err(DataFusionError::Plan)?;
    let e = ctx.parse_sql_expr(&filter.sql, schema)?;
    let e = e
        .transform(|e| match e {
            Expr::Placeholder(mut p) => match filter.attribute_of(&p.id) {
                Some(name) => {
                    p.id = format!("{}{name}", meshgate_contract::ATTRIBUTE_PREFIX);
                    Ok(Transformed::yes(Expr::Placeholder(p)))
                }
                None => datafusion::common::plan_err!("unexpected parameter {}", p.id),
            },
            other => Ok(Transformed::no(other)),
        })?
        .data;
    let (e, attributes) = e.infer_placeholder_types(schema)?;
    if attributes {
        let mut untyped = None;
        e.apply(|e| {
            if let Expr::Placeholder(p) = e
                && p.field.is_none()
            {
                untyped = Some(p.id.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        if let Some(id) = untyped {
            return datafusion::common::plan_err!(
                "{id} must be compared with a column directly (col = {id}, col IN ({id})), \
                 which gives it a type"
            );
        }
    }
    let ty = e.get_type(schema)?;
    if ty != DataType::Boolean {
        return datafusion::common::plan_err!("it is {ty}, not a boolean predicate");
    }
    let coerced = simplifier.coerce(e, schema)?;
    if attributes {
        Ok(coerced)
    } else {
        simplifier.simplify(coerced)
    }
}

fn relative<'a>(url: &ListingTableUrl, path: &'a str) -> &'a str {
    path.strip_prefix(url.prefix().as_ref())
        .unwrap_or(path)
        .trim_start_matches('/')
}

/// The Parquet reader trusts the footer's length field (a corrupt one panics it in debug
/// builds), so the footer is checked here before it is handed over.
async fn check_footer(store: &dyn ObjectStore, meta: &ObjectMeta) -> Result<(), String> {
    let size = meta.size;
    if size < 12 {
        return Err(format!("{size} bytes is too small for a Parquet file"));
    }
    let read = |r: std::ops::Range<u64>| store.get_range(&meta.location, r);
    let head = read(0..4).await.map_err(|e| e.to_string())?;
    let tail = read(size - 8..size).await.map_err(|e| e.to_string())?;
    footer_ok(size, &head, &tail)
}

/// [`check_footer`] for a local file (an input to publish).
pub(crate) fn check_local_footer(path: &std::path::Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    if size < 12 {
        return Err(format!("{size} bytes is too small for a Parquet file"));
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 8]);
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::End(-8)).map_err(|e| e.to_string())?;
    f.read_exact(&mut tail).map_err(|e| e.to_string())?;
    footer_ok(size, &head, &tail)
}

fn footer_ok(size: u64, head: &[u8], tail: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"PAR1";
    if head != MAGIC || &tail[4..] != MAGIC {
        return Err("no Parquet magic bytes (PAR1) at its start and end".into());
    }
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if len + 12 > size {
        return Err(format!(
            "corrupt footer: it claims {len} bytes of metadata in a file of {size} bytes"
        ));
    }
    Ok(())
}

/// `text` with the location's server path (as a path and as an object-store key) replaced
/// by how callers see it.
fn redact_paths(text: &str, location: &str, shown: &str) -> String {
    let path = location.trim_end_matches('/');
    let key = path.trim_start_matches('/');
    let shown = shown.trim_end_matches('/');
    let mut out = text.replace(path, shown);
    if !key.is_empty() {
        out = out.replace(key, shown);
    }
    out
}
