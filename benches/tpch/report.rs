//! `benches/RESULTS.md`: the machine, the versions, the targets and every table of a run.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use crate::delta::DeltaQuery;
use crate::duckdb::DuckDb;
use crate::load::Level;
use crate::postgres::{Fetch, PgQuery};
use crate::s3::S3Query;
use crate::scaleout::{DistributedQuery, ReplicaQuery};
use crate::support::Measured;

pub(crate) struct Run<'a> {
    pub(crate) sf: f64,
    pub(crate) runs: usize,
    pub(crate) load_secs: u64,
    pub(crate) command: String,
    pub(crate) tpch: &'a [Measured],
    pub(crate) masks: &'a [Measured],
    pub(crate) postgres: &'a [PgQuery],
    pub(crate) pg_fetch: Option<&'a Fetch>,
    pub(crate) duckdb: Option<&'a DuckDb>,
    pub(crate) s3: &'a [S3Query],
    pub(crate) delta: &'a [DeltaQuery],
    pub(crate) distributed: &'a [DistributedQuery],
    pub(crate) replicas: &'a [ReplicaQuery],
    pub(crate) load: &'a [Level],
    pub(crate) memory_limit_mb: usize,
    pub(crate) max_concurrent_queries: usize,
}

/// A target and whether this run met it.
pub(crate) struct Target {
    pub(crate) what: &'static str,
    pub(crate) goal: String,
    pub(crate) measured: String,
    pub(crate) met: bool,
}

fn total(m: &[Measured], i: usize) -> Duration {
    m.iter().map(|q| q.times[i]).sum()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn geomean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0), |(s, n), x| (s + x.ln(), n + 1));
    (sum / n as f64).exp()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

