//! Stateless replicas: two (and, for rotation, three) real `meshgate serve` processes that
//! share keys. A token, ticket or prepared-statement handle made on one is honoured on
//! another, and nothing else is.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    Any, CommandPreparedStatementQuery, DoPutPreparedStatementResult, ProstMessageExt,
    TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use meshgate_server::auth::{Envelope, Signer, now};
use prost::Message;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::transport::Channel;

use super::flight::{Client, code, fetch, prepared_handle, strings};

const TOKEN_KEY: &str = "replica-test-token-key-0123456789";
const NEXT_TOKEN_KEY: &str = "replica-test-rotated-key-987654321";
const HASH_KEY: &str = "replica-test-hash-key-0123456789";

struct Replica {
    _child: Child,
    flight: SocketAddr,
    audit: std::path::PathBuf,
}

/// `meshgate serve` on the repository's configuration and sample mesh, on ports 0.
async fn replica(dir: &Path, name: &str, token_key: &str, previous: Option<&str>) -> Replica {
    let audit = dir.join(format!("{name}-audit.log"));
    let config = repo_config(&audit);
    let config_path = dir.join(format!("{name}.yaml"));
    std::fs::write(&config_path, config).unwrap();
    serve(&config_path, audit, token_key, previous).await
}

/// The repository's configuration with its paths made absolute, audit to `audit`.
fn repo_config(audit: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(repo.join("meshgate.yaml"))
        .unwrap()
        .replace(
            "audit_file: meshgate-audit.log",
            &format!("audit_file: {}", audit.display()),
        )
        .replace(
            "contracts: contracts",
            &format!("contracts: {}", repo.join("contracts").display()),
        )
        .replace(
            "data: sample-data",
            &format!("data: {}", repo.join("sample-data").display()),
        )
}

/// `meshgate serve --config config_path` on ports 0.
async fn serve(
    config_path: &Path,
    audit: std::path::PathBuf,
    token_key: &str,
    previous: Option<&str>,
) -> Replica {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config_path)
        .args(["--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--pg-addr", "127.0.0.1:0"])
        .env("MESHGATE_HASH_KEY", HASH_KEY)
        .env("MESHGATE_TOKEN_KEY", token_key)
        .env_remove("MESHGATE_TOKEN_KEY_PREVIOUS")
        .env("MESHGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(p) = previous {
        cmd.env("MESHGATE_TOKEN_KEY_PREVIOUS", p);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines
        .next_line()
        .await
        .unwrap()
        .expect("meshgate serve started");
    let flight = banner
        .split("grpc://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected banner {banner}"));
    Replica {
        _child: child,
        flight,
        audit,
    }
}

async fn client(r: &Replica) -> Client {
    let channel = Channel::from_shared(format!("http://{}", r.flight))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// The same token, on another replica's connection.
async fn client_with_token(r: &Replica, token: &str) -> Client {
    let mut c = client(r).await;
    c.set_token(token.to_string());
    c
}

async fn do_get_code(c: &mut Client, ticket: Ticket) -> Code {
    match c.do_get(ticket).await {
        Err(e) => super::flight::HasCode::code(&e),
        Ok(stream) => code(stream.try_collect::<Vec<_>>().await),
    }
}

fn statement_ticket(envelope: &[u8]) -> Ticket {
    Ticket::new(
        TicketStatementQuery {
            statement_handle: envelope.to_vec().into(),
        }
        .as_any()
        .encode_to_vec(),
    )
}

fn envelope_of(ticket: &Ticket) -> Vec<u8> {
    let any = Any::decode(ticket.ticket.as_ref()).unwrap();
    let t: TicketStatementQuery = any.unpack().unwrap().unwrap();
    t.statement_handle.to_vec()
}

/// GetFlightInfo for a prepared statement handle, as a raw call with the caller's token.
async fn prepared_info(c: &mut Client, handle: Vec<u8>) -> FlightInfo {
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: handle.into(),
    };
    let mut req = tonic::Request::new(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()));
    let bearer = format!("Bearer {}", c.token().unwrap());
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    c.inner_mut()
        .get_flight_info(req)
        .await
        .unwrap()
        .into_inner()
}

const EMAILS: &str = "SELECT customer_id, email FROM customers.customer_profiles \
                      ORDER BY customer_id LIMIT 20";
const EMAIL_OF: &str = "SELECT email FROM customers.customer_profiles WHERE customer_id = $1";

