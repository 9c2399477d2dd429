//! Small queries, as dashboards send them: the sample mesh through the gateway against
//! embedded DataFusion on the same files, measured in one run and printed as ratios
//! (issue 16). Each gateway statement goes as ADBC sends it: CreatePreparedStatement,
//! GetFlightInfo, DoGet, ClosePreparedStatement, on one connection per role.
//!
//! `cargo bench --bench small [-- --runs N]` (default 31 runs, interleaved: each run
//! sends every query once through each path). Under `cargo test` it runs each query
//! once through every path and checks the answers agree.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshgate_mesh::{Mesh, MeshConfig};

/// What a dashboard over the sample mesh asks: counts, lookups by key, small groups, top-N,
/// one join (on a hashed key for the marketer); every one readable by both roles, with as
/// many rows for each.
const QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM inventory.stock_levels"),
    (
        "count_where",
        "SELECT count(*) FROM inventory.stock_levels WHERE warehouse_id = 'BER1'",
    ),
    (
        "sum_by_wh",
        "SELECT warehouse_id, sum(quantity) FROM inventory.stock_levels GROUP BY warehouse_id ORDER BY 1",
    ),
    (
        "low_stock",
        "SELECT sku, warehouse_id, quantity FROM inventory.stock_levels WHERE quantity < 5 ORDER BY quantity, sku LIMIT 20",
    ),
    (
        "sku_lookup",
        "SELECT * FROM inventory.stock_levels WHERE sku = 'SKU-00042'",
    ),
    (
        "latest",
        "SELECT max(updated_at) FROM inventory.stock_levels",
    ),
    (
        "orders",
        "SELECT count(*) FROM checkout.checkout_orders_summary",
    ),
    (
        "revenue",
        "SELECT sum(total_amount), avg(total_amount) FROM checkout.checkout_orders_summary",
    ),
    (
        "big_orders",
        "SELECT order_id, total_amount FROM checkout.checkout_orders_summary ORDER BY total_amount DESC LIMIT 10",
    ),
    (
        "order_lookup",
        "SELECT * FROM checkout.checkout_orders_summary WHERE order_id = '000147b7-9887-4e25-8e90-136df96f9c3b'",
    ),
    (
        "customers",
        "SELECT count(*) FROM customers.customer_profiles",
    ),
    (
        "by_region",
        "SELECT region, count(*) FROM customers.customer_profiles GROUP BY region ORDER BY 2 DESC",
    ),
    (
        "by_tier",
        "SELECT loyalty_tier, count(*) FROM customers.customer_profiles GROUP BY loyalty_tier ORDER BY 1",
    ),
    (
        "customer",
        "SELECT * FROM customers.customer_profiles WHERE customer_id = 'C000042'",
    ),
    ("sessions", "SELECT count(*) FROM web.web_sessions"),
    (
        "by_country",
        "SELECT country, count(*), avg(page_views) FROM web.web_sessions GROUP BY country ORDER BY 2 DESC LIMIT 5",
    ),
    (
        "bounce",
        "SELECT avg(CASE WHEN bounced THEN 1.0 ELSE 0.0 END) FROM web.web_sessions",
    ),
    (
        "recent",
        "SELECT session_id, started_at FROM web.web_sessions ORDER BY started_at DESC LIMIT 10",
    ),
    (
        "join",
        "SELECT c.loyalty_tier, count(*) FROM checkout.checkout_orders_summary o JOIN customers.customer_profiles c ON o.user_email = c.email GROUP BY 1 ORDER BY 1",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 31 } else { 1 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    // `--profile N`: only the analyst's gateway statements, N rounds, for a profiler.
    if let Some(n) = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
    {
        rt.block_on(profile(n));
        return;
    }
    rt.block_on(run(runs, bench));
}

