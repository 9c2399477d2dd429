//! Distributed execution end to end: the gateway (in process) and a Ballista cluster of
//! real `meshgate cluster` processes on 127.0.0.1. What the per-role SQL suite does not
//! cover: raw PII never reaching a masked caller, routing and its header, a cluster that
//! is down, misconfigured or hostile executors, secrets on the wire, a killed executor,
//! and a cluster that sees other data than the gateway.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use meshgate_server::config::{DistributedConfig, WhenUnavailable};
use meshgate_server::{ServerConfig, config::Limits};
use tonic::Code;

use super::flight::{Client, TestServer, code, strings};
use crate::common::cluster::{ClusterSpec, LocalCluster, free_port};
use crate::common::s3::{BUCKET, LocalS3};
use crate::common::{TEST_KEY, TestMesh};

pub(super) fn distributed(scheduler: &str, min_scan_bytes: u64) -> DistributedConfig {
    DistributedConfig {
        scheduler: scheduler.to_string(),
        tls: None,
        min_scan_bytes,
        allow_override: true,
        when_unavailable: WhenUnavailable::Local,
    }
}

pub(super) async fn cluster(spec: ClusterSpec<'static>) -> LocalCluster {
    tokio::task::spawn_blocking(move || LocalCluster::start(&spec))
        .await
        .unwrap()
}

async fn gateway_for(cluster: &LocalCluster, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let scheduler = cluster.scheduler.clone();
    TestServer::with(move |c| {
        c.distributed = Some(distributed(&scheduler, u64::MAX));
        adjust(c);
    })
    .await
}

/// A client of `user` that asks for `execution` on every call.
pub(super) async fn client(s: &TestServer, user: &str, execution: &str) -> Client {
    let mut c = s.client(user).await;
    c.set_header("x-meshgate-execution", execution);
    c
}

pub(super) async fn run(c: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
    let info = c.execute(sql.into(), None).await.map_err(status)?;
    let mut out = vec![];
    for ep in info.endpoint {
        let mut stream = c.do_get(ep.ticket.unwrap()).await.map_err(status)?;
        while let Some(b) = stream.try_next().await.map_err(status)? {
            out.push(b);
        }
    }
    Ok(out)
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => {
            let t = other.to_string();
            let code = [
                ("InvalidArgument", Code::InvalidArgument),
                ("PermissionDenied", Code::PermissionDenied),
                ("FailedPrecondition", Code::FailedPrecondition),
                ("Unavailable", Code::Unavailable),
                ("DeadlineExceeded", Code::DeadlineExceeded),
            ]
            .into_iter()
            .find(|(n, _)| t.contains(n))
            .map_or(Code::Unknown, |(_, c)| c);
            tonic::Status::new(code, t)
        }
    }
}

pub(super) fn all_strings(batches: &[RecordBatch]) -> Vec<String> {
    let Some(first) = batches.first() else {
        return vec![];
    };
    (0..first.num_columns())
        .flat_map(|i| strings(batches, i))
        .collect()
}

