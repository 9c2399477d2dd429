//! The same TPC-H data as Delta Lake tables against the Parquet folders: the 22 queries
//! through the mesh (contract tables, product scans) over each, row counts checked equal.
//! The tables are the folders' own Parquet files (linked), with a log the `deltalake`
//! package's `convert_to_deltalake` writes over them (tests/delta/sample_as_delta.py
//! --convert): the difference is reading through the log, not the files' encoding.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use meshgate_mesh::{Mesh, MeshConfig};

use crate::support;

pub(crate) struct DeltaQuery {
    pub(crate) name: String,
    pub(crate) parquet: Duration,
    pub(crate) delta: Duration,
}

pub(crate) async fn run(
    python: &Path,
    repo: &Path,
    cache: &Path,
    data: &Path,
    parquet: &SessionContext,
    queries: &[(String, String)],
    runs: usize,
) -> Vec<DeltaQuery> {
    let tables = cache.join("delta-converted");
    if !tables.join("tpch/lineitem/v1/_delta_log").exists() {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&tables);
        let out = Command::new(python)
            .arg(repo.join("tests/delta/sample_as_delta.py"))
            .arg("--convert")
            .arg(data)
            .arg(&tables)
            .arg("tpch")
            .output()
            .expect("the suite's Python runs");
        assert!(
            out.status.success(),
            "sample_as_delta.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "Delta logs written over the Parquet files by the deltalake package in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    // The suite's contracts, each saying `format: delta`.
    let contracts = repo.join("benches/tpch/contracts");
    let delta_contracts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(delta_contracts.path().join("tpch")).unwrap();
    std::fs::copy(
        contracts.join("governance.yaml"),
        delta_contracts.path().join("governance.yaml"),
    )
    .unwrap();
    for f in std::fs::read_dir(contracts.join("tpch")).unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap();
        let target = delta_contracts
            .path()
            .join("tpch")
            .join(f.file_name().unwrap());
        std::fs::write(target, format!("format: delta\n{text}")).unwrap();
    }
    let mut config = MeshConfig::at(repo);
    config.contracts = delta_contracts.path().to_path_buf();
    config.data = tables.clone();
    let mesh = Mesh::load(config).await.unwrap();
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    let delta = support::embedded(&mesh, "tpch");

    println!(
        "{:<5} {:>12} {:>12} {:>8}",
        "query", "parquet", "delta", "ratio"
    );
    support::compare_contexts(
        parquet,
        &delta,
        queries,
        runs,
        "from Delta tables as from Parquet folders",
    )
    .await
    .into_iter()
    .map(|(name, parquet, delta)| DeltaQuery {
        name,
        parquet,
        delta,
    })
    .collect()
}
