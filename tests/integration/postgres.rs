//! The Postgres port end to end with a real driver (tokio-postgres, extended protocol)
//! and psql: login, the same policy as Flight, parameters, portals, session statements,
//! pg_catalog, cancellation, TLS and the audit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::common::server::TestServer;

pub(crate) async fn connect_as(
    addr: SocketAddr,
    user: &str,
    password: &str,
    options: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("mesh");
    if !options.is_empty() {
        config.options(options);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn connect(s: &TestServer, user: &str) -> Client {
    connect_as(s.server.pg_addr.unwrap(), user, user, "")
        .await
        .unwrap()
}

/// The rows of a simple query, as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    crate::common::pg::simple_rows(client, sql).await
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("{e}"))
}

#[tokio::test]
async fn logins_need_the_password_and_say_nothing_about_who_exists() {
    let s = TestServer::start().await;
    let addr = s.server.pg_addr.unwrap();
    // SCRAM (the test users have verifiers).
    assert!(connect_as(addr, "analyst", "analyst", "").await.is_ok());
    let wrong = connect_as(addr, "analyst", "nope", "").await.unwrap_err();
    let unknown = connect_as(addr, "nobody", "nope", "").await.unwrap_err();
    assert_eq!(sqlstate(&wrong), "28P01");
    assert_eq!(sqlstate(&unknown), "28P01");
    let msg = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .unwrap()
            .message()
            .replace("nobody", "analyst")
    };
    assert_eq!(msg(&wrong), msg(&unknown));
    // A role the user does not hold cannot be asked for.
    let e = connect_as(addr, "analyst", "analyst", "-c meshgate.role=marketing")
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("does not hold role marketing"),
        "{e:?}"
    );
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    let logins: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"kind\":\"login\""))
        .collect();
    assert!(
        logins
            .iter()
            .all(|l| l.contains("\"protocol\":\"postgres\""))
    );
    assert!(logins.iter().any(|l| l.contains("\"outcome\":\"ok\"")));
    assert!(
        logins
            .iter()
            .filter(|l| l.contains("\"outcome\":\"Unauthenticated\""))
            .count()
            >= 2
    );
    assert!(!audit.contains("nope"), "a password in the audit");
}

#[tokio::test]
async fn without_a_verifier_a_clear_password_is_accepted_on_loopback_only() {
    let s = TestServer::with(|c| {
        for u in &mut c.users {
            u.scram_sha_256 = None;
        }
    })
    .await;
    let addr = s.server.pg_addr.unwrap();
    // 127.0.0.1: cleartext, checked against the argon2 hash.
    let client = connect_as(addr, "marketer", "marketer", "").await.unwrap();
    assert_eq!(
        rows(&client, "SELECT 1").await,
        vec![vec![Some("1".into())]]
    );
    assert_eq!(
        sqlstate(&connect_as(addr, "marketer", "x", "").await.unwrap_err()),
        "28P01"
    );
}

/// This machine's address on its network (not loopback), as a peer elsewhere would see it.
/// A UDP "connect" only picks the route; nothing is sent.
fn non_loopback_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.255:9")
        .or_else(|_| socket.connect("10.255.255.255:9"))
        .expect("the test needs a network interface besides loopback");
    let ip = socket.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no routable address: {ip}"
    );
    ip
}

/// The authentication code the server answers a startup message with.
async fn first_authentication_request(addr: SocketAddr, user: &str) -> i32 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut body = 196_608i32.to_be_bytes().to_vec(); // protocol 3.0
    for part in ["user", user, "database", "mesh", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message).await.unwrap();
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], b'R', "an authentication request");
    i32::from_be_bytes(head[5..9].try_into().unwrap())
}

