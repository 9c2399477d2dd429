//! Logins from an identity provider: JWTs signed with keys the test makes, published as a
//! JWKS by a small HTTP server the test runs, checked by the gateway at the Flight
//! handshake (Bearer, or as a Basic password) and on the Postgres port; each forgery a
//! real attacker tries is refused with a reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use meshgate_server::config::OidcIssuer;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::common::server::TestServer;
use crate::integration::flight::{fetch, strings};

const ISSUER: &str = "https://login.example.com/tenant/v2.0";
const AUDIENCE: &str = "api://meshgate";

/// A signing key of the test's identity provider and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key as bytes an attacker could find (for the HMAC confusion).
    public: Vec<u8>,
}

fn ec_key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw().to_vec();
    assert_eq!(
        (point.len(), point[0]),
        (65, 4),
        "an uncompressed P-256 point"
    );
    Key {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }),
        public: pair.public_key_pem().into_bytes(),
    }
}

/// An RSA key from the openssl command line (ring, which signs here, makes no RSA keys).
fn rsa_key(kid: &str, dir: &std::path::Path) -> Key {
    let pem = dir.join(format!("{kid}.pem"));
    let der = dir.join(format!("{kid}.der"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (README: test prerequisites)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let pem_s = pem.to_str().unwrap();
    run(&["genrsa", "-out", pem_s, "2048"]);
    run(&[
        "rsa",
        "-in",
        pem_s,
        "-traditional",
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    let modulus = run(&["rsa", "-in", pem_s, "-noout", "-modulus"]);
    let n = hex_decode(modulus.trim().trim_start_matches("Modulus="));
    let public = run(&["rsa", "-in", pem_s, "-pubout"]);
    Key {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(&std::fs::read(&der).unwrap()),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB",
        }),
        public: public.into_bytes(),
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a token the provider would issue now for `email` in `groups`.
fn claims(email: &str, groups: &[&str]) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("00u{}", email.len()),
        "email": email, "groups": groups, "regions": ["US"],
        "iat": now(), "nbf": now() - 5, "exp": now() + 600,
    })
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// The JWKS the provider publishes, which a test may change.
struct Provider {
    jwks: Arc<Mutex<Value>>,
    url: String,
}

async fn provider(keys: &[&Key]) -> Provider {
    let jwks = Arc::new(Mutex::new(
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }),
    ));
    let served = Arc::clone(&jwks);
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            let body = served.lock().unwrap().to_string();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider { jwks, url }
}

impl Provider {
    fn publish(&self, keys: &[&Key]) {
        *self.jwks.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }
}

fn issuer(jwks_url: &str) -> OidcIssuer {
    OidcIssuer {
        issuer: ISSUER.into(),
        jwks_url: Some(jwks_url.into()),
        jwks_file: None,
        audience: AUDIENCE.into(),
        algorithms: vec!["RS256".into(), "ES256".into()],
        user_claim: "email".into(),
        groups_claim: "groups".into(),
        group_roles: BTreeMap::from([
            (
                "Data Analysts".to_string(),
                vec!["data_analyst".to_string()],
            ),
            ("Support".to_string(), vec!["regional_support".to_string()]),
        ]),
        attribute_claims: BTreeMap::from([("regions".to_string(), "regions".to_string())]),
        jwks_refresh_secs: 1,
        leeway_secs: 30,
    }
}

/// The Flight handshake with `authorization: <header>`: the meshgate token, or why not.
async fn handshake(s: &TestServer, header: &str) -> Result<String, tonic::Status> {
    crate::common::server::handshake(s.channel().await, header).await
}

async fn client(s: &TestServer, token: &str) -> FlightSqlServiceClient<Channel> {
    let mut c = FlightSqlServiceClient::new(s.channel().await);
    c.set_token(token.to_string());
    c
}

async fn first_column(
    c: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<String>, tonic::Status> {
    let info = c
        .execute(sql.into(), None)
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let (_, batches) = fetch(c, info).await;
    Ok(strings(&batches, 0))
}

fn refused(result: Result<String, tonic::Status>, says: &str) {
    match result {
        Ok(_) => panic!("accepted; expected a refusal that says {says:?}"),
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
            assert!(s.message().contains(says), "{says:?} not in {s:?}");
        }
    }
}

