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
//! And twice more as `distributed/…` and `s3-distributed/…`: every statement that reads
//! product files runs on a Ballista cluster of real processes (a scheduler and two
//! executors), its physical plan shipped as the gateway ships it, with the same expected
//! output again.
//! And as `delta/<role>/<file>`: the sample domains stored as Delta Lake tables written
//! by the `deltalake` package (`TestMesh::load_delta`), the same expected output but for
//! records marked `skipif delta` (plans that name the files a writer chose).
//! And once more as `postgres/<role>/<file>`: each statement sent by a Postgres driver
//! (tokio-postgres, extended protocol, binary rows) to a running gateway's Postgres port,
//! logged in as the role's user; the rows are decoded back into Arrow and formatted as the
//! other runs format them, so the expected output is the same file. Records whose answer
//! is a protocol's own (`BEGIN` is refused on Flight, answered on Postgres) are marked
//! `skipif postgres` / `onlyif postgres`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use futures::TryStreamExt;
use libtest_mimic::{Arguments, Failed, Trial};
use meshgate_policy::Principal;
use meshgate_server::audit::AuditRecord;
use meshgate_server::config::{DistributedConfig, WhenUnavailable};
use meshgate_server::query::{Engine, QueryEngine, QueryError};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(QueryError);

/// One role's connection: statements go through the gateway's query path itself
/// (plan as the caller, verify, route, execute, account), as Flight sends them.
struct MeshDb {
    engine: Arc<QueryEngine>,
    principal: Principal,
    /// Statements that read product files, and how many of them ran on the cluster.
    reads: Arc<AtomicUsize>,
    ran_distributed: Arc<AtomicUsize>,
}