impl Run<'_> {
    pub(crate) fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let masked = ratio(total(self.tpch, 2), total(self.tpch, 0));
        t.push(Target {
            what: "TPC-H total, gateway as marketer (masked) / stock embedded DataFusion",
            goal: "≤ 1.15".into(),
            measured: format!("{masked:.2}"),
            met: masked <= 1.15,
        });
        if let Some(d) = self.duckdb {
            let duck: Duration = d.queries.iter().map(|q| q.2).sum();
            let r = ratio(total(self.tpch, 2), duck);
            t.push(Target {
                what: "TPC-H total, gateway as marketer (masked) / DuckDB",
                goal: "≤ 2".into(),
                measured: format!("{r:.2}"),
                met: r <= 2.0,
            });
        }
        if !self.postgres.is_empty() {
            let f: Duration = self.postgres.iter().map(|q| q.flight).sum();
            let p: Duration = self.postgres.iter().map(|q| q.postgres).sum();
            let r = ratio(p, f);
            t.push(Target {
                what: "TPC-H total over Postgres / over Flight SQL (analyst)",
                goal: "≤ 1.1".into(),
                measured: format!("{r:.2}"),
                met: r <= 1.1,
            });
        }
        if !self.delta.is_empty() {
            for (i, role) in ["analyst", "marketer"].into_iter().enumerate() {
                let r = delta_gateway_ratio(self.delta, i);
                t.push(Target {
                    what: match role {
                        "analyst" => "TPC-H total from Delta tables / from the same Parquet files, through the gateway (analyst)",
                        _ => "TPC-H total from Delta tables / from the same Parquet files, through the gateway (marketer)",
                    },
                    goal: "≤ 1.1".into(),
                    measured: format!("{r:.2}"),
                    met: r <= 1.1,
                });
            }
        }
        if let Some(f) = self.pg_fetch {
            let r = ratio(f.meshgate, f.postgres);
            t.push(Target {
                what: "psycopg fetching lineitem: meshgate / PostgreSQL",
                goal: "≤ 1.0".into(),
                measured: format!("{r:.2}"),
                met: r <= 1.0,
            });
        }
        if let Some(top) = self.load.iter().max_by_key(|l| l.clients) {
            t.push(Target {
                what: "errors under load",
                goal: format!("0 at {} clients", top.clients),
                measured: top.errors.to_string(),
                met: top.errors == 0,
            });
            let bound = (self.memory_limit_mb + 200) as f64;
            t.push(Target {
                what: "peak gateway RSS under load",
                goal: format!("≤ memory limit + 200 MiB = {bound:.0} MiB"),
                measured: format!("{:.0} MiB", top.peak_rss_mb),
                met: top.peak_rss_mb <= bound,
            });
        }
        t
    }

    pub(crate) fn markdown(&self, repo: &Path) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "# meshgate benchmark results\n");
        let _ = writeln!(
            w,
            "Written by `{}` on {}. How to read this file: README, \"Benchmarks\".\n",
            self.command,
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        let _ = writeln!(w, "## Machine and versions\n");
        for line in machine(repo, self.duckdb) {
            let _ = writeln!(w, "- {line}");
        }

        let _ = writeln!(w, "\n## Targets\n");
        let _ = writeln!(w, "| target | goal | measured | met |\n|---|---|---|---|");
        for t in self.targets() {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                t.what,
                t.goal,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            );
        }

        let _ = writeln!(
            w,
            "\n## TPC-H SF{} (median of {} runs after a warm-up, ms; ratios to stock embedded DataFusion on the same files)\n",
            self.sf, self.runs
        );
        let _ = write!(
            w,
            "| query | rows | embedded | gateway analyst | ratio | gateway marketer | ratio |"
        );
        if self.duckdb.is_some() {
            let _ = write!(w, " DuckDB | marketer / DuckDB |");
        }
        let _ = writeln!(
            w,
            "\n|---|--:|--:|--:|--:|--:|--:|{}",
            if self.duckdb.is_some() {
                "--:|--:|"
            } else {
                ""
            }
        );
        let duck = |i: usize| self.duckdb.map(|d| d.queries[i].2);
        for (i, q) in self.tpch.iter().enumerate() {
            let [e, a, m] = q.times;
            let _ = write!(
                w,
                "| {} | {} | {} | {} | {:.2} | {} | {:.2} |",
                q.name,
                q.rows,
                ms(e),
                ms(a),
                ratio(a, e),
                ms(m),
                ratio(m, e)
            );
            if let Some(d) = duck(i) {
                let _ = write!(w, " {} | {:.2} |", ms(d), ratio(m, d));
            }
            let _ = writeln!(w);
        }
        let (e, a, m) = (
            total(self.tpch, 0),
            total(self.tpch, 1),
            total(self.tpch, 2),
        );
        let _ = write!(
            w,
            "| **total** | | {} | {} | **{:.2}** | {} | **{:.2}** |",
            ms(e),
            ms(a),
            ratio(a, e),
            ms(m),
            ratio(m, e)
        );
        if let Some(d) = self.duckdb {
            let dt: Duration = d.queries.iter().map(|q| q.2).sum();
            let _ = write!(w, " {} | **{:.2}** |", ms(dt), ratio(m, dt));
        }
        let _ = writeln!(w);
        let g = |i: usize| geomean(self.tpch.iter().map(|q| ratio(q.times[i], q.times[0])));
        let _ = write!(
            w,
            "| geometric mean of ratios | | | | {:.2} | | {:.2} |",
            g(1),
            g(2)
        );
        if let Some(d) = self.duckdb {
            let r = geomean(
                self.tpch
                    .iter()
                    .zip(&d.queries)
                    .map(|(q, dq)| ratio(q.times[2], dq.2)),
            );
            let _ = write!(w, " | {r:.2} |");
        }
        let _ = writeln!(w);

        let _ = writeln!(
            w,
            "\n## Mask cost (median of {} runs, ms): the same scan through the gateway, clear (analyst) and masked (marketer)\n",
            self.runs * 3
        );
        let _ = writeln!(
            w,
            "| scan | rows | embedded | clear | masked | masked / clear |\n|---|--:|--:|--:|--:|--:|"
        );
        for q in self.masks {
            let [e, a, m] = q.times;
            let sql = crate::MASK_SCANS
                .iter()
                .find(|(n, _)| *n == q.name)
                .map_or("", |(_, sql)| sql);
            let _ = writeln!(
                w,
                "| `{sql}` | {} | {} | {} | {} | **{:.2}** |",
                q.rows,
                ms(e),
                ms(a),
                ms(m),
                ratio(m, a)
            );
        }

        if !self.postgres.is_empty() {
            w.push_str(&postgres_markdown(
                self.sf,
                self.runs,
                self.postgres,
                self.pg_fetch,
            ));
        }

        if !self.s3.is_empty() {
            let _ = writeln!(
                w,
                "\n## Local files vs a local S3 server (moto on this machine; embedded DataFusion, median of {} runs, ms)\n",
                self.runs
            );
            let _ = writeln!(w, "| query | local | S3 | S3 / local |\n|---|--:|--:|--:|");
            for q in self.s3 {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {:.2} |",
                    q.name,
                    ms(q.local),
                    ms(q.s3),
                    ratio(q.s3, q.local)
                );
            }
            let (l, s3): (Duration, Duration) = (
                self.s3.iter().map(|q| q.local).sum(),
                self.s3.iter().map(|q| q.s3).sum(),
            );
            let _ = writeln!(
                w,
                "| **total** | {} | {} | **{:.2}** |",
                ms(l),
                ms(s3),
                ratio(s3, l)
            );
        }

        if !self.delta.is_empty() {
            w.push_str(&delta_markdown(self.runs, self.delta));
        }

        self.scale_out(w);

        let _ = writeln!(
            w,
            "\n## Load ({} s per level, mixed workload, half analysts, half marketers; gateway memory limit {} MiB, {} queries at a time)\n",
            self.load_secs, self.memory_limit_mb, self.max_concurrent_queries
        );
        let _ = writeln!(
            w,
            "| clients | queries | queries/s | p50 ms | p99 ms | errors | peak RSS MiB |\n|--:|--:|--:|--:|--:|--:|--:|"
        );
        for l in self.load {
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} | {} | {} | {} | {:.0} |",
                l.clients,
                l.completed,
                l.throughput(),
                ms(l.p50),
                ms(l.p99),
                l.errors,
                l.peak_rss_mb
            );
        }
        for l in self.load.iter().filter(|l| l.errors > 0) {
            for e in &l.error_samples {
                let _ = writeln!(w, "\n{} clients, error: `{e}`", l.clients);
            }
        }
        s
    }
}

