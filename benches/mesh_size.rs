//! How meshgate's costs grow with the number of products (issue 16): a generated mesh of
//! N copies of the sample `stock_levels` product (100 per domain, one hard-linked Parquet
//! file each), and for each N the time to load it (startup), to reload it unchanged, to
//! stamp every contract file (the reloader's poll), to reload it after one contract was
//! edited and found by that poll (wall and CPU time of the process), to build a
//! caller's session, and to plan a 1-row statement; then through a gateway on that mesh
//! (Flight SQL, in-process): the 1-row statement as ADBC sends it (prepare, execute,
//! fetch, close) and the listing `adbc_get_objects(depth="all")` asks for (GetTables
//! with every table's schema, fetched). Printed with the growth against the previous
//! size: linear growth reads as ratios close to the ratio of sizes.
//!
//! `cargo bench --bench mesh_size [-- --products 1000,10000,50000]` (default 1000, 2000,
//! 5000, 10000). Under `cargo test` it loads 200 products and checks they are served.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::sql::CommandGetTables;
use futures::TryStreamExt;
use meshgate_mesh::{Mesh, MeshConfig, contract_stamps};
use meshgate_policy::{HashKey, MeshSession, Policy, Principal};

#[path = "support/mod.rs"]
mod support;

const PER_DOMAIN: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--products")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| {
            if bench {
                vec![1000, 2000, 5000, 10000]
            } else {
                vec![200]
            }
        });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(&sizes, bench));
}

/// A mesh of `n` products under `root`.
fn generate(root: &Path, n: usize) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let contract = std::fs::read_to_string(repo.join("contracts/inventory/stock_levels.yaml"))
        .expect("the sample contract");
    let parquet = root.join("stock_levels.parquet");
    std::fs::copy(
        repo.join("sample-data/inventory/stock_levels/v1/part-0.parquet"),
        &parquet,
    )
    .expect("the sample data");
    for i in 0..n {
        let (domain, dataset) = (
            format!("d{:04}", i / PER_DOMAIN),
            format!("p{:03}", i % PER_DOMAIN),
        );
        let dir = root.join("contracts").join(&domain);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{dataset}.yaml")),
            contract.replace("dataset: stock_levels", &format!("dataset: {dataset}")),
        )
        .unwrap();
        let data = root
            .join("sample-data")
            .join(&domain)
            .join(&dataset)
            .join("v1");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::hard_link(&parquet, data.join("part-0.parquet"))
            .or_else(|_| std::fs::copy(&parquet, data.join("part-0.parquet")).map(|_| ()))
            .unwrap();
    }
}

/// GetTables with schemas, as `adbc_get_objects(depth="all")` asks, fetched: the number
/// of tables listed.
async fn tables(client: &mut support::Client) -> usize {
    let info = client
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut n = 0;
    for ep in info.endpoint {
        let stream = client.do_get(ep.ticket.unwrap()).await.unwrap();
        let batches: Vec<_> = stream.try_collect().await.unwrap();
        n += support::rows(&batches);
    }
    n
}