#[tokio::test]
async fn off_loopback_a_clear_password_is_never_asked_for_and_scram_still_works() {
    // Listening on every interface; the client reaches it by the machine's network
    // address, so the server sees a peer that is not loopback.
    let s = TestServer::with(|c| {
        c.pg_addr = Some("0.0.0.0:0".parse().unwrap());
        // The marketer has no SCRAM verifier: only a clear password could log them in.
        for u in &mut c.users {
            if u.name == "marketer" {
                u.scram_sha_256 = None;
            }
        }
    })
    .await;
    let addr = SocketAddr::new(non_loopback_ip(), s.server.pg_addr.unwrap().port());
    // SCRAM never shows the password on the wire: accepted from anywhere.
    let analyst = connect_as(addr, "analyst", "analyst", "").await.unwrap();
    assert_eq!(
        rows(&analyst, "SELECT 1").await,
        vec![vec![Some("1".into())]]
    );
    // Without a verifier, off loopback and without TLS: the right password is refused
    // too, the way a wrong one is (the server ran a decoy SCRAM exchange instead of
    // asking for the password in the clear).
    let refused = connect_as(addr, "marketer", "marketer", "")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "28P01", "{refused}");
    // On the wire: the answer to the startup message asks for SASL (10), not for a
    // clear password (3).
    assert_eq!(first_authentication_request(addr, "marketer").await, 10);
    assert_eq!(first_authentication_request(addr, "nobody").await, 10);
    // psql, which would send a clear password when asked, is never asked.
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host={} port={} user=marketer dbname=mesh sslmode=disable",
            addr.ip(),
            addr.port()
        ))
        .args(["-XAtc", "SELECT 1"])
        .env("PGPASSWORD", "marketer")
        .output()
        .await
        .expect("psql (Debian's postgresql-client) is installed by tests/run-all.sh");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    // On loopback the same user logs in with the clear password.
    let local = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    connect_as(local, "marketer", "marketer", "").await.unwrap();
}

#[tokio::test]
async fn answers_are_the_policys_as_on_flight() {
    let s = TestServer::start().await;
    let marketer = connect(&s, "marketer").await;
    let analyst = connect(&s, "analyst").await;
    let sql = "SELECT email, phone FROM customers.customer_profiles ORDER BY customer_id LIMIT 2";
    let masked = rows(&marketer, sql).await;
    let clear = rows(&analyst, sql).await;
    for (m, c) in masked.iter().zip(&clear) {
        let (email, phone) = (m[0].as_deref().unwrap(), m[1].as_deref().unwrap());
        assert_eq!(email.len(), 64, "hashed email: {email}");
        assert!(email.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(c[0].as_deref().unwrap().contains('@'));
        assert!(phone.starts_with('*') && !c[1].as_deref().unwrap().starts_with('*'));
    }
    // A predicate on the raw value does not get around the mask.
    let email = clear[0][0].clone().unwrap();
    let probe = format!("SELECT count(*) FROM customers.customer_profiles WHERE email = '{email}'");
    assert_eq!(rows(&marketer, &probe).await, vec![vec![Some("0".into())]]);
    // The guest reads nothing; the refusal carries its SQLSTATE.
    let guest = connect(&s, "guest").await;
    let e = guest
        .simple_query("SELECT * FROM customers.customer_profiles")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
    // EXPLAIN shows the policy the statement runs under, and no other row's value.
    let plan = format!("{:?}", rows(&marketer, &format!("EXPLAIN {probe}")).await);
    assert!(
        plan.contains("MeshPolicy: customers.customer_profiles v2 read_masked"),
        "{plan}"
    );
    assert!(!plan.contains(clear[1][0].as_deref().unwrap()));
    // Errors say what went wrong and the connection goes on.
    let e = marketer.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR));
    let e = marketer
        .simple_query("SELECT * FROM lab.nothing")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
    let e = marketer
        .simple_query("SELECT no_such_column FROM inventory.stock_levels")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_COLUMN));
    assert_eq!(
        rows(&marketer, "SELECT 2").await,
        vec![vec![Some("2".into())]]
    );
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"protocol\":\"postgres\"")
                && l.contains("\"kind\":\"statement\"")
                && l.contains("customers.customer_profiles v2 read_masked")),
        "{audit}"
    );
    assert!(!audit.contains(&email), "a literal in the audit");
}

