//! The catalog's verdicts on the test mesh: what is served, what is quarantined and why.

use crate::common::TestMesh;

#[tokio::test]
async fn sample_mesh_is_served_whole() {
    let mesh = TestMesh::load().await;
    let mut served: Vec<String> = mesh
        .mesh
        .products()
        .iter()
        .map(|p| p.display_name())
        .collect();
    served.sort();
    assert_eq!(
        served,
        [
            "checkout.checkout_orders_summary v1",
            "customers.customer_profiles v1",
            "customers.customer_profiles v2",
            "inventory.stock_levels v1",
            "lab.accounts v1",
            "marketing.sales_by_region v1",
            "web.web_sessions v1",
        ]
    );
}

#[tokio::test]
async fn every_broken_product_is_quarantined_with_a_diagnosis() {
    let mesh = TestMesh::load().await;
    let q = |name: &str| {
        mesh.mesh
            .quarantined()
            .iter()
            .find(|q| q.dataset == name)
            .unwrap_or_else(|| panic!("{name} not quarantined"))
            .to_string()
    };
    assert!(q("missing_column").contains("column nickname (string) is missing"));
    assert!(q("missing_column").contains("owner team-lab@company.com"));
    assert!(q("wrong_type").contains("column amount is"));
    assert!(q("corrupt").contains("not readable Parquet"));
    assert!(
        q("invalid_contract").contains("invalid_contract.yaml:6:"),
        "{}",
        q("invalid_contract")
    );
    assert!(q("no_data").contains("does not exist"));
    assert!(q("escape").contains("outside the data root"));
    let ungoverned = q("ungoverned");
    assert!(
        ungoverned.contains("ungoverned.yaml:16:")
            && ungoverned.contains("contact_phone looks like PII")
            && ungoverned.contains("governance: pii_name_patterns"),
        "{ungoverned}"
    );
    assert_eq!(mesh.mesh.quarantined().len(), 7);
}

/// Rules that cannot be read cannot be enforced: the mesh refuses to load at all, naming
/// the line, rather than serve contracts nobody checked.
#[tokio::test]
async fn invalid_governance_rules_stop_the_mesh_from_loading() {
    let dir = tempfile::tempdir().unwrap();
    let contracts = dir.path().join("contracts");
    std::fs::create_dir_all(contracts.join("checkout")).unwrap();
    std::fs::copy(
        crate::common::repo().join("contracts/checkout/checkout_orders_summary.yaml"),
        contracts.join("checkout/checkout_orders_summary.yaml"),
    )
    .unwrap();
    std::fs::write(
        contracts.join("governance.yaml"),
        "explicit_pii: true\nallowed_masks: [hash, sparkle]\n",
    )
    .unwrap();
    let mut config = meshgate_mesh::MeshConfig::at(crate::common::repo());
    config.contracts = contracts;
    let err = meshgate_mesh::Mesh::load(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("governance rules are invalid") && err.contains("governance.yaml:2:"),
        "{err}"
    );
}

/// `meshgate serve --sample-today`: a newcomer's first look shows SLAs met, and one
/// product stale on purpose, showing what a breach looks like. The derived product has no
/// data in the fresh copy until its refresh, which `--sample-today` runs at once.
#[tokio::test]
async fn the_sample_mesh_of_today_meets_its_slas_but_one() {
    use meshgate_mesh::checks::check_product;
    let dir = tempfile::tempdir().unwrap();
    meshgate_sample::write_sample_mesh_today(dir.path(), 1).unwrap();
    let mut config = meshgate_mesh::MeshConfig::at(crate::common::repo());
    config.contracts = crate::common::repo().join("contracts");
    config.data = dir.path().to_path_buf();
    let before = meshgate_mesh::Mesh::load(config.clone()).await.unwrap();
    let waiting: Vec<String> = before
        .quarantined()
        .iter()
        .map(|q| q.dataset.clone())
        .collect();
    assert_eq!(waiting, ["sales_by_region"]);
    // As the repository's meshgate.yaml configures it.
    let server =
        meshgate_server::ServerConfig::load(&crate::common::repo().join("meshgate.yaml")).unwrap();
    let refresher = meshgate_server::refresh::Refresher::standalone(
        std::sync::Arc::new(before),
        &server,
        meshgate_policy::HashKey::new(crate::common::TEST_KEY).unwrap(),
        None,
    )
    .unwrap();
    refresher
        .refresh_named("marketing.sales_by_region")
        .await
        .unwrap();
    let mesh = meshgate_mesh::Mesh::load(config).await.unwrap();
    assert!(mesh.quarantined().is_empty(), "{:?}", mesh.quarantined());
    let mut verdicts = Vec::new();
    for table in mesh.tables() {
        let r = check_product(
            &mesh,
            std::sync::Arc::clone(table),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
        verdicts.push((r.product.clone(), r.freshness_ok(), r.quality_ok()));
    }
    verdicts.sort();
    assert_eq!(
        verdicts,
        [
            ("checkout.checkout_orders_summary v1".into(), true, true),
            ("customers.customer_profiles v1".into(), true, true),
            ("customers.customer_profiles v2".into(), true, true),
            ("inventory.stock_levels v1".into(), false, true),
            ("marketing.sales_by_region v1".into(), true, true),
            ("web.web_sessions v1".into(), true, true),
        ]
    );
}
