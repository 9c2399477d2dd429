//! The benchmark suite (issue 6), on TPC-H data generated with tpchgen:
//! - the 22 queries in embedded DataFusion, through the gateway as the analyst (clear) and
//!   as the marketer (customer and supplier PII masked), and in DuckDB, same Parquet files;
//! - the mask cost: the same scans clear and masked;
//! - load: 1, 8, 32, 64 clients on a mixed workload, with the gateway's RSS;
//! - with `--s3`: the 22 queries on local files against the same files on a local S3
//!   server (moto);
//! - scale-out: the 22 queries as the marketer locally and on a Ballista cluster (a
//!   scheduler and two executors, `meshgate cluster`, on this machine), and the same
//!   tickets fetched from two gateway replicas.
//!
//! The gateway is the real `meshgate serve` in its own process. `benches/run-suite.sh`
//! runs it all and writes `benches/RESULTS.md`; by hand:
//! `cargo bench --bench tpch -- [--sf 1] [--runs 3] [--load-secs 20] [--clients 1,8,32,64]
//! [--memory-limit-mb 1024] [--python PATH-with-duckdb-and-moto] [--s3] [--results FILE]
//! [--layout bench|tpchgen-cli]`. Ratios are to stock DataFusion (`register_parquet`) on
//! the same files. `--layout tpchgen-cli` writes the files as `tpchgen-cli --format parquet`
//! does by default (strings as `Utf8View`, Snappy) instead of classic `Utf8` and zstd.
//! Data is cached in `benches/.cache/tpch-sf<SF>[-tpchgen-cli]/` (not committed).
//!
//! Under `cargo test` it runs the whole suite small (SF 0.01, one run, one second per load
//! level) so that it cannot rot; DuckDB, S3 and Delta tables are included when
//! `MESHGATE_BENCH_PYTHON` is set.

#[path = "../support/mod.rs"]
mod support;

/// What the tests use to start a local S3 server and a local Ballista cluster.
#[allow(dead_code, unreachable_pub)]
mod common;
mod data;
mod delta;
mod duckdb;
mod load;
mod postgres;
mod report;
mod s3;
mod scaleout;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshgate_mesh::{Mesh, MeshConfig};

/// The scans of the mask-cost table: every masked column of customer (hash, null, last4)
/// and supplier, output in full, then aggregated so the transfer does not hide the masks.
pub(crate) const MASK_SCANS: &[(&str, &str)] = &[
    (
        "customer",
        "SELECT c_custkey, c_name, c_address, c_phone FROM tpch.customer",
    ),
    (
        "customer_distinct",
        "SELECT count(DISTINCT c_name), count(DISTINCT c_phone), count(c_address) FROM tpch.customer",
    ),
    (
        "supplier",
        "SELECT s_suppkey, s_name, s_address, s_phone FROM tpch.supplier",
    ),
];

