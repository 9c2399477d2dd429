#![allow(dead_code)] // each bench uses its part
//! What the gateway benchmarks share: a gateway on port 0 over a loaded mesh, an embedded
//! DataFusion session on the same mesh, and one authenticated client per role.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_mesh::{CATALOG, CallerView, Mesh};
use meshgate_server::config::{Limits, UserConfig};
use meshgate_server::{RunningServer, Secrets, ServerConfig};
use tonic::transport::Channel;

pub(crate) type Client = FlightSqlServiceClient<Channel>;

/// Stock DataFusion over the same files, every table registered as DataFusion would on
/// its own (`register_parquet`, default options: strings read as views), named
/// `<schema>.<table>`: what a user of DataFusion without meshgate gets, the baseline of
/// the TPC-H ratios. `folders` are `(table, folder)`.
pub(crate) async fn stock(
    schema: &str,
    folders: &[(String, std::path::PathBuf)],
) -> SessionContext {
    // DataFusion creates its default catalog with this schema in it.
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_default_catalog_and_schema("datafusion", schema),
    );
    for (table, folder) in folders {
        ctx.register_parquet(
            format!("{schema}.{table}"),
            format!("{}/", folder.display()),
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await
        .unwrap();
    }
    ctx
}

/// The same mesh without the gateway: its contract tables, no policy.
pub(crate) fn embedded(mesh: &Mesh, default_schema: &str) -> SessionContext {
    embedded_with(mesh, default_schema, Default::default())
}

/// [`embedded`] without DataFusion's cache of folder listings, which the gateway turns off.
pub(crate) fn embedded_relisting(mesh: &Mesh, default_schema: &str) -> SessionContext {
    use datafusion::execution::cache::cache_manager::CacheManagerConfig;
    embedded_with(
        mesh,
        default_schema,
        CacheManagerConfig::default().with_list_files_cache_limit(0),
    )
}

fn embedded_with(
    mesh: &Mesh,
    default_schema: &str,
    caches: datafusion::execution::cache::cache_manager::CacheManagerConfig,
) -> SessionContext {
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(mesh.object_stores())
        .with_cache_manager(caches)
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_config_rt(
        SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, default_schema)
            .with_extension(Arc::new(CallerView::trusted())),
        runtime,
    );
    ctx.register_catalog(CATALOG, mesh.catalog());
    ctx
}

/// A gateway with `analyst` (data_analyst) and `marketer` (marketing), and a client for
/// each, in that order. SLA evaluation and reloading are off: they would scan in the
/// background of the measurements.
pub(crate) async fn gateway(mesh: Arc<Mesh>) -> (RunningServer, Vec<Client>) {
    let user = |name: &str, role: &str| UserConfig {
        name: name.into(),
        password_hash: meshgate_server::auth::hash_password(name),
        scram_sha_256: None,
        attributes: Default::default(),
        roles: vec![role.into()],
    };
    let config = ServerConfig {
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        pg_addr: Some("127.0.0.1:0".parse().unwrap()),
        users: vec![
            user("analyst", "data_analyst"),
            user("marketer", "marketing"),
        ],
        limits: Limits {
            sla_check_interval_secs: 0,
            memory_limit_mb: 4096,
            ..Limits::default()
        },
        reload_interval_secs: 0,
        ..Default::default()
    };
    let secrets = Secrets {
        hash_key: meshgate_policy::HashKey::new(b"benchmark-hash-key-0123456789").unwrap(),
        token_key: b"benchmark-token-key-0123456789".to_vec(),
        previous_token_keys: vec![],
    };
    let server = RunningServer::start(mesh, config, secrets).await.unwrap();
    let mut clients = Vec::new();
    for u in ["analyst", "marketer"] {
        clients.push(connect(server.flight_addr, u).await.unwrap());
    }
    (server, clients)
}

/// A client on its own connection, logged in as `user` (whose password is its name).
pub(crate) async fn connect(addr: SocketAddr, user: &str) -> Result<Client, String> {
    let channel = meshgate_cli::remote::endpoint(&format!("grpc://{addr}"), None)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut c = FlightSqlServiceClient::new(channel);
    c.handshake(user, user).await.map_err(|e| e.to_string())?;
    Ok(c)
}

/// One line of a two-way table: the query, both medians and their ratio `b / a`.
pub(crate) fn print_pair(name: &str, a: Duration, b: Duration) {
    println!(
        "{name:<5} {:>10.1}ms {:>10.1}ms {:>8.2}",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        b.as_secs_f64() / a.as_secs_f64()
    );
}

