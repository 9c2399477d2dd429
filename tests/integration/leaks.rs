//! Output channels other than result rows: EXPLAIN in every form, errors, and functions
//! that expose the physical layout. Each caller is checked against the facts its role may
//! not learn (tests/common/oracle.rs): raw values of masked columns, values, counts and
//! sizes of hidden rows, and the server's paths.

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use meshgate_policy::{ErrorClass, classify};

use crate::common::oracle::RoleView;
use crate::common::{EXPLAIN_FORMS, TestMesh, key, principal};

pub(super) const QUERIES: [&str; 8] = [
    "SELECT email, phone, full_name, street_address, birth_date FROM customers.customer_profiles_v1",
    "SELECT * FROM customers.customer_profiles",
    "SELECT * FROM web.web_sessions",
    "SELECT count(*), min(email), max(phone) FROM customers.customer_profiles",
    "SELECT customer_id FROM customers.customer_profiles ORDER BY email LIMIT 3",
    "SELECT c.customer_id FROM customers.customer_profiles c JOIN web.web_sessions w ON c.email = w.user_email",
    "SELECT * FROM checkout.checkout_orders_summary WHERE user_email LIKE 'a%'",
    "SELECT account_id, holder_name FROM lab.accounts WHERE balance > 10",
];

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The oracle itself: it knows what each role may not learn.
#[tokio::test]
async fn the_oracle_knows_what_each_role_may_not_learn() {
    let mesh = TestMesh::load().await;
    let marketer = RoleView::compute(&mesh.mesh, principal("marketer"), &key()).await;
    // A raw e-mail of customer_profiles (marketing reads it hashed), and a server path.
    assert!(
        marketer
            .forbidden
            .in_rows("x alice.costa10291@example.com y")
            .is_some()
    );
    assert!(
        marketer
            .forbidden
            .in_rows(&crate::common::repo().display().to_string())
            .is_some()
    );
    let support = RoleView::compute(&mesh.mesh, principal("eu_support"), &key()).await;
    // Phones of customers outside the EU are hidden rows' values, an EU customer's is
    // not; 20000 rows in all. E-mails are hashed for support by governance.yaml's
    // email-hashed policy, whatever the row.
    assert!(support.forbidden.in_rows("+23 977 5204 3814").is_none());
    assert!(
        support
            .forbidden
            .in_rows("priya.smith0@example.com")
            .is_some()
    );
    assert!(support.forbidden.in_metadata("Rows=Exact(20000)").is_some());
    assert!(support.forbidden.in_metadata("hash 1200007").is_none());
    let analyst = RoleView::compute(&mesh.mesh, principal("analyst"), &key()).await;
    assert!(analyst.forbidden.values.is_empty() && analyst.forbidden.counts.is_empty());
}

#[tokio::test]
async fn no_explain_form_shows_what_the_role_may_not_see() {
    let mesh = TestMesh::load().await;
    for role in [
        "marketer",
        "eu_support",
        "analyst",
        "guest",
        "analyst_marketer",
    ] {
        let view = RoleView::compute(&mesh.mesh, principal(role), &key()).await;
        assert!(
            role == "analyst" || role == "analyst_marketer" || !view.forbidden.values.is_empty(),
            "{role}: nothing forbidden? the oracle is broken"
        );
        let session = mesh.session(role);
        let mut answered = 0;
        for form in EXPLAIN_FORMS {
            for query in QUERIES {
                let sql = format!("{form} {query}");
                let out = match session.sql(&sql).await {
                    Ok(df) => match df.collect().await {
                        Ok(b) => {
                            answered += 1;
                            text(&b)
                        }
                        Err(e) => classify(&e).1,
                    },
                    Err(e) => classify(&e).1,
                };
                if let Some(found) = view.forbidden.in_metadata(&out) {
                    let lines: Vec<_> = out.lines().filter(|l| l.contains(&found)).collect();
                    panic!("{role}: {sql} shows {found:?}:\n{}", lines.join("\n"));
                }
            }
        }
        if role != "guest" {
            assert!(answered > 50, "{role}: only {answered} EXPLAINs answered");
        }
    }
}

#[tokio::test]
async fn functions_that_expose_files_or_row_positions_are_not_callable() {
    let mesh = TestMesh::load().await;
    for role in ["eu_support", "analyst", "marketer"] {
        let session = mesh.session(role);
        for sql in [
            "SELECT customer_id, file_row_index() FROM customers.customer_profiles",
            "SELECT input_file_name() FROM customers.customer_profiles LIMIT 1",
            "SELECT count(*) FROM customers.customer_profiles WHERE file_row_index() > 5",
            "SELECT * FROM customers.customer_profiles WHERE customer_id IN (SELECT customer_id FROM customers.customer_profiles_v1 WHERE input_file_name() LIKE '%v1%')",
            "EXPLAIN SELECT file_row_index() FROM web.web_sessions",
        ] {
            let err = match session.sql(sql).await {
                Ok(df) => df.collect().await.err(),
                Err(e) => Some(e),
            }
            .unwrap_or_else(|| panic!("{role}: {sql} answered"));
            let (class, message) = classify(&err);
            assert_eq!(class, ErrorClass::Refused, "{role}: {sql}: {message}");
            assert!(message.contains("not available"), "{message}");
        }
    }
}

/// Every answer about products (catalog API, quarantine errors, /readyz, the catalog page)
/// names files relative to the mesh, never by the server's absolute paths.
#[tokio::test]
async fn no_answer_names_a_server_path() {
    use meshgate_proto::catalog::catalog_service_client::CatalogServiceClient;
    use meshgate_proto::catalog::{DescribeProductRequest, ListProductsRequest};

    let s = crate::integration::flight::TestServer::start().await;
    let paths = [
        crate::common::repo().display().to_string(),
        s.mesh.dir.path().display().to_string(),
    ];
    let mut texts = Vec::new();
    for user in ["analyst", "guest", "eu_support"] {
        let user = if user == "eu_support" {
            "support"
        } else {
            user
        };
        let mut c = s.client(user).await;
        let token = c.token().unwrap().clone();
        fn authed<T>(token: &str, r: T) -> tonic::Request<T> {
            let mut req = tonic::Request::new(r);
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            req
        }
        let mut catalog = CatalogServiceClient::new(s.channel().await);
        let list = catalog
            .list_products(authed(&token, ListProductsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        texts.push(format!("{list:?}"));
        for p in &list.products {
            let d = catalog
                .describe_product(authed(
                    &token,
                    DescribeProductRequest {
                        name: format!("{}.{}_v{}", p.domain, p.dataset, p.version),
                    },
                ))
                .await;
            texts.push(format!("{d:?}"));
        }
        for product in [
            "escape",
            "corrupt",
            "wrong_type",
            "missing_column",
            "no_data",
            "invalid_contract",
        ] {
            let e = c
                .execute(format!("SELECT * FROM lab.{product}"), None)
                .await
                .unwrap_err();
            texts.push(e.to_string());
        }
    }
    assert!(
        texts.iter().any(|t| t.contains("is outside the data root")),
        "the escape is reported"
    );
    for path in [
        "/readyz",
        "/catalog",
        "/catalog/customers/customer_profiles_v1",
    ] {
        texts.push(crate::common::http_get(s.server.http_addr, path).await);
    }
    for text in &texts {
        for p in &paths {
            for form in [p.as_str(), p.trim_start_matches('/')] {
                assert!(!text.contains(form), "{form} in\n{text}");
            }
        }
    }
}