#[tokio::test]
async fn provider_tokens_log_in_with_their_groups_roles_and_forgeries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ec, rsa) = (ec_key("ec-1"), rsa_key("rsa-1", dir.path()));
    let idp = provider(&[&ec, &rsa]).await;
    let s = TestServer::with(|c| {
        c.auth.oidc = vec![issuer(&idp.url)];
        // Each forgery below is a failed login; the per-address limit (tested elsewhere)
        // would stop the test before its point.
        c.limits.max_failed_logins_per_minute = 0;
    })
    .await;

    // An analyst's token (ES256) as Bearer at the handshake: PII in the clear.
    let alice = sign(
        &ec,
        &claims("alice@example.com", &["Data Analysts", "Staff"]),
    );
    let token = handshake(&s, &format!("Bearer {alice}")).await.unwrap();
    assert!(
        token.starts_with("mg2."),
        "meshgate mints its own session token"
    );
    let mut c = client(&s, &token).await;
    let email = first_column(
        &mut c,
        "SELECT email FROM customers.customer_profiles WHERE customer_id = 'C000000'",
    )
    .await
    .unwrap();
    assert_eq!(email, ["priya.smith0@example.com"]);
    // The session ends when the provider's token does, whatever max_session_secs says.
    let body = token.split('.').nth(2).unwrap();
    let session: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    let jwt: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(alice.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(session["end"], jwt["exp"]);
    assert_eq!(session["iss"], ISSUER);

    // A support agent's token (RS256) given as the Basic password, as clients that only
    // send Basic do: rows of the regions its claim lists, PII masked.
    let bob = sign(&rsa, &claims("bob@example.com", &["Support"]));
    let mut c = FlightSqlServiceClient::new(s.channel().await);
    c.handshake("bob@example.com", &bob).await.unwrap();
    let regions = first_column(
        &mut c,
        "SELECT DISTINCT region FROM customers.customer_profiles ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(regions, ["US"]);
    // The name sent must be the token's user.
    let mut other = FlightSqlServiceClient::new(s.channel().await);
    let e = other
        .handshake("alice@example.com", &bob)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("alice@example.com"), "{e}");

    // A group the configuration does not map grants nothing (fail closed).
    let carol = sign(&ec, &claims("carol@example.com", &["Contractors"]));
    let token = handshake(&s, &format!("Bearer {carol}")).await.unwrap();
    let mut c = client(&s, &token).await;
    let e = first_column(&mut c, "SELECT count(*) FROM customers.customer_profiles")
        .await
        .unwrap_err();
    assert!(
        e.message().contains("no access") || e.message().contains("permission"),
        "{e:?}"
    );

    // Forgeries and tokens that are not (or no longer) good.
    let bearer = |t: &str| format!("Bearer {t}");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("alice@example.com", &["Data Analysts"]);
        f(&mut c);
        c
    };
    let expired = sign(&ec, &with(&|c| c["exp"] = json!(now() - 3600)));
    refused(handshake(&s, &bearer(&expired)).await, "expired");
    let early = sign(&ec, &with(&|c| c["nbf"] = json!(now() + 3600)));
    refused(handshake(&s, &bearer(&early)).await, "not valid yet");
    let audience = sign(&ec, &with(&|c| c["aud"] = json!("api://another-app")));
    refused(handshake(&s, &bearer(&audience)).await, "another audience");
    let no_exp = sign(
        &ec,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    );
    refused(handshake(&s, &bearer(&no_exp)).await, "no exp claim");
    let stranger = sign(
        &ec,
        &with(&|c| c["iss"] = json!("https://evil.example.com/")),
    );
    refused(handshake(&s, &bearer(&stranger)).await, "is not configured");
    // Signed by a key of the attacker's under a key id the provider uses.
    let forger = ec_key("ec-1");
    let forged = sign(&forger, &claims("alice@example.com", &["Data Analysts"]));
    refused(handshake(&s, &bearer(&forged)).await, "bad signature");
    // alg none: no signature at all.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"ec-1"}"#),
        URL_SAFE_NO_PAD.encode(claims("alice@example.com", &["Data Analysts"]).to_string()),
    );
    refused(handshake(&s, &bearer(&none)).await, "not a JWT");
    // HMAC keyed with a public key the attacker downloaded (PEM, or the JWKS text).
    let published = idp.jwks.lock().unwrap().to_string().into_bytes();
    for secret in [&rsa.public, &ec.public, &published] {
        for kid in ["rsa-1", "ec-1"] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.into());
            let t = jsonwebtoken::encode(
                &header,
                &claims("alice@example.com", &["Data Analysts"]),
                &EncodingKey::from_secret(secret),
            )
            .unwrap();
            refused(
                handshake(&s, &bearer(&t)).await,
                "algorithm HS256 is not accepted",
            );
        }
    }
    // A key id the provider never published.
    let unknown = sign(
        &ec_key("ec-9"),
        &claims("alice@example.com", &["Data Analysts"]),
    );
    refused(
        handshake(&s, &bearer(&unknown)).await,
        "no signing key \"ec-9\"",
    );
    // carol's signed token with her groups rewritten.
    let mut parts: Vec<String> = carol.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims("carol@example.com", &["Data Analysts"]).to_string());
    refused(
        handshake(&s, &bearer(&parts.join("."))).await,
        "bad signature",
    );

    // The provider rotates: ec-1 is withdrawn. Once the keys are fetched again (every
    // second here), a token it signed is refused, while rsa-1's still pass.
    idp.publish(&[&rsa]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = sign(&ec, &claims("alice@example.com", &["Data Analysts"]));
    refused(
        handshake(&s, &bearer(&late)).await,
        "no signing key \"ec-1\"",
    );
    let still = sign(&rsa, &claims("alice@example.com", &["Data Analysts"]));
    assert!(handshake(&s, &bearer(&still)).await.is_ok());

    // Every login, refused or not, is audited; a provider's user is named with its issuer.
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    let logins: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "handshake")
        .collect();
    let alice_in = logins
        .iter()
        .find(|r| r["principal"] == "alice@example.com" && r["outcome"] == "ok")
        .expect("alice's login audited");
    assert_eq!(alice_in["issuer"], ISSUER);
    assert_eq!(alice_in["roles"], json!(["data_analyst"]));
    assert!(logins.iter().filter(|r| r["outcome"] != "ok").count() >= 10);
    assert!(
        !audit.contains(&alice),
        "a token never lands in the audit trail"
    );
}

