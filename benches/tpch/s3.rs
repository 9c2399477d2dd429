//! Local files against the same files on a local S3 server (moto, started with the
//! suite's Python): the 22 queries in embedded DataFusion over each, row counts checked
//! equal. moto is a Python server on the same two cores, so this measures the cost of
//! going through the object store protocol on one machine, not S3's speed.

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use meshgate_mesh::{Mesh, MeshConfig};

use crate::common::s3::LocalS3;
use crate::support;

const BUCKET: &str = "tpch-bench";

pub(crate) struct S3Query {
    pub(crate) name: String,
    pub(crate) local: Duration,
    pub(crate) s3: Duration,
}

pub(crate) async fn run(
    python: &Path,
    repo: &Path,
    contracts: &Path,
    data: &Path,
    local: &SessionContext,
    queries: &[(String, String)],
    runs: usize,
) -> Vec<S3Query> {
    let started = Instant::now();
    let moto = LocalS3::serving(python, BUCKET, data);
    println!(
        "local S3 server with the data ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut config = MeshConfig::at(repo);
    config.contracts = contracts.to_path_buf();
    config.data = data.to_path_buf();
    config
        .domain_roots
        .insert("tpch".into(), format!("s3://{BUCKET}/tpch").into());
    config.s3 = moto.config();
    let mesh = Mesh::load(config).await.unwrap();
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    let on_s3 = support::embedded(&mesh, "tpch");

    println!("{:<5} {:>12} {:>12} {:>8}", "query", "local", "S3", "ratio");
    let out =
        support::compare_contexts(local, &on_s3, queries, runs, "from S3 as from local files")
            .await
            .into_iter()
            .map(|(name, local, s3)| S3Query { name, local, s3 })
            .collect();
    drop(moto);
    out
}
