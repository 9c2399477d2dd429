//! What refreshing a derived product costs: the sample's `marketing.sales_by_region`
//! (a join of checkout's orders and customers' profiles on hashed e-mails, grouped by
//! region) computed by the refresher as marketing's service principal and published
//! (cast, checks, atomic swap), against the same SQL over the same files in stock
//! embedded DataFusion (clear e-mails, no publishing), measured in the same run, at
//! growing sizes of the sample data. The ratio is what the policy (two hash masks) and
//! publishing add; the growth column says how the refresh scales with the input.
//!
//! `cargo bench --bench derived [-- --scales 1,4,16 --runs 3]`; under `cargo test` it
//! refreshes once at scale 1 and checks the result.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use meshgate_mesh::{Mesh, MeshConfig};
use meshgate_server::ServerConfig;
use meshgate_server::config::ServicePrincipal;
use meshgate_server::refresh::Refresher;

const SQL: &str = "SELECT c.region, count(*) AS orders, sum(o.total_amount) AS revenue \
    FROM o JOIN c ON o.user_email = c.email GROUP BY c.region";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let scales: Vec<usize> = arg("--scales")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| if bench { vec![1, 4, 16] } else { vec![1] });
    let runs: usize = arg("--runs")
        .and_then(|r| r.parse().ok())
        .unwrap_or(if bench { 3 } else { 1 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(&scales, runs.max(1)));
}

async fn run(scales: &[usize], runs: usize) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "sales_by_region refresh: median of {runs} run(s); ratio to the same SQL in stock \
         embedded DataFusion (no masks, no publishing)"
    );
    println!(
        "{:>5} {:>10} {:>6} {:>12} {:>12} {:>7} {:>8}",
        "scale", "input rows", "rows", "refresh ms", "embedded ms", "ratio", "growth"
    );
    let mut previous: Option<(usize, Duration)> = None;
    for &scale in scales {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        meshgate_sample::write_sample_mesh(&data, scale).unwrap();
        copy(&repo.join("contracts"), &dir.path().join("contracts"));
        let mut mesh_config = MeshConfig::at(dir.path());
        mesh_config.contracts = dir.path().join("contracts");
        mesh_config.data = data.clone();
        let config = ServerConfig {
            mesh: mesh_config.clone(),
            service_principals: [(
                "marketing".to_string(),
                ServicePrincipal {
                    roles: vec!["marketing".into()],
                    attributes: Default::default(),
                },
            )]
            .into(),
            ..Default::default()
        };
        let key = meshgate_policy::HashKey::new(b"bench-hash-key-0123456789").unwrap();
        let mesh = Arc::new(Mesh::load(mesh_config).await.unwrap());
        let refresher = Refresher::standalone(mesh, &config, key, None).unwrap();

        let ctx = SessionContext::new();
        for (name, domain, dataset, version) in [
            ("o", "checkout", "checkout_orders_summary", "v1"),
            ("c", "customers", "customer_profiles", "v2"),
        ] {
            let path = data.join(domain).join(dataset).join(version);
            ctx.register_parquet(name, path.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        let input: usize = ctx
            .sql("SELECT (SELECT count(*) FROM o) + (SELECT count(*) FROM c)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0) as usize;

        let mut refresh = Vec::new();
        let mut embedded = Vec::new();
        let mut rows = 0;
        // One warm-up each, then interleaved so that noise hits both alike.
        for i in 0..=runs {
            let started = Instant::now();
            let r = refresher
                .refresh_named("marketing.sales_by_region")
                .await
                .expect("the refresh publishes");
            let t = started.elapsed();
            rows = r.rows;
            let started = Instant::now();
            let expected: usize = ctx
                .sql(SQL)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum();
            let e = started.elapsed();
            assert_eq!(expected as u64, rows, "the refresh and the plain SQL agree");
            if i > 0 {
                refresh.push(t);
                embedded.push(e);
            }
        }
        let (r, e) = (median(&mut refresh), median(&mut embedded));
        let growth = previous
            .map(|(s, t)| {
                format!(
                    "{:.2}x/{}x",
                    r.as_secs_f64() / t.as_secs_f64(),
                    scale / s.max(1)
                )
            })
            .unwrap_or_default();
        println!(
            "{scale:>5} {input:>10} {rows:>6} {:>12.1} {:>12.1} {:>6.2}x {growth:>8}",
            r.as_secs_f64() * 1e3,
            e.as_secs_f64() * 1e3,
            r.as_secs_f64() / e.as_secs_f64()
        );
        assert_eq!(rows, 3, "three regions");
        previous = Some((scale, r));
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}
