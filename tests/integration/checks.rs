//! `meshgate check`'s evaluation on a product with known defects: each column check counts
//! its failing rows, quality is the share passing all, freshness is measured against the
//! SLA, and PII-looking text in non-PII columns is found.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use meshgate_mesh::checks::check_product;
use meshgate_mesh::{Mesh, MeshConfig};

use crate::common::write_parquet;

const CONTRACT: &str = r#"
dataset: orders
version: v1
owner: team-shop@company.com
sla:
  freshness: "1 hour"
  freshness_column: updated_at
  quality: "90%"
schema:
  - {name: id, type: long, required: true, unique: true, pii: false}
  - {name: status, type: string, enum: [new, paid], pii: false}
  - {name: channel, type: integer, pii: false, values: [{value: 1, label: web}, {value: 2, label: app}]}
  - {name: amount, type: double, min: 0, max: 100, pii: false}
  - {name: code, type: string, pattern: "^[A-Z]{3}$", pii: false}
  - {name: note, type: string, pii: false}
  - {name: contact, type: string, pii: true}
  - {name: updated_at, type: timestamp, pii: false}
access_policy:
  - {role: data_analyst, permission: read}
"#;

/// 2026-01-01T00:00:00Z, the newest `updated_at`.
const NEWEST_US: i64 = 1_767_225_600_000_000;

pub(crate) fn shop_mesh(dir: &std::path::Path) -> MeshConfig {
    std::fs::create_dir_all(dir.join("contracts/shop")).unwrap();
    std::fs::write(dir.join("contracts/shop/orders.yaml"), CONTRACT).unwrap();
    let col = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
    write_parquet(
        &dir.join("data/shop/orders/v1/part-0.parquet"),
        vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(2),
                    Some(3),
                    Some(3), // duplicate
                    Some(5),
                    Some(6),
                    Some(7),
                    Some(8),
                    Some(9),
                    None, // required
                ])),
            ),
            (
                "status",
                col(vec![
                    Some("new"),
                    Some("paid"),
                    Some("new"),
                    Some("new"),
                    Some("lost"), // enum
                    Some("new"),
                    Some("new"),
                    Some("new"),
                    None, // null is not a value outside the enum
                    Some("new"),
                ]),
            ),
            (
                "channel",
                Arc::new(Int32Array::from(vec![
                    Some(1),
                    Some(1),
                    Some(2),
                    Some(1),
                    Some(3), // not a labelled value (the row already fails `enum`)
                    Some(1),
                    Some(2),
                    Some(2),
                    None,
                    Some(1),
                ])),
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![
                    10.0, 20.0, 30.0, 40.0, 50.0, -1.0, 150.0, 60.0, 70.0, 80.0,
                ])),
            ),
            (
                "code",
                col([Some("ABC"); 10]
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| if i == 7 { Some("abc") } else { c })
                    .collect()),
            ),
            (
                "note",
                col(vec![
                    Some("fine"),
                    Some("+44 20 7946 0958"),
                    Some("write to x@y.com"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ]),
            ),
            ("contact", col(vec![Some("a@b.com"); 10])),
            (
                "updated_at",
                Arc::new(
                    TimestampMicrosecondArray::from(
                        (0..10)
                            .map(|i| NEWEST_US - i * 1_000_000)
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ],
    );
    let mut config = MeshConfig::at(dir);
    config.data = dir.join("data");
    config
}

#[tokio::test]
async fn checks_count_failing_rows_and_measure_quality_and_freshness() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::load(shop_mesh(dir.path())).await.unwrap();
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    let now = SystemTime::UNIX_EPOCH + Duration::from_micros(NEWEST_US as u64 + 7_200_000_000);
    let r = check_product(&mesh, Arc::clone(&mesh.tables()[0]), now)
        .await
        .unwrap();

    let failing: Vec<(&str, &str, u64)> = r
        .checks
        .iter()
        .map(|c| (c.column.as_str(), c.check, c.failing_rows))
        .collect();
    assert_eq!(
        failing,
        vec![
            ("id", "required", 1),
            ("id", "unique", 2),
            ("status", "enum", 1),
            ("channel", "values", 1),
            ("amount", "min", 1),
            ("amount", "max", 1),
            ("code", "pattern", 1),
        ]
    );
    assert_eq!(r.rows, 10);
    assert!(
        (r.quality - 0.3).abs() < 1e-9,
        "7 of 10 rows fail a check: {}",
        r.quality
    );
    assert!(!r.quality_ok(), "30% < the 90% SLA");
    assert_eq!(r.freshness_age_secs, Some(7200.0));
    assert_eq!(r.freshness_sla_secs, Some(3600.0));
    assert!(!r.freshness_ok() && !r.sla_ok());
    assert_eq!(r.freshness_source, "column updated_at");

    // Only non-PII text is scanned; the PII column `contact` is expected to hold e-mails.
    let findings: Vec<(&str, &str, u64)> = r
        .pii_findings
        .iter()
        .map(|f| (f.column.as_str(), f.looks_like, f.rows))
        .collect();
    assert_eq!(findings, vec![("note", "e-mail", 1), ("note", "phone", 1)]);

    // An hour after the newest row, freshness is within its SLA.
    let fresh = check_product(
        &mesh,
        Arc::clone(&mesh.tables()[0]),
        SystemTime::UNIX_EPOCH + Duration::from_micros(NEWEST_US as u64 + 1_800_000_000),
    )
    .await
    .unwrap();
    assert!(fresh.freshness_ok());
}

