//! Data checks and service levels of a product (issue 5, docs/DESIGN.md §2): the column checks of
//! its contract, quality against `sla.quality`, freshness against `sla.freshness`, and a
//! scan of non-PII text for values that look like PII.
//!
//! This reads the files in the clear, for the platform and the owning team: it runs inside
//! `meshgate check` and the server's own scheduler, never on a caller's behalf, and its
//! report holds counts only, never a value.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::catalog::TableProvider;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use meshgate_contract::{Column, ColumnType, Contract, Scalar};
use serde::Serialize;
use std::path::Path;

use crate::{ContractTable, Mesh};

/// One column check and how many rows break it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub column: String,
    /// `required`, `unique`, `enum`, `values`, `min`, `max` or `pattern`.
    pub check: &'static str,
    pub failing_rows: u64,
}

/// Non-PII text that looks like PII: a governance finding for the owner to look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PiiFinding {
    pub column: String,
    /// `e-mail`, `phone`, `ip address` or `card number`.
    pub looks_like: &'static str,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductReport {
    pub product: String,
    pub domain: String,
    pub dataset: String,
    pub version: u32,
    pub owner: String,
    pub rows: u64,
    pub checks: Vec<CheckResult>,
    /// Share of rows passing every check (1 for an empty product).
    pub quality: f64,
    pub quality_sla: Option<f64>,
    /// Age of the newest data, when it can be told.
    pub freshness_age_secs: Option<f64>,
    pub freshness_sla_secs: Option<f64>,
    /// Where the age comes from: the freshness column, or the files' modification times.
    pub freshness_source: String,
    pub pii_findings: Vec<PiiFinding>,
    /// A derived product's last refresh, as the refresher recorded it.
    pub refresh: Option<crate::publish::RefreshStatus>,
}

impl ProductReport {
    pub fn quality_ok(&self) -> bool {
        self.quality_sla.is_none_or(|sla| self.quality >= sla)
    }

