//! Self-serve publishing: data is checked before it is served, replaces the old data
//! atomically under a running gateway (no restart), and a failed or killed publish leaves
//! the old data served.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use futures::TryStreamExt;
use meshgate_cli::remote::MeshClient;
use meshgate_mesh::publish::{PublishError, Source, publish};
use meshgate_mesh::{Mesh, MeshConfig};
use meshgate_server::config::{Limits, UserConfig};
use meshgate_server::{RunningServer, Secrets, ServerConfig};

use crate::common::write_parquet;

const CONTRACT: &str = r#"
dataset: orders
version: v1
owner: team-shop@company.com
description: "Orders"
sla: {freshness: "1 day", quality: "100%"}
schema:
  - {name: id, type: long, required: true, unique: true, pii: false}
  - {name: tag, type: string, pii: false}
  - {name: email, type: string, pii: true, mask: hash}
access_policy:
  - {role: data_analyst, permission: read}
  - {role: marketing, permission: read_masked}
"#;

struct Shop {
    dir: tempfile::TempDir,
    config: MeshConfig,
}

impl Shop {
    fn new() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("contracts/shop")).unwrap();
        std::fs::copy(
            crate::common::repo().join("contracts/governance.yaml"),
            root.join("contracts/governance.yaml"),
        )
        .unwrap();
        std::fs::write(root.join("contracts/shop/orders.yaml"), CONTRACT).unwrap();
        // The first data: a plain folder, as a team would have copied it by hand.
        write_parquet(
            &root.join("data/shop/orders/v1/part-0.parquet"),
            orders(&[1, 2], "old"),
        );
        std::fs::write(
            root.join("meshgate.yaml"),
            "mesh:\n  contracts: contracts\n  data: data\n",
        )
        .unwrap();
        let mut config = MeshConfig::at(root);
        config.data = root.join("data");
        Shop { dir, config }
    }

    fn contract(&self) -> PathBuf {
        self.dir.path().join("contracts/shop/orders.yaml")
    }

    /// A Parquet input file with these ids, every row tagged `tag`.
    fn input(&self, name: &str, ids: &[i64], tag: &str) -> PathBuf {
        let p = self.dir.path().join(format!("in/{name}.parquet"));
        write_parquet(&p, orders(ids, tag));
        p
    }

    fn location(&self) -> PathBuf {
        self.dir.path().join("data/shop/orders/v1")
    }

    fn staging_left(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("data/shop/orders"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("staging"))
            .collect()
    }
}

fn orders(ids: &[i64], tag: &str) -> Vec<(&'static str, ArrayRef)> {
    vec![
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        (
            "tag",
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| tag))),
        ),
        (
            "email",
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("user{i}@example.com")),
            )),
        ),
    ]
}

async fn serve(shop: &Shop) -> RunningServer {
    serve_with(shop, 0).await
}

async fn serve_with(shop: &Shop, reload_interval_secs: u64) -> RunningServer {
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
            ..Limits::default()
        },
        reload_interval_secs,
        ..Default::default()
    };
    let secrets = Secrets {
        hash_key: meshgate_policy::HashKey::new(crate::common::TEST_KEY).unwrap(),
        token_key: b"test-token-key-0123456789".to_vec(),
        previous_token_keys: vec![],
    };
    let mesh = Mesh::load(shop.config.clone()).await.unwrap();
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    RunningServer::start(Arc::new(mesh), config, secrets)
        .await
        .unwrap()
}

/// (rows, distinct tags joined) as `user` sees the product.
async fn snapshot(server: &RunningServer, user: &str) -> (usize, String, String) {
    let url = format!("grpc://{}", server.flight_addr);
    let mut c = MeshClient::connect(&url, None, user, user, None)
        .await
        .unwrap();
    let (_, stream) = c
        .query("SELECT tag, email FROM shop.orders ORDER BY id")
        .await
        .unwrap();
    let batches: Vec<_> = stream.try_collect().await.unwrap();
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut tags = std::collections::BTreeSet::new();
    let mut first_email = String::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            tags.insert(arrow::util::display::array_value_to_string(b.column(0), i).unwrap());
            if first_email.is_empty() {
                first_email = arrow::util::display::array_value_to_string(b.column(1), i).unwrap();
            }
        }
    }
    (
        rows,
        tags.into_iter().collect::<Vec<_>>().join(","),
        first_email,
    )
}