pub(super) fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let Some(first) = batches.first() else {
        return vec![];
    };
    let cols: Vec<Vec<String>> = (0..first.num_columns())
        .map(|i| strings(batches, i))
        .collect();
    let mut rows: Vec<String> = (0..cols[0].len())
        .map(|r| {
            cols.iter()
                .map(|c| c[r].as_str())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

/// Audit lines of queries (not handshakes, not metadata).
pub(super) fn audited(s: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&s.audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["engine"].is_string())
        .collect()
}

const PII: &str = "SELECT email, first_name, last_name, phone, street_address \
                   FROM customers.customer_profiles";

/// Every query shape that could carry a raw value out, run distributed as a masked or
/// row-filtered role: none of the sample data's PII values comes back, and the results
/// equal local execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_callers_never_receive_raw_pii_from_the_cluster() {
    let cluster = cluster(ClusterSpec::default()).await;
    let s = gateway_for(&cluster, |_| {}).await;
    let raw = |sql: &str| {
        let s = &s;
        let sql = sql.to_string();
        async move {
            all_strings(
                &run(&mut client(s, "analyst", "local").await, &sql)
                    .await
                    .unwrap(),
            )
            .into_iter()
            .filter(|v| v != "NULL" && v.len() >= 4)
            .collect::<HashSet<String>>()
        }
    };
    // The marketer may see none of it; the EU support role reads EU rows in the clear,
    // so no other region's values.
    let all = raw(PII).await;
    // Names, phones' last digits and addresses recur across regions; an email is one
    // customer's.
    let outside_eu =
        raw("SELECT email FROM customers.customer_profiles WHERE region <> 'EU'").await;
    assert!(
        all.len() > 10_000 && outside_eu.len() > 5_000,
        "the analyst reads PII in the clear"
    );
    let shapes = [
        "SELECT * FROM customers.customer_profiles",
        "SELECT email, count(*) FROM customers.customer_profiles GROUP BY email",
        "SELECT min(email), max(email), min(first_name), max(phone), max(street_address) FROM customers.customer_profiles",
        "SELECT email, row_number() OVER (PARTITION BY country ORDER BY email) FROM customers.customer_profiles",
        "SELECT c.email, c.phone, w.country FROM customers.customer_profiles c JOIN web.web_sessions w ON w.country = c.country WHERE c.customer_id < 'C000300' ORDER BY c.email, w.session_id LIMIT 2000",
        "SELECT email FROM customers.customer_profiles WHERE email IN (SELECT email FROM customers.customer_profiles_v1)",
        "SELECT first_name || ' ' || last_name, upper(email) FROM customers.customer_profiles",
        "SELECT * FROM customers.customer_profiles WHERE email LIKE '%@%' ORDER BY customer_id LIMIT 50",
    ];
    let mut ran = 0;
    for (user, raw) in [("marketer", &all), ("support", &outside_eu)] {
        let mut dist = client(&s, user, "distributed").await;
        let mut local = client(&s, user, "local").await;
        for sql in shapes {
            let got = run(&mut dist, sql)
                .await
                .unwrap_or_else(|e| panic!("{user}: {sql}: {e}"));
            let leaked: Vec<_> = all_strings(&got)
                .into_iter()
                .filter(|v| raw.contains(v))
                .take(3)
                .collect();
            assert!(
                leaked.is_empty(),
                "{user} received raw PII {leaked:?} from {sql}"
            );
            let expected = run(&mut local, sql).await.unwrap();
            assert_eq!(sorted_rows(&got), sorted_rows(&expected), "{user}: {sql}");
            ran += 1;
        }
    }
    // They did run on the cluster, as jobs: the audit says so.
    let lines = audited(&s);
    let on_cluster: Vec<_> = lines
        .iter()
        .filter(|l| l["engine"] == "distributed")
        .collect();
    assert_eq!(on_cluster.len(), ran, "{lines:#?}");
    assert!(
        on_cluster
            .iter()
            .all(|l| l["job_id"].as_str().is_some_and(|j| !j.is_empty()))
    );
}

/// Ballista gives each task its share of a stage by restricting the stage's leaves to
/// the task's partitions: a product scan read twice in one plan (a UNION, an IN-subquery,
/// TPC-H q18's HAVING) must be read once per partition, not whole by every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_reads_only_its_share_of_a_product() {
    // One slot per executor: a stage's partitions go to several tasks.
    let cluster = cluster(ClusterSpec {
        concurrent_tasks: 1,
        ..ClusterSpec::default()
    })
    .await;
    let s = gateway_for(&cluster, |_| {}).await;
    let mut ran = 0;
    // Two files (checkout), a row filter (support reads EU customers), masks (marketer).
    let cases = [
        (
            "analyst",
            "checkout.checkout_orders_summary",
            "order_id",
            "user_email",
        ),
        (
            "marketer",
            "checkout.checkout_orders_summary",
            "order_id",
            "user_email",
        ),
        (
            "marketer",
            "customers.customer_profiles",
            "customer_id",
            "email",
        ),
        (
            "support",
            "customers.customer_profiles",
            "customer_id",
            "email",
        ),
    ];
    for (user, t, id, other) in cases {
        // A predicate, so that no count is answered from the footers.
        let shapes = [
            format!("SELECT count(*) FROM {t} WHERE length({other}) >= 0"),
            format!(
                "SELECT count(*) FROM (SELECT {other} FROM {t} UNION ALL SELECT {other} FROM {t}) \
                 WHERE length({other}) >= 0"
            ),
            format!(
                "SELECT count(*) FROM {t} WHERE {id} IN (SELECT {id} FROM {t} WHERE {other} LIKE '%e%')"
            ),
            format!(
                "SELECT {other}, count(*) FROM {t} WHERE {other} IN \
                 (SELECT {other} FROM {t} GROUP BY {other} HAVING count(*) > 1) GROUP BY {other}"
            ),
        ];
        let mut dist = client(&s, user, "distributed").await;
        let mut local = client(&s, user, "local").await;
        let mut rows = vec![];
        for sql in &shapes {
            let got = run(&mut dist, sql)
                .await
                .unwrap_or_else(|e| panic!("{user}: {sql}: {e}"));
            let expected = run(&mut local, sql).await.unwrap();
            assert_eq!(sorted_rows(&got), sorted_rows(&expected), "{user}: {sql}");
            rows.push(sorted_rows(&got));
        }
        let once: u64 = rows[0][0].parse().unwrap();
        assert!(once > 1_000, "{user} reads {once} rows of {t}");
        assert_eq!(rows[1], vec![(2 * once).to_string()], "{user}: {t}");
        ran += shapes.len();
    }
    let lines = audited(&s);
    let on_cluster = lines
        .iter()
        .filter(|l| l["engine"] == "distributed")
        .count();
    assert_eq!(on_cluster, ran, "{lines:#?}");
}

