//! The gateway against embedded DataFusion on the same files, measured in one run and
//! printed as ratios (issue 4): the same queries through Flight SQL (local client) and in
//! a plain DataFusion session, and the Flight throughput of a wide result.
//!
//! `cargo bench --bench gateway [-- --scale N]` (default scale 20: 1M orders). Under
//! `cargo test` it only checks that it builds.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use meshgate_mesh::{Mesh, MeshConfig};

const QUERIES: &[(&str, &str)] = &[
    (
        "count",
        "SELECT count(*) FROM checkout.checkout_orders_summary",
    ),
    (
        "group_by_email",
        "SELECT user_email, sum(total_amount) FROM checkout.checkout_orders_summary GROUP BY user_email ORDER BY 2 DESC LIMIT 10",
    ),
    (
        "filter",
        "SELECT order_id, total_amount FROM checkout.checkout_orders_summary WHERE total_amount > 2000",
    ),
    (
        "join",
        "SELECT c.region, count(*) FROM checkout.checkout_orders_summary o JOIN customers.customer_profiles c ON o.user_email = c.email GROUP BY c.region",
    ),
];
const WIDE: &str = "SELECT * FROM web.web_sessions";
const RUNS: usize = 5;

/// Bytes of the values themselves (slices count their slice, not the buffer they share).
fn bytes(b: &[RecordBatch]) -> usize {
    b.iter()
        .flat_map(|b| b.columns())
        .map(|c| c.to_data().get_slice_memory_size().unwrap())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let scale = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // `--wide-only` skips the query table, for profiling the throughput part alone.
    let wide_only = args.iter().any(|a| a == "--wide-only");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(scale, wide_only));
}

async fn run(scale: usize, wide_only: bool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    meshgate_sample::write_sample_mesh(&dir.path().join("sample-data"), scale).unwrap();
    let mut mesh_config = MeshConfig::at(dir.path());
    mesh_config.contracts = repo.join("contracts");
    let mesh = Arc::new(Mesh::load(mesh_config).await.unwrap());
    assert!(mesh.quarantined().is_empty());

    let ctx = support::embedded(&mesh, "default");
    let (server, mut clients) = support::gateway(Arc::clone(&mesh)).await;

    println!(
        "scale {scale}; median of {RUNS} runs after one warm-up; ratios to embedded DataFusion"
    );
    if !wide_only {
        let queries: Vec<(String, String)> = QUERIES
            .iter()
            .map(|(n, q)| (n.to_string(), q.to_string()))
            .collect();
        support::compare(&ctx, &mut clients, &queries, RUNS).await;
    }

    // Throughput of a wide result: Arrow bytes received per second.
    let mut te = Vec::new();
    let mut tf = Vec::new();
    let mut size = 0;
    for run in 0..=if wide_only { 20 } else { RUNS } {
        let s = Instant::now();
        let e = support::embedded_run(&ctx, WIDE).await;
        let d0 = s.elapsed();
        let s = Instant::now();
        let f = support::flight(&mut clients[0], WIDE).await;
        let d1 = s.elapsed();
        size = bytes(&f);
        assert_eq!(
            e.iter().map(|b| b.num_rows()).sum::<usize>(),
            f.iter().map(|b| b.num_rows()).sum::<usize>()
        );
        if run > 0 {
            te.push(d0);
            tf.push(d1);
        }
    }
    let (de, df) = (support::median(te), support::median(tf));
    let mb = size as f64 / 1e6;
    println!(
        "wide result ({WIDE}, {mb:.0} MB of Arrow): embedded collect {:.0} MB/s, Flight {:.0} MB/s, ratio {:.2}",
        mb / de.as_secs_f64(),
        mb / df.as_secs_f64(),
        df.as_secs_f64() / de.as_secs_f64()
    );
    server.shutdown().await.unwrap();
}