async fn run(runs: usize, bench: bool) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mesh = Arc::new(Mesh::load(MeshConfig::at(repo)).await.unwrap());
    let ctx = support::embedded(&mesh, "default");
    let (server, mut clients) = support::gateway(Arc::clone(&mesh)).await;

    // [embedded, analyst, marketer] per query, run by run.
    let mut times: Vec<[Vec<Duration>; 3]> = QUERIES.iter().map(|_| Default::default()).collect();
    // One warm-up run, not counted.
    for run in 0..=runs {
        for (i, (name, sql)) in QUERIES.iter().enumerate() {
            let s = Instant::now();
            let e = support::embedded_run(&ctx, sql).await;
            let d0 = s.elapsed();
            let s = Instant::now();
            let a = support::prepared(&mut clients[0], sql).await;
            let d1 = s.elapsed();
            let s = Instant::now();
            let m = support::prepared(&mut clients[1], sql).await;
            let d2 = s.elapsed();
            if run == 0 {
                assert_eq!(
                    support::rows(&e),
                    support::rows(&a),
                    "{name}: the analyst sees what DataFusion sees"
                );
                assert_eq!(support::rows(&a), support::rows(&m), "{name}: same rows");
            } else {
                times[i][0].push(d0);
                times[i][1].push(d1);
                times[i][2].push(d2);
            }
        }
    }
    if !bench {
        phases(
            &ctx,
            &mesh,
            server.flight_addr,
            &mut clients[0],
            QUERIES[0].1,
            1,
        )
        .await;
        server.shutdown().await.unwrap();
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "sample mesh, {runs} interleaved runs, medians; gateway statements prepared as ADBC does"
    );
    println!(
        "{:<13} {:>9} {:>9} {:>6} {:>9} {:>6}",
        "query", "embedded", "analyst", "ratio", "marketer", "ratio"
    );
    let mut totals = [Duration::ZERO; 3];
    let mut fixed = Vec::new();
    for ((name, _), t) in QUERIES.iter().zip(times) {
        let m: Vec<Duration> = t.into_iter().map(support::median).collect();
        for i in 0..3 {
            totals[i] += m[i];
        }
        if *name == "count" {
            fixed = m.clone();
        }
        println!(
            "{name:<13} {:>7.2}ms {:>7.2}ms {:>6.2} {:>7.2}ms {:>6.2}",
            ms(m[0]),
            ms(m[1]),
            m[1].as_secs_f64() / m[0].as_secs_f64(),
            ms(m[2]),
            m[2].as_secs_f64() / m[0].as_secs_f64()
        );
    }
    println!(
        "{:<13} {:>7.2}ms {:>7.2}ms {:>6.2} {:>7.2}ms {:>6.2}   (targets: 1.3 analyst, 1.5 marketer)",
        "total",
        ms(totals[0]),
        ms(totals[1]),
        totals[1].as_secs_f64() / totals[0].as_secs_f64(),
        ms(totals[2]),
        totals[2].as_secs_f64() / totals[0].as_secs_f64()
    );
    println!(
        "fixed cost of a 1-row statement (count): {:.2} ms over embedded as the analyst, {:.2} ms as the marketer (target 1 ms)",
        ms(fixed[1].saturating_sub(fixed[0])),
        ms(fixed[2].saturating_sub(fixed[0]))
    );
    let (authenticated, bare) = phases(
        &ctx,
        &mesh,
        server.flight_addr,
        &mut clients[0],
        QUERIES[0].1,
        runs,
    )
    .await;
    // ADBC makes four calls per statement; with the gateway doing nothing but answer them,
    // the statements would still cost this much more than embedded.
    let floor = |call: Duration| call * 4 * QUERIES.len() as u32;
    let of_embedded = |d: Duration| d.as_secs_f64() / totals[0].as_secs_f64();
    println!(
        "transport floor: 4 calls per statement x {:.2} ms (gRPC alone) = {:.2} ms over {} \
         statements: {:.2} of embedded before the gateway does any work ({:.2} with calls \
         that authenticate)",
        ms(bare),
        ms(floor(bare)),
        QUERIES.len(),
        of_embedded(totals[0] + floor(bare)),
        of_embedded(totals[0] + floor(authenticated)),
    );
    println!(
        "beyond the floor: the analyst's statements {:.2} of embedded, the marketer's {:.2}",
        of_embedded(totals[1].saturating_sub(floor(bare))),
        of_embedded(totals[2].saturating_sub(floor(bare))),
    );
    server.shutdown().await.unwrap();
}