impl Run<'_> {
    /// The same cluster work three ways: push-scheduled (the default), pull-scheduled, and
    /// over mutual TLS, which needs pull; so TLS is measured against pull.
    fn cluster_transport(&self, w: &mut String) {
        let d: Vec<&DistributedQuery> =
            self.distributed.iter().filter(|q| q.on_cluster()).collect();
        let _ = writeln!(
            w,
            "\n## Cluster transport: push, pull, mutual TLS (the {} queries that ran on the cluster; three clusters of scheduler + 2 executors; median of {} runs, ms)\n",
            d.len(),
            self.runs
        );
        let _ = writeln!(
            w,
            "Mutual TLS needs pull scheduling (Ballista's push-mode task port has no TLS), so its cost \
             is `mTLS / pull`; `pull / push` is the cost of pull scheduling itself. Results checked equal.\n"
        );
        let _ = writeln!(
            w,
            "| query | push | pull | mTLS (pull) | pull / push | mTLS / pull |\n|---|--:|--:|--:|--:|--:|"
        );
        let line = |w: &mut String, name: &str, push: Duration, pull: Duration, tls: Duration| {
            let _ = writeln!(
                w,
                "| {name} | {} | {} | {} | {:.2} | {:.2} |",
                ms(push),
                ms(pull),
                ms(tls),
                ratio(pull, push),
                ratio(tls, pull)
            );
        };
        for q in &d {
            line(w, &q.name, q.distributed, q.pull, q.tls);
        }
        let sum = |f: fn(&DistributedQuery) -> Duration| d.iter().map(|q| f(q)).sum::<Duration>();
        line(
            w,
            "**total**",
            sum(|q| q.distributed),
            sum(|q| q.pull),
            sum(|q| q.tls),
        );
    }

    /// The distributed and replica tables.
    fn scale_out(&self, w: &mut String) {
        let d = self.distributed;
        if !d.is_empty() {
            let _ = writeln!(
                w,
                "\n## Distributed vs local (gateway as marketer, `x-meshgate-execution`; Ballista scheduler + 2 executors on the same {} cores; median of {} runs, ms)\n",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                self.runs
            );
            let _ = writeln!(
                w,
                "Results checked equal value for value. One machine runs the gateway, the scheduler and both \
                 executors: this measures the cluster's overhead (job submission, status polling, shuffle \
                 files between stages, Flight fetches), not a speed-up.\n"
            );
            let _ = writeln!(
                w,
                "| query | rows | local | distributed | distributed / local | engine (EXPLAIN) |\n|---|--:|--:|--:|--:|---|"
            );
            for q in d {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {:.2} | {} |",
                    q.name,
                    q.rows,
                    ms(q.local),
                    ms(q.distributed),
                    ratio(q.distributed, q.local),
                    q.engine
                );
            }
            let on = d.iter().filter(|q| q.on_cluster()).count();
            let rows = [
                ("**total**".to_string(), false),
                (format!("total of the {on} that ran on the cluster"), true),
            ];
            for (label, only_cluster) in rows {
                let ran = || d.iter().filter(|q| !only_cluster || q.on_cluster());
                let l: Duration = ran().map(|q| q.local).sum();
                let c: Duration = ran().map(|q| q.distributed).sum();
                let _ = writeln!(
                    w,
                    "| {label} | | {} | {} | **{:.2}** | |",
                    ms(l),
                    ms(c),
                    ratio(c, l)
                );
            }
            let _ = writeln!(
                w,
                "| geometric mean of ratios | | | | {:.2} | |",
                geomean(d.iter().map(|q| ratio(q.distributed, q.local)))
            );
            self.cluster_transport(w);
        }

        let r = self.replicas;
        if !r.is_empty() {
            let _ = writeln!(
                w,
                "\n## Replicas: A's tickets fetched from A and from B (two `meshgate serve`, same keys; DoGet only, median of {} runs, ms)\n",
                self.runs
            );
            let _ = writeln!(w, "| query | A | B | B / A |\n|---|--:|--:|--:|");
            for q in r {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {:.2} |",
                    q.name,
                    ms(q.a),
                    ms(q.b),
                    ratio(q.b, q.a)
                );
            }
            let (a, b): (Duration, Duration) =
                (r.iter().map(|q| q.a).sum(), r.iter().map(|q| q.b).sum());
            let _ = writeln!(
                w,
                "| **total** | {} | {} | **{:.2}** |",
                ms(a),
                ms(b),
                ratio(b, a)
            );
        }
    }
}

