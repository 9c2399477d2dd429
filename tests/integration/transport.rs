//! The transport around the Flight service: TLS, and a client that goes away mid-stream.

use std::time::Duration;

use futures::StreamExt;
use meshgate_cli::remote::MeshClient;
use meshgate_server::TlsConfig;

use super::flight::TestServer;
use crate::common::http_get;

/// A self-signed certificate for 127.0.0.1, written where the server config can name it.
fn certificate(dir: &std::path::Path) -> (TlsConfig, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let pem = ck.cert.pem();
    let tls = TlsConfig {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&tls.cert, &pem).unwrap();
    std::fs::write(&tls.key, ck.signing_key.serialize_pem()).unwrap();
    (tls, pem)
}

async fn first_email(client: &mut MeshClient) -> String {
    let (_, mut batches) = client
        .query("SELECT email FROM customers.customer_profiles ORDER BY customer_id LIMIT 1")
        .await
        .unwrap();
    let batch = batches.next().await.unwrap().unwrap();
    arrow::util::display::array_value_to_string(batch.column(0), 0).unwrap()
}

#[tokio::test]
async fn tls_serves_masked_queries_and_refuses_plaintext_and_unknown_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = certificate(dir.path());
    let s = TestServer::with(|c| c.tls = Some(tls)).await;
    let port = s.server.flight_addr.port();
    let url = format!("grpc+tls://127.0.0.1:{port}");

    let mut analyst = MeshClient::connect(&url, Some(ca.as_bytes()), "analyst", "analyst", None)
        .await
        .unwrap();
    let mut marketer = MeshClient::connect(&url, Some(ca.as_bytes()), "marketer", "marketer", None)
        .await
        .unwrap();
    let raw = first_email(&mut analyst).await;
    let masked = first_email(&mut marketer).await;
    assert!(
        raw.contains('@'),
        "analyst reads e-mails in the clear: {raw}"
    );
    assert_ne!(raw, masked, "the policy holds over TLS too");

    // A plaintext client cannot talk to the TLS port.
    let plain = format!("grpc://127.0.0.1:{port}");
    assert!(
        MeshClient::connect(&plain, None, "analyst", "analyst", None)
            .await
            .is_err()
    );
    // Nor can a TLS client that does not trust the certificate (system roots only).
    assert!(
        MeshClient::connect(&url, None, "analyst", "analyst", None)
            .await
            .is_err()
    );
    // And another CA's certificate is not this one.
    let (_, other) = certificate(tempfile::tempdir().unwrap().path());
    assert!(
        MeshClient::connect(&url, Some(other.as_bytes()), "analyst", "analyst", None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls_with_a_missing_or_invalid_key_stops_the_start_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (mut tls, _) = certificate(dir.path());
    tls.key = dir.path().join("nope.pem");
    let err = start_error(tls.clone()).await;
    assert!(err.contains("nope.pem") && err.contains("key"), "{err}");

    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    tls.key = dir.path().join("bad.pem");
    let err = start_error(tls).await;
    assert!(err.contains("TLS"), "{err}");
}

async fn start_error(tls: TlsConfig) -> String {
    let mesh = crate::common::TestMesh::load().await;
    let config = meshgate_server::ServerConfig {
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        pg_addr: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(tls),
        ..Default::default()
    };
    let secrets = meshgate_server::Secrets {
        hash_key: meshgate_policy::HashKey::new(crate::common::TEST_KEY).unwrap(),
        token_key: b"test-token-key-0123456789".to_vec(),
        previous_token_keys: vec![],
    };
    let shared = std::sync::Arc::new(
        meshgate_mesh::Mesh::load(mesh.mesh.config().clone())
            .await
            .unwrap(),
    );
    match meshgate_server::RunningServer::start(shared, config, secrets).await {
        Ok(_) => panic!("a server with a broken TLS configuration started"),
        Err(e) => e.to_string(),
    }
}

/// A client that drops its stream mid-result stops the query: the slot is released, the
/// active-query gauge returns to zero and the audit line says the client cancelled.
#[tokio::test]
async fn a_client_that_goes_away_cancels_its_query() {
    let s = TestServer::start().await;
    let url = format!("grpc://{}", s.server.flight_addr);
    let mut client = MeshClient::connect(&url, None, "analyst", "analyst", None)
        .await
        .unwrap();
    // Billions of rows: it only ends if someone stops it.
    let (_, mut batches) = client
        .query(
            "SELECT a.order_id, b.order_id FROM checkout.checkout_orders_summary a \
             CROSS JOIN checkout.checkout_orders_summary b",
        )
        .await
        .unwrap();
    batches.next().await.unwrap().unwrap();
    let metrics = || http_get(s.server.http_addr, "/metrics");
    assert!(metrics().await.contains("meshgate_active_queries 1"));
    drop(batches);
    drop(client);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics().await;
        if text.contains("meshgate_active_queries 0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query still runs after its client left:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "Cancelled", "{last}");
    assert!(last["rows"].as_u64().unwrap() > 0, "{last}");
}

/// The JDBC driver's `catalog=mesh` connection property: SetSessionOptions must answer (an
/// UNIMPLEMENTED there drops the connection), accept `mesh`, and refuse what it cannot honour.
#[tokio::test]
async fn session_options_take_catalog_mesh_and_refuse_the_rest_by_name() {
    use arrow_flight::Action;
    use meshgate_proto::flight_session::{
        CLOSE_SESSION, CloseSessionResult, GET_SESSION_OPTIONS, GetSessionOptionsResult,
        SET_SESSION_OPTIONS, SessionOptionValue, SetSessionOptionsRequest, SetSessionOptionsResult,
        session_option_value::OptionValue,
    };
    use prost::Message;

    let s = TestServer::start().await;
    let mut c = s.client("analyst").await;
    let bearer = format!("Bearer {}", c.token().unwrap());
    let string = |v: &str| SessionOptionValue {
        option_value: Some(OptionValue::StringValue(v.into())),
    };
    let request = SetSessionOptionsRequest {
        session_options: [("catalog", string("mesh")), ("schema", string("checkout"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    let action = |kind: &str, body: Vec<u8>, token: Option<&str>| {
        let mut req = tonic::Request::new(Action::new(kind, body));
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        req
    };
    let mut run = async |kind: &str, body: Vec<u8>, token: Option<&str>| {
        let mut stream = c
            .inner_mut()
            .do_action(action(kind, body, token))
            .await?
            .into_inner();
        let first = stream.message().await?.expect("one result");
        Ok::<_, tonic::Status>(first.body)
    };

    let set = run(SET_SESSION_OPTIONS, request.encode_to_vec(), Some(&bearer))
        .await
        .unwrap();
    let errors = SetSessionOptionsResult::decode(set).unwrap().errors;
    assert!(!errors.contains_key("catalog"), "catalog=mesh is accepted");
    assert!(
        errors.contains_key("schema"),
        "an option it cannot honour is refused"
    );

    let got = run(GET_SESSION_OPTIONS, vec![], Some(&bearer))
        .await
        .unwrap();
    let options = GetSessionOptionsResult::decode(got)
        .unwrap()
        .session_options;
    assert_eq!(options["catalog"], string("mesh"));

    let closed = run(CLOSE_SESSION, vec![], Some(&bearer)).await.unwrap();
    assert_eq!(CloseSessionResult::decode(closed).unwrap().status, 1);

    // Like every RPC, it needs a valid token.
    let denied = run(GET_SESSION_OPTIONS, vec![], None).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let forged = run(GET_SESSION_OPTIONS, vec![], Some("Bearer mg1.forged")).await;
    assert_eq!(forged.unwrap_err().code(), tonic::Code::Unauthenticated);
}
