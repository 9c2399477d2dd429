//! What a column's codes mean (`values:`) and what its numbers measure (`unit:`), where
//! consumers work: Flight column metadata, the catalog API, Postgres comments, and SQL
//! (`value_labels`, also tested per role in tests/slt).

use arrow::array::AsArray;
use arrow_flight::sql::CommandGetTables;

use super::flight::{TestServer, fetch, strings};

const STATUS_REMARK: &str = "Where the order stands after checkout. Values: 1 = paid, \
     2 = shipped, 3 = delivered, 4 = returned, 5 = refunded";

#[tokio::test]
async fn flight_column_metadata_carries_labels_and_units() {
    let s = TestServer::start().await;
    let mut c = s.client("marketer").await;
    let info = c
        .get_tables(CommandGetTables {
            db_schema_filter_pattern: Some("checkout".into()),
            table_name_filter_pattern: Some("checkout_orders_summary".into()),
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, b) = fetch(&mut c, info).await;
    assert_eq!(strings(&b, 2), ["checkout_orders_summary"]);
    let ipc = b[0].column(4).as_binary::<i32>().value(0).to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&ipc).unwrap();
    let status = schema.field_with_name("status_id").unwrap().metadata();
    // One remark for tools that show one text (JDBC's REMARKS)…
    assert_eq!(status["ARROW:FLIGHT:SQL:REMARKS"], STATUS_REMARK);
    // …and the labels apart, for programs.
    let labels: Vec<serde_json::Value> = serde_json::from_str(&status["meshgate:values"]).unwrap();
    assert_eq!(labels.len(), 5);
    assert_eq!(labels[1]["value"], 2);
    assert_eq!(labels[1]["label"], "shipped");
    assert_eq!(labels[1]["description"], "Handed to the carrier");
    assert!(labels[2].get("description").is_none(), "{labels:?}");
    let amount = schema.field_with_name("total_amount").unwrap().metadata();
    assert_eq!(amount["meshgate:unit"], "USD");
    assert_eq!(amount["ARROW:FLIGHT:SQL:REMARKS"], "Unit: USD");
    // A column without meaning declared carries none.
    let email = schema.field_with_name("user_email").unwrap().metadata();
    assert!(!email.contains_key("meshgate:values") && !email.contains_key("meshgate:unit"));
}

#[tokio::test]
async fn the_catalog_api_lists_labels_and_units() {
    let s = TestServer::start().await;
    // The contract is metadata every caller may see, also without a grant.
    let detail = s
        .describe_product("guest", "checkout.checkout_orders_summary")
        .await;
    let col = |name: &str| {
        detail
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no column {name}: {:?}", detail.columns))
    };
    let status = col("status_id");
    let labels: Vec<(&str, &str, &str)> = status
        .values
        .iter()
        .map(|v| (v.value.as_str(), v.label.as_str(), v.description.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("1", "paid", "Payment captured, not yet shipped"),
            ("2", "shipped", "Handed to the carrier"),
            ("3", "delivered", ""),
            ("4", "returned", "Sent back by the customer, refund pending"),
            ("5", "refunded", ""),
        ]
    );
    assert_eq!(col("total_amount").unit, "USD");
    assert!(col("order_id").values.is_empty() && col("order_id").unit.is_empty());
}

#[tokio::test]
async fn postgres_comments_and_flight_sql_turn_codes_into_labels() {
    let s = TestServer::start().await;
    let pg = crate::common::pg::connect(s.server.pg_addr.unwrap(), "marketer")
        .await
        .unwrap();
    let comment: String = pg
        .query_one(
            "SELECT d.description FROM pg_catalog.pg_description d \
             JOIN pg_catalog.pg_class c ON d.objoid = c.oid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid \
             WHERE n.nspname = 'checkout' AND c.relname = 'checkout_orders_summary' \
             AND a.attname = 'status_id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment, STATUS_REMARK);
    // The same join answers alike over both protocols.
    let sql = "SELECT l.label, count(*) AS n FROM checkout.checkout_orders_summary o \
               JOIN value_labels('checkout.checkout_orders_summary', 'status_id') l \
               ON l.value = o.status_id GROUP BY l.label ORDER BY n DESC, l.label";
    let over_pg: Vec<(String, i64)> = pg
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(over_pg.len(), 5);
    assert_eq!(over_pg[0].0, "delivered");
    let mut flight = s.client("marketer").await;
    let info = flight.execute(sql.to_string(), None).await.unwrap();
    let (_, b) = fetch(&mut flight, info).await;
    assert_eq!(
        strings(&b, 0),
        over_pg.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>()
    );
}
