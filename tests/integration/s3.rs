//! Products on S3 (a local moto server): served like local ones, and every way an object
//! store can be wrong quarantines only the products it holds, with a diagnosis naming them
//! and their URL and never a credential.

use std::path::PathBuf;
use std::process::Stdio;

use arrow::array::RecordBatch;
use meshgate_mesh::{Mesh, MeshConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::s3::{BUCKET, LocalS3};
use crate::common::{key, principal, repo};
use meshgate_policy::{MeshSession, Policy, SessionOptions};

fn config(adjust: impl FnOnce(&mut MeshConfig)) -> MeshConfig {
    let mut c = MeshConfig::at(repo());
    adjust(&mut c);
    c
}

fn reasons(mesh: &Mesh, dataset: &str) -> String {
    mesh.quarantined()
        .iter()
        .filter(|q| q.dataset == dataset)
        .map(|q| q.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn rows(mesh: &Mesh, role: &str, sql: &str) -> Vec<RecordBatch> {
    let policy = Policy::new(principal(role), key());
    MeshSession::with_options(mesh, policy, SessionOptions::for_mesh(mesh))
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

const ORDERS: &str = "SELECT order_id, user_email, total_amount \
                      FROM checkout.checkout_orders_summary ORDER BY order_id";

#[tokio::test]
async fn s3_products_are_served_and_missing_buckets_or_prefixes_quarantined_by_name() {
    let s3 = LocalS3::start();
    let mesh = Mesh::load(config(|c| {
        c.s3 = s3.config();
        c.domain_roots
            .insert("checkout".into(), format!("s3://{BUCKET}/checkout").into());
        c.domain_roots
            .insert("customers".into(), "s3://no-such-bucket/customers".into());
        c.domain_roots.insert(
            "inventory".into(),
            format!("s3://{BUCKET}/nowhere/inventory").into(),
        );
    }))
    .await
    .unwrap();

    let served: Vec<String> = mesh.products().iter().map(|p| p.display_name()).collect();
    assert!(
        served.iter().any(|p| p.contains("checkout_orders_summary")),
        "{served:?}"
    );
    assert!(
        served.iter().any(|p| p.contains("web_sessions")),
        "{served:?}"
    );
    let customers = reasons(&mesh, "customer_profiles");
    assert!(
        customers.contains("s3://no-such-bucket/customers/customer_profiles/v1/"),
        "{customers}"
    );
    let inventory = reasons(&mesh, "stock_levels");
    assert!(
        inventory.contains(&format!(
            "no Parquet files under s3://{BUCKET}/nowhere/inventory/stock_levels/v1/"
        )),
        "{inventory}"
    );

    // The S3 product answers exactly as the local one, masks included.
    let local = Mesh::load(MeshConfig::at(repo())).await.unwrap();
    for role in ["analyst", "marketer"] {
        assert_eq!(
            rows(&mesh, role, ORDERS).await,
            rows(&local, role, ORDERS).await,
            "{role}"
        );
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_unreachable_store_or_wrong_keys_quarantine_only_their_products() {
    let s3 = LocalS3::start();
    let on_s3 = |s3_config: meshgate_mesh::stores::S3Config| {
        config(|c| {
            c.s3 = s3_config;
            c.domain_roots
                .insert("checkout".into(), format!("s3://{BUCKET}/checkout").into());
        })
    };

    let mut unreachable = s3.config();
    unreachable.endpoint = Some(format!("http://127.0.0.1:{}", closed_port()));
    let mut wrong_secret = s3.config();
    wrong_secret.credentials = Some((s3.access_key_id.clone(), "not-the-secret-0000".into()));
    let mut unknown_key = s3.config();
    unknown_key.credentials = Some(("AKIAUNKNOWNKEY000000".into(), "unknown-secret-0000".into()));

    for (what, s3_config) in [
        ("unreachable endpoint", unreachable),
        ("wrong secret", wrong_secret),
        ("unknown key", unknown_key),
    ] {
        let (id, secret) = s3_config.credentials.clone().unwrap();
        let started = std::time::Instant::now();
        let mesh = Mesh::load(on_s3(s3_config)).await.unwrap();
        let why = reasons(&mesh, "checkout_orders_summary");
        assert!(
            why.contains(&format!(
                "s3://{BUCKET}/checkout/checkout_orders_summary/v1/"
            )),
            "{what}: {why}"
        );
        assert!(
            !why.contains(&secret) && !why.contains(&id),
            "{what}: a credential in the diagnosis: {why}"
        );
        // Everything else is served, and promptly.
        // customers v1 and v2, inventory, web, and marketing's derived product (its data
        // is its own, though computed from checkout's).
        assert_eq!(mesh.products().len(), 5, "{what}: {:?}", mesh.quarantined());
        assert!(
            started.elapsed().as_secs() < 60,
            "{what}: took {:?}",
            started.elapsed()
        );
    }
}

/// `meshgate serve` on the repository's configuration with the checkout domain on S3.
fn serve_config(dir: &std::path::Path, s3_yaml: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("meshgate.yaml"))
        .unwrap()
        .replace(
            "audit_file: meshgate-audit.log",
            &format!("audit_file: {}", dir.join("audit.log").display()),
        )
        .replace(
            "contracts: contracts",
            &format!("contracts: {}", repo().join("contracts").display()),
        )
        .replace(
            "  data: sample-data",
            &format!(
                "  data: {}\n  domain_roots:\n    checkout: s3://{BUCKET}/checkout\n  s3:\n{s3_yaml}",
                repo().join("sample-data").display()
            ),
        );
    let path = dir.join("meshgate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &std::path::Path, s3: &LocalS3) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--pg-addr", "127.0.0.1:0"])
        .env("MESHGATE_HASH_KEY", "s3-test-hash-key-0123456789")
        .env("AWS_ACCESS_KEY_ID", &s3.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ALLOW_HTTP")
        .env("MESHGATE_LOG", "debug")
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn plaintext_needs_allow_http_and_credentials_never_reach_logs_audit_or_plans() {
    let s3 = LocalS3::start();
    let dir = tempfile::tempdir().unwrap();

    // An http:// endpoint that was not explicitly allowed stops the server at start.
    let refused = serve_config(
        dir.path(),
        &format!("    endpoint: {}\n    path_style: true\n", s3.endpoint),
    );
    let out = serve(&refused, &s3).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("allow_http"), "{stderr}");

    // Allowed: served from S3 with the keys from the environment.
    let allowed = serve_config(
        dir.path(),
        &format!(
            "    endpoint: {}\n    region: us-east-1\n    path_style: true\n    allow_http: true\n",
            s3.endpoint
        ),
    );
    let log = dir.path().join("serve.log");
    let mut child = serve(&allowed, &s3)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next_line().await.unwrap().expect("serve started");
    let flight = banner
        .split("grpc://")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let http = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .trim();

    let mut texts = Vec::new();
    for user in ["analyst", "marketer"] {
        let sql = |args: &[&str]| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"));
            c.arg("sql")
                .args(["--url", &format!("grpc://{flight}"), "--user", user])
                .args(args)
                .env("MESHGATE_PASSWORD", user)
                .env_remove("MESHGATE_ROLE");
            c.output().unwrap()
        };
        let out = sql(&[
            "-f",
            "csv",
            "SELECT count(*) FROM checkout.checkout_orders_summary",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let count = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            count
                .lines()
                .nth(1)
                .is_some_and(|n| n.trim().parse::<u64>().unwrap() > 0),
            "{count}"
        );
        let plan = sql(&["EXPLAIN SELECT user_email FROM checkout.checkout_orders_summary"]);
        assert!(plan.status.success());
        let plan = String::from_utf8_lossy(&plan.stdout).to_string();
        // The scan names its files relative to the product: no bucket, no key prefix.
        assert!(
            plan.contains("product=checkout.checkout_orders_summary v1")
                && plan.contains("[[part-0.parquet")
                && !plan.contains("checkout/checkout_orders_summary/v1/"),
            "{plan}"
        );
        texts.push(plan);
    }
    let readyz = crate::common::http_get(http.parse().unwrap(), "/readyz").await;
    child.kill().await.unwrap();
    texts.push(readyz);
    texts.push(std::fs::read_to_string(&log).unwrap());
    texts.push(std::fs::read_to_string(dir.path().join("audit.log")).unwrap());
    for text in texts {
        assert!(
            !text.contains(&s3.secret_access_key) && !text.contains(&s3.access_key_id),
            "a credential leaked: {text}"
        );
    }
}
