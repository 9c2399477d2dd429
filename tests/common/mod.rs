//! The test mesh: the sample mesh as committed, plus a `lab` domain of deliberately broken
//! products (tests/fixtures/lab) whose data is written here.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use meshgate_mesh::{Mesh, MeshConfig};
use meshgate_policy::{HashKey, MeshSession, Policy, Principal, SessionOptions};
use parquet::arrow::ArrowWriter;
use tempfile::TempDir;

pub mod cluster;
pub mod oracle;
pub mod pg;
pub mod pki;
pub mod s3;
pub mod server;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every EXPLAIN form DataFusion 55 parses, options included.
pub const EXPLAIN_FORMS: [&str; 14] = [
    "EXPLAIN",
    "EXPLAIN VERBOSE",
    "EXPLAIN ANALYZE",
    "EXPLAIN ANALYZE VERBOSE",
    "EXPLAIN FORMAT tree",
    "EXPLAIN FORMAT indent",
    "EXPLAIN FORMAT pgjson",
    "EXPLAIN FORMAT graphviz",
    "EXPLAIN VERBOSE FORMAT indent",
    "EXPLAIN (COSTS TRUE)",
    "EXPLAIN (VERBOSE, COSTS TRUE)",
    "EXPLAIN (ANALYZE, LEVEL dev)",
    "EXPLAIN (ANALYZE, VERBOSE, METRICS 'rows,bytes')",
    "EXPLAIN (ANALYZE, FORMAT pgjson)",
];

/// The key every test session hashes with, so expected outputs are stable.
pub const TEST_KEY: &[u8] = b"meshgate-test-key-0123456789";

pub fn key() -> Arc<HashKey> {
    Arc::new(HashKey::new(TEST_KEY).unwrap())
}

/// The principal a test role folder stands for (see tests/slt/README.md).
pub fn principal(role_dir: &str) -> Principal {
    match role_dir {
        "analyst" => Principal::new("analyst", ["data_analyst"]),
        "marketer" => Principal::new("marketer", ["marketing"]),
        "guest" => Principal::new("guest", Vec::<String>::new()),
        "eu_support" => Principal::new("support", ["eu_support"]),
        "analyst_marketer" => Principal::new("lead", ["data_analyst", "marketing"]),
        // One role, rows chosen by the user's own attributes.
        "regional" => Principal::new("regional", ["regional_support"]).with_attributes(
            [
                (
                    "regions".to_string(),
                    vec!["US".to_string(), "APAC".to_string()],
                ),
                ("home_region".to_string(), vec!["US".to_string()]),
            ]
            .into(),
        ),
        "regional_unassigned" => Principal::new("newhire", ["regional_support"]),
        other => panic!("no principal for role folder {other}"),
    }
}

/// Every role folder of tests/slt/, for servers that log each one in.
pub const ROLE_FOLDERS: &[&str] = &[
    "analyst",
    "marketer",
    "guest",
    "eu_support",
    "analyst_marketer",
    "regional",
    "regional_unassigned",
];

pub struct TestMesh {
    pub mesh: Arc<Mesh>,
    pub dir: TempDir,
}

impl TestMesh {
    pub async fn load() -> TestMesh {
        TestMesh::load_with(|_| {}).await
    }

    /// The same mesh with the sample domains read from `s3://meshgate-sample/` on `s3`
    /// (the lab domain stays local).
    pub async fn load_s3(s3: &s3::LocalS3) -> TestMesh {
        TestMesh::load_with(|config| {
            config.data = PathBuf::from(format!("s3://{}", s3::BUCKET));
            config.s3 = s3.config();
        })
        .await
    }