/// The Postgres section: the 22 queries over both protocols, and psycopg vs PostgreSQL.
/// The Delta section: the 22 queries from Delta tables and from the Parquet folders.
/// Total through the gateway for role `i` (0 analyst, 1 marketer): Delta mesh / Parquet mesh.
fn delta_gateway_ratio(delta: &[DeltaQuery], i: usize) -> f64 {
    let p: Duration = delta.iter().map(|q| q.gateway[i].0).sum();
    let d: Duration = delta.iter().map(|q| q.gateway[i].1).sum();
    ratio(d, p)
}

pub(crate) fn delta_markdown(runs: usize, delta: &[DeltaQuery]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "\n## Delta tables vs Parquet folders (the same Parquet files, with a log written by the deltalake package's convert_to_deltalake; median of {runs} runs, ms)\n\n\
         In-process: the mesh's contract tables, no policy. Gateway: two `meshgate serve` processes, one per mesh, over Flight SQL, interleaved.\n",
    );
    let _ = writeln!(
        w,
        "| query | in-process Parquet | in-process Delta | ratio | gateway analyst Parquet | Delta | ratio | gateway marketer Parquet | Delta | ratio |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let row = |w: &mut String, name: &str, c: [(Duration, Duration); 3], bold: bool| {
        let b = if bold { "**" } else { "" };
        let _ = write!(w, "| {b}{name}{b} |");
        for (p, d) in c {
            let _ = write!(w, " {} | {} | {b}{:.2}{b} |", ms(p), ms(d), ratio(d, p));
        }
        let _ = writeln!(w);
    };
    for q in delta {
        row(
            w,
            &q.name,
            [(q.parquet, q.delta), q.gateway[0], q.gateway[1]],
            false,
        );
    }
    let sum = |f: &dyn Fn(&DeltaQuery) -> (Duration, Duration)| -> (Duration, Duration) {
        delta
            .iter()
            .map(f)
            .fold((Duration::ZERO, Duration::ZERO), |a, b| {
                (a.0 + b.0, a.1 + b.1)
            })
    };
    let totals = [
        sum(&|q| (q.parquet, q.delta)),
        sum(&|q| q.gateway[0]),
        sum(&|q| q.gateway[1]),
    ];
    row(w, "total", totals, true);
    s
}