#[tokio::test]
async fn a_provider_token_is_a_password_on_the_postgres_port() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa_key("rsa-1", dir.path());
    let idp = provider(&[&rsa]).await;
    let s = TestServer::with(|c| c.auth.oidc = vec![issuer(&idp.url)]).await;
    let addr = s.server.pg_addr.unwrap();
    let connect = |user: &str, password: &str| {
        let (user, password) = (user.to_string(), password.to_string());
        async move { crate::integration::postgres::connect_as(addr, &user, &password, "").await }
    };
    // On loopback the password may travel in the clear; off it only over TLS (the same
    // rule as any password without a SCRAM verifier).
    let bob = sign(&rsa, &claims("bob@example.com", &["Support"]));
    let client = connect("bob@example.com", &bob).await.unwrap();
    let rows = client
        .simple_query("SELECT region, count(*) FROM customers.customer_profiles GROUP BY region")
        .await
        .unwrap();
    let regions: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(regions, ["US"]);
    // Another user's name, or a forged token: refused as a wrong password.
    let e = connect("alice@example.com", &bob).await.err().unwrap();
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");
    let forged = sign(
        &rsa_key("rsa-1", dir.path()),
        &claims("bob@example.com", &["Support"]),
    );
    let e = connect("bob@example.com", &forged).await.err().unwrap();
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");
}
