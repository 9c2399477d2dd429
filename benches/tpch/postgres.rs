//! The Postgres port's costs: the 22 queries over Postgres vs over Flight SQL (same gateway,
//! same user, interleaved), and psycopg fetching `lineitem` from meshgate vs from a real
//! PostgreSQL server holding the same rows (`postgres_bench.py`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{self, median};

/// One query's medians over each protocol.
pub(crate) struct PgQuery {
    pub(crate) name: String,
    pub(crate) rows: usize,
    pub(crate) flight: Duration,
    pub(crate) postgres: Duration,
}

/// What psycopg measured: seconds to fetch every row, from meshgate and from PostgreSQL.
pub(crate) struct Fetch {
    pub(crate) table: String,
    pub(crate) rows: u64,
    pub(crate) meshgate: Duration,
    pub(crate) postgres: Duration,
    pub(crate) postgres_version: String,
}

/// The suite's Postgres section: the queries over both protocols, and psycopg fetching
/// `lineitem` when a Python is given.
pub(crate) async fn compare(
    flight_addr: SocketAddr,
    pg_addr: SocketAddr,
    queries: &[(String, String)],
    runs: usize,
    python: Option<&Path>,
    repo: &Path,
) -> (Vec<PgQuery>, Option<Fetch>) {
    println!(
        "\nthe Postgres port: the same queries as the analyst over Postgres and over Flight SQL"
    );
    let queries = tpch(flight_addr, pg_addr, queries, runs).await;
    let fetch = python.map(|python| fetch(python, repo, pg_addr, "tpch.lineitem", runs));
    (queries, fetch)
}

/// Each query as the analyst over Flight (every batch) and over Postgres (tokio-postgres:
/// extended protocol, binary rows, every row decoded), median of `runs` after a warm-up.
pub(crate) async fn tpch(
    flight_addr: SocketAddr,
    pg_addr: SocketAddr,
    queries: &[(String, String)],
    runs: usize,
) -> Vec<PgQuery> {
    let mut flight = support::connect(flight_addr, "analyst").await.unwrap();
    let (pg, connection) = tokio_postgres::Config::new()
        .host(pg_addr.ip().to_string())
        .port(pg_addr.port())
        .user("analyst")
        .password("analyst")
        .dbname("mesh")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    println!(
        "{:<6} {:>12} {:>12} {:>8}",
        "query", "flight", "postgres", "ratio"
    );
    let mut out = Vec::new();
    for (name, sql) in queries {
        let (mut f, mut p) = (Vec::new(), Vec::new());
        let mut rows = 0;
        for run in 0..=runs {
            let s = Instant::now();
            let batches = support::flight(&mut flight, sql).await;
            let df = s.elapsed();
            let s = Instant::now();
            let got = pg.query(sql.as_str(), &[]).await.unwrap();
            let dp = s.elapsed();
            assert_eq!(
                got.len(),
                support::rows(&batches),
                "{name}: both protocols, the same rows"
            );
            rows = got.len();
            if run > 0 {
                f.push(df);
                p.push(dp);
            }
        }
        let (f, p) = (median(f), median(p));
        println!(
            "{name:<6} {:>10.1}ms {:>10.1}ms {:>8.2}",
            f.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            p.as_secs_f64() / f.as_secs_f64()
        );
        out.push(PgQuery {
            name: name.clone(),
            rows,
            flight: f,
            postgres: p,
        });
    }
    let (f, p): (Duration, Duration) = (
        out.iter().map(|q| q.flight).sum(),
        out.iter().map(|q| q.postgres).sum(),
    );
    println!(
        "{:<6} {:>10.1}ms {:>10.1}ms {:>8.2}",
        "total",
        f.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        p.as_secs_f64() / f.as_secs_f64()
    );
    out
}

/// psycopg fetching `table` from meshgate and from a PostgreSQL server the script starts
/// and loads with the same rows (Debian's `postgresql` package; tests/run-all.sh installs it).
pub(crate) fn fetch(
    python: &Path,
    repo: &Path,
    pg_addr: SocketAddr,
    table: &str,
    runs: usize,
) -> Fetch {
    let script = repo.join("benches/tpch/postgres_bench.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--meshgate", &pg_addr.to_string(), "--table", table])
        .args(["--runs", &runs.to_string()])
        .output()
        .expect("the bench Python runs");
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let secs = |k: &str| Duration::from_secs_f64(json[k].as_f64().unwrap());
    let f = Fetch {
        table: table.to_string(),
        rows: json["rows"].as_u64().unwrap(),
        meshgate: secs("meshgate_secs"),
        postgres: secs("postgres_secs"),
        postgres_version: json["postgres_version"].as_str().unwrap_or("").to_string(),
    };
    println!(
        "psycopg fetching {} ({} rows): meshgate {:.2}s, {} {:.2}s, ratio {:.2}",
        f.table,
        f.rows,
        f.meshgate.as_secs_f64(),
        f.postgres_version,
        f.postgres.as_secs_f64(),
        f.meshgate.as_secs_f64() / f.postgres.as_secs_f64()
    );
    f
}