#[async_trait]
impl AsyncDB for MeshDb {
    type Error = Failure;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Failure> {
        let planned = self
            .engine
            .plan(&self.principal, sql, None, None)
            .await
            .map_err(Failure)?;
        let reads = !matches!(
            planned.route.reason.as_str(),
            "reads no product files" | "EXPLAIN" | "no cluster configured"
        );
        self.reads.fetch_add(usize::from(reads), Ordering::Relaxed);
        self.ran_distributed.fetch_add(
            usize::from(planned.route.engine == Engine::Distributed),
            Ordering::Relaxed,
        );
        let permit = self.engine.slot(&self.principal).await.map_err(Failure)?;
        let record = AuditRecord {
            principal: self.principal.name.clone(),
            kind: "statement".into(),
            ..Default::default()
        };
        let batches: Vec<RecordBatch> = self
            .engine
            .execute(planned, permit, record, Instant::now())
            .map_err(Failure)?
            .try_collect()
            .await
            .map_err(Failure)?;
        Ok(to_output(&batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meshgate"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &Failure) -> Option<String> {
        Some(err.0.sqlstate().to_string())
    }
}

/// One role's connection to the gateway's Postgres port.
struct PgDb {
    client: tokio_postgres::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct PgFailure {
    message: String,
    code: Option<String>,
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgFailure {
                message: db.message().to_string(),
                code: Some(db.code().code().to_string()),
            },
            None => PgFailure {
                message: e.to_string(),
                code: None,
            },
        }
    }
}

#[async_trait]
impl AsyncDB for PgDb {
    type Error = PgFailure;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgFailure> {
        let statement = self.client.prepare(sql).await?;
        let rows = self.client.query(&statement, &[]).await?;
        if statement.columns().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let batch =
            common::pg::rows_to_batch(statement.columns(), &rows).map_err(|message| PgFailure {
                message,
                code: None,
            })?;
        Ok(to_output(&[batch]))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgres"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &PgFailure) -> Option<String> {
        err.code.clone()
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
                // The gateway's route line differs between the local and the cluster
                // runs of a file; tests/integration checks it.
                rows.extend(
                    p.unwrap_or("")
                        .lines()
                        .filter(|l| !l.starts_with("meshgate: engine="))
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

/// One cluster for every `distributed/` trial, one for every `s3-distributed/` trial.
static CLUSTER: std::sync::OnceLock<common::cluster::LocalCluster> = std::sync::OnceLock::new();
static S3_CLUSTER: std::sync::OnceLock<common::cluster::LocalCluster> = std::sync::OnceLock::new();

fn s3() -> &'static common::s3::LocalS3 {
    S3.get_or_init(common::s3::LocalS3::start)
}

/// The test cluster for the `distributed` runs, and the gateway's routing settings that
/// send every statement reading product files to it.
fn cluster(s3: bool) -> (meshgate_cluster::Cluster, DistributedConfig) {
    let local = if s3 {
        S3_CLUSTER.get_or_init(|| {
            common::cluster::LocalCluster::start(&common::cluster::ClusterSpec {
                s3: Some(self::s3()),
                ..Default::default()
            })
        })
    } else {
        CLUSTER.get_or_init(|| common::cluster::LocalCluster::start(&Default::default()))
    };
    let cluster = meshgate_cluster::Cluster::new(
        &local.scheduler,
        meshgate_cluster::ClusterCodec::new(common::key()),
        None,
    );
    let config = DistributedConfig {
        scheduler: local.scheduler.clone(),
        tls: None,
        min_scan_bytes: 0,
        allow_override: true,
        when_unavailable: WhenUnavailable::Fail,
    };
    (cluster, config)
}

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

/// A file through the Postgres port of a gateway started for it.
fn run_file_postgres(path: &Path, role: &str) -> Result<(), Failed> {
    runtime()?.block_on(async {
        let server = common::server::TestServer::start().await;
        let addr = server
            .server
            .pg_addr
            .expect("the test server listens for Postgres");
        let user = common::principal(role).name;
        let make = || {
            let user = user.clone();
            async move {
                let client = common::pg::connect(addr, &user).await?;
                Ok::<_, PgFailure>(PgDb { client })
            }
        };
        let mut runner = sqllogictest::Runner::new(make);
        runner.with_normalizer(normalize);
        runner
            .run_file_async(path)
            .await
            .map_err(|e| Failed::from(format!("{}", e.display(true))))?;
        Ok(())
    })
}

/// A runtime per file: files run in parallel, each on its own.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Where a file's products are read from.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    Local,
    S3,
    Delta,
}

fn run_file(path: &Path, role: &str, storage: Storage, distributed: bool) -> Result<(), Failed> {
    let s3 = storage == Storage::S3;
    runtime()?.block_on(async {
        let mesh = match storage {
            Storage::S3 => common::TestMesh::load_s3(self::s3()).await,
            Storage::Delta => common::TestMesh::load_delta().await,
            Storage::Local => common::TestMesh::load().await,
        };
        let engine = mesh.engine(distributed.then(|| cluster(s3)));
        let (reads, ran_distributed) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let make = || async {
            Ok::<_, Failure>(MeshDb {
                engine: Arc::clone(&engine),
                principal: common::principal(role),
                reads: Arc::clone(&reads),
                ran_distributed: Arc::clone(&ran_distributed),
            })
        };
        let mut runner = sqllogictest::Runner::new(make);
        runner.with_normalizer(if s3 { normalize_s3 } else { normalize });
        if storage == Storage::Delta {
            runner.add_label("delta");
        }
        if std::env::var_os("MESHGATE_SLT_COMPLETE").is_some()
            && storage == Storage::Local
            && !distributed
        {
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
            .map_err(|e| Failed::from(format!("{}", e.display(true))))?;
        // A distributed run that ran nothing on the cluster would prove nothing.
        let (reads, ran) = (
            reads.load(Ordering::Relaxed),
            ran_distributed.load(Ordering::Relaxed),
        );
        if distributed && reads > 0 && ran == 0 {
            return Err(Failed::from(format!(
                "{reads} statements read products, none ran on the cluster"
            )));
        }
        Ok(())
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
    let files_for_postgres = files.clone();
    let trials = files
        .into_iter()
        .flat_map(|f| {
            [
                (Storage::Local, false),
                (Storage::S3, false),
                (Storage::Local, true),
                (Storage::S3, true),
                (Storage::Delta, false),
            ]
            .map(|(storage, distributed)| (f.clone(), storage, distributed))
        })
        .map(|(f, storage, distributed)| {
            let role = f
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let prefix = match (storage, distributed) {
                (Storage::Local, false) => "",
                (Storage::S3, false) => "s3/",
                (Storage::Local, true) => "distributed/",
                (Storage::S3, true) => "s3-distributed/",
                (Storage::Delta, _) => "delta/",
            };
            let name = format!(
                "{prefix}{role}/{}",
                f.file_name().unwrap().to_str().unwrap()
            );
            Trial::test(name, move || run_file(&f, &role, storage, distributed))
        })
        .chain(files_for_postgres.into_iter().map(|f| {
            let role = f
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let name = format!(
                "postgres/{role}/{}",
                f.file_name().unwrap().to_str().unwrap()
            );
            Trial::test(name, move || run_file_postgres(&f, &role))
        }))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