pub(crate) fn postgres_markdown(
    sf: f64,
    runs: usize,
    postgres: &[PgQuery],
    fetch: Option<&Fetch>,
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "\n## Postgres port vs Flight SQL (SF{sf}; the analyst, same gateway, interleaved; median of {} runs, ms; Postgres: tokio-postgres, extended protocol, binary rows decoded)\n",
        runs
    );
    let _ = writeln!(
        w,
        "| query | rows | Flight SQL | Postgres | Postgres / Flight |\n|---|--:|--:|--:|--:|"
    );
    for q in postgres {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {:.2} |",
            q.name,
            q.rows,
            ms(q.flight),
            ms(q.postgres),
            ratio(q.postgres, q.flight)
        );
    }
    let f: Duration = postgres.iter().map(|q| q.flight).sum();
    let p: Duration = postgres.iter().map(|q| q.postgres).sum();
    let _ = writeln!(
        w,
        "| **total** | | {} | {} | **{:.2}** |",
        ms(f),
        ms(p),
        ratio(p, f)
    );
    if let Some(f) = fetch {
        let _ = writeln!(
            w,
            "\npsycopg fetching {} ({} rows, text format, `fetchall`, median of {} runs): \
                     meshgate {:.2} s, {} on this machine holding the same rows {:.2} s: \
                     **{:.2}x**",
            f.table,
            f.rows,
            runs,
            f.meshgate.as_secs_f64(),
            f.postgres_version,
            f.postgres.as_secs_f64(),
            ratio(f.meshgate, f.postgres)
        );
    }

    s
}

/// What the numbers were measured on, as far as the machine tells.
fn machine(repo: &Path, duckdb: Option<&DuckDb>) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let lock = read(&repo.join("Cargo.lock").display().to_string());
    let version = |name: &str| {
        let needle = format!("name = \"{name}\"\nversion = \"");
        lock.find(&needle)
            .map(|i| {
                let rest = &lock[i + needle.len()..];
                rest[..rest.find('"').unwrap_or(0)].to_owned()
            })
            .unwrap_or_else(|| "?".into())
    };
    let command = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    let dirty = command("git", &["status", "--porcelain", "--untracked-files=no"]);
    let commit = format!(
        "{}{}",
        command("git", &["rev-parse", "--short", "HEAD"]),
        if dirty.is_empty() || dirty == "?" {
            ""
        } else {
            " (with uncommitted changes)"
        }
    );
    let mut lines = vec![
        format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}"),
        format!(
            "meshgate {commit}, release build; {}",
            command("rustc", &["--version"])
        ),
        format!(
            "DataFusion {}, arrow {}, arrow-flight {}, tonic {}, Ballista {}",
            version("datafusion"),
            version("arrow"),
            version("arrow-flight"),
            version("tonic"),
            version("ballista-core")
        ),
    ];
    if let Some(d) = duckdb {
        lines.push(format!("DuckDB {} (Python package)", d.version));
    }
    lines
}
