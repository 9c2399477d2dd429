//! A cluster off loopback: mutual TLS on every cluster port. The processes bind all
//! interfaces (refused without TLS), masked queries run with their shuffles and result
//! fetches over TLS, and nothing without a certificate of the cluster's CA gets in:
//! not a plaintext client, not a TLS client without a certificate, not a certificate of
//! another CA, not an executor holding one. On the wire, plans are no longer readable.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista_core::serde::protobuf::GetJobStatusParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use meshgate_cluster::{Cluster, ClusterCodec, ClusterTls, Health};
use meshgate_server::config::{DistributedConfig, WhenUnavailable};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::distributed::{all_strings, audited, client, cluster, record, run, sorted_rows};
use super::flight::TestServer;
use crate::common::cluster::{ClusterSpec, free_port};
use crate::common::pki::Authority;

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

/// Whether a scheduler call over `endpoint` gets an answer of the scheduler's (even "no
/// such job"): false when the connection or the TLS handshake is refused.
async fn scheduler_answers(endpoint: Endpoint) -> bool {
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut scheduler = SchedulerGrpcClient::new(channel);
    answered(scheduler.get_job_status(GetJobStatusParams {
        job_id: "no-such-job".into(),
    }))
    .await
}

/// Whether an executor's Flight service answers over `endpoint`.
async fn flight_answers(endpoint: Endpoint) -> bool {
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    answered(client.list_actions(arrow_flight::Empty {})).await
}

/// A status the server wrote (even "no such job" or "unimplemented") is an answer; one the
/// client made of a broken connection or handshake, or silence, is not.
async fn answered<T>(call: impl std::future::Future<Output = Result<T, tonic::Status>>) -> bool {
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(_)) => true,
        Ok(Err(status)) => {
            std::error::Error::source(&status).is_none() && !status.message().contains("transport")
        }
        Err(_) => false,
    }
}

/// `url` dialled with `tls`'s certificate.
fn dial(tls: &ClusterTls, url: &str) -> Endpoint {
    tls.secure(Endpoint::from_shared(url.to_string()).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_off_loopback_runs_masked_queries_over_mutual_tls_only() {
    let dir = leak(tempfile::tempdir().unwrap());
    let ca = Authority::new("cluster");
    let node = leak(ca.issue(dir.path(), "node"));
    let gateway_tls = ca.issue(dir.path(), "gateway");
    let impostor = leak(Authority::new("stranger").issue(dir.path(), "impostor"));

    // Scheduler and executors on 0.0.0.0, which only TLS allows; pull scheduling by default.
    let mut cluster = cluster(ClusterSpec {
        tls: Some(node),
        ..Default::default()
    })
    .await;
    assert!(
        cluster.scheduler.starts_with("https://"),
        "{}",
        cluster.scheduler
    );

    // The gateway talks to the scheduler through a recorder of every byte.
    let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let wire = Arc::new(Mutex::new(Vec::<u8>::new()));
    tokio::spawn(record(proxy, cluster.scheduler_addr, Arc::clone(&wire)));
    let s = TestServer::with(|c| {
        c.distributed = Some(DistributedConfig {
            scheduler: format!("https://{proxy}"),
            tls: Some(gateway_tls.clone()),
            min_scan_bytes: u64::MAX,
            allow_override: true,
            when_unavailable: WhenUnavailable::Fail,
        });
    })
    .await;

    // Stages with shuffles between the executors (join, GROUP BY, window), masked or not:
    // the same rows as local execution, and no raw e-mail for the marketer.
    let shapes = [
        "SELECT c.country, count(*), min(c.email), max(o.order_id) \
         FROM customers.customer_profiles c \
         JOIN checkout.checkout_orders_summary o ON o.user_email = c.email GROUP BY c.country",
        "SELECT email, row_number() OVER (PARTITION BY country ORDER BY email) \
         FROM customers.customer_profiles",
    ];
    let raw: HashSet<String> = all_strings(
        &run(
            &mut client(&s, "analyst", "local").await,
            "SELECT email FROM customers.customer_profiles",
        )
        .await
        .unwrap(),
    )
    .into_iter()
    .collect();
    for user in ["analyst", "marketer"] {
        let mut dist = client(&s, user, "distributed").await;
        let mut local = client(&s, user, "local").await;
        for sql in shapes {
            let got = run(&mut dist, sql)
                .await
                .unwrap_or_else(|e| panic!("{user}: {sql}: {e}\n{}", cluster.logs()));
            let expected = run(&mut local, sql).await.unwrap();
            assert_eq!(sorted_rows(&got), sorted_rows(&expected), "{user}: {sql}");
            if user == "marketer" {
                assert!(
                    !all_strings(&got).iter().any(|v| raw.contains(v)),
                    "the marketer received a raw e-mail from {sql}"
                );
            }
        }
    }
    let lines = audited(&s);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["engine"] == "distributed")
            .count(),
        4,
        "{lines:#?}"
    );

    // What crossed the wire to the scheduler is not readable: no plan, no mask, no setting.
    let wire = wire.lock().unwrap().clone();
    let has = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(
        wire.len() > 10_000,
        "nothing recorded ({} bytes)",
        wire.len()
    );
    for readable in [
        &b"meshgate.mask/"[..],
        b"datafusion.execution",
        b"customer_profiles",
    ] {
        assert!(
            !has(readable),
            "{:?} crossed the wire in the clear",
            String::from_utf8_lossy(readable)
        );
    }

    // Nobody without a certificate of the cluster's CA reaches the scheduler…
    let https = format!("https://127.0.0.1:{}", cluster.scheduler_addr.port());
    let own = ClusterTls::load(node).unwrap();
    assert!(
        scheduler_answers(dial(&own, &https)).await,
        "the control: a cluster certificate is answered"
    );
    let plaintext = Endpoint::from_shared(format!("http://{}", cluster.scheduler_addr)).unwrap();
    assert!(
        !scheduler_answers(plaintext).await,
        "a plaintext client was answered"
    );
    let ca_pem = std::fs::read(&node.ca).unwrap();
    let no_certificate = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .unwrap();
    assert!(
        !scheduler_answers(no_certificate).await,
        "a client without a certificate was answered"
    );
    let stranger = ClusterTls::load(impostor).unwrap();
    assert!(
        !scheduler_answers(dial(&stranger, &https)).await,
        "a certificate of another CA was answered"
    );
    // …and a gateway of another CA does not trust this scheduler either.
    let health = Cluster::new(
        &https,
        ClusterCodec::new(crate::common::key()),
        Some(stranger.clone()),
    )
    .health()
    .await;
    assert!(matches!(health, Health::Unavailable(_)), "{health:?}");

    // An executor's Flight port (shuffle files, results) refuses the same strangers.
    let flight = format!("https://127.0.0.1:{}", cluster.flight_ports[0]);
    assert!(
        flight_answers(dial(&own, &flight)).await,
        "the control: the executor answers a cluster certificate"
    );
    let plain_flight =
        Endpoint::from_shared(format!("http://127.0.0.1:{}", cluster.flight_ports[0])).unwrap();
    assert!(
        !flight_answers(plain_flight).await,
        "plaintext Flight was answered"
    );
    assert!(
        !flight_answers(dial(&stranger, &flight)).await,
        "an executor answered a certificate of another CA"
    );

    // An executor with another CA's certificate never joins.
    let scheduler_addr = cluster.scheduler_addr;
    let impostor_spec = ClusterSpec {
        tls: Some(node),
        executor_tls: Some(impostor),
        ..Default::default()
    };
    cluster.add_executor(&impostor_spec, scheduler_addr);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let readiness = tokio::task::block_in_place(|| cluster.readiness()).unwrap_or_default();
    assert!(
        readiness.contains("ready: 2 executors"),
        "{readiness}\n{}",
        cluster.logs()
    );
}