struct Options {
    sf: f64,
    runs: usize,
    load_secs: u64,
    clients: Vec<usize>,
    memory_limit_mb: usize,
    python: Option<PathBuf>,
    s3: bool,
    results: Option<PathBuf>,
    command: String,
    layout: data::Layout,
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    let v = args.get(i + 1)?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: cannot read {v:?}")),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    // Only the Postgres section (the 22 queries over both protocols, psycopg vs PostgreSQL).
    let postgres_only = args.iter().any(|a| a == "--postgres-only");
    // Only the Delta section (the 22 queries from Delta tables and from Parquet folders).
    let delta_only = args.iter().any(|a| a == "--delta-only");
    let python = arg::<PathBuf>(&args, "--python")
        .or_else(|| std::env::var_os("MESHGATE_BENCH_PYTHON").map(PathBuf::from));
    let options = if bench {
        Options {
            sf: arg(&args, "--sf").unwrap_or(1.0),
            runs: arg(&args, "--runs").unwrap_or(3usize).max(1),
            load_secs: arg(&args, "--load-secs").unwrap_or(20),
            clients: arg::<String>(&args, "--clients")
                .unwrap_or_else(|| "1,8,32,64".into())
                .split(',')
                .map(|c| c.trim().parse().expect("--clients: a list like 1,8,32,64"))
                .collect(),
            memory_limit_mb: arg(&args, "--memory-limit-mb").unwrap_or(1024),
            s3: args.iter().any(|a| a == "--s3"),
            python,
            results: arg(&args, "--results"),
            command: std::env::var("MESHGATE_BENCH_COMMAND")
                .unwrap_or_else(|_| "cargo bench --bench tpch".into()),
            layout: arg::<String>(&args, "--layout")
                .map_or(data::Layout::Bench, |l| data::Layout::named(&l)),
        }
    } else {
        Options {
            sf: std::env::var("MESHGATE_BENCH_SF")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.01),
            runs: 1,
            load_secs: 1,
            clients: vec![1, 4],
            memory_limit_mb: 512,
            s3: python.is_some(),
            python,
            results: None,
            command: "cargo test --bench tpch".into(),
            layout: data::Layout::Bench,
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    if postgres_only {
        rt.block_on(postgres_section(&options));
        return;
    }
    if delta_only {
        rt.block_on(delta_section(&options));
        return;
    }
    let report = rt.block_on(run(&options));
    if !bench {
        smoke_checks(&report, options.python.is_some());
    }
}

/// What the small run under `cargo test` must show: every part ran and produced numbers.
fn smoke_checks(markdown: &str, with_python: bool) {
    let mut sections = vec![
        "## Targets",
        "## TPC-H SF",
        "| q22 |",
        "## Mask cost",
        "## Postgres port",
        "## Distributed",
        "## Cluster transport",
        "## Replicas",
        "## Load",
    ];
    if with_python {
        sections.extend([
            "| DuckDB |",
            "## Local files vs a local S3 server",
            "## Delta tables vs Parquet folders",
            "psycopg fetching tpch.lineitem",
        ]);
    }
    for section in sections {
        assert!(markdown.contains(section), "{section} missing:\n{markdown}");
    }
    println!("tpch suite smoke run: ok");
}

/// `--postgres-only`: the Postgres section alone, written to `--results` as the suite
/// writes it (run-suite.sh appends such sections to RESULTS.md).
async fn postgres_section(o: &Options) {
    let (repo, cache, data_dir, contracts) = files(o);
    let gateway = server::GatewayProcess::start(
        &contracts,
        &data_dir,
        &cache.join("gateway"),
        o.memory_limit_mb,
        None,
    )
    .await;
    let queries = data::queries(repo);
    let (pg, fetch) = postgres::compare(
        gateway.flight_addr,
        gateway.pg_addr,
        &queries,
        o.runs,
        o.python.as_deref(),
        repo,
    )
    .await;
    gateway.stop().await;
    let text = report::postgres_markdown(o.sf, o.runs, &pg, fetch.as_ref());
    if let Some(path) = &o.results {
        std::fs::write(path, &text).unwrap();
    }
    print!("{text}");
}

async fn delta_section(o: &Options) {
    let (repo, cache, data_dir, contracts) = files(o);
    let python = o
        .python
        .as_deref()
        .expect("--delta-only needs --python (a Python with deltalake)");
    let mut mesh_config = MeshConfig::at(repo);
    mesh_config.contracts = contracts;
    mesh_config.data = data_dir.clone();
    let mesh = Mesh::load(mesh_config).await.unwrap();
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    let ctx = support::embedded(&mesh, "tpch");
    let queries = data::queries(repo);
    let delta = delta::run(python, repo, &cache, &data_dir, &ctx, &queries, o).await;
    let text = format!(
        "{}\n(SF{}, `{}`)\n",
        report::delta_markdown(o.runs, &delta),
        o.sf,
        o.command
    );
    if let Some(path) = &o.results {
        std::fs::write(path, &text).unwrap();
    }
    print!("{text}");
}

/// The repository, this scale's cache folder, its data (generated once) and the contracts.
fn files(o: &Options) -> (&'static Path, PathBuf, PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = repo.join(format!(
        "benches/.cache/tpch-sf{}{}",
        o.sf,
        o.layout.suffix()
    ));
    let data_dir = cache.join("data");
    data::generate(&data_dir, o.sf, o.layout);
    (repo, cache, data_dir, repo.join("benches/tpch/contracts"))
}

