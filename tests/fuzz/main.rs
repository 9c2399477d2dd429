//! The policy fuzzer: seeded, generated SQL over the sample mesh, sent as every test role
//! through a real gateway (Flight SQL, the catalog API, the catalog page), with every byte
//! that comes back checked against what the role may not learn (tests/common/oracle.rs)
//! and every answer compared with plain DataFusion over tables masked outside meshgate.
//!
//! ```text
//! cargo test --test policy_fuzz                                   # CI's fixed budget
//! cargo test --release --test policy_fuzz -- --seed 7 --cases 20000
//! ```
//! A finding is shrunk to its smallest failing statement and printed as a SQL logic test
//! for `tests/slt/<role>/`; the run fails.

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../common/mod.rs"]
mod common;
mod grammar;
mod probe;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use common::oracle::RoleView;
use common::server::TestServer;
use common::{key, principal};
use grammar::{Generator, Statement, Table, Ty};
use probe::{Finding, Outcome, Probe};

/// The CI budget: under three minutes for all roles on this machine (2 cores, debug build).
const DEFAULT_CASES: usize = 80;
const DEFAULT_SEED: u64 = 20_261_130;

/// Role folder (as in tests/slt) and the gateway user that holds exactly its roles.
const ROLES: [(&str, &str); 6] = [
    ("analyst", "analyst"),
    ("marketer", "marketer"),
    ("guest", "guest"),
    ("eu_support", "support"),
    ("analyst_marketer", "lead"),
    ("regional", "regional"),
];

struct Args {
    seed: u64,
    cases: usize,
    roles: Vec<String>,
    time_limit_secs: u64,
}