/// Each query on `a` then on `b`, interleaved, `runs` times after a warm-up, row counts
/// checked equal (`what` says what differs, for the message): each query's medians.
#[allow(dead_code)] // not every bench that includes this file compares two contexts
pub(crate) async fn compare_contexts(
    a: &SessionContext,
    b: &SessionContext,
    queries: &[(String, String)],
    runs: usize,
    what: &str,
) -> Vec<(String, Duration, Duration)> {
    let mut out = Vec::new();
    for (name, sql) in queries {
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let s = std::time::Instant::now();
            let x = embedded_run(a, sql).await;
            let da = s.elapsed();
            let s = std::time::Instant::now();
            let y = embedded_run(b, sql).await;
            let db = s.elapsed();
            assert_eq!(rows(&x), rows(&y), "{name}: the same rows {what}");
            if run > 0 {
                ta.push(da);
                tb.push(db);
            }
        }
        let (ma, mb) = (median(ta), median(tb));
        print_pair(name, ma, mb);
        out.push((name.clone(), ma, mb));
    }
    out
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) async fn embedded_run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// Runs `sql` over Flight SQL and returns every endpoint's batches.
pub(crate) async fn flight(client: &mut Client, sql: &str) -> Vec<RecordBatch> {
    try_flight(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`flight`], with the failure as the message a client would show.
pub(crate) async fn try_flight(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.into(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.ok_or("an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        out.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

/// Runs `sql` as ADBC does: CreatePreparedStatement, GetFlightInfo, DoGet (each endpoint),
/// ClosePreparedStatement.
pub(crate) async fn prepared(client: &mut Client, sql: &str) -> Vec<RecordBatch> {
    fn ok<T>(sql: &str, r: Result<T, arrow_flight::error::FlightError>) -> T {
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
    let mut statement = ok(sql, client.prepare(sql.to_string(), None).await);
    let info = ok(sql, statement.execute().await);
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.expect("an endpoint with a ticket");
        let stream = ok(sql, client.do_get(ticket).await);
        out.extend(ok(sql, stream.try_collect::<Vec<_>>().await));
    }
    ok(sql, statement.close().await);
    out
}

pub(crate) fn rows(b: &[RecordBatch]) -> usize {
    b.iter().map(|b| b.num_rows()).sum()
}

/// One query's medians: embedded, gateway as analyst, gateway as marketer.
pub(crate) struct Measured {
    pub(crate) name: String,
    /// What embedded DataFusion returned (the analyst got as many).
    pub(crate) rows: usize,
    pub(crate) times: [Duration; 3],
}

/// Each query embedded, as analyst and as marketer (`clients`: those two, in that order):
/// median of `runs` after one warm-up, one printed line per query with ratios to embedded,
/// then the totals. The analyst must get as many rows as DataFusion.
pub(crate) async fn compare(
    ctx: &SessionContext,
    clients: &mut [Client],
    queries: &[(String, String)],
    runs: usize,
) -> Vec<Measured> {
    let width = queries.iter().map(|q| q.0.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<width$} {:>12} {:>14} {:>8} {:>14} {:>8}",
        "query", "embedded", "gw analyst", "ratio", "gw marketer", "ratio"
    );
    let mut totals = [Duration::ZERO; 3];
    let mut measured = Vec::new();
    for (name, sql) in queries {
        let mut t: [Vec<Duration>; 3] = Default::default();
        let mut n = 0;
        for run in 0..=runs {
            let s = Instant::now();
            let e = embedded_run(ctx, sql).await;
            let d0 = s.elapsed();
            let s = Instant::now();
            let a = flight(&mut clients[0], sql).await;
            let d1 = s.elapsed();
            let s = Instant::now();
            flight(&mut clients[1], sql).await;
            let d2 = s.elapsed();
            assert_eq!(
                rows(&e),
                rows(&a),
                "{name}: the analyst sees what DataFusion sees"
            );
            n = rows(&e);
            if run > 0 {
                t[0].push(d0);
                t[1].push(d1);
                t[2].push(d2);
            }
        }
        let m: Vec<Duration> = t.into_iter().map(median).collect();
        for i in 0..3 {
            totals[i] += m[i];
        }
        print_row(name, &m, width);
        measured.push(Measured {
            name: name.clone(),
            rows: n,
            times: [m[0], m[1], m[2]],
        });
    }
    print_row("total", &totals, width);
    measured
}

/// One line: embedded time, then each gateway time with its ratio to embedded.
fn print_row(name: &str, t: &[Duration], width: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |d: Duration| d.as_secs_f64() / t[0].as_secs_f64();
    println!(
        "{name:<width$} {:>10.1}ms {:>12.1}ms {:>8.2} {:>12.1}ms {:>8.2}",
        ms(t[0]),
        ms(t[1]),
        ratio(t[1]),
        ms(t[2]),
        ratio(t[2])
    );
}