async fn run(o: &Options) -> String {
    let (repo, cache, data_dir, contracts) = files(o);
    let mut mesh_config = MeshConfig::at(repo);
    mesh_config.contracts = contracts.clone();
    mesh_config.data = data_dir.clone();
    let mesh = Arc::new(Mesh::load(mesh_config).await.unwrap());
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    let ctx = support::embedded(&mesh, "tpch");
    let folders: Vec<(String, PathBuf)> = data::TABLES
        .iter()
        .map(|t| (t.to_string(), data_dir.join("tpch").join(t).join("v1")))
        .collect();
    let stock = support::stock("tpch", &folders).await;

    let started = std::time::Instant::now();
    let cluster = common::cluster::LocalCluster::start(&common::cluster::ClusterSpec::default());
    println!(
        "Ballista cluster (scheduler + 2 executors) ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Two more for the cost of mutual TLS: it needs pull scheduling, so a plaintext pull
    // cluster separates TLS from pull. Idle, they poll their scheduler only.
    let pki = tempfile::tempdir().unwrap();
    let tls_files = common::pki::Authority::new("bench-cluster").issue(pki.path(), "node");
    let pull_cluster = common::cluster::LocalCluster::start(&common::cluster::ClusterSpec {
        scheduling: Some("pull"),
        ..Default::default()
    });
    let tls_cluster = common::cluster::LocalCluster::start(&common::cluster::ClusterSpec {
        tls: Some(&tls_files),
        ..Default::default()
    });
    // Both replicas know the cluster, as in a deployment; only a caller's
    // `x-meshgate-execution: distributed` sends a query there.
    let gateway = server::GatewayProcess::start(
        &contracts,
        &data_dir,
        &cache.join("gateway"),
        o.memory_limit_mb,
        Some(&cluster),
    )
    .await;
    let mut clients = vec![
        support::connect(gateway.flight_addr, "analyst")
            .await
            .unwrap(),
        support::connect(gateway.flight_addr, "marketer")
            .await
            .unwrap(),
    ];
    println!(
        "TPC-H SF{} ({}): median of {} runs after one warm-up; ratios to stock embedded \
         DataFusion on the same files",
        o.sf,
        o.layout.describe(),
        o.runs
    );
    let queries = data::queries(repo);
    let tpch = support::compare(&stock, &mut clients, &queries, o.runs).await;

    println!("\nmask cost: the same scans clear (analyst) and masked (marketer)");
    let scans: Vec<(String, String)> = MASK_SCANS
        .iter()
        .map(|(name, sql)| (name.to_string(), sql.to_string()))
        .collect();
    let masks = support::compare(&stock, &mut clients, &scans, o.runs * 3).await;
    drop(clients);

    let (pg_queries, pg_fetch) = postgres::compare(
        gateway.flight_addr,
        gateway.pg_addr,
        &queries,
        o.runs,
        o.python.as_deref(),
        repo,
    )
    .await;

    let duckdb = o.python.as_ref().map(|python| {
        println!("\nDuckDB on the same files");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let d = duckdb::run(python, repo, &data_dir, o.runs, threads);
        for ((name, rows, t), q) in d.queries.iter().zip(&tpch) {
            assert_eq!(
                (name, *rows),
                (&q.name, q.rows),
                "DuckDB and DataFusion agree on the row count"
            );
            println!("{name:<5} {:>10.1}ms", t.as_secs_f64() * 1e3);
        }
        d
    });

    let s3 = match (&o.python, o.s3) {
        (Some(python), true) => {
            println!("\nlocal files vs a local S3 server (moto), embedded DataFusion");
            s3::run(python, repo, &contracts, &data_dir, &ctx, &queries, o.runs).await
        }
        (None, true) => panic!("--s3 needs --python (a Python with moto)"),
        _ => Vec::new(),
    };

    let delta = match &o.python {
        Some(python) => {
            println!("\nDelta tables vs the same Parquet folders, through the mesh");
            delta::run(python, repo, &cache, &data_dir, &ctx, &queries, o).await
        }
        None => Vec::new(),
    };

    println!("\nscale-out: the gateway as marketer, local and on the cluster");
    let mut others = Vec::new();
    for (name, c) in [
        ("gateway-pull", &pull_cluster),
        ("gateway-tls", &tls_cluster),
    ] {
        let g = server::GatewayProcess::start(
            &contracts,
            &data_dir,
            &cache.join(name),
            o.memory_limit_mb,
            Some(c),
        )
        .await;
        others.push(g);
    }
    let distributed = scaleout::distributed(
        gateway.flight_addr,
        [
            gateway.flight_addr,
            others[0].flight_addr,
            others[1].flight_addr,
        ],
        &queries,
        o.runs,
    )
    .await;
    for g in others {
        g.stop().await;
    }
    drop((pull_cluster, tls_cluster));
    let replica_b = server::GatewayProcess::start(
        &contracts,
        &data_dir,
        &cache.join("gateway-b"),
        o.memory_limit_mb,
        Some(&cluster),
    )
    .await;
    println!("\nreplicas: tickets from gateway A fetched from A and from B");
    let replicas =
        scaleout::replicas(gateway.flight_addr, replica_b.flight_addr, &queries, o.runs).await;
    replica_b.stop().await;

    println!(
        "\nload: mixed workload, {} s per level, gateway memory limit {} MiB",
        o.load_secs, o.memory_limit_mb
    );
    let customers = (150_000.0 * o.sf).max(1.0) as u64;
    let mut levels = Vec::new();
    for &n in &o.clients {
        let l = load::level(
            &gateway,
            n,
            Duration::from_secs(o.load_secs),
            &queries,
            customers,
        )
        .await;
        load::print(&l, o.memory_limit_mb);
        levels.push(l);
    }
    let log = gateway.log.clone();
    let max_concurrent_queries = gateway.max_concurrent_queries;
    gateway.stop().await;
    drop(cluster);

    let run = report::Run {
        sf: o.sf,
        runs: o.runs,
        load_secs: o.load_secs,
        command: o.command.clone(),
        tpch: &tpch,
        masks: &masks,
        postgres: &pg_queries,
        pg_fetch: pg_fetch.as_ref(),
        duckdb: duckdb.as_ref(),
        s3: &s3,
        delta: &delta,
        distributed: &distributed,
        replicas: &replicas,
        load: &levels,
        memory_limit_mb: o.memory_limit_mb,
        max_concurrent_queries,
    };
    println!("\ntargets:");
    for t in run.targets() {
        println!(
            "  {}: {} (goal {}) {}",
            t.what,
            t.measured,
            t.goal,
            if t.met { "met" } else { "NOT MET" }
        );
    }
    let markdown = run.markdown(repo);
    if let Some(path) = &o.results {
        std::fs::write(path, &markdown).unwrap();
        println!("\nwrote {}", path.display());
    }
    if levels.iter().any(|l| l.errors > 0) {
        println!("gateway log: {}", log.display());
    }
    markdown
}
