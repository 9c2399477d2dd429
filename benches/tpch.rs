//! The TPC-H suite (issue 6): the 22 queries in embedded DataFusion, through the gateway
//! as the analyst (clear) and as the marketer (customer and supplier PII masked), on the
//! same Parquet files, printed as ratios to embedded from one run.
//!
//! `cargo bench --bench tpch [-- --sf 1 --runs 3]`. Data is generated once with tpchgen
//! into `benches/.cache/tpch-sf<SF>/` (not committed); contracts are in
//! `benches/tpch/contracts/`. Under `cargo test` it only checks that it builds.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{Ident, ObjectNamePart, visit_relations_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use meshgate_catalog::{Mesh, MeshConfig};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let sf: f64 = arg(&args, "--sf", 1.0);
    let runs: usize = arg(&args, "--runs", 3);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = repo.join(format!("benches/.cache/tpch-sf{sf}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(repo, &cache, sf, runs.max(1)));
}

/// Writes every table once (a marker file says the set is complete).
fn generate(data: &Path, sf: f64) {
    let done = data.join(".complete");
    if done.exists() {
        return;
    }
    let started = Instant::now();
    for table in TABLES {
        let dir = data.join("tpch").join(table).join("v1");
        std::fs::create_dir_all(&dir).unwrap();
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>> = {
            use tpchgen::generators::*;
            use tpchgen_arrow::*;
            const B: usize = 65536;
            match table {
                "customer" => Box::new(
                    CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(B),
                ),
                "lineitem" => Box::new(
                    LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(B),
                ),
                "nation" => {
                    Box::new(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(B))
                }
                "orders" => {
                    Box::new(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(B))
                }
                "part" => Box::new(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(B)),
                "partsupp" => Box::new(
                    PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(B),
                ),
                "region" => {
                    Box::new(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(B))
                }
                "supplier" => Box::new(
                    SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(B),
                ),
                _ => unreachable!(),
            }
        };
        let mut batches = batches.map(|b| b.unwrap()).peekable();
        // Classic Utf8 in the files, as most producers write them (and DuckDB reads them).
        let schema = Arc::new(Schema::new(
            batches
                .peek()
                .unwrap()
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let t = match f.data_type() {
                        DataType::Utf8View => DataType::Utf8,
                        t => t.clone(),
                    };
                    Field::new(f.name(), t, f.is_nullable())
                })
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
            .build();
        let file = std::fs::File::create(dir.join("part-0.parquet")).unwrap();
        let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).unwrap();
        for b in batches {
            let cols = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| cast(c, f.data_type()).unwrap())
                .collect();
            w.write(&RecordBatch::try_new(Arc::clone(&schema), cols).unwrap())
                .unwrap();
        }
        w.close().unwrap();
    }
    std::fs::write(&done, b"").unwrap();
    println!(
        "generated TPC-H SF{sf} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The query with every TPC-H table qualified by the `tpch` schema (CTE names left alone).
fn qualify(sql: &str) -> String {
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
    let _ = visit_relations_mut(&mut statements, |name| {
        if name.0.len() == 1
            && let ObjectNamePart::Identifier(id) = &name.0[0]
            && TABLES.contains(&id.value.to_lowercase().as_str())
        {
            name.0
                .insert(0, ObjectNamePart::Identifier(Ident::new("tpch")));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn queries(repo: &Path) -> Vec<(String, String)> {
    (1..=22)
        .map(|i| {
            let p = repo.join(format!("benches/tpch/queries/q{i}.sql"));
            let sql =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (format!("q{i}"), qualify(sql.trim().trim_end_matches(';')))
        })
        .collect()
}

async fn run(repo: &Path, cache: &Path, sf: f64, runs: usize) {
    let data = cache.join("data");
    generate(&data, sf);
    let mut mesh_config = MeshConfig::at(repo);
    mesh_config.contracts = repo.join("benches/tpch/contracts");
    mesh_config.data = data.clone();
    let mesh = Arc::new(Mesh::load(mesh_config).await.unwrap());
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());

    let ctx = support::embedded(&mesh, "tpch");
    let (server, mut clients) = support::gateway(Arc::clone(&mesh)).await;

    println!(
        "TPC-H SF{sf}: median of {runs} runs after one warm-up; ratios to embedded DataFusion"
    );
    support::compare(&ctx, &mut clients, &queries(repo), runs).await;
    server.shutdown().await.unwrap();
}