/// Run a `meshgate cluster …` command that must be refused before it serves anything.
async fn refused(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("cluster")
        .args(args)
        // A process that wrongly starts stops at once: its standard input is closed.
        .arg("--until-stdin-closes")
        .stdin(std::process::Stdio::null())
        .env("MESHGATE_HASH_KEY", "test-hash-key-0123456789abcdef")
        .env("MESHGATE_CONFIG", "/nonexistent/meshgate.yaml")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} was accepted: {stderr}");
    stderr
}

#[tokio::test]
async fn cluster_ports_leave_loopback_only_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = Authority::new("cluster").issue(dir.path(), "node");
    let tls: Vec<&str> = vec![
        "--tls-ca",
        files.ca.to_str().unwrap(),
        "--tls-cert",
        files.cert.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ];
    let port = free_port().to_string();
    let any = format!("0.0.0.0:{port}");

    let e = refused(&["scheduler", "--bind", &any]).await;
    assert!(e.contains("0.0.0.0") && e.contains("mutual TLS"), "{e}");
    let e = refused(&["executor", "--scheduler", "192.0.2.10:50060"]).await;
    assert!(e.contains("192.0.2.10") && e.contains("mutual TLS"), "{e}");
    let e = refused(&["executor", "--bind", "0.0.0.0"]).await;
    assert!(e.contains("0.0.0.0"), "{e}");
    // Nor may it advertise a name others would dial in the clear.
    let e = refused(&["executor", "--external-host", "exec1.mesh.internal"]).await;
    assert!(
        e.contains("exec1.mesh.internal") && e.contains("mutual TLS"),
        "{e}"
    );

    // With TLS: push scheduling has a plaintext port, so it is refused.
    let e = refused(
        &[
            &["scheduler", "--bind", &any, "--scheduling", "push"],
            &tls[..],
        ]
        .concat(),
    )
    .await;
    assert!(e.contains("pull"), "{e}");
    // An executor on every interface must say what name others dial it by.
    let e = refused(&[&["executor", "--bind", "0.0.0.0"], &tls[..]].concat()).await;
    assert!(e.contains("--external-host"), "{e}");
    // Half a TLS configuration is none.
    let e = refused(&["scheduler", "--tls-ca", files.ca.to_str().unwrap()]).await;
    assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
    // A file that is not what it should be is named.
    let e = refused(&[
        "scheduler",
        "--tls-ca",
        files.ca.to_str().unwrap(),
        "--tls-cert",
        files.key.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ])
    .await;
    assert!(
        e.contains("certificate") && e.contains(files.key.to_str().unwrap()),
        "{e}"
    );
    let missing = dir.path().join("missing.pem");
    let e = refused(&[
        "scheduler",
        "--tls-ca",
        missing.to_str().unwrap(),
        "--tls-cert",
        files.cert.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ])
    .await;
    assert!(e.contains("missing.pem"), "{e}");
}
