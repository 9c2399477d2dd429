use std::collections::BTreeSet;

use meshgate_contract::{Contract, parse_contract};

use super::*;

fn contract(text: &str) -> Contract {
    parse_contract(std::path::Path::new("test.yaml"), text).expect("a valid contract")
}

const ORDERS: &str = r#"
dataset: orders
version: v1
owner: team-checkout@company.com
schema:
  - {name: order_id, type: string}
  - {name: email, type: string, pii: true}
  - {name: amount, type: double}
  - {name: region_code, type: string}
"#;

const CUSTOMERS: &str = r#"
dataset: customers
version: v2
owner: team-customers@company.com
schema:
  - {name: email, type: string, pii: true}
  - {name: region, type: string}
"#;

fn derived(sql: &str, columns: &str) -> String {
    format!(
        "dataset: report\nversion: v1\nowner: team-marketing@company.com\n\
         source: {{sql: \"{sql}\", refresh: 1 hour}}\nschema:\n{columns}"
    )
}

async fn lineage_of(derived_text: &str) -> Lineage {
    let orders = contract(ORDERS);
    let customers = contract(CUSTOMERS);
    let report = contract(derived_text);
    let declared = [
        ("checkout", &orders),
        ("customers", &customers),
        ("marketing", &report),
    ]
    .map(|(domain, contract)| Declared {
        domain,
        contract,
        file: format!("{domain}.yaml").into(),
        location: None,
    });
    Lineage::of(&declared).await
}

fn report() -> ProductRef {
    ProductRef {
        domain: "marketing".into(),
        dataset: "report".into(),
        version: 1,
    }
}

fn sources(l: &Lineage, column: &str) -> Vec<String> {
    l.upstream(&report())
        .expect("derived")
        .sources(column)
        .map(|c| format!("{}.{}", c.product.dataset, c.column))
        .collect()
}

#[tokio::test]
async fn columns_come_from_through_joins_and_aggregates() {
    let l = lineage_of(&derived(
        "SELECT c.region, count(*) AS orders, sum(o.amount) * 2 AS revenue \
         FROM checkout.orders o JOIN customers.customers c ON o.email = c.email \
         WHERE o.region_code <> 'X' GROUP BY c.region",
        "  - {name: region, type: string}\n  - {name: orders, type: long}\n  - {name: revenue, type: double}\n",
    ))
    .await;
    let d = l.upstream(&report()).unwrap();
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(sources(&l, "region"), ["customers.region"]);
    assert_eq!(sources(&l, "orders"), Vec::<String>::new());
    assert_eq!(sources(&l, "revenue"), ["orders.amount"]);
    // A join key and a filter decide which rows, not what a value is.
    let inputs: Vec<String> = d.inputs.keys().map(|p| p.to_string()).collect();
    assert_eq!(inputs, ["checkout.orders v1", "customers.customers v2"]);
}

#[tokio::test]
async fn a_column_from_pii_must_be_pii() {
    // Through an expression, a CTE, a UNION and a scalar subquery: each carries PII.
    for sql in [
        "SELECT upper(email) AS contact FROM checkout.orders",
        "WITH x AS (SELECT email AS e FROM checkout.orders) SELECT e AS contact FROM x",
        "SELECT order_id AS contact FROM checkout.orders UNION ALL SELECT email FROM customers.customers",
        "SELECT (SELECT max(email) FROM customers.customers) AS contact FROM checkout.orders",
        "SELECT first_value(email) OVER (ORDER BY amount) AS contact FROM checkout.orders",
        // A grouping id sits between group columns and aggregates.
        "SELECT max(email) AS contact FROM checkout.orders GROUP BY ROLLUP(order_id)",
        "SELECT max(email) AS contact FROM checkout.orders GROUP BY CUBE(order_id, region_code)",
        // A subquery inside VALUES.
        "SELECT x AS contact FROM (VALUES ((SELECT max(email) FROM customers.customers))) t(x)",
        // Conditions that copy a value into a column of another relation.
        "SELECT v.d AS contact FROM checkout.orders o JOIN (VALUES ('a'), ('b')) v(d) \
         ON substr(o.email, 1, 1) = v.d",
        "SELECT CAST(g.value AS VARCHAR) AS contact FROM checkout.orders o \
         JOIN generate_series(1, 99) g ON g.value = length(o.email)",
        "SELECT v.d AS contact FROM (VALUES ('a'), ('b')) v(d) \
         WHERE EXISTS (SELECT 1 FROM checkout.orders o WHERE substr(o.email, 1, 1) = v.d)",
        "SELECT v.d AS contact FROM (VALUES ('a'), ('b')) v(d) \
         WHERE v.d = ANY (SELECT email FROM checkout.orders)",
        "SELECT v.d AS contact FROM (VALUES ('a'), ('b')) v(d) \
         WHERE v.d IN (SELECT substr(email, 1, 1) FROM checkout.orders)",
    ] {
        let l = lineage_of(&derived(sql, "  - {name: contact, type: string}\n")).await;
        let d = l.upstream(&report()).unwrap();
        let traced = d
            .problems
            .iter()
            .any(|p| p.contains("comes from PII") && p.contains("email"));
        let refused = d.problems.iter().any(|p| p.contains("correlated subquery"));
        assert!(traced || refused, "{sql}: {:?}", d.problems);
        let ok = lineage_of(&derived(
            sql,
            "  - {name: contact, type: string, pii: true}\n",
        ))
        .await;
        let problems = &ok.upstream(&report()).unwrap().problems;
        assert!(
            problems.iter().all(|p| !p.contains("comes from PII")),
            "{sql}: {problems:?}"
        );
        assert!(refused || problems.is_empty(), "{sql}: {problems:?}");
    }
}