#[tokio::test]
async fn prepared_statements_bind_typed_parameters_in_text_and_binary() {
    let s = TestServer::start().await;
    let client = connect(&s, "analyst").await;
    // tokio-postgres prepares (Parse/Describe), binds binary parameters and reads binary rows.
    let stmt = client
        .prepare("SELECT customer_id, birth_date, signup_at FROM customers.customer_profiles WHERE customer_id = $1")
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::TEXT]);
    let got = client.query(&stmt, &[&"C000001"]).await.unwrap();
    assert_eq!(got.len(), 1);
    let id: String = got[0].get(0);
    assert_eq!(id, "C000001");
    let _date: chrono::NaiveDate = got[0].get(1);
    let _at: chrono::DateTime<chrono::Utc> = got[0].get(2);
    // A number parameter, and the same statement run twice.
    let count = client
        .prepare("SELECT count(*) FROM inventory.stock_levels WHERE quantity > $1")
        .await
        .unwrap();
    let many: i64 = client.query_one(&count, &[&0i64]).await.unwrap().get(0);
    let none: i64 = client.query_one(&count, &[&i64::MAX]).await.unwrap().get(0);
    assert!(many > 0);
    assert_eq!(none, 0);
    // A portal with a row limit hands rows out in pieces.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let sql = "SELECT sku || '@' || warehouse_id FROM inventory.stock_levels ORDER BY 1";
    let all = tx.prepare(sql).await.unwrap();
    let portal = tx.bind(&all, &[]).await.unwrap();
    let mut pieces = Vec::new();
    for _ in 0..2 {
        let piece = tx.query_portal(&portal, 3).await.unwrap();
        assert_eq!(piece.len(), 3);
        pieces.extend(piece.iter().map(|r| r.get::<_, String>(0)));
    }
    let whole: Vec<String> = tx
        .query(&format!("{sql} LIMIT 6"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pieces, whole);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn session_statements_answer_as_postgres_and_engine_settings_stay_refused() {
    let s = TestServer::start().await;
    let lead = connect(&s, "lead").await;
    for sql in [
        "SET application_name = 'superset'",
        "SET extra_float_digits = 3",
        "SET DateStyle = 'ISO, MDY'",
        "BEGIN READ ONLY",
        "COMMIT",
        "SET meshgate.execution = local",
    ] {
        lead.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(
        rows(&lead, "SHOW application_name").await,
        vec![vec![Some("superset".into())]]
    );
    assert_eq!(
        rows(&lead, "SELECT current_database()").await,
        vec![vec![Some("mesh".into())]]
    );
    let version = rows(&lead, "SELECT version()").await;
    assert!(
        version[0][0]
            .as_deref()
            .unwrap()
            .starts_with("PostgreSQL 16")
    );
    let e = lead
        .simple_query("SET datafusion.execution.target_partitions = 1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    // SET ROLE narrows: the marketer role reads the email hashed.
    let sql = "SELECT email FROM customers.customer_profiles ORDER BY customer_id LIMIT 1";
    assert!(
        rows(&lead, sql).await[0][0]
            .as_deref()
            .unwrap()
            .contains('@')
    );
    lead.simple_query("SET ROLE marketing").await.unwrap();
    assert!(
        !rows(&lead, sql).await[0][0]
            .as_deref()
            .unwrap()
            .contains('@')
    );
    let e = lead.simple_query("SET ROLE admin").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    lead.simple_query("DISCARD ALL").await.unwrap();
    assert!(
        rows(&lead, sql).await[0][0]
            .as_deref()
            .unwrap()
            .contains('@')
    );
    // The role can also be chosen at connect, as libpq's options.
    let narrowed = connect_as(
        s.server.pg_addr.unwrap(),
        "lead",
        "lead",
        "-c meshgate.role=marketing",
    )
    .await
    .unwrap();
    assert!(
        !rows(&narrowed, sql).await[0][0]
            .as_deref()
            .unwrap()
            .contains('@')
    );
    // Writes stay refused.
    let e = lead.simple_query("BEGIN READ WRITE").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let e = lead
        .simple_query("CREATE TABLE t (a int)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
}

#[tokio::test]
async fn pg_catalog_lists_what_information_schema_lists_in_the_callers_types() {
    let s = TestServer::start().await;
    let marketer = connect(&s, "marketer").await;
    let listed = |sql: &'static str| {
        let c = &marketer;
        async move {
            let mut r: Vec<String> = rows(c, sql)
                .await
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect();
            r.sort();
            r
        }
    };
    let pg = listed(
        "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    )
    .await;
    let info = listed(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_catalog = 'mesh' AND table_schema <> 'information_schema'",
    )
    .await;
    assert!(!pg.is_empty());
    assert_eq!(pg, info);
    // A hashed number is text in the catalog as in the answers.
    let types = rows(
        &marketer,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'customers' AND c.relname = 'customer_profiles' AND a.attname = 'email'",
    )
    .await;
    assert_eq!(types, vec![vec![Some("email".into()), Some("text".into())]]);
    // Contract descriptions are the comments clients read (SQLAlchemy, PgJDBC's REMARKS).
    let comments = rows(
        &marketer,
        "SELECT a.attname, d.description FROM pg_catalog.pg_description d \
         JOIN pg_catalog.pg_class c ON d.objoid = c.oid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid \
         WHERE n.nspname = 'checkout' AND c.relname = 'checkout_orders_summary' \
         ORDER BY d.objsubid",
    )
    .await;
    assert!(comments.len() >= 2, "{comments:?}");
    assert_eq!(
        comments[0][0], None,
        "the table's own comment comes first: {comments:?}"
    );
    assert!(comments.contains(&vec![
        Some("order_id".into()),
        Some("Unique UUID for the order".into())
    ]));
    // The catalog schema is metadata: no product can be read through it.
    let e = marketer
        .simple_query("SELECT * FROM pg_catalog.customer_profiles")
        .await
        .unwrap_err();
    assert_ne!(e.code(), None);
}

#[tokio::test]
async fn a_cancel_request_stops_the_running_statement() {
    let s = TestServer::start().await;
    let client = connect(&s, "analyst").await;
    let token = client.cancel_token();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await.unwrap();
    });
    let started = std::time::Instant::now();
    let e = client
        .simple_query(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000000000) \
             SELECT count(*) FROM r",
        )
        .await
        .unwrap_err();
    cancel.await.unwrap();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // The connection serves the next statement.
    assert_eq!(
        rows(&client, "SELECT 1").await,
        vec![vec![Some("1".into())]]
    );
}

/// A string of statements runs them one after another, each in turn taking the one slot
/// (it used to take a slot per statement before the first was read: with one slot, the
/// second waited out the queue and failed). A later statement's error ends the string.
#[tokio::test]
async fn a_multi_statement_string_holds_one_slot_at_a_time() {
    let s = TestServer::with_limits(meshgate_server::config::Limits {
        max_concurrent_queries: 1,
        queue_timeout_secs: 2,
        ..Default::default()
    })
    .await;
    let client = connect(&s, "analyst").await;
    let count = rows(&client, "SELECT count(*) FROM inventory.stock_levels").await;
    let sql = "SELECT 1 AS a; SET application_name = 'multi'; \
               SELECT count(*) AS n FROM inventory.stock_levels; SELECT 'x' AS c, 2 AS d";
    assert_eq!(
        rows(&client, sql).await,
        vec![
            vec![Some("1".into())],
            count[0].clone(),
            vec![Some("x".into()), Some("2".into())],
        ]
    );
    // Each query statement audited once, as itself.
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    let ok = audit
        .lines()
        .filter(|l| l.contains("\"kind\":\"statement\"") && l.contains("\"outcome\":\"ok\""))
        .count();
    assert_eq!(ok, 4, "{audit}");
    // A later statement that fails at planning ends the string with its error, after the
    // rows before it; the connection serves on.
    let messages = client
        .simple_query("SELECT 1; SELECT * FROM lab.nothing; SELECT 3")
        .await;
    let e = messages.unwrap_err();
    assert!(e.code().is_some(), "{e:?}");
    // The slot is free again, for this connection and others.
    let other = connect(&s, "marketer").await;
    assert_eq!(
        rows(&other, "SELECT 4; SELECT 5").await,
        vec![vec![Some("4".into())], vec![Some("5".into())]]
    );
    assert_eq!(
        rows(&client, "SELECT 6").await,
        vec![vec![Some("6".into())]]
    );
}

#[tokio::test]
async fn psql_over_tls_with_verify_full() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::common::pki::Authority::new("pg-ca");
    let files = ca.issue(dir.path(), "gateway");
    let s = TestServer::with(|c| {
        c.tls = Some(meshgate_server::TlsConfig {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    })
    .await;
    let addr = s.server.pg_addr.unwrap();
    // psql runs beside the test's runtime, which also serves the gateway.
    let psql =
        |sslmode: &str| {
            tokio::process::Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user=marketer dbname=mesh sslmode={sslmode} sslrootcert={}",
                addr.port(),
                files.ca.display()
            ))
            .args(["-XAtc", "SELECT ssl_is_used_here FROM (SELECT 1 AS ssl_is_used_here) t"])
            .env("PGPASSWORD", "marketer")
            .output()
        };
    for mode in ["require", "verify-full"] {
        let out = psql(mode)
            .await
            .expect("psql (Debian's postgresql-client) is installed by tests/run-all.sh");
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    }
}
