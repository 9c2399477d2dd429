//! Derived products: SQL over other products, computed as the owning domain's service
//! principal and published to the catalog. A masked input stays masked, a contract that
//! drops a PII tag is refused, a failed refresh keeps the old data and breaches the SLA,
//! and with two replicas one refresher computes and both serve the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use meshgate_mesh::publish::RefreshStatus;
use meshgate_mesh::{Mesh, MeshConfig};
use meshgate_server::config::{Limits, ServicePrincipal, UserConfig};
use meshgate_server::refresh::{LINEAGE_KEY, RefreshError, Refresher};
use meshgate_server::{RunningServer, Secrets, ServerConfig};

use super::flight::{Client, fetch, strings};
use crate::common::{TEST_KEY, copy_tree, repo};

/// The sample mesh's contracts (marketing's derived product included) and the data of
/// the products it reads, in a folder of its own; nothing of marketing's is published.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&repo().join("contracts"), &dir.path().join("contracts"));
        for domain in ["checkout", "customers"] {
            copy_tree(
                &repo().join("sample-data").join(domain),
                &dir.path().join("data").join(domain),
            );
        }
        Fixture { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn mesh_config(&self) -> MeshConfig {
        let mut config = MeshConfig::at(self.root());
        config.contracts = self.root().join("contracts");
        config.data = self.root().join("data");
        config
    }

    /// The deployment: marketing's service principal holds the marketing role only.
    fn config(&self, roles: &[&str]) -> ServerConfig {
        let user = |name: &str, roles: &[&str]| UserConfig {
            name: name.into(),
            password_hash: meshgate_server::auth::hash_password(name),
            scram_sha_256: None,
            attributes: Default::default(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        ServerConfig {
            flight_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            pg_addr: None,
            mesh: self.mesh_config(),
            users: vec![
                user("analyst", &["data_analyst"]),
                user("marketer", &["marketing"]),
            ],
            service_principals: BTreeMap::from([(
                "marketing".to_string(),
                ServicePrincipal {
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    attributes: Default::default(),
                },
            )]),
            reload_interval_secs: 1,
            limits: Limits {
                sla_check_interval_secs: 1,
                ..Limits::default()
            },
            ..Default::default()
        }
    }

    fn contract(&self, file: &str, text: &str) {
        std::fs::write(self.root().join("contracts/marketing").join(file), text).unwrap();
    }

    async fn mesh(&self) -> Arc<Mesh> {
        Arc::new(Mesh::load(self.mesh_config()).await.unwrap())
    }

    async fn refresher(&self, roles: &[&str], audit: Option<&Path>) -> Refresher {
        Refresher::standalone(self.mesh().await, &self.config(roles), key(), audit).unwrap()
    }

    /// Refreshes `name` now as marketing's service principal; it must publish.
    async fn refresh(&self, name: &str) -> meshgate_server::refresh::Refreshed {
        self.refresher(&["marketing"], None)
            .await
            .refresh_named(name)
            .await
            .unwrap()
    }

    fn location(&self, dataset: &str) -> PathBuf {
        self.root().join("data/marketing").join(dataset).join("v1")
    }

    async fn start(&self) -> RunningServer {
        let secrets = Secrets {
            hash_key: key(),
            token_key: b"test-token-key-0123456789".to_vec(),
            previous_token_keys: vec![],
        };
        RunningServer::start(self.mesh().await, self.config(&["marketing"]), secrets)
            .await
            .unwrap()
    }
}

fn key() -> meshgate_policy::HashKey {
    meshgate_policy::HashKey::new(TEST_KEY).unwrap()
}

async fn read_folder(folder: &Path) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    ctx.read_parquet(
        format!("{}/", folder.display()),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap()
    .collect()
    .await
    .unwrap()
}

async fn client(server: &RunningServer, user: &str) -> Client {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    c.handshake(user, user).await.unwrap();
    c
}

async fn query(c: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let info = c
        .execute(sql.into(), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(fetch(c, info).await.1)
}

const SALES: &str = "SELECT region, orders, CAST(revenue AS VARCHAR) FROM marketing.sales_by_region ORDER BY region";

/// `region|orders|revenue` lines.
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let cols: Vec<Vec<String>> = (0..batches[0].num_columns())
        .map(|i| strings(batches, i))
        .collect();
    (0..cols[0].len())
        .map(|r| {
            cols.iter()
                .map(|c| c[r].as_str())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test]
async fn the_seed_product_is_computed_as_marketing_and_matches_the_same_sql_over_the_raw_files() {
    let f = Fixture::new();
    let mesh = f.mesh().await;
    // Never refreshed: listed, quarantined, and why.
    let q = mesh
        .quarantined()
        .iter()
        .find(|q| q.dataset == "sales_by_region")
        .expect("not served before its first refresh");
    assert!(q.reasons[0].contains("does not exist"), "{q}");

    let refreshed = f.refresh("marketing.sales_by_region").await;
    assert_eq!(refreshed.rows, 3);

    // Marketing joined hashed e-mails with hashed e-mails; the same join over the clear
    // files gives the same numbers (the hash is one-to-one here), so nothing was lost.
    let ctx = SessionContext::new();
    for (name, domain, dataset, version) in [
        ("o", "checkout", "checkout_orders_summary", "v1"),
        ("c", "customers", "customer_profiles", "v2"),
    ] {
        let path = f
            .root()
            .join("data")
            .join(domain)
            .join(dataset)
            .join(version);
        ctx.register_parquet(name, path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    let expected = ctx
        .sql(
            "SELECT c.region, count(*), CAST(CAST(sum(o.total_amount) AS DECIMAL(22,2)) AS VARCHAR) \
             FROM o JOIN c ON o.user_email = c.email GROUP BY c.region ORDER BY c.region",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let server = f.start().await;
    let mut analyst = client(&server, "analyst").await;
    let published = query(&mut analyst, SALES).await.unwrap();
    assert_eq!(lines(&published), lines(&expected));

    // The files carry the lineage they were computed with.
    let folder = std::fs::canonicalize(f.location("sales_by_region")).unwrap();
    let file = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let lineage = kv.iter().find(|k| k.key == LINEAGE_KEY).unwrap();
    assert!(
        lineage.value.as_ref().unwrap().contains("total_amount"),
        "{lineage:?}"
    );

    // The catalog shows where each column comes from, on both sides of the edge.
    let mut catalog = meshgate_proto::catalog::catalog_service_client::CatalogServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.flight_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let token = analyst.token().unwrap().clone();
    let describe = |name: &str| {
        let mut req = tonic::Request::new(meshgate_proto::catalog::DescribeProductRequest {
            name: name.into(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let derived = catalog
        .describe_product(describe("marketing.sales_by_region"))
        .await
        .unwrap()
        .into_inner();
    let d = derived.derivation.expect("a derivation");
    assert_eq!(
        d.inputs,
        [
            "checkout.checkout_orders_summary v1",
            "customers.customer_profiles v2"
        ]
    );
    let revenue = d.columns.iter().find(|c| c.column == "revenue").unwrap();
    assert_eq!(
        revenue.from,
        ["checkout.checkout_orders_summary.total_amount (v1)"]
    );
    assert!(d.last_refresh.unwrap().error.is_empty());
    let orders = catalog
        .describe_product(describe("checkout.checkout_orders_summary"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orders.downstream.len(), 1);
    assert_eq!(orders.downstream[0].product, "marketing.sales_by_region v1");
    assert_eq!(orders.downstream[0].columns[0].from, ["total_amount"]);

    // And the page, as a person reads it: upstream → product → downstream.
    let page =
        crate::common::http_get(server.http_addr, "/catalog/marketing/sales_by_region_v1").await;
    assert!(page.contains("id=\"lineage\""), "{page}");
    assert!(page.contains("href=\"/catalog/checkout/checkout_orders_summary_v1\""));
    assert!(page.contains("data-refresh=\"ok\""));
    let upstream_page = crate::common::http_get(
        server.http_addr,
        "/catalog/checkout/checkout_orders_summary_v1",
    )
    .await;
    assert!(upstream_page.contains("href=\"/catalog/marketing/sales_by_region_v1\""));
    server.shutdown().await.unwrap();
}

const CONTACTS: &str = r#"
dataset: order_contacts
version: v1
owner: team-marketing@company.com
description: "Who ordered what, for campaign follow-ups"
source:
  sql: "SELECT order_id, user_email AS contact FROM checkout.checkout_orders_summary"
  refresh: "1 hour"
sla: {freshness: "2 hours", quality: "90%"}
schema:
  - {name: order_id, type: string, description: "The order", pii: false}
  - {name: contact, type: string, description: "Who placed it", PII_LINE, tags: [pii.email]}
access_policy:
  - {role: data_analyst, permission: read}
"#;

#[tokio::test]
async fn an_author_who_reads_an_input_masked_publishes_masked_values_only() {
    let f = Fixture::new();
    f.contract(
        "order_contacts.yaml",
        &CONTACTS.replace("PII_LINE", "pii: true, mask: hash"),
    );
    f.refresh("marketing.order_contacts").await;
    let raw = read_folder(&f.root().join("data/checkout/checkout_orders_summary/v1")).await;
    let clear: std::collections::HashSet<String> = strings(&raw, 2)
        .into_iter()
        .filter(|e| e != "NULL")
        .collect();
    assert!(!clear.is_empty());
    let published =
        read_folder(&std::fs::canonicalize(f.location("order_contacts")).unwrap()).await;
    let emails = strings(&published, 1);
    assert_eq!(emails.len(), strings(&raw, 0).len());
    for e in &emails {
        assert!(
            !clear.contains(e) && !e.contains('@'),
            "a clear e-mail was published: {e}"
        );
    }
    // An analyst may read the derived product in the clear, and still sees only what
    // marketing could see.
    let server = f.start().await;
    let mut analyst = client(&server, "analyst").await;
    let rows = query(&mut analyst, "SELECT contact FROM marketing.order_contacts")
        .await
        .unwrap();
    assert!(strings(&rows, 0).iter().all(|e| !e.contains('@')));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_derived_contract_that_drops_a_pii_tag_is_refused_by_lint_serve_and_refresh() {
    let f = Fixture::new();
    f.contract(
        "order_contacts.yaml",
        &CONTACTS
            .replace("PII_LINE", "pii: false")
            .replace(", tags: [pii.email]", ""),
    );
    let mesh = f.mesh().await;
    let q = mesh
        .quarantined()
        .iter()
        .find(|q| q.dataset == "order_contacts")
        .unwrap();
    assert!(
        q.reasons
            .iter()
            .any(|r| r.contains("\"contact\" comes from PII")
                && r.contains("checkout.checkout_orders_summary.user_email")),
        "{q}"
    );
    let refused = f
        .refresher(&["data_analyst"], None)
        .await
        .refresh_named("marketing.order_contacts")
        .await;
    assert!(
        matches!(&refused, Err(RefreshError::Refused { .. })),
        "{refused:?}"
    );
    assert!(
        !f.location("order_contacts").exists(),
        "nothing is published"
    );

    let lint = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("lint")
        .arg(f.root().join("contracts/marketing/order_contacts.yaml"))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&lint.stdout);
    assert!(!lint.status.success());
    assert!(
        out.contains("order_contacts.yaml:6:1: source: column \"contact\" comes from PII"),
        "{out}"
    );

    // Masked, but without the input's tag: governance's policies on e-mails would stop at
    // this product, so it is refused too.
    f.contract(
        "order_contacts.yaml",
        &CONTACTS
            .replace("PII_LINE", "pii: true, mask: hash")
            .replace(", tags: [pii.email]", ""),
    );
    let mesh = f.mesh().await;
    let q = mesh
        .quarantined()
        .iter()
        .find(|q| q.dataset == "order_contacts")
        .unwrap();
    assert!(
        q.reasons.iter().any(|r| r.contains(
            "column \"contact\" comes from columns tagged pii.email \
             (checkout.checkout_orders_summary.user_email (v1)): tag it pii.email too"
        )),
        "{q}"
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_old_data_is_audited_and_breaches_the_sla() {
    let f = Fixture::new();
    f.refresh("marketing.sales_by_region").await;
    let location = f.location("sales_by_region");
    let served = std::fs::read_link(&location).unwrap();
    let good = RefreshStatus::read(&location).unwrap();

    // Marketing's service principal loses its grant: the next refresh cannot read.
    let audit = f.root().join("refresh-audit.log");
    let failed = f
        .refresher(&[], Some(&audit))
        .await
        .refresh_named("marketing.sales_by_region")
        .await;
    assert!(
        matches!(&failed, Err(RefreshError::Query(e)) if e.kind.name() == "PermissionDenied"),
        "{failed:?}"
    );
    assert_eq!(
        std::fs::read_link(&location).unwrap(),
        served,
        "the old data stays served"
    );
    let status = RefreshStatus::read(&location).unwrap();
    assert!(
        status.error.as_deref().unwrap().contains("checkout"),
        "{status:?}"
    );
    assert_eq!(status.succeeded_at, good.succeeded_at);
    let audited = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audited.contains("\"principal\":\"service:marketing\"")
            && audited.contains("\"kind\":\"refresh\"")
            && audited.contains("\"outcome\":\"PermissionDenied\""),
        "{audited}"
    );

    let server = f.start().await;
    let mut analyst = client(&server, "analyst").await;
    assert_eq!(lines(&query(&mut analyst, SALES).await.unwrap()).len(), 3);
    let metrics = loop {
        let m = crate::common::http_get(server.http_addr, "/metrics").await;
        if m.contains("meshgate_product_refresh_failed{") {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("meshgate_product_refresh_failed{")
                && l.contains("marketing.sales_by_region")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    let page =
        crate::common::http_get(server.http_addr, "/catalog/marketing/sales_by_region_v1").await;
    assert!(page.contains("data-refresh=\"failed\""), "{page}");
    assert!(page.contains("refresh failing"), "{page}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_two_replicas_one_refresher_computes_and_both_serve_the_result() {
    let f = Fixture::new();
    let (a, b) = (f.start().await, f.start().await);
    for replica in [&a, &b] {
        let mut c = client(replica, "marketer").await;
        let e = query(&mut c, SALES).await.unwrap_err();
        assert!(
            e.contains("quarantined") && e.contains("does not exist"),
            "{e}"
        );
    }
    // Two refreshers at once (a misconfigured deployment): one computes, the other skips.
    let (one, two) = (
        f.refresher(&["marketing"], None).await,
        f.refresher(&["marketing"], None).await,
    );
    let (r1, r2) = tokio::join!(
        one.refresh_named("marketing.sales_by_region"),
        two.refresh_named("marketing.sales_by_region")
    );
    let busy = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, Err(RefreshError::Busy { .. })))
        .count();
    assert_eq!(busy, 1, "{r1:?} {r2:?}");
    assert!(r1.is_ok() || r2.is_ok());

    // Each replica's reloader sees the published product within its interval.
    for replica in [&a, &b] {
        let mut c = client(replica, "marketer").await;
        let rows = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(rows) = query(&mut c, SALES).await {
                    break rows;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("the replica serves the refreshed product");
        assert_eq!(lines(&rows).len(), 3);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn diff_lists_the_derived_columns_a_breaking_change_reaches() {
    let f = Fixture::new();
    let old = f
        .root()
        .join("contracts/checkout/checkout_orders_summary.yaml");
    let new = f.root().join("renamed.yaml");
    std::fs::write(
        &new,
        std::fs::read_to_string(&old)
            .unwrap()
            .replace("name: total_amount", "name: total"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("diff")
        .arg(&old)
        .arg(&new)
        .arg("--contracts")
        .arg(f.root().join("contracts"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "impact       marketing.sales_by_region v1 (owner team-marketing@company.com): \
             column revenue comes from checkout.checkout_orders_summary.total_amount (v1)"
        ),
        "{text}"
    );
    // A column no derived product reads reaches nothing.
    std::fs::write(
        &new,
        std::fs::read_to_string(&old)
            .unwrap()
            .replace("name: order_id", "name: id"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["diff", "--contracts"])
        .arg(f.root().join("contracts"))
        .arg(&old)
        .arg(&new)
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("impact"));
}

#[tokio::test]
async fn data_computed_under_other_pii_tags_or_swapped_in_by_hand_is_not_served() {
    let f = Fixture::new();
    let served = |mesh: &Arc<Mesh>| {
        mesh.products()
            .iter()
            .any(|p| p.dataset() == "order_contacts")
    };
    f.contract(
        "order_contacts.yaml",
        &CONTACTS.replace("PII_LINE", "pii: true, mask: hash"),
    );
    f.refresh("marketing.order_contacts").await;
    assert!(served(&f.mesh().await));

    // The author drops the tag and makes the SQL harmless: the hashed e-mails computed
    // under the old contract must not be served unmasked in the meantime.
    f.contract(
        "order_contacts.yaml",
        &CONTACTS
            .replace("PII_LINE", "pii: false")
            .replace(", tags: [pii.email]", "")
            .replace("user_email AS contact", "'n/a' AS contact"),
    );
    let mesh = f.mesh().await;
    let q = mesh
        .quarantined()
        .iter()
        .find(|q| q.dataset == "order_contacts")
        .expect("quarantined until refreshed");
    assert!(
        q.reasons[0].contains("not computed by the refresher under this contract"),
        "{q}"
    );
    // Its next refresh computes it under the new contract, and it is served again.
    f.refresh("marketing.order_contacts").await;
    assert!(served(&f.mesh().await));

    // Files swapped in by hand are not what the refresher computed.
    let location = f.location("order_contacts");
    let dataset = location.parent().unwrap().to_path_buf();
    copy_tree(
        &dataset.join(std::fs::read_link(&location).unwrap()),
        &dataset.join(".v1.by-hand"),
    );
    std::fs::remove_file(&location).unwrap();
    std::os::unix::fs::symlink(".v1.by-hand", &location).unwrap();
    assert!(!served(&f.mesh().await));
}