/// The server evaluates every product at start and exports its service levels with the
/// labels the alert rules route on; quarantined products export conformant 0.
#[tokio::test]
async fn the_server_exports_each_products_sla_on_metrics() {
    let s = super::flight::TestServer::with(|c| c.limits.sla_check_interval_secs = 3600).await;
    let labels = r#"product="customers.customer_profiles",version="v2",domain="customers",owner="team-customers@company.com""#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = crate::common::http_get(s.server.http_addr, "/metrics").await;
        if m.contains("meshgate_product_checked_timestamp_seconds{product=\"web.web_sessions\"") {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no evaluation: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = |name: &str, labels: &str| -> f64 {
        let prefix = format!("{name}{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("meshgate_product_conformant", labels), 1.0);
    assert_eq!(value("meshgate_product_rows", labels), 20000.0);
    assert_eq!(value("meshgate_product_quality_ratio", labels), 1.0);
    assert_eq!(value("meshgate_product_quality_sla_ratio", labels), 0.99);
    assert_eq!(
        value("meshgate_product_freshness_sla_seconds", labels),
        86400.0
    );
    assert!(value("meshgate_product_freshness_age_seconds", labels) > 0.0);
    let corrupt = r#"product="lab.corrupt",version="v1",domain="lab",owner="team-lab@company.com""#;
    assert_eq!(value("meshgate_product_conformant", corrupt), 0.0);
}

/// Row counts, freshness and quality are measured over every row: the catalog API shows
/// them to callers who read every row of the product, and only the SLA status to others.
#[tokio::test]
async fn the_catalog_shows_measurements_only_to_callers_who_read_every_row() {
    let s = super::flight::TestServer::with(|c| c.limits.sla_check_interval_secs = 3600).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = crate::common::http_get(s.server.http_addr, "/metrics").await;
        if m.contains("meshgate_product_checked_timestamp_seconds{product=\"web.web_sessions\"") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no evaluation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = |user: &'static str| {
        let s = &s;
        async move {
            let detail = s
                .describe_product(user, "customers.customer_profiles")
                .await;
            detail.summary.unwrap().health.unwrap()
        }
    };
    for user in ["analyst", "marketer"] {
        let h = health(user).await;
        assert!(
            !h.withheld && h.rows == 20000 && h.freshness_age_secs.is_some(),
            "{user}: {h:?}"
        );
    }
    // A row filter (support: EU only) or no grant at all (guest): the status, no figures.
    for user in ["support", "guest"] {
        let h = health(user).await;
        assert!(h.evaluated && h.withheld, "{user}: {h:?}");
        assert_eq!(
            (h.rows, h.quality, h.freshness_age_secs),
            (0, 0.0, None),
            "{user}"
        );
        assert!(
            !h.freshness_ok,
            "the SLA status is shown: the sample data is stale"
        );
    }
}