/// EXPLAIN of a statement the cluster runs: no footer statistics of masked columns, no
/// count, size or path of hidden rows, in any form, ANALYZE's metrics from the executors
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_explain_form_shows_what_the_role_may_not_see_on_the_cluster() {
    use crate::common::oracle::RoleView;
    use crate::common::{key, principal};

    let cluster = cluster(ClusterSpec::default()).await;
    let s = gateway_for(&cluster, |_| {}).await;
    let mut on_cluster = 0;
    for (role, user) in [("marketer", "marketer"), ("eu_support", "support")] {
        let view = RoleView::compute(&s.mesh.mesh, principal(role), &key()).await;
        let mut c = client(&s, user, "distributed").await;
        for form in crate::common::EXPLAIN_FORMS {
            for query in &super::leaks::QUERIES[..5] {
                let sql = format!("{form} {query}");
                let out = match run(&mut c, &sql).await {
                    Ok(b) => all_strings(&b).join("\n"),
                    Err(e) => e.message().to_string(),
                };
                on_cluster += usize::from(out.contains("DistributedExec"));
                if let Some(found) = view.forbidden.in_metadata(&out) {
                    let lines: Vec<_> = out.lines().filter(|l| l.contains(&found)).collect();
                    panic!("{role}: {sql} shows {found:?}:\n{}", lines.join("\n"));
                }
            }
        }
    }
    assert!(
        on_cluster > 20,
        "only {on_cluster} plans ran on the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_rule_the_header_and_explain() {
    let cluster = cluster(ClusterSpec::default()).await;
    // Nothing here is big enough for the cluster unless asked for.
    let s = gateway_for(&cluster, |_| {}).await;
    let sql = "SELECT region, count(*) FROM customers.customer_profiles GROUP BY region";
    run(&mut s.client("analyst").await, sql).await.unwrap();
    run(&mut client(&s, "analyst", "distributed").await, sql)
        .await
        .unwrap();
    run(&mut client(&s, "analyst", "AUTO").await, sql)
        .await
        .unwrap();
    // Metadata and information_schema stay here, whatever is asked.
    run(
        &mut client(&s, "analyst", "distributed").await,
        "SELECT table_name FROM information_schema.tables",
    )
    .await
    .unwrap();
    let lines = audited(&s);
    let engines: Vec<_> = lines
        .iter()
        .map(|l| (l["engine"].as_str().unwrap(), l["route"].as_str().unwrap()))
        .collect();
    assert_eq!(engines[0].0, "local");
    assert!(
        engines[0].1.contains("distributed.min_scan_bytes"),
        "{engines:?}"
    );
    assert_eq!(engines[1], ("distributed", "asked for by the caller"));
    assert_eq!(engines[2].0, "local");
    assert_eq!(engines[3], ("local", "reads no product files"));

    // EXPLAIN names the engine the statement would run on.
    let plan = all_strings(
        &run(
            &mut client(&s, "analyst", "distributed").await,
            &format!("EXPLAIN {sql}"),
        )
        .await
        .unwrap(),
    )
    .join("\n");
    assert!(
        plan.contains("meshgate: engine=distributed (asked for by the caller)"),
        "{plan}"
    );

    // EXPLAIN ANALYZE runs the statement on the cluster and names the job, the one the
    // audit line names.
    let analyzed = all_strings(
        &run(
            &mut client(&s, "analyst", "distributed").await,
            &format!("EXPLAIN ANALYZE {sql}"),
        )
        .await
        .unwrap(),
    )
    .join("\n");
    let line = audited(&s).pop().unwrap();
    let job = line["job_id"].as_str().expect("a job id in the audit line");
    assert!(
        analyzed.contains(&format!(
            "DistributedExec: engine=ballista, scheduler={}, job={job}",
            cluster.scheduler
        )),
        "{analyzed}\n{line}"
    );
    assert!(analyzed.contains("output_rows="), "{analyzed}");

    // The Flight session option does what the header does: SetSessionOptions answers
    // with a cookie, and calls that send it back are routed as asked.
    let mut c = s.client("analyst").await;
    let cookie = set_execution_option(&mut c, "distributed").await;
    assert_eq!(cookie, "x-meshgate-execution=distributed");
    c.set_header("cookie", format!("theme=dark; {cookie}"));
    run(&mut c, sql).await.unwrap();
    let line = audited(&s).pop().unwrap();
    assert_eq!(
        (line["engine"].as_str(), line["route"].as_str()),
        (Some("distributed"), Some("asked for by the caller")),
        "{line}"
    );
    // The header, sent as well, wins.
    c.set_header("x-meshgate-execution", "local");
    run(&mut c, sql).await.unwrap();
    assert_eq!(audited(&s).pop().unwrap()["engine"], "local");

    // Another value is INVALID_ARGUMENT, on GetFlightInfo and on DoGet.
    let bad = run(&mut client(&s, "analyst", "fast").await, sql)
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
    let mut c = s.client("analyst").await;
    let info = c.execute(sql.into(), None).await.unwrap();
    c.set_header("x-meshgate-execution", "everywhere");
    assert_eq!(
        code(c.do_get(info.endpoint[0].ticket.clone().unwrap()).await),
        Code::InvalidArgument
    );

    // Above the threshold, auto goes to the cluster by itself.
    let small = gateway_for(&cluster, |c| {
        c.distributed.as_mut().unwrap().min_scan_bytes = 1
    })
    .await;
    run(&mut small.client("analyst").await, sql).await.unwrap();
    let line = audited(&small).pop().unwrap();
    assert_eq!(line["engine"], "distributed", "{line}");
    assert!(
        line["route"]
            .as_str()
            .unwrap()
            .contains(">= distributed.min_scan_bytes")
    );

    // Where the config does not allow a choice, a choice is refused.
    let strict = gateway_for(&cluster, |c| {
        c.distributed.as_mut().unwrap().allow_override = false
    })
    .await;
    let refused = run(&mut client(&strict, "analyst", "local").await, sql)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    run(&mut client(&strict, "analyst", "auto").await, sql)
        .await
        .unwrap();
}

/// SetSessionOptions `x-meshgate-execution = value` as `c`'s user: the `Set-Cookie` the
/// gateway answers with.
async fn set_execution_option(c: &mut Client, value: &str) -> String {
    use meshgate_proto::flight_session::{
        SET_SESSION_OPTIONS, SessionOptionValue, SetSessionOptionsRequest, SetSessionOptionsResult,
        session_option_value::OptionValue,
    };
    use prost::Message;
    let request = SetSessionOptionsRequest {
        session_options: [(
            "x-meshgate-execution".to_string(),
            SessionOptionValue {
                option_value: Some(OptionValue::StringValue(value.into())),
            },
        )]
        .into(),
    };
    let mut req = tonic::Request::new(arrow_flight::Action::new(
        SET_SESSION_OPTIONS,
        request.encode_to_vec(),
    ));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", c.token().unwrap()).parse().unwrap(),
    );
    let response = c.inner_mut().do_action(req).await.unwrap();
    let cookie = response
        .metadata()
        .get("set-cookie")
        .expect("a Set-Cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let result = response.into_inner().message().await.unwrap().unwrap();
    let errors = SetSessionOptionsResult::decode(result.body).unwrap().errors;
    assert!(errors.is_empty(), "{errors:?}");
    cookie
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_is_down_falls_back_or_fails_as_configured() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    // It reads rows (a bare count is answered from the Parquet footers, here).
    let sql = "SELECT count(DISTINCT email) FROM customers.customer_profiles";
    let fallback = TestServer::with(|c| c.distributed = Some(distributed(&nowhere, 1))).await;
    let rows = run(&mut client(&fallback, "marketer", "distributed").await, sql)
        .await
        .unwrap();
    assert_eq!(strings(&rows, 0).len(), 1);
    let line = audited(&fallback).pop().unwrap();
    assert_eq!(line["engine"], "local");
    assert!(
        line["route"]
            .as_str()
            .unwrap()
            .contains("cluster unavailable"),
        "{line}"
    );

    let strict = TestServer::with(|c| {
        let mut d = distributed(&nowhere, 1);
        d.when_unavailable = WhenUnavailable::Fail;
        c.distributed = Some(d);
    })
    .await;
    let e = run(&mut strict.client("marketer").await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");

    // No cluster at all: asking for one is a precondition failure, auto runs here.
    let none = TestServer::start().await;
    let e = run(&mut client(&none, "marketer", "distributed").await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    run(&mut client(&none, "marketer", "auto").await, sql)
        .await
        .unwrap();
}

/// An executor holding another hash key, one without meshgate's codec, and one with an
/// impostor `mask_hash` registered by name: the masked query fails, and no row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_without_the_codec_or_the_key_fail_the_query() {
    let sql = "SELECT email FROM customers.customer_profiles";
    let other_key = cluster(ClusterSpec {
        executors: 1,
        executor_key: Some(b"another-deployment-hash-key-42"),
        ..Default::default()
    })
    .await;
    let s = gateway_for(&other_key, |_| {}).await;
    let e = run(&mut client(&s, "marketer", "distributed").await, sql)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");

    // A scheduler with no executor of its own, and a plain Ballista executor in this
    // process that would answer `mask_hash` with the raw value.
    let bare = cluster(ClusterSpec {
        executors: 0,
        ..Default::default()
    })
    .await;
    let impostor = datafusion::logical_expr::create_udf(
        "mask_hash",
        vec![arrow::datatypes::DataType::Utf8View],
        arrow::datatypes::DataType::Utf8View,
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(|args: &[datafusion::logical_expr::ColumnarValue]| Ok(args[0].clone())),
    );
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    registry
        .scalar_functions
        .insert("mask_hash".into(), Arc::new(impostor));
    let config = ballista_executor::executor_process::ExecutorProcessConfig {
        scheduler_host: "127.0.0.1".into(),
        scheduler_port: bare.scheduler_addr.port(),
        port: free_port(),
        grpc_port: free_port(),
        vcores: 1,
        override_function_registry: Some(Arc::new(registry)),
        ..Default::default()
    };
    let executor = tokio::spawn(ballista_executor::executor_process::start_executor_process(
        Arc::new(config),
    ));
    tokio::task::block_in_place(|| bare.wait_ready(1));
    let s = gateway_for(&bare, |_| {}).await;
    let mut c = client(&s, "marketer", "distributed").await;
    let info = c.execute(sql.into(), None).await.unwrap();
    let mut stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let mut rows = 0;
    let failed = loop {
        match stream.try_next().await {
            Ok(Some(b)) => rows += b.num_rows(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        failed && rows == 0,
        "the impostor executor answered {rows} rows"
    );
    executor.abort();
}

/// Everything the gateway and the executors exchange with the scheduler, recorded by a
/// proxy in front of it: job submissions with their settings, stage plans (executors pull
/// their tasks through it). Neither the hash key nor any credential is in there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_and_no_secret_travels_to_the_cluster() {
    let s3 = Box::leak(Box::new(
        tokio::task::spawn_blocking(LocalS3::start).await.unwrap(),
    ));
    let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let scheduler: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let recorded = Arc::new(Mutex::new(Vec::<u8>::new()));
    tokio::spawn(record(proxy, scheduler, Arc::clone(&recorded)));
    let _cluster = cluster(ClusterSpec {
        s3: Some(s3),
        scheduling: Some("pull"),
        executors_via: Some(proxy),
        scheduler_port: Some(scheduler.port()),
        ..Default::default()
    })
    .await;
    let mesh = TestMesh::load_s3(s3).await;
    let s = TestServer::with_mesh(mesh, |c| {
        c.distributed = Some(distributed(&format!("http://{proxy}"), u64::MAX));
    })
    .await;
    for (user, sql) in [
        (
            "marketer",
            "SELECT email, phone FROM customers.customer_profiles ORDER BY email LIMIT 10",
        ),
        (
            "support",
            "SELECT email, count(*) FROM customers.customer_profiles GROUP BY email",
        ),
        (
            "marketer",
            "SELECT c.email, o.order_id FROM customers.customer_profiles c JOIN checkout.checkout_orders_summary o ON o.user_email = c.email LIMIT 10",
        ),
    ] {
        run(&mut client(&s, user, "distributed").await, sql)
            .await
            .unwrap();
    }
    let wire = recorded.lock().unwrap().clone();
    let has = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    // The capture is real: plans with their masks, and the session's settings.
    assert!(
        has(format!(
            "meshgate.mask/{}/hash/",
            meshgate_policy::codec::FORMAT_VERSION
        )
        .as_bytes()),
        "no plan was captured ({} bytes)",
        wire.len()
    );
    assert!(has(b"datafusion.execution.target_partitions"));
    assert!(has(b"s3://meshgate-sample") || has(BUCKET.as_bytes()));
    for (what, secret) in [
        ("hash key", TEST_KEY.to_vec()),
        ("hash key (hex)", hex_bytes(TEST_KEY)),
        ("token key", b"test-token-key-0123456789".to_vec()),
        ("S3 secret", s3.secret_access_key.as_bytes().to_vec()),
        ("S3 access key id", s3.access_key_id.as_bytes().to_vec()),
    ] {
        assert!(!has(&secret), "the {what} was sent to the cluster");
    }
}

fn hex_bytes(b: &[u8]) -> Vec<u8> {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// A TCP proxy that keeps a copy of every byte, both ways.
pub(super) async fn record(listen: SocketAddr, upstream: SocketAddr, into: Arc<Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    loop {
        let (client, _) = listener.accept().await.unwrap();
        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
            continue;
        };
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        for (mut from, mut to, into) in [
            (
                Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                Arc::clone(&into),
            ),
            (Box::new(sr), Box::new(cw), Arc::clone(&into)),
        ] {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = from.read(&mut buf).await {
                    if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = to.shutdown().await;
            });
        }
    }
}

/// An executor killed while queries run: each gives the right answer or an error, never
/// a short one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_gives_an_error_or_the_right_answer() {
    let mut cluster = cluster(ClusterSpec::default()).await;
    let s = gateway_for(&cluster, |c| {
        c.limits = Limits {
            query_timeout_secs: 40,
            sla_check_interval_secs: 0,
            ..Limits::default()
        }
    })
    .await;
    let sql = "SELECT c.region, count(*), count(DISTINCT c.email), count(DISTINCT w.country) \
               FROM customers.customer_profiles c JOIN web.web_sessions w ON w.user_email = c.email \
               GROUP BY c.region ORDER BY c.region";
    let expected = run(&mut client(&s, "analyst", "local").await, sql)
        .await
        .unwrap();
    let mut outcomes = vec![];
    for (i, delay) in [0u64, 100, 400].into_iter().enumerate() {
        let mut c = client(&s, "analyst", "distributed").await;
        let query = tokio::spawn(async move { run(&mut c, sql).await });
        tokio::time::sleep(Duration::from_millis(delay)).await;
        cluster.kill_executor(i);
        match query.await.unwrap() {
            Ok(got) => {
                assert_eq!(
                    sorted_rows(&got),
                    sorted_rows(&expected),
                    "a short or wrong answer"
                );
                outcomes.push("right answer");
            }
            Err(e) => outcomes.push(
                if e.code() == Code::Unavailable || e.code() == Code::DeadlineExceeded {
                    "error"
                } else {
                    "other error"
                },
            ),
        }
        // Back to two executors for the next round.
        let spec = ClusterSpec::default();
        let addr = cluster.scheduler_addr;
        tokio::task::block_in_place(|| cluster.add_executor(&spec, addr));
    }
    assert!(!outcomes.is_empty(), "{outcomes:?}");
    eprintln!("killed-executor outcomes: {outcomes:?}");
}

/// The gateway lists files on its S3; the cluster's S3 has the bucket but not the files.
/// The query fails: an empty answer would be a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_the_cluster_sees_empty_is_an_error() {
    let full = Box::leak(Box::new(
        tokio::task::spawn_blocking(LocalS3::start).await.unwrap(),
    ));
    let empty_dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let path = empty_dir.path().to_path_buf();
    let empty = Box::leak(Box::new(
        tokio::task::spawn_blocking(move || {
            LocalS3::serving(&crate::common::s3::python(), BUCKET, &path)
        })
        .await
        .unwrap(),
    ));
    let cluster = cluster(ClusterSpec {
        s3: Some(empty),
        executors: 1,
        ..Default::default()
    })
    .await;
    let s = TestServer::with_mesh(TestMesh::load_s3(full).await, |c| {
        c.distributed = Some(distributed(&cluster.scheduler, u64::MAX));
    })
    .await;
    // Rows, not a count (which the Parquet footers answer on the gateway).
    let sql = "SELECT customer_id FROM customers.customer_profiles WHERE region = 'EU'";
    let e = run(&mut client(&s, "analyst", "distributed").await, sql)
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(!e.message().is_empty());
}