    /// The same mesh with the sample domains stored as Delta tables (a copy written by the
    /// `deltalake` package once per process, tests/delta/sample_as_delta.py); marketing,
    /// whose product meshgate derives, and the lab domain stay Parquet folders.
    pub async fn load_delta() -> TestMesh {
        static COPY: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();
        const DOMAINS: [&str; 4] = ["checkout", "customers", "inventory", "web"];
        let copy = COPY.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new(s3::python())
                .arg(repo().join("tests/delta/sample_as_delta.py"))
                .arg(repo().join("sample-data"))
                .arg(dir.path())
                .args(DOMAINS)
                .output()
                .expect("MESHGATE_TEST_PYTHON runs (tests/run-all.sh makes a venv with deltalake)");
            assert!(
                out.status.success(),
                "sample_as_delta.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        });
        TestMesh::load_with(|config| {
            for domain in DOMAINS {
                config
                    .domain_roots
                    .insert(domain.into(), copy.path().join(domain));
                for f in std::fs::read_dir(config.contracts.join(domain)).unwrap() {
                    let f = f.unwrap().path();
                    let text = std::fs::read_to_string(&f).unwrap();
                    std::fs::write(&f, format!("format: delta\n{text}")).unwrap();
                }
            }
        })
        .await
    }

    /// The test mesh with its configuration (and files under it) adjusted before loading.
    pub async fn load_with(adjust: impl FnOnce(&mut MeshConfig)) -> TestMesh {
        let dir = tempfile::tempdir().unwrap();
        let contracts = dir.path().join("contracts");
        copy_tree(&repo().join("contracts"), &contracts);
        copy_tree(&repo().join("tests/fixtures/lab"), &contracts.join("lab"));
        let lab = dir.path().join("lab-data");
        write_lab_data(&lab);
        let mut config = MeshConfig::at(repo());
        config.contracts = contracts;
        config.domain_roots.insert("lab".into(), lab);
        adjust(&mut config);
        let mesh = Arc::new(Mesh::load(config).await.unwrap());
        TestMesh { mesh, dir }
    }

    /// The gateway's query path over this mesh, planning as [`TestMesh::session`] does,
    /// with a cluster to route to (and the routing settings for it), or none.
    pub fn engine(
        &self,
        cluster: Option<(
            meshgate_cluster::Cluster,
            meshgate_server::config::DistributedConfig,
        )>,
    ) -> Arc<meshgate_server::query::QueryEngine> {
        let (cluster, distributed) = cluster.unzip();
        let options = meshgate_server::query::EngineOptions {
            limits: meshgate_server::config::Limits {
                target_partitions: Some(2),
                ..Default::default()
            },
            view_types: false,
            distributed,
            // The sessions the gateway builds: with pg_catalog, as both protocols plan.
            session_setup: vec![Arc::new(meshgate_server::pg::PgCatalog::new().unwrap())],
        };
        let audit = meshgate_server::audit::AuditLog::open(None).unwrap();
        Arc::new(
            meshgate_server::query::QueryEngine::new(
                Arc::clone(&self.mesh),
                options,
                key(),
                cluster,
                audit,
            )
            .unwrap(),
        )
    }

    pub fn session(&self, role_dir: &str) -> MeshSession {
        // Fixed partitioning, so that plans read the same on every machine.
        let mut options = SessionOptions::for_mesh(&self.mesh);
        options.config = options.config.with_target_partitions(2);
        MeshSession::with_options(&self.mesh, Policy::new(principal(role_dir), key()), options)
    }
}

/// Copies a folder tree (contracts, data) file by file.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

pub fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), cols.into_iter().map(|c| c.1).collect()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `accounts`: 100 rows; account 424242 is the only US row with an even id below 10.
pub fn write_lab_data(root: &Path) {
    let ids: Vec<i64> = (0..100)
        .map(|i| if i == 7 { 424242 } else { 1000 + i })
        .collect();
    let regions: Vec<&str> = (0..100)
        .map(|i| if i == 7 || i % 3 == 0 { "US" } else { "EU" })
        .collect();
    write_parquet(
        &root.join("accounts/v1/part-0.parquet"),
        vec![
            ("account_id", Arc::new(Int64Array::from(ids.clone()))),
            (
                "holder_name",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("Holder {i}")),
                )),
            ),
            (
                "balance",
                Arc::new(Float64Array::from_iter_values(
                    (0..100).map(|i| i as f64 * 10.5),
                )),
            ),
            ("region", Arc::new(StringArray::from(regions))),
        ],
    );
    write_parquet(
        &root.join("missing_column/v1/part-0.parquet"),
        vec![("id", Arc::new(Int64Array::from(vec![1, 2])))],
    );
    write_parquet(
        &root.join("wrong_type/v1/part-0.parquet"),
        vec![
            ("id", Arc::new(Int64Array::from(vec![1]))),
            ("amount", Arc::new(StringArray::from(vec!["12.50"]))),
        ],
    );
    let corrupt = root.join("corrupt/v1/part-0.parquet");
    std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
    std::fs::write(&corrupt, b"PAR1 this is not a parquet file at all PAR1").unwrap();
}

/// A minimal HTTP/1 GET, enough for the gateway's own endpoints (status line included).
pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    out
}
