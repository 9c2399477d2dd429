//! The same TPC-H data as Delta Lake tables against the Parquet folders: the 22 queries
//! through the mesh (contract tables, product scans) over each, row counts checked equal.
//! The tables are the folders' own Parquet files (linked), with a log the `deltalake`
//! package's `convert_to_deltalake` writes over them (tests/delta/sample_as_delta.py
//! --convert): the difference is reading through the log, not the files' encoding.
//! Then the same through two `meshgate serve` processes, one per mesh, over Flight SQL as
//! the analyst (clear columns) and the marketer (masks at the Delta scan).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use meshgate_mesh::{Mesh, MeshConfig};

use crate::Options;
use crate::server::GatewayProcess;
use crate::support;

pub(crate) struct DeltaQuery {
    pub(crate) name: String,
    pub(crate) parquet: Duration,
    pub(crate) delta: Duration,
    /// Through the gateways, per role (analyst, marketer): (Parquet mesh, Delta mesh).
    pub(crate) gateway: [(Duration, Duration); 2],
}

pub(crate) async fn run(
    python: &Path,
    repo: &Path,
    cache: &Path,
    data: &Path,
    parquet: &SessionContext,
    queries: &[(String, String)],
    o: &Options,
) -> Vec<DeltaQuery> {
    let runs = o.runs;
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
    let embedded = support::compare_contexts(
        parquet,
        &delta,
        queries,
        runs,
        "from Delta tables as from Parquet folders",
    )
    .await;

    println!("\nthrough the gateway (Flight SQL): Parquet mesh vs Delta mesh, per role");
    let gateways = cache.join("delta-gateways");
    let on_parquet = GatewayProcess::start(
        &contracts,
        data,
        &gateways.join("parquet"),
        o.memory_limit_mb,
        None,
    )
    .await;
    let on_delta = GatewayProcess::start(
        delta_contracts.path(),
        &tables,
        &gateways.join("delta"),
        o.memory_limit_mb,
        None,
    )
    .await;
    let mut clients = Vec::new();
    for g in [&on_parquet, &on_delta] {
        for user in ["analyst", "marketer"] {
            clients.push(support::connect(g.flight_addr, user).await.unwrap());
        }
    }
    println!(
        "{:<5} {:>12} {:>12} {:>8} {:>12} {:>12} {:>8}",
        "query", "an. parquet", "an. delta", "ratio", "mk. parquet", "mk. delta", "ratio"
    );
    let mut out = Vec::new();
    for ((name, sql), (_, p, d)) in queries.iter().zip(embedded) {
        // Parquet analyst, Parquet marketer, Delta analyst, Delta marketer, interleaved.
        let mut t: [Vec<Duration>; 4] = Default::default();
        for run in 0..=runs {
            let mut rows = [0; 4];
            for (i, c) in clients.iter_mut().enumerate() {
                let s = Instant::now();
                rows[i] = support::rows(&support::flight(c, sql).await);
                if run > 0 {
                    t[i].push(s.elapsed());
                }
            }
            assert_eq!(
                rows[0], rows[2],
                "{name}: the analyst's rows from either mesh"
            );
            assert_eq!(
                rows[1], rows[3],
                "{name}: the marketer's rows from either mesh"
            );
        }
        let [pa, pm, da, dm] = t.map(support::median);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<5} {:>10.1}ms {:>10.1}ms {:>8.2} {:>10.1}ms {:>10.1}ms {:>8.2}",
            ms(pa),
            ms(da),
            ms(da) / ms(pa),
            ms(pm),
            ms(dm),
            ms(dm) / ms(pm)
        );
        out.push(DeltaQuery {
            name: name.clone(),
            parquet: p,
            delta: d,
            gateway: [(pa, da), (pm, dm)],
        });
    }
    on_parquet.stop().await;
    on_delta.stop().await;
    out
}
