//! The TPC-H data set and queries: tables generated once with tpchgen, queries read from
//! `benches/tpch/queries/` and qualified with the `tpch` schema for the gateway.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{Ident, ObjectNamePart, visit_relations_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub(crate) const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// How the Parquet files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Classic `Utf8` strings and zstd level 1, as most producers write them.
    Bench,
    /// As `tpchgen-cli --format parquet` writes by default: tpchgen-arrow's `Utf8View`
    /// strings (stored in the file's Arrow schema) and Snappy.
    TpchgenCli,
}

impl Layout {
    pub(crate) fn named(name: &str) -> Layout {
        match name {
            "bench" => Layout::Bench,
            "tpchgen-cli" => Layout::TpchgenCli,
            other => panic!("--layout: bench or tpchgen-cli, not {other}"),
        }
    }

    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Layout::Bench => "",
            Layout::TpchgenCli => "-tpchgen-cli",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Layout::Bench => "files with Utf8 strings, zstd",
            Layout::TpchgenCli => "files as tpchgen-cli writes them: Utf8View strings, Snappy",
        }
    }
}

/// Writes every table once (a marker file says the set is complete).
pub(crate) fn generate(data: &Path, sf: f64, layout: Layout) {
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
                    let t = match (f.data_type(), layout) {
                        (DataType::Utf8View, Layout::Bench) => DataType::Utf8,
                        (t, _) => t.clone(),
                    };
                    Field::new(f.name(), t, f.is_nullable())
                })
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(match layout {
                Layout::Bench => Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
                Layout::TpchgenCli => Compression::SNAPPY,
            })
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
pub(crate) fn qualify(sql: &str) -> String {
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

pub(crate) fn queries(repo: &Path) -> Vec<(String, String)> {
    (1..=22)
        .map(|i| {
            let p = repo.join(format!("benches/tpch/queries/q{i}.sql"));
            let sql =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (format!("q{i}"), qualify(sql.trim().trim_end_matches(';')))
        })
        .collect()
}
