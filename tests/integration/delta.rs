//! Products stored as Delta Lake tables, written by a real Delta writer (the `deltalake`
//! Python package, `tests/delta/write_tables.py`): the log's current snapshot is served
//! under the same policy as a Parquet folder, and broken tables are quarantined.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use meshgate_mesh::{Mesh, MeshConfig};
use meshgate_policy::{MeshSession, Policy, SessionOptions};
use tempfile::TempDir;

use crate::common::{EXPLAIN_FORMS, key, principal, repo};

const ORDERS: &str = r#"
dataset: orders
version: v1
owner: team-shop@example.com
format: delta
schema:
  - {name: order_id, type: long}
  - {name: customer_id, type: long, pii: true, mask: hash}
  - {name: email, type: string, pii: true, mask: email}
  - {name: region, type: string}
  - {name: amount, type: double}
  - {name: day, type: date}
access_policy:
  - {role: data_analyst, permission: read}
  - {role: marketing, permission: read_masked}
  - {role: eu_support, permission: read, row_filter: "region = 'EU'"}
"#;

/// The shop domain: a contract per table the writer made (orders' schema, under another
/// name and location), and the tables.
struct Shop {
    dir: TempDir,
    mesh: Arc<Mesh>,
}

fn python() -> PathBuf {
    crate::common::s3::python()
}

