//! The rewrite's plan shape (insta snapshots of the analyzed plan) and properties of the
//! physical plan that no query may break.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use meshgate_mesh::{Disclosure, ProductScanExec};
use meshgate_policy::{MeshPolicyRule, Policy};

use crate::common::{TestMesh, key, principal};

async fn analyzed(mesh: &TestMesh, role: &str, sql: &str) -> String {
    let session = mesh.session(role);
    let plan = session.sql(sql).await.unwrap().logical_plan().clone();
    let rule = MeshPolicyRule::new(Arc::new(Policy::new(principal(role), key())));
    rule.analyze(plan, &ConfigOptions::new())
        .unwrap()
        .display_indent_schema()
        .to_string()
}

async fn physical(mesh: &TestMesh, role: &str, sql: &str) -> Arc<dyn ExecutionPlan> {
    let session = mesh.session(role);
    session
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

fn text(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

#[tokio::test]
async fn masked_scan_is_wrapped_in_policy_and_projection() {
    let mesh = TestMesh::load().await;
    let plan = analyzed(
        &mesh,
        "marketer",
        "SELECT o.user_email FROM checkout.checkout_orders_summary o WHERE o.user_email = 'x'",
    )
    .await;
    insta::assert_snapshot!(plan, @r#"
    Projection: o.user_email [user_email:Utf8View;N]
      Filter: o.user_email = Utf8("x") [order_id:Utf8View;N, total_amount:Decimal128(12, 2);N, user_email:Utf8View;N, status_id:Int32;N]
        SubqueryAlias: o [order_id:Utf8View;N, total_amount:Decimal128(12, 2);N, user_email:Utf8View;N, status_id:Int32;N]
          MeshPolicy: checkout.checkout_orders_summary v1 read_masked masks=[user_email:hash] [order_id:Utf8View;N, total_amount:Decimal128(12, 2);N, user_email:Utf8View;N, status_id:Int32;N]
            Projection: checkout.checkout_orders_summary.order_id, checkout.checkout_orders_summary.total_amount, mask_hash(checkout.checkout_orders_summary.user_email) AS user_email, checkout.checkout_orders_summary.status_id [order_id:Utf8View;N, total_amount:Decimal128(12, 2);N, user_email:Utf8View;N, status_id:Int32;N]
              TableScan: checkout.checkout_orders_summary [order_id:Utf8View;N, total_amount:Decimal128(12, 2);N, user_email:Utf8View;N, status_id:Int32;N]
    "#);
}

#[tokio::test]
async fn row_filter_and_masks_in_subqueries() {
    let mesh = TestMesh::load().await;
    let plan = analyzed(
        &mesh,
        "eu_support",
        "SELECT count(*) FROM lab.accounts WHERE balance > (SELECT avg(balance) FROM lab.accounts_v1)",
    )
    .await;
    insta::assert_snapshot!(plan, @r#"
    Projection: count(Int64(1)) AS count(*) [count(*):Int64]
      Aggregate: groupBy=[[]], aggr=[[count(Int64(1))]] [count(Int64(1)):Int64]
        Filter: lab.accounts.balance > (<subquery>) [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
          Subquery: [avg(lab.accounts_v1.balance):Float64;N]
            Projection: avg(lab.accounts_v1.balance) [avg(lab.accounts_v1.balance):Float64;N]
              Aggregate: groupBy=[[]], aggr=[[avg(lab.accounts_v1.balance)]] [avg(lab.accounts_v1.balance):Float64;N]
                MeshPolicy: lab.accounts v1 read row_filter [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
                  Filter: lab.accounts_v1.region = Utf8View("EU") [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
                    TableScan: lab.accounts_v1 [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
          MeshPolicy: lab.accounts v1 read row_filter [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
            Filter: lab.accounts.region = Utf8View("EU") [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
              TableScan: lab.accounts [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
    "#);
}

#[tokio::test]
async fn hashing_a_number_retypes_the_plan_above_it() {
    let mesh = TestMesh::load().await;
    let plan = analyzed(&mesh, "marketer", "SELECT account_id FROM lab.accounts").await;
    insta::assert_snapshot!(plan, @r"
    Projection: lab.accounts.account_id [account_id:Utf8;N]
      MeshPolicy: lab.accounts v1 read_masked masks=[account_id:hash, holder_name:redact] [account_id:Utf8;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
        Projection: mask_hash(lab.accounts.account_id) AS account_id, mask_redact(lab.accounts.holder_name) AS holder_name, lab.accounts.balance, lab.accounts.region [account_id:Utf8;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
          TableScan: lab.accounts [account_id:Int64;N, holder_name:Utf8View;N, balance:Float64;N, region:Utf8View;N]
    ");
}

#[tokio::test]
async fn a_plain_read_plans_as_without_meshgate() {
    let mesh = TestMesh::load().await;
    let plan = analyzed(&mesh, "analyst", "SELECT sku FROM inventory.stock_levels").await;
    insta::assert_snapshot!(plan, @r#"
    Projection: inventory.stock_levels.sku [sku:Utf8View;N]
      TableScan: inventory.stock_levels [sku:Utf8View;N, warehouse_id:Utf8View;N, quantity:Int64;N, updated_at:Timestamp(µs, "UTC");N]
    "#);
}

/// Removes every `mask_*(col)` call; what is left must not name a masked column.
fn without_masks(predicate: &str) -> String {
    let re = regex::Regex::new(r"mask_[a-z0-9]+\([a-z_]+@\d+\)").unwrap();
    re.replace_all(predicate, "MASKED").into_owned()
}

/// The scan-level predicates of a plan: what statistics, page indexes and pushed-down
/// filters are evaluated with.
fn scan_predicates(plan: &str) -> Vec<String> {
    plan.lines()
        .filter(|l| l.contains("ProductScanExec"))
        .flat_map(|l| {
            l.split(", ")
                .filter(|p| p.starts_with("predicate=") || p.starts_with("pruning_predicate="))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn parquet_pruning_never_sees_raw_masked_columns() {
    let mesh = TestMesh::load().await;
    for sql in [
        "SELECT * FROM checkout.checkout_orders_summary WHERE user_email = 'alice.dubois13948@example.com'",
        "SELECT * FROM checkout.checkout_orders_summary WHERE user_email > 'a' AND user_email < 'b'",
        "SELECT * FROM customers.customer_profiles WHERE phone LIKE '+3%' OR email IN ('a', 'b')",
        "SELECT * FROM customers.customer_profiles WHERE birth_date = DATE '1989-03-04'",
        "SELECT * FROM web.web_sessions w JOIN customers.customer_profiles c ON w.user_email = c.email WHERE c.email < '5'",
        "SELECT * FROM customers.customer_profiles ORDER BY email LIMIT 3",
    ] {
        let plan = text(&physical(&mesh, "marketer", sql).await);
        for p in scan_predicates(&plan) {
            let rest = without_masks(&p);
            for col in [
                "user_email",
                "email",
                "phone",
                "birth_date",
                "street_address",
                "full_name",
            ] {
                assert!(
                    !rest.contains(&format!("{col}@"))
                        && !rest.contains(&format!("{col}_min"))
                        && !rest.contains(&format!("{col}_max")),
                    "raw {col} reaches the scan in\n{sql}\n{plan}"
                );
            }
        }
    }
}

#[tokio::test]
async fn aggregates_on_pii_are_never_answered_from_statistics() {
    let mesh = TestMesh::load().await;
    let plan = text(
        &physical(
            &mesh,
            "marketer",
            "SELECT min(user_email), max(user_email) FROM checkout.checkout_orders_summary",
        )
        .await,
    );
    assert!(plan.contains("AggregateExec"), "{plan}");
    assert!(
        !plan.contains("PlaceholderRowExec"),
        "answered from statistics:\n{plan}"
    );
}

#[tokio::test]
async fn user_predicates_stay_above_the_row_filter_barrier() {
    let mesh = TestMesh::load().await;
    for sql in [
        "SELECT * FROM customers.customer_profiles WHERE customer_id = 'C000001'",
        "SELECT * FROM customers.customer_profiles WHERE 1 / (CASE WHEN customer_id = 'C000001' THEN 0 ELSE 1 END) = 1",
        "SELECT a.customer_id FROM customers.customer_profiles a JOIN customers.customer_profiles_v1 b ON a.customer_id = b.customer_id WHERE b.customer_id = 'C000001'",
        "SELECT customer_id FROM customers.customer_profiles ORDER BY CASE WHEN customer_id = 'C000001' THEN 0 ELSE 1 END LIMIT 1",
        "SELECT count(*) FROM web.web_sessions WHERE user_email = 'C000001'",
    ] {
        let plan = physical(&mesh, "eu_support", sql).await;
        // Every filtered product is read by a scan that applies its row filter inside and
        // takes no predicate from above: the user's literal is nowhere in it.
        let mut hidden = 0;
        let mut stack = vec![Arc::clone(&plan)];
        while let Some(node) = stack.pop() {
            if let Some(scan) = node.downcast_ref::<ProductScanExec>() {
                assert_eq!(scan.disclosure(), &Disclosure::RowsHidden, "{sql}");
                hidden += 1;
                let inside = displayable(scan.inner().as_ref()).indent(true).to_string();
                assert!(
                    scan.row_filter().is_some() && !inside.contains("C000001"),
                    "user predicate inside the filtered scan of\n{sql}\n{inside}"
                );
            }
            stack.extend(node.children().into_iter().cloned());
        }
        assert!(hidden >= 1, "no filtered scan in\n{}", text(&plan));
    }
}
