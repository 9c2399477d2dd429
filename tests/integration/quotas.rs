//! Quotas per role over both doors: an answer too large, memory beyond the role's share,
//! a rate exceeded; each RESOURCE_EXHAUSTED with its reason (and, on Flight, when to retry),
//! while other roles go on unhindered.

use std::collections::BTreeMap;

use arrow_flight::sql::client::FlightSqlServiceClient;
use meshgate_server::config::RoleLimits;

use crate::common::server::TestServer;

async fn quota_server() -> TestServer {
    TestServer::with(|c| {
        c.limits.roles = BTreeMap::from([
            (
                "marketing".to_string(),
                RoleLimits {
                    max_result_rows: Some(100),
                    memory_limit_mb: Some(1),
                    ..RoleLimits::default()
                },
            ),
            (
                "eu_support".to_string(),
                RoleLimits {
                    queries_per_minute: Some(2),
                    ..RoleLimits::default()
                },
            ),
        ])
    })
    .await
}

/// The rows of `sql` as `user`, or the failure's code, message and retry hint.
async fn run(
    s: &TestServer,
    user: &str,
    sql: &str,
) -> Result<usize, (tonic::Code, String, Option<String>)> {
    let mut c: FlightSqlServiceClient<_> = s.client(user).await;
    let info = c.execute(sql.into(), None).await.map_err(status)?;
    let mut rows = 0;
    for ep in info.endpoint {
        use futures::TryStreamExt;
        let mut stream = c.do_get(ep.ticket.unwrap()).await.map_err(status)?;
        while let Some(b) = stream.try_next().await.map_err(status)? {
            rows += b.num_rows();
        }
    }
    Ok(rows)
}

fn status(e: arrow_flight::error::FlightError) -> (tonic::Code, String, Option<String>) {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => (
            s.code(),
            s.message().to_string(),
            s.metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ),
        other => (tonic::Code::Unknown, other.to_string(), None),
    }
}

#[tokio::test]
async fn a_roles_answer_size_and_memory_are_bounded_and_other_roles_are_not() {
    let s = quota_server().await;
    let all = "SELECT customer_id FROM customers.customer_profiles";
    let (code, message, _) = run(&s, "marketer", all).await.unwrap_err();
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("role marketing: an answer holds at most 100 rows"),
        "{message}"
    );
    assert_eq!(
        run(&s, "marketer", &format!("{all} LIMIT 100"))
            .await
            .unwrap(),
        100
    );
    // The analyst has no quota: the whole answer.
    assert!(run(&s, "analyst", all).await.unwrap() > 100);
    // A hash join's build side cannot spill: beyond the role's 1 MB, refused; the same
    // statement for a role without a memory quota runs.
    let join = "SELECT count(*) FROM customers.customer_profiles a \
        JOIN customers.customer_profiles_v1 b ON a.email = b.email";
    let (code, message, _) = run(&s, "marketer", join).await.unwrap_err();
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("role marketing: its queries may hold 1 MB"),
        "{message}"
    );
    assert_eq!(run(&s, "analyst", join).await.unwrap(), 1);
}

#[tokio::test]
async fn a_roles_rate_is_refused_with_when_to_retry_on_both_doors() {
    let s = quota_server().await;
    let sql = "SELECT count(*) FROM customers.customer_profiles";
    assert_eq!(run(&s, "support", sql).await.unwrap(), 1);
    assert_eq!(run(&s, "support", sql).await.unwrap(), 1);
    let (code, message, retry) = run(&s, "support", sql).await.unwrap_err();
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("role eu_support: 2 queries per minute"),
        "{message}"
    );
    let retry: u64 = retry.expect("a retry-after header").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The Postgres port counts against the same quota: refused with SQLSTATE 53000.
    let addr = s.server.pg_addr.unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("support")
        .password("support")
        .dbname("mesh");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let e = client.simple_query(sql).await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53000");
    assert!(db.message().contains("queries per minute"), "{db:?}");
    // Another role is not held up.
    assert_eq!(run(&s, "analyst", sql).await.unwrap(), 1);
}