fn writer(data: &Path, step: &str) {
    let out = Command::new(python())
        .arg(repo().join("tests/delta/write_tables.py"))
        .arg(data)
        .arg(step)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (set MESHGATE_TEST_PYTHON)", python().display()));
    assert!(
        out.status.success(),
        "write_tables.py {step}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn contract(dataset: &str, extra: &str) -> String {
    ORDERS.replace("dataset: orders", &format!("dataset: {dataset}")) + extra
}

impl Shop {
    async fn new(contracts: &[(&str, String)]) -> Shop {
        Shop::with(contracts, |_, _| {}).await
    }

    async fn with(
        contracts: &[(&str, String)],
        adjust: impl FnOnce(&mut MeshConfig, &Path),
    ) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data/shop");
        writer(&data, "create");
        let folder = dir.path().join("contracts/shop");
        std::fs::create_dir_all(&folder).unwrap();
        for (name, text) in contracts {
            std::fs::write(folder.join(format!("{name}.yaml")), text).unwrap();
        }
        let mut config = MeshConfig::at(dir.path());
        config.contracts = dir.path().join("contracts");
        config.data = dir.path().join("data");
        adjust(&mut config, &data);
        let mesh = Arc::new(Mesh::load(config).await.unwrap());
        Shop { dir, mesh }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data/shop")
    }

    fn session(&self, role: &str) -> MeshSession {
        let mut options = SessionOptions::for_mesh(&self.mesh);
        options.config = options.config.with_target_partitions(2);
        MeshSession::with_options(&self.mesh, Policy::new(principal(role), key()), options)
    }

    async fn query(&self, role: &str, sql: &str) -> Result<Vec<RecordBatch>, String> {
        match self.session(role).sql(sql).await {
            Ok(df) => df.collect().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn rows(&self, role: &str, sql: &str) -> String {
        let batches = self
            .query(role, sql)
            .await
            .unwrap_or_else(|e| panic!("{role}: {sql}: {e}"));
        pretty_format_batches(&batches).unwrap().to_string()
    }

    fn table(&self, dataset: &str) -> Arc<meshgate_mesh::ContractTable> {
        let found = self
            .mesh
            .tables()
            .iter()
            .find(|t| t.product().dataset() == dataset);
        Arc::clone(found.unwrap_or_else(|| panic!("{dataset} is not served")))
    }

    fn reasons(&self, dataset: &str) -> String {
        self.mesh
            .quarantined()
            .iter()
            .find(|q| q.dataset == dataset)
            .map(|q| q.reasons.join("; "))
            .unwrap_or_else(|| panic!("{dataset} is not quarantined"))
    }
}

fn served() -> Vec<(&'static str, String)> {
    vec![
        ("orders", contract("orders", "")),
        ("regions", contract("regions", "")),
        ("overwritten", contract("overwritten", "")),
    ]
}

#[tokio::test]
async fn a_delta_product_serves_its_current_snapshot_under_the_policy() {
    let shop = Shop::new(&served()).await;
    assert!(
        shop.mesh.quarantined().is_empty(),
        "{:?}",
        shop.mesh.quarantined()
    );

    // Orders 2 was deleted (its file is still in the folder), 5 and 6 came with a column
    // the contract does not declare.
    let analyst = shop
        .rows(
            "analyst",
            "SELECT order_id, customer_id, email, region FROM mesh.shop.orders ORDER BY order_id",
        )
        .await;
    insta::assert_snapshot!(analyst, @r"
    +----------+-------------+-----------------+--------+
    | order_id | customer_id | email           | region |
    +----------+-------------+-----------------+--------+
    | 1        | 987650001   | ann@example.com | EU     |
    | 3        | 987650003   | cid@example.com | EU     |
    | 4        | 987650004   | dee@example.com | US     |
    | 5        | 987650005   | eve@example.com | EU     |
    | 6        | 987650006   | fay@example.com | APAC   |
    +----------+-------------+-----------------+--------+
    ");
    let undeclared = shop
        .query("analyst", "SELECT note FROM mesh.shop.orders")
        .await
        .unwrap_err();
    assert!(undeclared.contains("note"), "{undeclared}");

    // Masks and row filters apply at the scan as for a Parquet folder.
    let marketer = shop
        .rows(
            "marketer",
            "SELECT order_id, email FROM mesh.shop.orders WHERE customer_id IS NOT NULL ORDER BY order_id",
        )
        .await;
    assert!(!marketer.contains("ann@example.com"), "{marketer}");
    assert!(marketer.contains("@example.com"), "{marketer}");
    let hashed = shop
        .rows("marketer", "SELECT customer_id FROM mesh.shop.orders")
        .await;
    assert!(!hashed.contains("98765000"), "{hashed}");
    let eu = shop
        .rows(
            "eu_support",
            "SELECT order_id FROM mesh.shop.orders WHERE order_id > 0 ORDER BY 1",
        )
        .await;
    insta::assert_snapshot!(eu, @r"
    +----------+
    | order_id |
    +----------+
    | 1        |
    | 3        |
    | 5        |
    +----------+
    ");

    // Partition values come from the log; the row filter holds over a partition column.
    let regions = shop
        .rows(
            "analyst",
            "SELECT region, count(*) AS n, sum(amount) AS total FROM mesh.shop.regions GROUP BY region ORDER BY region",
        )
        .await;
    insta::assert_snapshot!(regions, @r"
    +--------+---+-------+
    | region | n | total |
    +--------+---+-------+
    | EU     | 2 | 4.0   |
    | US     | 1 | 2.0   |
    +--------+---+-------+
    ");
    let columns = shop
        .rows(
            "analyst",
            "SELECT * FROM mesh.shop.regions ORDER BY order_id LIMIT 1",
        )
        .await;
    assert!(
        columns
            .contains("| order_id | customer_id | email         | region | amount | day        |"),
        "contract order, partition column in its place:\n{columns}"
    );
    let eu_regions = shop
        .rows("eu_support", "SELECT count(*) AS n FROM mesh.shop.regions")
        .await;
    assert!(eu_regions.contains("| 2 |"), "{eu_regions}");

    // An overwrite leaves only the second write.
    let overwritten = shop
        .rows(
            "analyst",
            "SELECT order_id FROM mesh.shop.overwritten ORDER BY 1",
        )
        .await;
    assert!(
        overwritten.contains("| 7 ")
            && overwritten.contains("| 8 ")
            && !overwritten.contains("| 1 "),
        "{overwritten}"
    );
}

#[tokio::test]
async fn broken_delta_tables_are_quarantined_with_the_reason_and_the_rest_is_served() {
    let wrong = ORDERS
        .replace("dataset: orders", "dataset: wrongtype")
        .replace("{name: amount, type: double}", "{name: amount, type: long}")
        .replace(
            "  - {name: day, type: date}",
            "  - {name: day, type: date}\n  - {name: discount, type: double}",
        );
    let mut contracts = served();
    contracts.extend([
        ("corrupt", contract("corrupt", "")),
        ("dv", contract("dv", "")),
        ("escape", contract("escape", "")),
        ("plain", contract("plain", "")),
        ("wrongtype", wrong),
        ("missing", contract("missing", "")),
    ]);
    let shop = Shop::new(&contracts).await;

    let corrupt = shop.reasons("corrupt");
    assert!(
        corrupt.contains("shop/corrupt/v1/ cannot be read: Kernel error: Json error"),
        "{corrupt}"
    );
    let dv = shop.reasons("dv");
    assert!(
        dv.contains("needs the reader feature deletionVectors") && dv.contains("not support"),
        "{dv}"
    );
    let escape = shop.reasons("escape");
    assert!(escape.contains("outside the table"), "{escape}");
    let plain = shop.reasons("plain");
    assert!(plain.contains("is not a Delta table"), "{plain}");
    let wrong = shop.reasons("wrongtype");
    assert!(
        wrong.contains("column amount is Float64 in the table but long in the contract")
            && wrong.contains("column discount (double) is missing"),
        "{wrong}"
    );
    let missing = shop.reasons("missing");
    assert!(missing.contains("does not exist"), "{missing}");
    // No reason names the server's paths.
    let root = shop.dir.path().display().to_string();
    for q in shop.mesh.quarantined() {
        for r in &q.reasons {
            assert!(!r.contains(&root), "{r}");
        }
    }

    // The other domain's file the hostile commit names is never read, and a query that
    // names a quarantined product is told why.
    let err = shop
        .query("analyst", "SELECT * FROM mesh.shop.escape")
        .await
        .unwrap_err();
    assert!(
        err.contains("quarantined") && err.contains("outside the table"),
        "{err}"
    );
    assert!(!err.contains("ceo@example.com"));
    let ok = shop
        .rows("analyst", "SELECT count(*) AS n FROM mesh.shop.orders")
        .await;
    assert!(ok.contains("| 5 |"), "{ok}");
}

#[tokio::test]
async fn statistics_from_the_log_reach_only_callers_who_may_see_them() {
    let shop = Shop::new(&served()).await;
    let sql = "SELECT * FROM mesh.shop.orders";
    let explain = |role: &'static str| {
        let shop = &shop;
        async move {
            let mut all = String::new();
            for form in EXPLAIN_FORMS {
                if let Ok(b) = shop.query(role, &format!("{form} {sql}")).await {
                    all.push_str(&pretty_format_batches(&b).unwrap().to_string());
                }
            }
            all
        }
    };
    // The log's min/max of customer_id are in the plan of a caller who reads it clear
    // (else the checks below would prove nothing) …
    let analyst = explain("analyst").await;
    assert!(
        analyst.contains("987650001"),
        "no statistics from the log:\n{analyst}"
    );
    // … never in a masked reader's, nor in a filtered one's (its rows: EU only).
    let marketer = explain("marketer").await;
    assert!(!marketer.contains("98765000"), "{marketer}");
    let eu = explain("eu_support").await;
    for hidden in ["987650004", "987650006", "Rows=Exact(5)", "Rows=Inexact(5)"] {
        assert!(!eu.contains(hidden), "eu_support sees {hidden}:\n{eu}");
    }
    // Nor any server path.
    assert!(!analyst.contains(&shop.dir.path().display().to_string()));
}

#[tokio::test]
async fn new_commits_are_served_at_once_and_one_that_breaks_the_contract_fails_with_the_reason() {
    let shop = Shop::new(&served()).await;
    let count = "SELECT count(*) AS n FROM mesh.shop.orders";
    assert!(shop.rows("analyst", count).await.contains("| 5 |"));
    writer(&shop.data(), "append");
    assert!(shop.rows("analyst", count).await.contains("| 6 |"));
    let eu = shop
        .rows(
            "eu_support",
            "SELECT max(order_id) AS m FROM mesh.shop.orders",
        )
        .await;
    assert!(eu.contains("| 7 |"), "{eu}");
    // The catalog's view follows the snapshot served.
    let table = shop.table("orders");
    assert_eq!(table.delta_snapshot().unwrap().version, 5);

    writer(&shop.data(), "break");
    let err = shop.query("analyst", count).await.unwrap_err();
    assert!(
        err.contains("breaks the contract") && err.contains("column amount (double) is missing"),
        "{err}"
    );
    // The last good snapshot is not served in its place, to anyone.
    assert!(shop.query("eu_support", count).await.is_err());
    let broken = table.delta_broken().unwrap();
    assert!(
        broken.contains("version (6)") && broken.contains("column amount (double) is missing"),
        "{broken}"
    );
}

#[tokio::test]
async fn a_pinned_product_serves_its_version_whatever_is_committed_next() {
    let contracts = [
        ("history", contract("history", "delta: {version: 1}\n")),
        (
            "history_future",
            contract(
                "history_future",
                "delta: {timestamp: \"2999-01-01T00:00:00Z\"}\n",
            )
            .replace("owner:", "location: data/shop/history/v1/\nowner:"),
        ),
    ];
    let shop = Shop::new(&contracts).await;
    let rows = shop
        .rows(
            "analyst",
            "SELECT order_id FROM mesh.shop.history ORDER BY 1",
        )
        .await;
    assert!(
        rows.contains("| 0 ") && rows.contains("| 1 ") && !rows.contains("| 2 "),
        "{rows}"
    );
    let table = shop.table("history");
    assert_eq!(table.delta_snapshot().unwrap().version, 1);
    // A second contract over the same table is refused (two products claiming the same
    // data, and a pin in the future, which would follow whatever each replica loaded).
    let refused = shop.reasons("history_future");
    assert!(
        refused.contains("overlap") || refused.contains("in the future"),
        "{refused}"
    );

    // A pin the log cannot satisfy quarantines, saying which.
    let contracts = [("history", contract("history", "delta: {version: 9}\n"))];
    let shop = Shop::new(&contracts).await;
    let reason = shop.reasons("history");
    assert!(reason.contains("at version 9"), "{reason}");
    let future = "delta: {timestamp: \"2999-01-01T00:00:00Z\"}\n";
    let shop = Shop::new(&[("history", contract("history", future))]).await;
    let reason = shop.reasons("history");
    assert!(reason.contains("in the future"), "{reason}");
}

#[tokio::test]
async fn null_partitions_count_as_null_and_a_pii_partition_column_is_refused() {
    let shop = Shop::new(&[
        ("nullparts", contract("nullparts", "")),
        ("piiparts", contract("piiparts", "")),
    ])
    .await;
    // Answered from the log's statistics where they are exact (an aggregate alone is):
    // the null partition's rows have no region.
    let counts = shop
        .rows(
            "analyst",
            "SELECT count(*) AS n, count(region) AS with_region FROM mesh.shop.nullparts",
        )
        .await;
    insta::assert_snapshot!(counts, @r"
    +---+-------------+
    | n | with_region |
    +---+-------------+
    | 3 | 1           |
    +---+-------------+
    ");
    let distinct = shop
        .rows(
            "analyst",
            "SELECT count(DISTINCT region) AS regions FROM mesh.shop.nullparts",
        )
        .await;
    assert!(distinct.contains("| 1 "), "{distinct}");
    let nulls = shop
        .rows(
            "analyst",
            "SELECT order_id FROM mesh.shop.nullparts WHERE region IS NULL ORDER BY 1",
        )
        .await;
    assert!(
        nulls.contains("| 2 ") && nulls.contains("| 3 ") && !nulls.contains("| 1 "),
        "{nulls}"
    );
    let eu = shop
        .rows(
            "eu_support",
            "SELECT count(*) AS n FROM mesh.shop.nullparts",
        )
        .await;
    assert!(eu.contains("| 1 |"), "{eu}");

    // Partition values are in file paths: a PII one would show in a masked reader's plan.
    let pii = shop.reasons("piiparts");
    assert!(
        pii.contains("partitioned by email, which the contract marks PII"),
        "{pii}"
    );
}

#[tokio::test]
async fn freshness_of_a_delta_product_is_its_last_commit() {
    let sla = "sla:\n  freshness: \"1 hour\"\n";
    let shop = Shop::new(&[("orders", contract("orders", sla))]).await;
    let table = shop.table("orders");
    let report =
        meshgate_mesh::checks::check_product(&shop.mesh, table, std::time::SystemTime::now())
            .await
            .unwrap();
    assert_eq!(report.freshness_source, "last Delta commit");
    assert_eq!(report.rows, 5);
    let age = report.freshness_age_secs.expect("an age");
    assert!(age < 600.0, "{age}");
    assert!(report.freshness_ok());

    // An hour later it is stale.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(7200);
    let table = shop.table("orders");
    let report = meshgate_mesh::checks::check_product(&shop.mesh, table, later)
        .await
        .unwrap();
    assert!(!report.freshness_ok());
}

#[tokio::test]
async fn a_delta_product_is_served_from_s3() {
    // The tables are written locally, then uploaded (log included) to the local S3 server.
    let local = tempfile::tempdir().unwrap();
    let data = local.path().join("shop");
    writer(&data, "create");
    let s3 = crate::common::s3::LocalS3::serving(&python(), "delta-shop", local.path());
    let shop = Shop::with(&served(), |config, _| {
        config
            .domain_roots
            .insert("shop".into(), PathBuf::from("s3://delta-shop/shop"));
        config.s3 = s3.config();
    })
    .await;
    assert!(
        shop.mesh.quarantined().is_empty(),
        "{:?}",
        shop.mesh.quarantined()
    );
    let rows = shop
        .rows(
            "eu_support",
            "SELECT order_id FROM mesh.shop.orders ORDER BY 1",
        )
        .await;
    assert!(
        rows.contains("| 1 ") && rows.contains("| 5 ") && !rows.contains("| 4 "),
        "{rows}"
    );
    let regions = shop
        .rows(
            "analyst",
            "SELECT count(*) AS n FROM mesh.shop.regions WHERE region = 'EU'",
        )
        .await;
    assert!(regions.contains("| 2 |"), "{regions}");
}

#[tokio::test]
async fn a_delta_product_answers_over_flight_and_postgres_and_the_catalog_shows_its_version() {
    let mut contracts = served();
    contracts.push(("history", contract("history", "delta: {version: 1}\n")));
    let shop = Shop::new(&contracts).await;
    let shop_data = shop.data();
    let mesh = crate::common::TestMesh {
        mesh: Arc::clone(&shop.mesh),
        dir: shop.dir,
    };
    let server = crate::common::server::TestServer::with_mesh(mesh, |_| {}).await;

    let sql = "SELECT order_id, email FROM shop.orders ORDER BY order_id";
    let mut flight = server.client("support").await;
    let info = flight.execute(sql.into(), None).await.unwrap();
    let (_, batches) = crate::integration::flight::fetch(&mut flight, info).await;
    let over_flight = pretty_format_batches(&batches).unwrap().to_string();
    assert!(over_flight.contains("ann@example.com"), "{over_flight}");
    assert!(
        !over_flight.contains("dee@example.com"),
        "a US row: {over_flight}"
    );

    let pg = crate::common::pg::connect(server.server.pg_addr.unwrap(), "marketer")
        .await
        .unwrap();
    let rows = crate::common::pg::simple_rows(&pg, sql).await;
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r[1].as_deref() != Some("ann@example.com")),
        "{rows:?}"
    );

    let latest = server.describe_product("analyst", "shop.orders").await;
    let s = latest.summary.unwrap();
    assert_eq!(
        (s.format.as_str(), s.delta_version, s.delta_pin.as_str()),
        ("delta", Some(4), "")
    );
    let pinned = server.describe_product("analyst", "shop.history").await;
    let s = pinned.summary.unwrap();
    assert_eq!(
        (s.delta_version, s.delta_pin.as_str()),
        (Some(1), "version 1")
    );

    // A commit that breaks the contract: queries fail, and the catalog says why, until a
    // good version follows.
    writer(&shop_data, "break");
    let mut flight = server.client("analyst").await;
    assert!(flight.execute(sql.into(), None).await.is_err());
    let broken = server.describe_product("analyst", "shop.orders").await;
    let s = broken.summary.unwrap();
    assert!(!s.served, "{s:?}");
    assert!(
        s.quarantine_reasons
            .iter()
            .any(|r| r.contains("breaks the contract") && r.contains("amount")),
        "{s:?}"
    );
    assert!(
        !s.quarantine_reasons
            .iter()
            .any(|r| r.contains(&shop_data.display().to_string())),
        "a server path: {s:?}"
    );
}

fn order_rows(ids: &[Option<i64>]) -> Vec<(&'static str, arrow::array::ArrayRef)> {
    use arrow::array::{Date32Array, Float64Array, Int64Array, StringArray};
    let n = ids.len();
    vec![
        ("order_id", Arc::new(Int64Array::from(ids.to_vec())) as _),
        ("customer_id", Arc::new(Int64Array::from(vec![42; n])) as _),
        (
            "email",
            Arc::new(StringArray::from(vec!["new@example.com"; n])) as _,
        ),
        ("region", Arc::new(StringArray::from(vec!["EU"; n])) as _),
        ("amount", Arc::new(Float64Array::from(vec![1.5; n])) as _),
        ("day", Arc::new(Date32Array::from(vec![20_000; n])) as _),
    ]
}

/// What a real Delta reader (the `deltalake` package) reads at the table's latest version.
fn read_with_deltalake(table: &Path) -> (u64, Vec<i64>) {
    read_table_with_deltalake(&table.display().to_string(), &serde_json::json!({}))
}

/// [`read_with_deltalake`] for any location the package reads (`s3://` with its
/// `storage_options`).
fn read_table_with_deltalake(uri: &str, options: &serde_json::Value) -> (u64, Vec<i64>) {
    // Exits at once after printing: the package's runtime may abort while the interpreter
    // tears down.
    let script = "import os, sys, json; from deltalake import DeltaTable; \
                  t = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2])); \
                  print(json.dumps([t.version(), sorted(t.to_pyarrow_table()['order_id'].to_pylist())]), flush=True); \
                  os._exit(0)";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(uri)
        .arg(options.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn publishing_commits_one_checked_version_and_a_rejected_publish_commits_nothing() {
    use meshgate_mesh::publish::{PublishError, Source, publish};
    let required = contract("orders", "").replace(
        "{name: order_id, type: long}",
        "{name: order_id, type: long, required: true}",
    );
    let shop = Shop::new(&[("orders", required)]).await;
    let table = shop.data().join("orders/v1");
    let contract_file = shop.dir.path().join("contracts/shop/orders.yaml");
    let files = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    let (log, data) = (files(&table.join("_delta_log")), files(&table));

    // Data that breaks the contract: refused before anything is written.
    let bad = shop.dir.path().join("bad.parquet");
    crate::common::write_parquet(&bad, order_rows(&[Some(100), None]));
    let err = publish(shop.mesh.config(), &contract_file, Source::File(bad))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err}");
    assert!(
        err.to_string()
            .contains("order_id required: 1 failing rows"),
        "{err}"
    );
    assert_eq!(
        (files(&table.join("_delta_log")), files(&table)),
        (log, data)
    );
    assert_eq!(read_with_deltalake(&table).0, 4);

    // A good publish is one version that replaces the table's rows, read by a real reader
    // and by the gateway already serving the product.
    let good = shop.dir.path().join("good.parquet");
    crate::common::write_parquet(&good, order_rows(&[Some(100), Some(101)]));
    let published = publish(shop.mesh.config(), &contract_file, Source::File(good))
        .await
        .unwrap();
    assert_eq!(published.delta_version, Some(5));
    assert_eq!(read_with_deltalake(&table), (5, vec![100, 101]));
    let served = shop
        .rows(
            "analyst",
            "SELECT order_id FROM mesh.shop.orders ORDER BY 1",
        )
        .await;
    assert!(
        served.contains("| 100 ") && !served.contains("| 1 "),
        "{served}"
    );

    // A product whose table does not exist yet: the publish creates it.
    let fresh = contract("fresh", "");
    std::fs::write(shop.dir.path().join("contracts/shop/fresh.yaml"), &fresh).unwrap();
    let input = shop.dir.path().join("fresh.parquet");
    crate::common::write_parquet(&input, order_rows(&[Some(7)]));
    let created = publish(
        shop.mesh.config(),
        &shop.dir.path().join("contracts/shop/fresh.yaml"),
        Source::File(input),
    )
    .await
    .unwrap();
    assert_eq!(created.delta_version, Some(0));
    assert_eq!(
        read_with_deltalake(&shop.data().join("fresh/v1")),
        (0, vec![7])
    );
    let reloaded = Mesh::load(shop.mesh.config().clone()).await.unwrap();
    assert!(
        reloaded
            .tables()
            .iter()
            .any(|t| t.product().dataset() == "fresh"),
        "{:?}",
        reloaded.quarantined()
    );
}

#[tokio::test]
async fn publishing_to_s3_commits_through_the_mesh_store_and_a_parquet_folder_there_is_refused() {
    use meshgate_mesh::publish::{PublishError, Source, publish};
    let local = tempfile::tempdir().unwrap();
    writer(&local.path().join("shop"), "create");
    let s3 = crate::common::s3::LocalS3::serving(&python(), "delta-publish", local.path());
    let mut contracts = served();
    contracts.push(("fresh", contract("fresh", "")));
    contracts.push((
        "loose",
        contract("loose", "").replace("format: delta\n", ""),
    ));
    let shop = Shop::with(&contracts, |config, _| {
        config
            .domain_roots
            .insert("shop".into(), PathBuf::from("s3://delta-publish/shop"));
        config.s3 = s3.config();
    })
    .await;
    let config = shop.mesh.config();
    let file = |name: &str| shop.dir.path().join(format!("contracts/shop/{name}.yaml"));
    let reader = serde_json::json!({
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    });
    let orders = "s3://delta-publish/shop/orders/v1";
    let store = shop
        .mesh
        .object_stores()
        .get_store(&url::Url::parse("s3://delta-publish/").unwrap())
        .unwrap();
    let objects = || async {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = store
            .list(Some(&object_store::path::Path::from("shop/orders")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    };
    let before = objects().await;

    // Refused data writes no object.
    let bad = shop.dir.path().join("bad.parquet");
    crate::common::write_parquet(&bad, order_rows(&[Some(100), None]));
    let strict = std::fs::read_to_string(file("orders")).unwrap().replace(
        "{name: order_id, type: long}",
        "{name: order_id, type: long, required: true}",
    );
    std::fs::write(file("orders"), strict).unwrap();
    let err = publish(config, &file("orders"), Source::File(bad))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err}");
    assert_eq!(objects().await, before);

    // A good publish is the next version, for a real reader and for the serving mesh.
    let good = shop.dir.path().join("good.parquet");
    crate::common::write_parquet(&good, order_rows(&[Some(100), Some(101)]));
    let published = publish(config, &file("orders"), Source::File(good))
        .await
        .unwrap();
    assert_eq!(
        (published.delta_version, published.location.as_str()),
        (Some(5), orders)
    );
    assert_eq!(
        read_table_with_deltalake(orders, &reader),
        (5, vec![100, 101])
    );
    let served = shop
        .rows(
            "analyst",
            "SELECT order_id FROM mesh.shop.orders ORDER BY 1",
        )
        .await;
    assert!(
        served.contains("| 100 ") && !served.contains("| 1 "),
        "{served}"
    );
    // The files of the replaced version stay for readers of older versions (until a vacuum).
    assert!(objects().await.len() > before.len() + 1);

    // Two publishers at once: the log takes one commit per version (S3's put-if-absent), so
    // they never both claim version 6, and a reader sees one publisher's rows, never a mix.
    let (a, b) = (
        shop.dir.path().join("a.parquet"),
        shop.dir.path().join("b.parquet"),
    );
    crate::common::write_parquet(&a, order_rows(&[Some(201), Some(202)]));
    crate::common::write_parquet(&b, order_rows(&[Some(301)]));
    let orders_file = file("orders");
    let before_race = objects().await.len();
    let (ra, rb) = tokio::join!(
        publish(config, &orders_file, Source::File(a)),
        publish(config, &orders_file, Source::File(b))
    );
    let versions: Vec<u64> = [&ra, &rb]
        .iter()
        .filter_map(|r| r.as_ref().ok().and_then(|p| p.delta_version))
        .collect();
    assert!(
        matches!(versions.as_slice(), [6] | [6, 7] | [7, 6]),
        "{versions:?} {ra:?} {rb:?}"
    );
    // A publisher that lost removed the files it wrote; each that won added one file and
    // one commit.
    assert_eq!(
        objects().await.len(),
        before_race + 2 * versions.len(),
        "{ra:?} {rb:?}"
    );
    let (latest, rows) = read_table_with_deltalake(orders, &reader);
    assert_eq!(latest, *versions.iter().max().unwrap());
    assert!(rows == vec![201, 202] || rows == vec![301], "{rows:?}");

    // The first publish of a product creates its table in the bucket.
    let input = shop.dir.path().join("fresh.parquet");
    crate::common::write_parquet(&input, order_rows(&[Some(7)]));
    let created = publish(config, &file("fresh"), Source::File(input.clone()))
        .await
        .unwrap();
    assert_eq!(created.delta_version, Some(0));
    assert_eq!(
        read_table_with_deltalake("s3://delta-publish/shop/fresh/v1", &reader),
        (0, vec![7])
    );

    // The command line, with the keys from the environment as in production; a wrong key
    // is refused without being echoed.
    let yaml = shop.dir.path().join("meshgate.yaml");
    std::fs::write(
        &yaml,
        format!(
            "mesh:\n  contracts: {}\n  data: {}\n  domain_roots:\n    shop: s3://delta-publish/shop\n  \
             s3:\n    endpoint: {}\n    region: us-east-1\n    path_style: true\n    allow_http: true\n",
            shop.dir.path().join("contracts").display(),
            shop.dir.path().join("data").display(),
            s3.endpoint
        ),
    )
    .unwrap();
    let cli = |key_id: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
        cmd.arg("publish")
            .arg(file("fresh"))
            .arg("--from")
            .arg(&input)
            .args(["--format", "delta", "--config"])
            .arg(&yaml)
            .env("AWS_ACCESS_KEY_ID", key_id)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key)
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("MESHGATE_FAILPOINT");
        cmd.output().unwrap()
    };
    let out = cli(&s3.access_key_id);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("Delta version 1 of s3://delta-publish/shop/fresh/v1"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli("AKIAWRONGKEY0123456789");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Delta") && !stderr.contains("AKIAWRONGKEY0123456789"),
        "{stderr}"
    );
    assert_eq!(
        read_table_with_deltalake("s3://delta-publish/shop/fresh/v1", &reader).0,
        1
    );

    // A Parquet folder cannot be swapped atomically in a bucket: refused, with the way out.
    let err = publish(config, &file("loose"), Source::File(input))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Contract(_))
            && err.to_string().contains("s3://delta-publish/shop/loose/v1")
            && err.to_string().contains("format: delta"),
        "{err}"
    );
    assert!(!err.to_string().contains(&s3.secret_access_key), "{err}");
}
