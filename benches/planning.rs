//! Planning time (SQL → physical plan) of a 10-table join over the sample mesh, with the
//! policy rule (as the analyst, and as the marketer, whose plan also carries masks) and
//! without it (a plain DataFusion session over the same tables).
//! Target (issue 3): the rule adds < 1% for the analyst's plan.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_mesh::{CATALOG, CallerView, Mesh, MeshConfig};
use meshgate_policy::{HashKey, MeshSession, Policy, Principal};

fn ten_way_join() -> String {
    let tables = [
        "customers.customer_profiles",
        "customers.customer_profiles_v1",
    ];
    let mut sql = String::from(
        "SELECT t0.customer_id, t0.email, t9.phone FROM customers.customer_profiles t0",
    );
    for i in 1..10 {
        sql.push_str(&format!(
            " JOIN {} t{i} ON t{i}.customer_id = t{}.customer_id AND t{i}.email = t{}.email",
            tables[i % 2],
            i - 1,
            i - 1
        ));
    }
    sql.push_str(" WHERE t3.region = 'EU' AND t7.birth_date > DATE '1980-01-01'");
    sql
}

/// Meshgate plans through `MeshSession::sql`; the baseline through DataFusion's own entry.
enum Planner<'a> {
    Plain(&'a SessionContext),
    Mesh(&'a MeshSession),
}

impl Planner<'_> {
    async fn plan(&self, sql: &str) -> Arc<dyn ExecutionPlan> {
        let df = match self {
            Planner::Plain(ctx) => ctx.sql(sql).await.unwrap(),
            Planner::Mesh(session) => session.sql(sql).await.unwrap(),
        };
        df.create_physical_plan().await.unwrap()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mesh = rt
        .block_on(Mesh::load(MeshConfig::at(env!("CARGO_MANIFEST_DIR"))))
        .unwrap();
    let sql = ten_way_join();
    let config = || {
        SessionConfig::new()
            .with_target_partitions(2)
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, "default")
    };

    // Products are scanned only by a session that says who is asking; the baseline is
    // the platform's own, which sees everything.
    let plain =
        SessionContext::new_with_config(config().with_extension(Arc::new(CallerView::trusted())));
    plain.register_catalog(CATALOG, mesh.catalog());
    let key = Arc::new(HashKey::new(b"benchmark-hash-key-0123456789").unwrap());
    let session = |p: Principal| {
        MeshSession::with_options(
            &mesh,
            Policy::new(p, Arc::clone(&key)),
            meshgate_policy::SessionOptions {
                config: config(),
                ..meshgate_policy::SessionOptions::for_mesh(&mesh)
            },
        )
    };
    let analyst = session(Principal::new("analyst", ["data_analyst"]));
    let marketer = session(Principal::new("marketer", ["marketing"]));

    let mut g = c.benchmark_group("plan_10_table_join");
    g.sample_size(30);
    for (name, planner) in [
        ("without_rule", Planner::Plain(&plain)),
        ("with_rule_analyst", Planner::Mesh(&analyst)),
        ("with_rule_marketer", Planner::Mesh(&marketer)),
    ] {
        g.bench_function(name, |b| b.iter(|| rt.block_on(planner.plan(&sql))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
