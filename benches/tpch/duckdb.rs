//! The DuckDB column: `duckdb_bench.py` run with the suite's Python on the same Parquet
//! files and the original (unqualified) query texts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::median;

pub(crate) struct DuckDb {
    pub(crate) version: String,
    /// Per query: name, rows, median time.
    pub(crate) queries: Vec<(String, usize, Duration)>,
}

pub(crate) fn run(python: &Path, repo: &Path, data: &Path, runs: usize, threads: usize) -> DuckDb {
    let out = Command::new(python)
        .arg(repo.join("benches/tpch/duckdb_bench.py"))
        .arg("--data")
        .arg(data)
        .arg("--queries")
        .arg(repo.join("benches/tpch/queries"))
        .args([
            "--runs",
            &runs.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "duckdb_bench.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut result = DuckDb {
        version: String::new(),
        queries: Vec::new(),
    };
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(version) = v["duckdb"].as_str() {
            result.version = version.to_owned();
            continue;
        }
        let times = v["ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Duration::from_secs_f64(t.as_f64().unwrap() / 1e3))
            .collect();
        result.queries.push((
            v["query"].as_str().unwrap().to_owned(),
            v["rows"].as_u64().unwrap() as usize,
            median(times),
        ));
    }
    assert_eq!(result.queries.len(), 22, "DuckDB ran every query");
    result
}
