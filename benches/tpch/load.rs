//! Load: N clients, each on its own connection and logged in as the analyst or the
//! marketer (alternately), run a mixed workload against the gateway process for a fixed
//! time. Throughput, latency percentiles, errors and the gateway's peak RSS per level.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::GatewayProcess;
use crate::support;

/// What a BI dashboard over the mesh sends: mostly point lookups and small aggregates on
/// masked customer data, some scans of the fact table, a few TPC-H reports. `{key}` is a
/// customer key that changes with every query.
const MIX: &[(&str, &str)] = &[
    (
        "lookup",
        "SELECT c_custkey, c_name, c_phone, c_acctbal FROM tpch.customer WHERE c_custkey = {key}",
    ),
    (
        "lookup",
        "SELECT c_custkey, c_name, c_address, c_mktsegment FROM tpch.customer WHERE c_custkey = {key}",
    ),
    (
        "segments",
        "SELECT c_mktsegment, count(*), avg(c_acctbal) FROM tpch.customer GROUP BY c_mktsegment",
    ),
    (
        "orders_of",
        "SELECT o_orderkey, o_orderdate, o_totalprice FROM tpch.orders WHERE o_custkey = {key}",
    ),
    (
        "top_names",
        "SELECT c_name, sum(o_totalprice) AS spent FROM tpch.orders JOIN tpch.customer ON o_custkey = c_custkey WHERE o_orderdate >= DATE '1998-07-01' GROUP BY c_name ORDER BY spent DESC LIMIT 10",
    ),
    ("q6", "tpch:q6"),
    ("q14", "tpch:q14"),
    ("q10", "tpch:q10"),
    ("q1", "tpch:q1"),
];

pub(crate) struct Level {
    pub(crate) clients: usize,
    pub(crate) completed: usize,
    pub(crate) elapsed: Duration,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) errors: usize,
    /// The first few error messages, for the report.
    pub(crate) error_samples: Vec<String>,
    pub(crate) peak_rss_mb: f64,
}

impl Level {
    pub(crate) fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs the mix with `clients` concurrent clients for `duration`; queries started before the
/// deadline finish and count. `tpch` resolves the `tpch:qN` entries; `customers` bounds keys.
pub(crate) async fn level(
    gateway: &GatewayProcess,
    clients: usize,
    duration: Duration,
    tpch: &[(String, String)],
    customers: u64,
) -> Level {
    let mix: Arc<Vec<(&str, String)>> = Arc::new(
        MIX.iter()
            .map(|(name, sql)| match sql.strip_prefix("tpch:") {
                Some(q) => {
                    let (_, sql) = tpch.iter().find(|(n, _)| n == q).unwrap();
                    (*name, sql.clone())
                }
                None => (*name, sql.to_string()),
            })
            .collect(),
    );
    let mut connected = Vec::new();
    for i in 0..clients {
        let user = if i % 2 == 0 { "analyst" } else { "marketer" };
        connected.push(support::connect(gateway.flight_addr, user).await.unwrap());
    }
    let peak_resettable = gateway.reset_peak();
    let sampled_peak = Arc::new(std::sync::Mutex::new(gateway.rss_mb()));
    let sampler = {
        let peak = Arc::clone(&sampled_peak);
        let pid = gateway.pid;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                        l.split_whitespace().nth(1)?.parse::<f64>().ok()
                    });
                if let Some(kb) = rss {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(kb / 1024.0);
                }
            }
        })
    };

    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let mix = Arc::clone(&mix);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                // Clients start at different places in the mix so the levels are mixed
                // from the first second.
                let mut n = i * 7;
                while Instant::now() < deadline {
                    let (_, sql) = &mix[n % mix.len()];
                    let key = 1 + (n as u64 * 7919 + i as u64 * 104_729) % customers;
                    let sql = sql.replace("{key}", &key.to_string());
                    let s = Instant::now();
                    match support::try_flight(&mut client, &sql).await {
                        Ok(_) => latencies.push(s.elapsed()),
                        Err(e) => errors.push(e),
                    }
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    sampler.abort();
    latencies.sort();
    let sampled = *sampled_peak.lock().unwrap();
    let peak_rss_mb = if peak_resettable {
        gateway.peak_rss_mb().max(sampled)
    } else {
        sampled
    };
    Level {
        clients,
        completed: latencies.len(),
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors: errors.len(),
        error_samples: errors.into_iter().take(3).collect(),
        peak_rss_mb,
    }
}

pub(crate) fn print(l: &Level, limit_mb: usize) {
    println!(
        "{:>3} clients: {:>5} queries in {:.1}s = {:>6.1} q/s, p50 {:>7.1} ms, p99 {:>7.1} ms, {} errors, peak RSS {:.0} MiB (limit {limit_mb} MiB)",
        l.clients,
        l.completed,
        l.elapsed.as_secs_f64(),
        l.throughput(),
        l.p50.as_secs_f64() * 1e3,
        l.p99.as_secs_f64() * 1e3,
        l.errors,
        l.peak_rss_mb,
    );
    for e in &l.error_samples {
        println!("      error: {e}");
    }
}