#[tokio::test]
async fn a_join_key_or_filter_on_pii_does_not_make_the_other_columns_pii() {
    let l = lineage_of(&derived(
        "SELECT o.region_code AS code, sum(o.amount) AS total FROM checkout.orders o \
         JOIN customers.customers c ON o.email = c.email WHERE c.email LIKE '%.org' \
         GROUP BY o.region_code",
        "  - {name: code, type: string}\n  - {name: total, type: double}\n",
    ))
    .await;
    let d = l.upstream(&report()).unwrap();
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

#[tokio::test]
async fn the_sql_must_return_the_contracts_columns_in_castable_types() {
    let l = lineage_of(&derived(
        "SELECT DATE '2026-01-01' AS order_id, amount FROM checkout.orders",
        "  - {name: order_id, type: boolean}\n  - {name: missing, type: string}\n",
    ))
    .await;
    let problems = &l.upstream(&report()).unwrap().problems;
    let text = problems.join("\n");
    assert!(
        text.contains("\"amount\", which the contract does not declare"),
        "{text}"
    );
    assert!(text.contains("\"missing\" is declared but"), "{text}");
    assert!(
        text.contains("returns Date32, which cannot be cast to boolean"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_inputs_and_cycles_are_problems() {
    let l = lineage_of(&derived(
        "SELECT 1 AS n FROM checkout.nothing",
        "  - {name: n, type: long}\n",
    ))
    .await;
    let text = l.upstream(&report()).unwrap().problems.join("\n");
    assert!(
        text.contains("does not plan") && text.contains("nothing"),
        "{text}"
    );

    let l = lineage_of(&derived(
        "SELECT n FROM marketing.report",
        "  - {name: n, type: long}\n",
    ))
    .await;
    let text = l.upstream(&report()).unwrap().problems.join("\n");
    assert!(text.contains("derived from itself"), "{text}");
}

#[tokio::test]
async fn impact_lists_the_derived_columns_a_change_reaches() {
    let l = lineage_of(&derived(
        "SELECT c.region, sum(o.amount) AS revenue FROM checkout.orders_v1 o \
         JOIN customers.customers c ON o.email = c.email GROUP BY c.region",
        "  - {name: region, type: string}\n  - {name: revenue, type: double}\n",
    ))
    .await;
    let orders = ProductRef {
        domain: "checkout".into(),
        dataset: "orders".into(),
        version: 1,
    };
    let customers = ProductRef {
        domain: "customers".into(),
        dataset: "customers".into(),
        version: 2,
    };
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let hit = l.impact(&orders, &cols(&["amount", "order_id"]), false, false);
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].column.as_ref().unwrap().0, "revenue");
    assert_eq!(hit[0].owner, "team-marketing@company.com");
    // Not a column the report uses.
    assert!(
        l.impact(&orders, &cols(&["order_id"]), false, false)
            .is_empty()
    );
    // orders is pinned (_v1): a new version of it does not reach the report;
    // customers is read by its newest name: a new version does.
    assert!(l.impact(&orders, &cols(&[]), false, true).is_empty());
    let hit = l.impact(&customers, &cols(&[]), false, true);
    assert_eq!(hit.len(), 1);
    assert!(hit[0].column.is_none());
}

#[tokio::test]
async fn a_mesh_without_derived_products_plans_nothing() {
    let orders = contract(ORDERS);
    let l = Lineage::of(&[Declared {
        domain: "checkout",
        contract: &orders,
        file: "x".into(),
        location: None,
    }])
    .await;
    assert_eq!(l.derivations().count(), 0);
}
