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
    assert_eq!(mesh.mesh.quarantined().len(), 6);
}