#[tokio::test]
async fn a_publish_is_checked_then_served_by_the_running_gateway_without_restart() {
    let shop = Shop::new();
    let server = serve(&shop).await;
    assert_eq!(snapshot(&server, "analyst").await.0, 2);

    let published = publish(
        &shop.config,
        &shop.contract(),
        Source::File(shop.input("new", &[10, 11, 12], "new")),
    )
    .await
    .unwrap();
    assert_eq!(published.report.rows, 3);
    assert!(
        std::fs::symlink_metadata(shop.location())
            .unwrap()
            .is_symlink()
    );

    let (rows, tags, email) = snapshot(&server, "analyst").await;
    assert_eq!(
        (rows, tags.as_str(), email.as_str()),
        (3, "new", "user10@example.com")
    );
    let (_, _, masked) = snapshot(&server, "marketer").await;
    assert_eq!(
        masked.len(),
        64,
        "published PII is masked like any other: {masked}"
    );

    // Transformed on the way in, and published again over the link.
    publish(
        &shop.config,
        &shop.contract(),
        Source::Query {
            from: shop.input("more", &[1, 2, 3, 4], "raw"),
            sql: "SELECT id, 'sql' AS tag, email FROM input WHERE id > 1".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(snapshot(&server, "analyst").await.0, 3);
    assert!(shop.staging_left().is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn data_that_breaks_its_contract_is_refused_and_the_old_data_stays() {
    let shop = Shop::new();
    let server = serve(&shop).await;
    let before = snapshot(&server, "analyst").await;

    let dup = publish(
        &shop.config,
        &shop.contract(),
        Source::File(shop.input("dup", &[5, 5, 6], "dup")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&dup, PublishError::Rejected(m) if m.contains("id unique: 2 failing rows")),
        "{dup}"
    );
    let missing = publish(
        &shop.config,
        &shop.contract(),
        Source::Query {
            from: shop.input("x", &[7], "x"),
            sql: "SELECT id, tag FROM input".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        missing.to_string().contains("missing column(s) email"),
        "{missing}"
    );
    let nofile = publish(
        &shop.config,
        &shop.contract(),
        Source::File(shop.dir.path().join("nope.parquet")),
    )
    .await
    .unwrap_err();
    assert!(
        nofile.to_string().contains("nope.parquet: no such file"),
        "{nofile}"
    );
    let typo = shop.dir.path().join("typo.csv");
    std::fs::write(&typo, "id,tag,email\n1,a,a@b.com\nx2,b,c@d.com\n").unwrap();
    let typo = publish(&shop.config, &shop.contract(), Source::File(typo))
        .await
        .unwrap_err();
    assert!(
        typo.to_string()
            .contains("column id (long): 1 value(s) are not long"),
        "{typo}"
    );
    let corrupt = shop.dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, b"PAR1 not parquet at all PAR1").unwrap();
    let corrupt = publish(&shop.config, &shop.contract(), Source::File(corrupt))
        .await
        .unwrap_err();
    assert!(
        matches!(corrupt, PublishError::Input { .. })
            && corrupt.to_string().contains("corrupt.parquet"),
        "{corrupt}"
    );
    let leak = shop.dir.path().join("leak.csv");
    std::fs::write(&leak, "id,tag,email\n1,+44 20 7946 0958,a@b.com\n").unwrap();
    let lookalike = publish(&shop.config, &shop.contract(), Source::File(leak))
        .await
        .unwrap_err();
    assert!(
        lookalike
            .to_string()
            .contains("tag is not PII but 1 rows look like phone"),
        "{lookalike}"
    );

    assert_eq!(snapshot(&server, "analyst").await, before);
    assert!(shop.staging_left().is_empty(), "{:?}", shop.staging_left());
    assert!(std::fs::symlink_metadata(shop.location()).unwrap().is_dir());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_publish_killed_before_the_swap_leaves_the_old_data_and_the_next_one_works() {
    let shop = Shop::new();
    let input = shop.input("new", &[10, 11, 12], "new");
    let run = |failpoint: Option<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"));
        cmd.arg("publish")
            .arg(shop.contract())
            .arg("--from")
            .arg(&input)
            .arg("--config")
            .arg(shop.dir.path().join("meshgate.yaml"));
        if let Some(f) = failpoint {
            cmd.env(meshgate_mesh::publish::FAILPOINT_ENV, f);
        }
        cmd.output()
    };
    let killed = run(Some("before-swap")).await.unwrap();
    assert!(!killed.status.success());
    assert_eq!(
        killed.status.code(),
        None,
        "killed by a signal, not an error"
    );
    assert_eq!(
        shop.staging_left().len(),
        1,
        "the dead publish left its staging"
    );

    let server = serve(&shop).await;
    assert_eq!(snapshot(&server, "analyst").await.1, "old");

    let ok = run(None).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(snapshot(&server, "analyst").await.1, "new");
    server.shutdown().await.unwrap();
}

/// Readers during a stream of publishes see one version or the other, never a mix.
#[tokio::test]
async fn readers_never_see_a_mix_of_two_publishes() {
    let shop = Shop::new();
    let server = serve(&shop).await;
    let a = shop.input("a", &(0..500).collect::<Vec<_>>(), "a");
    let b = shop.input("b", &(1000..1300).collect::<Vec<_>>(), "b");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let url = format!("grpc://{}", server.flight_addr);
        tokio::spawn(async move {
            let mut c = MeshClient::connect(&url, None, "analyst", "analyst", None)
                .await
                .unwrap();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, s) = c
                    .query("SELECT count(*) AS n, min(tag) AS lo, max(tag) AS hi FROM shop.orders")
                    .await
                    .unwrap();
                let b: Vec<_> = s.try_collect().await.unwrap();
                let v = |i| arrow::util::display::array_value_to_string(b[0].column(i), 0).unwrap();
                seen.push((v(0), v(1), v(2)));
            }
            seen
        })
    };
    for i in 0..6 {
        let input = if i % 2 == 0 { &a } else { &b };
        publish(&shop.config, &shop.contract(), Source::File(input.clone()))
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(!seen.is_empty());
    for s in &seen {
        let ok = [("2", "old", "old"), ("500", "a", "a"), ("300", "b", "b")]
            .iter()
            .any(|(n, lo, hi)| (s.0.as_str(), s.1.as_str(), s.2.as_str()) == (*n, *lo, *hi));
        assert!(ok, "a reader saw a mix: {s:?} (all: {seen:?})");
    }
    server.shutdown().await.unwrap();
}

/// Polls until `f` holds (the reloader checks every second).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn changed_contracts_are_served_without_restart_and_an_invalid_edit_keeps_the_last_good() {
    let shop = Shop::new();
    let server = serve_with(&shop, 1).await;
    let hashed = snapshot(&server, "marketer").await.2;
    assert_eq!(hashed.len(), 64);

    // A valid edit: e-mails are now redacted for masked readers.
    std::fs::write(
        shop.contract(),
        CONTRACT.replace("mask: hash", "mask: redact"),
    )
    .unwrap();
    eventually("the new mask is served", async || {
        snapshot(&server, "marketer").await.2 != hashed
    })
    .await;
    let redacted = snapshot(&server, "marketer").await.2;
    assert!(
        !redacted.contains('@') && redacted.len() != 64,
        "{redacted}"
    );

    // An invalid edit: the last good contract stays served, and /readyz says why.
    std::fs::write(
        shop.contract(),
        CONTRACT.replace("type: long", "type: lnog"),
    )
    .unwrap();
    eventually("the invalid edit is reported", async || {
        let ready = crate::common::http_get(server.http_addr, "/readyz").await;
        ready.contains("invalid_changes\":[\"data product shop.orders v1")
            && ready.contains("orders.yaml:8:")
    })
    .await;
    assert_eq!(snapshot(&server, "marketer").await.2, redacted);
    assert_eq!(snapshot(&server, "analyst").await.0, 2);

    // A new product appears once its contract does.
    write_parquet(
        &shop.dir.path().join("data/shop/returns/v1/part-0.parquet"),
        orders(&[1, 2, 3, 4], "returned"),
    );
    std::fs::write(
        shop.dir.path().join("contracts/shop/returns.yaml"),
        CONTRACT.replace("dataset: orders", "dataset: returns"),
    )
    .unwrap();
    eventually("the new product is served", async || {
        let url = format!("grpc://{}", server.flight_addr);
        let mut c = MeshClient::connect(&url, None, "analyst", "analyst", None)
            .await
            .unwrap();
        match c.query("SELECT count(*) FROM shop.returns").await {
            Ok((_, s)) => s.try_collect::<Vec<_>>().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    server.shutdown().await.unwrap();
}

/// A publish is seen by the SLA metrics without waiting for the periodic evaluation.
#[tokio::test]
async fn changed_files_are_evaluated_at_once() {
    let shop = Shop::new();
    let server = serve_with(&shop, 1).await;
    publish(
        &shop.config,
        &shop.contract(),
        Source::File(shop.input("new", &[10, 11, 12], "new")),
    )
    .await
    .unwrap();
    let rows = r#"meshgate_product_rows{product="shop.orders",version="v1",domain="shop",owner="team-shop@company.com"} 3"#;
    eventually("the published rows are measured", async || {
        crate::common::http_get(server.http_addr, "/metrics")
            .await
            .contains(rows)
    })
    .await;
    server.shutdown().await.unwrap();
}
