//! SQL logic tests, one folder per role: `tests/slt/<role>/<feature>.slt` runs every
//! statement of the file through a policy-enforcing session of that role's principal.
//!
//! `cargo test --test sqllogictests -- marketer/` runs one role;
//! `MESHGATE_SLT_COMPLETE=1 cargo test --test sqllogictests` rewrites expected results
//! (review the diff before committing it).
//!
//! Every file runs a second time as `s3/<role>/<file>`, the sample domains read from a
//! local S3 server (moto, from `MESHGATE_TEST_PYTHON` or `.venv`; tests/run-all.sh sets
//! it up): the same expected output, so S3 products behave exactly like local ones.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use libtest_mimic::{Arguments, Failed, Trial};
use meshgate_policy::{ErrorClass, MeshSession, classify};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct QueryError {
    class: ErrorClass,
    message: String,
}

struct MeshDb {
    session: MeshSession,
}

#[async_trait]
impl AsyncDB for MeshDb {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let fail = |e: datafusion::error::DataFusionError| {
            let (class, message) = classify(&e);
            QueryError { class, message }
        };
        let df = self.session.sql(sql).await.map_err(fail)?;
        let batches = df.collect().await.map_err(fail)?;
        Ok(to_output(&batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meshgate"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &QueryError) -> Option<String> {
        Some(err.class.sqlstate().to_string())
    }
}

fn to_output(batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let Some(first) = batches.first() else {
        return DBOutput::Rows {
            types: vec![],
            rows: vec![],
        };
    };
    let types = first
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if t.is_integer() => DefaultColumnType::Integer,
            t if t.is_floating()
                || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
            {
                DefaultColumnType::FloatingPoint
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
            _ => DefaultColumnType::Any,
        })
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    // EXPLAIN: one row per line of each plan, so that plans diff line by line.
    if first.schema().field(0).name() == "plan_type" {
        let mut rows = Vec::new();
        for batch in batches {
            let types = batch.column(0).as_string::<i32>();
            let plans = batch.column(1).as_string::<i32>();
            for (t, p) in types.iter().zip(plans.iter()) {
                rows.push(vec![format!("{}:", t.unwrap_or(""))]);
                rows.extend(
                    p.unwrap_or("")
                        .lines()
                        .map(|l| vec![l.trim_end().to_string()]),
                );
            }
        }
        return DBOutput::Rows {
            types: vec![DefaultColumnType::Text],
            rows,
        };
    }
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(r).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    DBOutput::Rows { types, rows }
}

/// Paths differ between checkouts: plans show `<repo>/…` and `<tmp>/…` instead.
#[allow(clippy::ptr_arg)] // the signature sqllogictest expects
fn normalize(s: &String) -> String {
    static TMP: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"/?tmp/\.tmp[A-Za-z0-9]+").unwrap());
    let repo = common::repo().display().to_string();
    let s = s
        .replace(&repo, "<repo>")
        .replace(repo.trim_start_matches('/'), "<repo>");
    TMP.replace_all(s.trim(), "<tmp>").into_owned()
}

/// One local S3 server for every `s3/` trial of this process.
static S3: std::sync::OnceLock<common::s3::LocalS3> = std::sync::OnceLock::new();

/// Plans over S3 name objects by their key; the same plans over local files show their
/// path. One form for both: `<repo>/sample-data/<key>`.
#[allow(clippy::ptr_arg)] // the signature sqllogictest expects
fn normalize_s3(s: &String) -> String {
    static KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(^|[\[ ,])((checkout|customers|inventory|web)/[A-Za-z0-9_]+/v[0-9]+/)")
            .unwrap()
    });
    let s = normalize(s);
    KEY.replace_all(&s, "${1}<repo>/sample-data/${2}")
        .into_owned()
}

fn run_file(path: &Path, role: &str, s3: bool) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mesh = if s3 {
            common::TestMesh::load_s3(S3.get_or_init(common::s3::LocalS3::start)).await
        } else {
            common::TestMesh::load().await
        };
        let make = || async {
            Ok::<_, QueryError>(MeshDb {
                session: mesh.session(role),
            })
        };
        let mut runner = sqllogictest::Runner::new(make);
        runner.with_normalizer(if s3 { normalize_s3 } else { normalize });
        if std::env::var_os("MESHGATE_SLT_COMPLETE").is_some() && !s3 {
            let col_sep = " ";
            let validator = sqllogictest::default_validator;
            runner
                .update_test_file(
                    path,
                    col_sep,
                    validator,
                    normalize,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| Failed::from(e.to_string()))?;
            return Ok(());
        }
        runner
            .run_file_async(path)
            .await
            .map_err(|e| Failed::from(format!("{}", e.display(true))))
    })
}

fn main() {
    let args = Arguments::from_args();
    let root = common::repo().join("tests/slt");
    let mut files: Vec<PathBuf> = Vec::new();
    for role in std::fs::read_dir(&root).unwrap() {
        let role = role.unwrap().path();
        if role.is_dir() {
            for f in std::fs::read_dir(&role).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "slt") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    let trials = files
        .into_iter()
        .flat_map(|f| [(f.clone(), false), (f, true)])
        .map(|(f, s3)| {
            let role = f
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let name = format!(
                "{}{role}/{}",
                if s3 { "s3/" } else { "" },
                f.file_name().unwrap().to_str().unwrap()
            );
            Trial::test(name, move || run_file(&f, &role, s3))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