/// CPU time this process has used (user and system), from /proc: 10 ms ticks.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The served table of `d0000.<dataset>`.
fn table(mesh: &Mesh, dataset: &str) -> Arc<meshgate_mesh::ContractTable> {
    match mesh.catalog().served("d0000", dataset) {
        Some(t) => t,
        None => panic!("d0000.{dataset} is served"),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(sizes: &[usize], bench: bool) {
    let key = Arc::new(HashKey::new(b"mesh-size-bench-key-0123456789").unwrap());
    let analyst = Principal::new("analyst", ["data_analyst"]);
    if bench {
        println!(
            "{:>8} {:>10} {:>9} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "products",
            "load",
            "growth",
            "reload",
            "growth",
            "poll",
            "edit one",
            "its cpu",
            "session",
            "statement",
            "gw stmt",
            "gw tables"
        );
    }
    let mut previous: Option<(usize, Duration, Duration)> = None;
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), n);
        let config = MeshConfig::at(dir.path());

        let s = Instant::now();
        let mesh = Mesh::load(config).await.unwrap();
        let load = s.elapsed();
        assert_eq!(mesh.products().len(), n, "{:?}", mesh.quarantined().first());

        let s = Instant::now();
        let reloaded = mesh.reload().await.unwrap();
        let reload = s.elapsed();
        assert_eq!(reloaded.products().len(), n);

        // What the reloader does each interval: stamp every contract file.
        let mut polls = Vec::new();
        for _ in 0..if bench { 5 } else { 1 } {
            let s = Instant::now();
            let stamps = contract_stamps(mesh.config());
            polls.push(s.elapsed());
            assert_eq!(stamps.len(), n);
        }

        // One contract edited, then reloaded as the reloader does once its walk found the
        // file. Several edits, their total CPU time divided (the clock ticks every 10 ms).
        let edits = if bench { 20 } else { 2 };
        let file = dir.path().join("contracts/d0000/p000.yaml");
        let original = std::fs::read_to_string(&file).unwrap();
        let mut edited = Vec::new();
        let mut current = reloaded;
        let cpu_before = cpu_time();
        for i in 0..edits {
            std::fs::write(&file, format!("{original}\n# edit {i}\n")).unwrap();
            let s = Instant::now();
            let mut changed = HashSet::new();
            changed.insert(file.clone());
            let next = current
                .reload_files(&changed, &HashSet::new())
                .await
                .unwrap();
            edited.push(s.elapsed());
            assert_eq!(next.products().len(), n);
            assert!(
                !Arc::ptr_eq(&table(&next, "p000"), &table(&current, "p000"))
                    && Arc::ptr_eq(&table(&next, "p001"), &table(&current, "p001")),
                "the edited product alone is bound again"
            );
            current = next;
        }
        let edit_cpu = cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| (after - before) / edits);

        let runs = if bench { 21 } else { 1 };
        let (mut sessions, mut statements) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let s = Instant::now();
            let session = MeshSession::new(&mesh, Policy::new(analyst.clone(), Arc::clone(&key)));
            sessions.push(s.elapsed());
            let s = Instant::now();
            let df = session
                .sql("SELECT count(*) FROM d0000.p000")
                .await
                .unwrap();
            df.create_physical_plan().await.unwrap();
            statements.push(s.elapsed());
        }
        // Through a gateway: what a notebook's statement and its catalog browser cost.
        let (server, mut clients) = support::gateway(Arc::new(mesh)).await;
        let client = &mut clients[0];
        let (mut gw_statements, mut listings) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let s = Instant::now();
            let b = support::prepared(client, "SELECT count(*) FROM d0000.p000").await;
            let statement = s.elapsed();
            assert_eq!(support::rows(&b), 1);
            let s = Instant::now();
            let listed = tables(client).await;
            let listing = s.elapsed();
            assert!(
                listed >= n,
                "every product listed with its schema: {listed} of {n}"
            );
            if run > 0 {
                gw_statements.push(statement);
                listings.push(listing);
            }
        }
        drop(clients);
        drop(server);
        if bench {
            let growth = |now: Duration, before: Duration| now.as_secs_f64() / before.as_secs_f64();
            let (g_load, g_reload) = match previous {
                Some((_, l, r)) => (
                    format!("{:.2}x", growth(load, l)),
                    format!("{:.2}x", growth(reload, r)),
                ),
                None => ("".into(), "".into()),
            };
            println!(
                "{n:>8} {:>8.0}ms {g_load:>9} {:>8.0}ms {g_reload:>9} {:>8.1}ms {:>8.1}ms {:>8.1}ms \
                 {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.1}ms",
                load.as_secs_f64() * 1e3,
                reload.as_secs_f64() * 1e3,
                median(polls).as_secs_f64() * 1e3,
                median(edited).as_secs_f64() * 1e3,
                edit_cpu.unwrap_or_default().as_secs_f64() * 1e3,
                median(sessions).as_secs_f64() * 1e3,
                median(statements).as_secs_f64() * 1e3,
                median(gw_statements).as_secs_f64() * 1e3,
                median(listings).as_secs_f64() * 1e3,
            );
        }
        previous = Some((n, load, reload));
    }
}
