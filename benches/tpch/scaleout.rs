//! Scale-out (issue 7), through the real gateway processes as the marketer (masked):
//! - the 22 queries run locally and on the Ballista cluster (a scheduler and two executors
//!   on this same machine), chosen per query with `x-meshgate-execution`, results checked
//!   equal value for value; and on two more clusters, pull-scheduled in plaintext and with
//!   mutual TLS (which needs pull), so the cost of TLS is measured apart from pull's;
//! - replicas: the tickets gateway A hands out, fetched from A and from B (a second
//!   `meshgate serve` with the same keys), results checked equal.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::Ticket;
use futures::TryStreamExt;

use crate::support::{self, Client};

const EXECUTION_HEADER: &str = meshgate_server::EXECUTION_HEADER;

pub(crate) struct DistributedQuery {
    pub(crate) name: String,
    pub(crate) rows: usize,
    /// What the gateway's EXPLAIN says about the distributed run: `engine=… (why)`.
    pub(crate) engine: String,
    pub(crate) local: Duration,
    /// On the default cluster: plaintext, push scheduling.
    pub(crate) distributed: Duration,
    /// On the other clusters: plaintext pull, then mutual TLS (pull).
    pub(crate) pull: Duration,
    pub(crate) tls: Duration,
}

impl DistributedQuery {
    /// Whether the cluster ran it (some plans stay on the gateway; EXPLAIN says why).
    pub(crate) fn on_cluster(&self) -> bool {
        self.engine.starts_with("engine=distributed")
    }
}

pub(crate) struct ReplicaQuery {
    pub(crate) name: String,
    pub(crate) a: Duration,
    pub(crate) b: Duration,
}

/// Every row as text, sorted: equal results whatever order partitions arrive in.
fn canonical(batches: &[RecordBatch]) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1) // the header
        .map(str::to_owned)
        .collect();
    rows.sort();
    rows
}

async fn marketer(addr: SocketAddr, execution: &str) -> Client {
    let mut c = support::connect(addr, "marketer").await.unwrap();
    c.set_header(EXECUTION_HEADER, execution);
    c
}

/// The last line of the gateway's EXPLAIN: where the query would run, and why.
async fn engine(client: &mut Client, sql: &str) -> String {
    let batches = support::flight(client, &format!("EXPLAIN {sql}")).await;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    text.lines()
        .find_map(|l| l.split("meshgate: ").nth(1))
        .map(|s| s.trim_end_matches(['|', ' ']).to_owned())
        .unwrap_or_else(|| panic!("EXPLAIN names no engine:\n{text}"))
}

/// Each query local, then distributed through each gateway of `clusters` (the default
/// cluster's, the pull cluster's, the TLS cluster's), median of `runs` after one warm-up,
/// one printed line per query.
pub(crate) async fn distributed(
    gateway: SocketAddr,
    clusters: [SocketAddr; 3],
    queries: &[(String, String)],
    runs: usize,
) -> Vec<DistributedQuery> {
    let mut local = marketer(gateway, "local").await;
    let mut on = Vec::new();
    for g in clusters {
        on.push(marketer(g, "distributed").await);
    }
    println!(
        "{:<5} {:>7} {:>12} {:>13} {:>8} {:>12} {:>12}  engine",
        "query", "rows", "local", "distributed", "ratio", "pull", "mTLS"
    );
    let mut out = Vec::new();
    for (name, sql) in queries {
        let engine = engine(&mut on[0], sql).await;
        // Local, then each cluster's.
        let mut times: [Vec<Duration>; 4] = Default::default();
        let mut rows = 0;
        for run in 0..=runs {
            let s = Instant::now();
            let a = support::flight(&mut local, sql).await;
            let mut took = vec![s.elapsed()];
            for c in &mut on {
                let s = Instant::now();
                let b = support::flight(c, sql).await;
                took.push(s.elapsed());
                assert_eq!(
                    canonical(&a),
                    canonical(&b),
                    "{name}: the cluster returns what the gateway computes ({engine})"
                );
            }
            rows = support::rows(&a);
            if run > 0 {
                for (t, d) in times.iter_mut().zip(took) {
                    t.push(d);
                }
            }
        }
        let [local, distributed, pull, tls] = times.map(support::median);
        let q = DistributedQuery {
            name: name.clone(),
            rows,
            engine,
            local,
            distributed,
            pull,
            tls,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<5} {:>7} {:>10.1}ms {:>11.1}ms {:>8.2} {:>10.1}ms {:>10.1}ms  {}",
            q.name,
            q.rows,
            ms(q.local),
            ms(q.distributed),
            q.distributed.as_secs_f64() / q.local.as_secs_f64(),
            ms(q.pull),
            ms(q.tls),
            q.engine
        );
        out.push(q);
    }
    assert!(
        out.iter().any(DistributedQuery::on_cluster),
        "no query ran on the cluster"
    );
    out
}

async fn fetch(client: &mut Client, tickets: &[Ticket]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for t in tickets {
        let stream = client.do_get(t.clone()).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

/// Each query planned on `a` (GetFlightInfo), its tickets fetched (DoGet) from `a` and
/// from `b` with the token `a` issued; median of `runs` after one warm-up. The order
/// alternates so neither replica always runs on a warm cache.
pub(crate) async fn replicas(
    a: SocketAddr,
    b: SocketAddr,
    queries: &[(String, String)],
    runs: usize,
) -> Vec<ReplicaQuery> {
    let mut on_a = support::connect(a, "marketer").await.unwrap();
    let channel = meshgate_cli::remote::endpoint(&format!("grpc://{b}"), None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut on_b = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    on_b.set_token(on_a.token().expect("a token from A's handshake").clone());
    println!(
        "{:<5} {:>12} {:>12} {:>8}",
        "query", "DoGet on A", "DoGet on B", "B / A"
    );
    let mut out = Vec::new();
    for (name, sql) in queries {
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let info = on_a.execute(sql.clone(), None).await.unwrap();
            let tickets: Vec<Ticket> = info
                .endpoint
                .into_iter()
                .map(|e| e.ticket.expect("a ticket"))
                .collect();
            let (ra, da, rb, db) = if run % 2 == 0 {
                let (ra, da) = timed_fetch(&mut on_a, &tickets).await;
                let (rb, db) = timed_fetch(&mut on_b, &tickets).await;
                (ra, da, rb, db)
            } else {
                let (rb, db) = timed_fetch(&mut on_b, &tickets).await;
                let (ra, da) = timed_fetch(&mut on_a, &tickets).await;
                (ra, da, rb, db)
            };
            assert_eq!(
                canonical(&ra),
                canonical(&rb),
                "{name}: replica B serves A's tickets with the same rows"
            );
            if run > 0 {
                ta.push(da);
                tb.push(db);
            }
        }
        let q = ReplicaQuery {
            name: name.clone(),
            a: support::median(ta),
            b: support::median(tb),
        };
        support::print_pair(&q.name, q.a, q.b);
        out.push(q);
    }
    out
}

async fn timed_fetch(client: &mut Client, tickets: &[Ticket]) -> (Vec<RecordBatch>, Duration) {
    let s = Instant::now();
    let rows = fetch(client, tickets).await;
    (rows, s.elapsed())
}