impl Args {
    /// `--seed N --cases N --roles a,b --time-limit SECS`, or MESHGATE_FUZZ_SEED / _CASES /
    /// _ROLES / _TIME_LIMIT; other
    /// arguments (what `cargo test` passes to every test binary) are ignored.
    fn parse() -> Args {
        let env = |k: &str| std::env::var(k).ok();
        let mut seed = env("MESHGATE_FUZZ_SEED").and_then(|v| v.parse().ok());
        let mut cases = env("MESHGATE_FUZZ_CASES").and_then(|v| v.parse().ok());
        let mut roles = env("MESHGATE_FUZZ_ROLES");
        let mut time_limit = env("MESHGATE_FUZZ_TIME_LIMIT").and_then(|v| v.parse().ok());
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--seed" => seed = args.next().and_then(|v| v.parse().ok()),
                "--cases" => cases = args.next().and_then(|v| v.parse().ok()),
                "--roles" => roles = args.next(),
                "--time-limit" => time_limit = args.next().and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        Args {
            seed: seed.unwrap_or(DEFAULT_SEED),
            cases: cases.unwrap_or(DEFAULT_CASES),
            time_limit_secs: time_limit.unwrap_or(probe::TIME_LIMIT_SECS),
            roles: roles
                .map(|r| r.split(',').map(str::to_string).collect())
                .unwrap_or_else(|| ROLES.iter().map(|(r, _)| r.to_string()).collect()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let server = TestServer::with(|c| {
        c.limits.query_timeout_secs = args.time_limit_secs;
    })
    .await;
    let mut views = BTreeMap::new();
    for (role, _) in ROLES {
        views.insert(
            role,
            RoleView::compute(&server.mesh.mesh, principal(role), &key()).await,
        );
    }
    let tables = tables(&views["analyst"], &views["marketer"]);
    eprintln!(
        "policy fuzz: seed {}, {} cases per role, {} products",
        args.seed,
        args.cases,
        tables.len()
    );

    let verbose = std::env::var_os("MESHGATE_FUZZ_VERBOSE").is_some();
    let mut findings: Vec<(String, Finding)> = Vec::new();
    for (role, user) in ROLES {
        if !args.roles.iter().any(|r| r == role) {
            continue;
        }
        let role_started = Instant::now();
        let view = &views[role];
        let mut probe = Probe::new(&server, user, view, args.time_limit_secs).await;
        let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
        for case in 0..args.cases as u64 {
            // The same statements for every role: case n is seed + n.
            let rng = StdRng::seed_from_u64(args.seed.wrapping_add(case));
            let statement = Generator::new(&tables, rng).statement();
            let case_started = Instant::now();
            let checked = probe.check(&statement).await;
            if verbose {
                let how = checked.as_ref().map_or("FINDING", |o| o.name());
                let secs = case_started.elapsed().as_secs_f64();
                eprintln!("[{role} {case} {secs:.2}s] {how}: {}", statement.sql());
            }
            match checked {
                Ok(outcome) => *tally.entry(outcome.name()).or_default() += 1,
                Err(finding) => {
                    let shrunk = probe.shrink(statement, &finding).await;
                    eprintln!("{role}: case {case}: {finding}\n{}", slt(role, &shrunk));
                    findings.push((role.to_string(), finding));
                    *tally.entry("finding").or_default() += 1;
                }
            }
            if case % 10 == 0 {
                let mut rng = StdRng::seed_from_u64(args.seed ^ case.rotate_left(17));
                let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
                let table = *names.choose(&mut rng).unwrap();
                if let Err(finding) = probe.metadata(&mut rng, table).await {
                    eprintln!("{role}: metadata: {finding}");
                    findings.push((role.to_string(), finding));
                }
                *tally.entry("metadata calls").or_default() += 1;
            }
        }
        tally.insert("postgres compared", probe.pg_compared);
        tally.insert("postgres undecodable", probe.pg_undecodable);
        eprintln!(
            "  {role:<17} {:>6.1}s  {}",
            role_started.elapsed().as_secs_f64(),
            tally
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // What the operator keeps: the audit log, line by line, against the line's principal.
    let audit = std::fs::read_to_string(&server.audit).unwrap_or_default();
    let mut lines = 0;
    for line in audit.lines() {
        lines += 1;
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some((role, _)) = ROLES
            .iter()
            .find(|(_, u)| record["principal"].as_str() == Some(*u))
        else {
            continue;
        };
        if let Some(found) = views[role].forbidden.in_answer_to("", line, false) {
            eprintln!("{role}: audit line shows {found:?}: {line}");
            findings.push((role.to_string(), Finding::leak("audit", found, line)));
        }
    }
    // The catalog page needs no login: it may show only what a guest may see.
    for finding in probe::catalog_pages(&server, &views["guest"], &tables).await {
        eprintln!("catalog page: {finding}");
        findings.push(("guest".into(), finding));
    }
    eprintln!(
        "policy fuzz: {} findings, {lines} audit lines checked, {:.1}s",
        findings.len(),
        started.elapsed().as_secs_f64()
    );
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The products every statement draws from, with literals from their data: raw values,
/// masked values (what the marketer sees) and hidden rows' values alike.
fn tables(analyst: &RoleView, marketer: &RoleView) -> Vec<Table> {
    let mut out = Vec::new();
    for p in &analyst.products {
        let Some(raw) = &p.visible else { continue };
        let masked = marketer
            .products
            .iter()
            .find(|m| m.display == p.display)
            .and_then(|m| m.visible.as_ref());
        let mut columns = Vec::new();
        let mut literals = Vec::new();
        for (i, field) in raw.schema().fields().iter().enumerate() {
            let ty = match field.data_type() {
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Ty::Str,
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Ty::Int,
                DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => Ty::Float,
                DataType::Date32 => Ty::Date,
                DataType::Timestamp(..) => Ty::Ts,
                DataType::Boolean => Ty::Bool,
                _ => continue,
            };
            columns.push((field.name().clone(), ty));
            let mut values = sample(raw.column(i), ty, 12);
            if let Some(m) = masked
                && let Ok(j) = m.schema().index_of(field.name())
            {
                let mty = if matches!(m.schema().field(j).data_type(), DataType::Utf8) {
                    Ty::Str
                } else {
                    ty
                };
                values.extend(sample(m.column(j), mty, 4));
            }
            literals.push((field.name().clone(), values));
        }
        for name in &p.names {
            out.push(Table {
                name: format!("{}.{name}", p.domain),
                columns: columns.clone(),
                literals: literals.clone(),
            });
        }
    }
    out
}

/// Up to `n` values of `array`, spread over it, as SQL literals of `ty`.
fn sample(array: &arrow::array::ArrayRef, ty: Ty, n: usize) -> Vec<String> {
    let f = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()).unwrap();
    let step = (array.len() / n).max(1);
    (0..array.len())
        .step_by(step)
        .filter(|i| array.is_valid(*i))
        .take(n)
        .map(|i| {
            let v = f.value(i).to_string();
            match ty {
                Ty::Str => format!("'{}'", v.replace('\'', "''")),
                Ty::Date => format!("DATE '{v}'"),
                Ty::Ts => format!("TIMESTAMP '{v}'"),
                Ty::Int | Ty::Float | Ty::Bool => v,
            }
        })
        .collect()
}

/// A finding as a SQL logic test for `tests/slt/<role>/fuzz.slt`: run it with
/// MESHGATE_SLT_COMPLETE=1 once fixed to record the answer.
fn slt(role: &str, s: &Statement) -> String {
    format!(
        "# tests/slt/{role}/fuzz.slt{}\nquery T\n{}\n----\n",
        if s.params.is_empty() {
            String::new()
        } else {
            format!(" (parameters inlined: {})", s.params.join(", "))
        },
        s.inline_sql()
    )
}

trait Named {
    fn name(&self) -> &'static str;
}

impl Named for Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Same => "same answer",
            Outcome::BothFailed => "both failed",
            Outcome::Refused => "refused",
            Outcome::Explained => "explained",
            Outcome::TooBig => "too big to compare",
            Outcome::CastOrder => "a cast failed on one side only",
            Outcome::OracleUnplannable => "DataFusion failed its own plan check",
        }
    }
}