#[tokio::test]
async fn tickets_handles_and_tokens_work_on_any_replica_and_for_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", TOKEN_KEY, None).await;
    let b = replica(dir.path(), "b", TOKEN_KEY, None).await;

    // Handshake and GetFlightInfo on A, DoGet on B: the same (masked) rows.
    let mut on_a = client(&a).await;
    on_a.handshake("marketer", "marketer").await.unwrap();
    let token = on_a.token().unwrap().clone();
    let mut on_b = client_with_token(&b, &token).await;
    let info = on_a.execute(EMAILS.into(), None).await.unwrap();
    let (_, from_b) = fetch(&mut on_b, info.clone()).await;
    let (_, from_a) = fetch(&mut on_a, info.clone()).await;
    assert_eq!(from_a, from_b);
    let emails = strings(&from_b, 1);
    assert_eq!(emails.len(), 20);
    assert!(
        emails.iter().all(|e| !e.contains('@')),
        "masked on B as on A: {emails:?}"
    );

    // Both replicas ran it under the same contracts: the same epoch, recorded by B.
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let envelope = envelope_of(&ticket);
    let audit_b = std::fs::read_to_string(&b.audit).unwrap();
    let line = audit_b
        .lines()
        .find(|l| l.contains("\"kind\":\"statement\"") && l.contains("\"outcome\":\"ok\""))
        .expect("B audited the query it served");
    assert!(line.contains("\"catalog_epoch\":\""), "{line}");
    assert!(
        !line.contains("ticket_epoch"),
        "replicas disagree on the epoch: {line}"
    );

    // Prepare on A, bind on B, execute on A (with the handle B returned).
    let stmt = on_a.prepare(EMAIL_OF.into(), None).await.unwrap();
    let handle = prepared_handle(&stmt);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["C000000"]))],
    )
    .unwrap();
    let descriptor = FlightDescriptor::new_cmd(
        CommandPreparedStatementQuery {
            prepared_statement_handle: handle.clone().into(),
        }
        .as_any()
        .encode_to_vec(),
    );
    let flight_data: Vec<_> = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter(vec![Ok(params)]))
        .try_collect()
        .await
        .unwrap();
    let put = on_b
        .do_put(futures::stream::iter(flight_data))
        .await
        .unwrap()
        .try_next()
        .await
        .unwrap()
        .expect("DoPut answers with a handle");
    let bound = DoPutPreparedStatementResult::decode(put.app_metadata.as_ref())
        .unwrap()
        .prepared_statement_handle
        .expect("an updated handle")
        .to_vec();
    let info = prepared_info(&mut on_a, bound).await;
    let (_, rows) = fetch(&mut on_a, info).await;
    let literal = EMAIL_OF.replace("$1", "'C000000'");
    let info = on_a.execute(literal, None).await.unwrap();
    let (_, expected) = fetch(&mut on_a, info).await;
    assert_eq!(strings(&rows, 0), strings(&expected, 0));
    assert_eq!(strings(&rows, 0).len(), 1);

    // Another principal's ticket, on either replica: PERMISSION_DENIED.
    let mut analyst_b = client(&b).await;
    analyst_b.handshake("analyst", "analyst").await.unwrap();
    assert_eq!(
        do_get_code(&mut analyst_b, ticket.clone()).await,
        Code::PermissionDenied
    );

    // Tampered, expired, or signed with another deployment's key: UNAUTHENTICATED.
    let mut tampered = envelope.clone();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let fresh = |exp| Envelope {
        sub: "marketer".into(),
        roles: vec!["marketing".into()],
        sql: EMAILS.into(),
        params: None,
        epoch: "any".into(),
        exp,
        exec: None,
        iss: None,
    };
    let expired = Signer::new(TOKEN_KEY.as_bytes()).seal_envelope(&fresh(now() - 1));
    let foreign =
        Signer::new(b"another-deployment-key-0123456789").seal_envelope(&fresh(now() + 60));
    for (what, sealed) in [
        ("tampered", tampered),
        ("expired", expired),
        ("foreign key", foreign),
    ] {
        assert_eq!(
            do_get_code(&mut on_b, statement_ticket(&sealed)).await,
            Code::Unauthenticated,
            "{what} ticket"
        );
    }
    // The control: a ticket the test signs like a replica does is honoured.
    let genuine = Signer::new(TOKEN_KEY.as_bytes()).seal_envelope(&fresh(now() + 60));
    let mut stream = on_b.do_get(statement_ticket(&genuine)).await.unwrap();
    let mut n = 0;
    while let Some(batch) = stream.try_next().await.unwrap() {
        n += batch.num_rows();
    }
    assert_eq!(n, 20);

    // A token signed with another key is refused by every RPC.
    let forged = Signer::new(b"another-deployment-key-0123456789").mint_session(
        &meshgate_policy::Principal::new("marketer", ["marketing"]),
        60,
        600,
    );
    let mut forged_b = client_with_token(&b, &forged).await;
    assert_eq!(
        code(forged_b.execute(EMAILS.into(), None).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_replica_rotated_to_a_new_key_accepts_the_old_one_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let old = replica(dir.path(), "old", TOKEN_KEY, None).await;
    let rotated = replica(dir.path(), "rotated", NEXT_TOKEN_KEY, Some(TOKEN_KEY)).await;

    // What the old replica signed works on the rotated one.
    let mut on_old = client(&old).await;
    on_old.handshake("marketer", "marketer").await.unwrap();
    let info = on_old.execute(EMAILS.into(), None).await.unwrap();
    let mut on_rotated = client_with_token(&rotated, on_old.token().unwrap()).await;
    let (_, rows) = fetch(&mut on_rotated, info).await;
    assert_eq!(strings(&rows, 0).len(), 20);

    // What the rotated one signs is refused by a replica that does not hold the new key.
    let mut on_rotated = client(&rotated).await;
    on_rotated.handshake("marketer", "marketer").await.unwrap();
    let info = on_rotated.execute(EMAILS.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut back_on_old = client_with_token(&old, on_rotated.token().unwrap()).await;
    assert_eq!(
        code(back_on_old.execute(EMAILS.into(), None).await),
        Code::Unauthenticated
    );
    let mut old_token_on_old = client_with_token(&old, on_old.token().unwrap()).await;
    assert_eq!(
        do_get_code(&mut old_token_on_old, ticket).await,
        Code::Unauthenticated
    );
}

async fn login(r: &Replica, user: &str) -> Result<String, Code> {
    let mut c = client(r).await;
    c.handshake(user, user)
        .await
        .map_err(|e| super::flight::HasCode::code(&e))?;
    Ok(c.token().unwrap().clone())
}

/// A query's first column as text, or the code it failed with.
async fn first_column(r: &Replica, token: &str, sql: &str) -> Result<Vec<String>, Code> {
    let mut c = client_with_token(r, token).await;
    match c.execute(sql.to_string(), None).await {
        Err(e) => Err(super::flight::HasCode::code(&e)),
        Ok(info) => {
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            match c.do_get(ticket).await {
                Err(e) => Err(super::flight::HasCode::code(&e)),
                Ok(stream) => match stream.try_collect::<Vec<RecordBatch>>().await {
                    Ok(b) => Ok(strings(&b, 0)),
                    Err(e) => Err(super::flight::HasCode::code(&e)),
                },
            }
        }
    }
}

/// Until `check` holds, polling every 200 ms for at most `secs`.
async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn a_revoked_user_or_role_loses_access_on_every_replica_within_the_reload_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("shared.yaml");
    let config = repo_config(&dir.path().join("audit.log")).replace(
        "token_ttl_secs: 3600",
        "token_ttl_secs: 3600\nreload_interval_secs: 1",
    );
    std::fs::write(&config_path, &config).unwrap();
    let a = serve(&config_path, dir.path().join("a.log"), TOKEN_KEY, None).await;
    let b = serve(&config_path, dir.path().join("b.log"), TOKEN_KEY, None).await;
    let email = "SELECT email FROM customers.customer_profiles ORDER BY customer_id LIMIT 1";
    let marketer = login(&a, "marketer").await.unwrap();
    let lead = login(&b, "lead").await.unwrap();
    for r in [&a, &b] {
        assert!(first_column(r, &marketer, email).await.is_ok());
        let clear = first_column(r, &lead, email).await.unwrap();
        assert!(
            clear[0].contains('@'),
            "lead reads e-mails in the clear: {clear:?}"
        );
    }
    // The marketer is removed and lead keeps only marketing, in the one shared file.
    let edited = config
        .replace(
            "  - name: marketer\n    roles: [marketing]\n",
            "  - name: gone\n    roles: []\n",
        )
        .replace("roles: [data_analyst, marketing]", "roles: [marketing]");
    assert_ne!(edited, config);
    std::fs::write(&config_path, &edited).unwrap();
    for r in [&a, &b] {
        assert!(
            eventually(5, || async {
                first_column(r, &marketer, email).await == Err(Code::Unauthenticated)
            })
            .await,
            "the removed user still has access"
        );
        assert!(
            eventually(5, || async {
                first_column(r, &lead, email)
                    .await
                    .is_ok_and(|v| v[0].len() == 64 && !v[0].contains('@'))
            })
            .await,
            "the revoked role still reads in the clear"
        );
        assert_eq!(
            login(r, "marketer").await.unwrap_err(),
            Code::Unauthenticated
        );
    }
}

#[tokio::test]
async fn a_session_ends_after_max_session_secs_however_often_it_is_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("short.yaml");
    let config = repo_config(&dir.path().join("audit.log")).replace(
        "token_ttl_secs: 3600",
        "token_ttl_secs: 3600\nmax_session_secs: 4",
    );
    std::fs::write(&config_path, &config).unwrap();
    let a = serve(&config_path, dir.path().join("a.log"), TOKEN_KEY, None).await;
    let sql = "SELECT 1";
    let mut token = login(&a, "analyst").await.unwrap();
    let started = std::time::Instant::now();
    // The session ends 3 to 4 s after the login (seconds are truncated). Refresh every
    // half second for 1.5 s, well inside it: each new token still ends with the session.
    while started.elapsed() < std::time::Duration::from_millis(1500) {
        assert!(first_column(&a, &token, sql).await.is_ok());
        let channel = Channel::from_shared(format!("http://{}", a.flight))
            .unwrap()
            .connect()
            .await
            .unwrap();
        token = crate::common::server::handshake(channel, &format!("Bearer {token}"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Past the end, the last refreshed token is refused, however slow the loop was.
    tokio::time::sleep(
        (started + std::time::Duration::from_secs(5))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert_eq!(
        first_column(&a, &token, sql).await,
        Err(Code::Unauthenticated),
        "a refreshed token outlived its session"
    );
}