    pub fn freshness_ok(&self) -> bool {
        match (self.freshness_age_secs, self.freshness_sla_secs) {
            (Some(age), Some(sla)) => age <= sla,
            // An SLA whose age cannot be measured is not met.
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    /// A derived product whose last refresh failed serves data older than its owner
    /// promised, whatever its age says yet.
    pub fn refresh_ok(&self) -> bool {
        self.refresh.as_ref().is_none_or(|r| r.error.is_none())
    }

    pub fn sla_ok(&self) -> bool {
        self.quality_ok() && self.freshness_ok() && self.refresh_ok()
    }
}

const PII_LOOKS: [(&str, &str); 4] = [
    ("e-mail", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    ("phone", r"^\+?[0-9][0-9 ().-]{7,}[0-9]$"),
    (
        "ip address",
        r"(^|[^0-9.])([0-9]{1,3}\.){3}[0-9]{1,3}([^0-9.]|$)",
    ),
    ("card number", r"^([0-9][ -]?){12,18}[0-9]$"),
];

/// Checks one served product of `mesh`. `now` is a parameter so that tests can fix it.
pub async fn check_product(
    mesh: &Mesh,
    table: Arc<ContractTable>,
    now: SystemTime,
) -> Result<ProductReport> {
    let product = Arc::clone(table.product());
    let dir = std::path::PathBuf::from(product.location.trim_end_matches('/'));
    let ctx = mesh.session_context();
    // A Delta table's data is as new as its last commit (what the checks read is that
    // commit's snapshot too: the scan takes the latest one).
    let written = match table.latest_delta_snapshot().await? {
        Some(snapshot) => Written::Committed(snapshot.committed_at),
        None => Written::Files(&dir),
    };
    let mut report =
        check_data(ctx, table, &product.contract, &product.domain, written, now).await?;
    if product.contract.source.is_some() {
        report.refresh = crate::publish::RefreshStatus::read(&dir);
    }
    Ok(report)
}

/// When the data was written, for freshness without a freshness column.
pub(crate) enum Written<'a> {
    /// The newest modification time of the files in this folder.
    Files(&'a Path),
    /// The time of the Delta commit being read.
    Committed(Option<SystemTime>),
}

/// Checks data that is not served yet (a publish being staged) the same way.
pub(crate) async fn check_data(
    ctx: SessionContext,
    table: Arc<dyn TableProvider>,
    c: &Contract,
    domain: &str,
    written: Written<'_>,
    now: SystemTime,
) -> Result<ProductReport> {
    ctx.register_table("product", table)?;

    // One pass: per-check failure counts, rows passing all, newest freshness value, and
    // PII-looking values in non-PII text. Unique checks need the count of each value.
    let mut windows = Vec::new();
    let mut sums = Vec::new();
    let mut failing = Vec::new();
    let mut checks = Vec::new();
    for (i, col) in c.schema.iter().enumerate() {
        let q = quote(col.name.as_str());
        for (check, fails) in conditions(col, &q, i) {
            if check == "unique" {
                windows.push(format!("count(*) OVER (PARTITION BY {q}) AS __dup_{i}"));
            }
            sums.push(format!("sum(CASE WHEN {fails} THEN 1 ELSE 0 END)"));
            failing.push(format!("({fails})"));
            checks.push((col.name.as_str().to_string(), check));
        }
    }
    let mut findings = Vec::new();
    for col in c
        .schema
        .iter()
        .filter(|c| !c.is_pii() && c.data_type == ColumnType::String)
    {
        let q = quote(col.name.as_str());
        for (kind, re) in PII_LOOKS {
            sums.push(format!(
                "sum(CASE WHEN regexp_like({q}, '{re}') THEN 1 ELSE 0 END)"
            ));
            findings.push((col.name.as_str().to_string(), kind));
        }
    }
    let all_pass = if failing.is_empty() {
        "count(*)".to_string()
    } else {
        format!(
            "sum(CASE WHEN {} THEN 0 ELSE 1 END)",
            failing
                .iter()
                .map(|f| format!("coalesce({f}, false)"))
                .collect::<Vec<_>>()
                .join(" OR ")
        )
    };
    let freshness_col = c.sla.as_ref().and_then(|s| s.freshness_column.as_deref());
    let newest = match freshness_col {
        Some(col) => format!("date_part('epoch', CAST(max({}) AS TIMESTAMP))", quote(col)),
        None => "CAST(NULL AS DOUBLE)".into(),
    };
    let from = if windows.is_empty() {
        "product".to_string()
    } else {
        format!("(SELECT *, {} FROM product)", windows.join(", "))
    };
    let mut select = vec![
        "count(*)".to_string(),
        format!("CAST({all_pass} AS BIGINT)"),
        format!("CAST({newest} AS DOUBLE)"),
    ];
    select.extend(sums.iter().map(|s| format!("CAST({s} AS BIGINT)")));
    let select: Vec<String> = select
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS c{i}"))
        .collect();
    let sql = format!("SELECT {} FROM {from}", select.join(", "));
    let batches = ctx.sql(&sql).await?.collect().await?;
    let row = &batches[0];
    let int = |i: usize| -> u64 {
        let a = row.column(i).as_primitive::<Int64Type>();
        if a.is_null(0) { 0 } else { a.value(0) as u64 }
    };
    let rows = int(0);
    let passing = int(1);
    let newest = row.column(2).as_primitive::<Float64Type>();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let (freshness_age_secs, freshness_source) = match freshness_col {
        Some(col) => (
            (!newest.is_null(0)).then(|| now_secs - newest.value(0)),
            format!("column {col}"),
        ),
        None => {
            let (time, source) = match written {
                Written::Files(dir) => (newest_file(dir), "file modification time"),
                Written::Committed(t) => (t, "last Delta commit"),
            };
            (
                time.map(|t| {
                    now.duration_since(t)
                        .unwrap_or(Duration::ZERO)
                        .as_secs_f64()
                }),
                source.into(),
            )
        }
    };
    let checks = checks
        .into_iter()
        .enumerate()
        .map(|(i, (column, check))| CheckResult {
            column,
            check,
            failing_rows: int(3 + i),
        })
        .collect::<Vec<_>>();
    let base = 3 + checks.len();
    let pii_findings = findings
        .into_iter()
        .enumerate()
        .map(|(i, (column, looks_like))| PiiFinding {
            column,
            looks_like,
            rows: int(base + i),
        })
        .filter(|f| f.rows > 0)
        .collect();
    let sla = c.sla.as_ref();
    Ok(ProductReport {
        product: format!("{domain}.{} {}", c.dataset.as_str(), c.version),
        domain: domain.to_string(),
        dataset: c.dataset.as_str().to_string(),
        version: c.version.0,
        owner: c.owner.as_str().to_string(),
        rows,
        checks,
        quality: if rows == 0 {
            1.0
        } else {
            passing as f64 / rows as f64
        },
        quality_sla: sla.and_then(|s| s.quality).map(|p| p.ratio()),
        freshness_age_secs,
        freshness_sla_secs: sla
            .and_then(|s| s.freshness.as_ref())
            .map(|f| f.0.as_secs_f64()),
        freshness_source,
        pii_findings,
        refresh: None,
    })
}

/// The checks a column declares, each as a SQL condition true on a failing row.
fn conditions(col: &Column, q: &str, i: usize) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if col.required {
        out.push(("required", format!("{q} IS NULL")));
    }
    if col.unique {
        out.push(("unique", format!("{q} IS NOT NULL AND __dup_{i} > 1")));
    }
    if let Some(values) = col.allowed_values() {
        let list = values.iter().map(literal).collect::<Vec<_>>().join(", ");
        let kind = if col.allowed.is_some() {
            "enum"
        } else {
            "values"
        };
        out.push((kind, format!("{q} NOT IN ({list})")));
    }
    if let Some(min) = &col.min {
        out.push(("min", format!("{q} < {}", literal(min))));
    }
    if let Some(max) = &col.max {
        out.push(("max", format!("{q} > {}", literal(max))));
    }
    if let Some(p) = &col.pattern {
        out.push((
            "pattern",
            format!("NOT regexp_like({q}, '{}')", p.replace('\'', "''")),
        ));
    }
    out
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn literal(s: &Scalar) -> String {
    match s {
        Scalar::String(v) => format!("'{}'", v.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// The newest modification time of the files under `dir` (local locations only).
fn newest_file(dir: &Path) -> Option<SystemTime> {
    fn walk(dir: &std::path::Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    if !dir.is_absolute() {
        return None;
    }
    let mut newest = None;
    walk(dir, &mut newest);
    newest
}