/// The analyst's statements through the gateway alone, `rounds` times: what a profiler
/// attached to this process sees is the gateway and its client.
async fn profile(rounds: usize) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mesh = Arc::new(Mesh::load(MeshConfig::at(repo)).await.unwrap());
    let (server, mut clients) = support::gateway(mesh).await;
    let s = Instant::now();
    for _ in 0..rounds {
        for (_, sql) in QUERIES {
            support::prepared(&mut clients[0], sql).await;
        }
    }
    println!(
        "{rounds} rounds of {} statements: {:.2} ms per statement",
        QUERIES.len(),
        s.elapsed().as_secs_f64() * 1e3 / (rounds * QUERIES.len()) as f64
    );
    server.shutdown().await.unwrap();
}

/// Where a 1-row statement's time goes: each RPC of the ADBC sequence, from the client,
/// against embedded planning and execution. Returns the median round trips of a call that
/// authenticates and plans nothing, and of one that only crosses gRPC.
async fn phases(
    ctx: &datafusion::prelude::SessionContext,
    mesh: &Mesh,
    addr: std::net::SocketAddr,
    client: &mut support::Client,
    sql: &str,
    runs: usize,
) -> (Duration, Duration) {
    use futures::TryStreamExt;
    let mut t: [Vec<Duration>; 9] = Default::default();
    // Embedded DataFusion lists a table's folder once and keeps the listing; the gateway
    // lists it at every statement, so that published files are seen at once.
    let relisting = support::embedded_relisting(mesh, "default");
    // ListActions answers a fixed list without authenticating: gRPC over this connection
    // and nothing of the gateway's.
    let mut bare = arrow_flight::flight_service_client::FlightServiceClient::new(
        meshgate_cli::remote::endpoint(&format!("grpc://{addr}"), None)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for _ in 0..runs {
        let s = Instant::now();
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        t[0].push(s.elapsed());
        let s = Instant::now();
        datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        t[1].push(s.elapsed());
        let s = Instant::now();
        let df = relisting.sql(sql).await.unwrap();
        df.create_physical_plan().await.unwrap();
        t[8].push(s.elapsed());

        let s = Instant::now();
        let mut statement = client.prepare(sql.to_string(), None).await.unwrap();
        t[2].push(s.elapsed());
        let s = Instant::now();
        let info = statement.execute().await.unwrap();
        t[3].push(s.elapsed());
        let s = Instant::now();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let stream = client.do_get(ticket).await.unwrap();
        stream.try_collect::<Vec<_>>().await.unwrap();
        t[4].push(s.elapsed());
        let s = Instant::now();
        statement.close().await.unwrap();
        t[5].push(s.elapsed());
        let s = Instant::now();
        client.get_catalogs().await.unwrap();
        t[6].push(s.elapsed());
        let s = Instant::now();
        let actions = bare.list_actions(arrow_flight::Empty {}).await.unwrap();
        actions.into_inner().try_collect::<Vec<_>>().await.unwrap();
        t[7].push(s.elapsed());
    }
    let m: Vec<f64> = t
        .into_iter()
        .map(|v| support::median(v).as_secs_f64() * 1e3)
        .collect();
    println!(
        "{sql} as the analyst, medians: embedded plan {:.2} ms + run {:.2} ms; gateway \
         CreatePreparedStatement {:.2} ms, GetFlightInfo {:.2} ms, DoGet {:.2} ms, \
         ClosePreparedStatement {:.2} ms",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    println!(
        "one call: {:.2} ms authenticated (GetFlightInfo for the catalog list, which plans \
         nothing), {:.2} ms ListActions (no authentication, a fixed answer: gRPC alone)",
        m[6], m[7]
    );
    println!(
        "embedded plan listing the folder again, as the gateway does: {:.2} ms",
        m[8]
    );
    let d = |ms: f64| Duration::from_secs_f64(ms / 1e3);
    (d(m[6]), d(m[7]))
}
