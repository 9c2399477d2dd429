//! The gateway against embedded DataFusion on the same files, measured in one run and
//! printed as ratios (issue 4): the same queries through Flight SQL (local client) and in
//! a plain DataFusion session, and the Flight throughput of a wide result.
//!
//! `cargo bench --bench gateway [-- --scale N]` (default scale 20: 1M orders). Under
//! `cargo test` it only checks that it builds.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use meshgate_catalog::{Mesh, MeshConfig};
use tonic::transport::Channel;

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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn embedded(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn flight(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.into(), None).await.unwrap();
    let mut out = Vec::new();
    for ep in info.endpoint {
        let stream = client.do_get(ep.ticket.unwrap()).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

/// Bytes of the values themselves (slices count their slice, not the buffer they share).
/// One line: embedded time, then each gateway time with its ratio to embedded.
fn print_row(name: &str, t: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |d: Duration| d.as_secs_f64() / t[0].as_secs_f64();
    println!(
        "{name:<16} {:>10.1}ms {:>12.1}ms {:>8.2} {:>12.1}ms {:>8.2}",
        ms(t[0]),
        ms(t[1]),
        ratio(t[1]),
        ms(t[2]),
        ratio(t[2])
    );
}

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
    println!(
        "{:<16} {:>12} {:>14} {:>8} {:>14} {:>8}",
        "query", "embedded", "gw analyst", "ratio", "gw marketer", "ratio"
    );
    let mut totals = [Duration::ZERO; 3];
    for (name, sql) in QUERIES.iter().filter(|_| !wide_only) {
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        for run in 0..=RUNS {
            let s = Instant::now();
            let e = embedded(&ctx, sql).await;
            let d0 = s.elapsed();
            let s = Instant::now();
            let a = flight(&mut clients[0], sql).await;
            let d1 = s.elapsed();
            let s = Instant::now();
            flight(&mut clients[1], sql).await;
            let d2 = s.elapsed();
            let rows = |b: &[RecordBatch]| b.iter().map(|b| b.num_rows()).sum::<usize>();
            assert_eq!(
                rows(&e),
                rows(&a),
                "{name}: the analyst must see what DataFusion sees"
            );
            if run > 0 {
                t[0].push(d0);
                t[1].push(d1);
                t[2].push(d2);
            }
        }
        let m: Vec<Duration> = t.into_iter().map(median).collect();
        for i in 0..3 {
            totals[i] += m[i];
        }
        print_row(name, &m);
    }
    print_row("total", &totals);

    // Throughput of a wide result: Arrow bytes received per second.
    let mut te = Vec::new();
    let mut tf = Vec::new();
    let mut size = 0;
    for run in 0..=if wide_only { 20 } else { RUNS } {
        let s = Instant::now();
        let e = embedded(&ctx, WIDE).await;
        let d0 = s.elapsed();
        let s = Instant::now();
        let f = flight(&mut clients[0], WIDE).await;
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
    let (de, df) = (median(te), median(tf));
    let mb = size as f64 / 1e6;
    println!(
        "wide result ({WIDE}, {mb:.0} MB of Arrow): embedded collect {:.0} MB/s, Flight {:.0} MB/s, ratio {:.2}",
        mb / de.as_secs_f64(),
        mb / df.as_secs_f64(),
        df.as_secs_f64() / de.as_secs_f64()
    );
    server.shutdown().await.unwrap();
}
