//! Who connects on the Postgres port: the same users as Flight, proven without a clear
//! password off loopback.
//!
//! A user with a SCRAM-SHA-256 verifier (`meshgate passwd` writes one, in PostgreSQL's own
//! format) logs in by SCRAM (RFC 5802/7677): the password never crosses the wire and the
//! verifier is not enough to log in with. Without a verifier, the password is accepted in
//! the clear only over TLS or from loopback, and checked against the argon2 hash. Unknown
//! users go through the same exchange against a decoy, so the answer does not tell which
//! users exist.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Sink, SinkExt};
use hmac::{Hmac, KeyInit, Mac};
use meshgate_policy::Principal;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::session::Session;
use super::{PgService, fatal};
use crate::audit::AuditRecord;
use crate::query::{ErrorKind, QueryError};

const SCRAM: &str = "SCRAM-SHA-256";

/// A SCRAM-SHA-256 verifier: what the server keeps of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    /// Reads PostgreSQL's format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let malformed = || {
            "not a SCRAM-SHA-256 verifier (expected \
             SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; `meshgate passwd` \
             writes one)"
                .to_string()
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(malformed)?;
        let (params, keys) = rest.split_once('$').ok_or_else(malformed)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(malformed)?;
        let (stored, server) = keys.split_once(':').ok_or_else(malformed)?;
        let key = |s: &str| -> Result<[u8; 32], String> {
            STANDARD
                .decode(s)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(malformed)
        };
        let iterations: u32 = iterations.parse().map_err(|_| malformed())?;
        if iterations < 4096 {
            return Err(format!(
                "a SCRAM-SHA-256 verifier needs at least 4096 iterations, this one has {iterations}"
            ));
        }
        Ok(ScramVerifier {
            iterations,
            salt: STANDARD.decode(salt).map_err(|_| malformed())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// The verifier of `password`, with a fresh salt.
    pub fn generate(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }

    /// A verifier no password matches, the same for a name every time (within a process).
    fn decoy(name: &str) -> ScramVerifier {
        static SECRET: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(rand::random);
        let salt = hmac_sha256(&*SECRET, name.as_bytes())[..16].to_vec();
        ScramVerifier {
            iterations: 4096,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Where a connection is in its login.
#[derive(Default)]
pub(super) enum Login {
    #[default]
    Started,
    /// SCRAM is asked for; the client's first message comes next.
    ScramAsked {
        verifier: ScramVerifier,
        /// Whether the user exists and has this verifier (not a decoy).
        real: bool,
    },
    /// The server's first SCRAM message is sent.
    Scram {
        verifier: ScramVerifier,
        /// Whether the user exists and has this verifier (not a decoy).
        real: bool,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        gs2_header: String,
    },
    /// A password was asked for in the clear (TLS or loopback only).
    Cleartext,
    Done,
}

pub(super) struct LoginState(pub(super) Mutex<Login>);

#[async_trait::async_trait]
impl StartupHandler for PgService {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let gateway = &self.gateway;
        let ip = Some(client.socket_addr().ip());
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        if client.session_extensions().get::<LoginState>().is_none() {
            client
                .session_extensions()
                .insert(LoginState(Mutex::new(Login::Started)));
        }
        let state = client
            .session_extensions()
            .get::<LoginState>()
            .expect("inserted");
        let peer = client.socket_addr().to_string();
        let refused = |why: QueryError| {
            let mut record = login_record(&peer, &user);
            record.principal = user.clone();
            gateway.audit_now(record, started, Err(&why));
            fatal(
                &why,
                if why.kind == ErrorKind::Unauthenticated {
                    "28P01"
                } else {
                    "28000"
                },
            )
        };
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                if let Err(e) = gateway.throttle.check(ip) {
                    return Err(refused(QueryError::new(
                        ErrorKind::Unauthenticated,
                        e.message(),
                    )));
                }
                let stored = gateway.users().scram_verifier(&user);
                let cleartext_allowed = client.is_secure() || is_loopback(ip);
                let ask = match stored {
                    Some(Ok(verifier)) => {
                        *lock(&state) = Login::ScramAsked {
                            verifier,
                            real: true,
                        };
                        Authentication::SASL(vec![SCRAM.into()])
                    }
                    Some(Err(why)) => {
                        return Err(refused(QueryError::new(
                            ErrorKind::Unauthenticated,
                            format!("the SCRAM verifier of user {user} is unusable: {why}"),
                        )));
                    }
                    None if cleartext_allowed => {
                        *lock(&state) = Login::Cleartext;
                        Authentication::CleartextPassword
                    }
                    // No verifier and no TLS: the password would cross the network in
                    // the clear. The exchange runs against a decoy and fails, alike for
                    // unknown users and users without a verifier.
                    None => {
                        *lock(&state) = Login::ScramAsked {
                            verifier: ScramVerifier::decoy(&user),
                            real: false,
                        };
                        Authentication::SASL(vec![SCRAM.into()])
                    }
                };
                client
                    .send(PgWireBackendMessage::Authentication(ask))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let step = std::mem::take(&mut *lock(&state));
                match step {
                    Login::Cleartext => {
                        let password = message.into_password()?.password;
                        if gateway.is_token(&password) {
                            return match gateway.token_login(&password, Some(&user)).await {
                                Ok((principal, end)) => {
                                    self.logged_in(client, principal, started, Some(end)).await
                                }
                                Err(why) => {
                                    gateway.throttle.failed(ip);
                                    Err(refused(QueryError::new(ErrorKind::Unauthenticated, why)))
                                }
                            };
                        }
                        let users = gateway.users();
                        let name = user.clone();
                        let verified = tokio::task::spawn_blocking(move || {
                            users.verify_password(&name, &password)
                        })
                        .await
                        .map_err(|_| refused(QueryError::internal("password check panicked")))?;
                        match verified {
                            Some(principal) => {
                                self.logged_in(client, principal, started, None).await?
                            }
                            None => {
                                gateway.throttle.failed(ip);
                                return Err(refused(wrong_password(&user, false)));
                            }
                        }
                    }
                    Login::Started | Login::Done => {
                        return Err(refused(QueryError::new(
                            ErrorKind::Unauthenticated,
                            "a password message out of order",
                        )));
                    }
                    Login::ScramAsked { .. } => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != SCRAM {
                            return Err(refused(QueryError::new(
                                ErrorKind::Unauthenticated,
                                format!(
                                    "unsupported SASL mechanism {} (meshgate offers {SCRAM})",
                                    initial.auth_method
                                ),
                            )));
                        }
                        let data = initial.data.unwrap_or_default();
                        let (next, server_first) = client_first(step, &data)
                            .map_err(|e| refused(QueryError::new(ErrorKind::Unauthenticated, e)))?;
                        *lock(&state) = next;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                    }
                    Login::Scram { real, .. } => {
                        let response = message.into_sasl_response()?;
                        match client_final(&step, &response.data) {
                            Ok(server_final) if real => {
                                let principal = gateway
                                    .users()
                                    .principal(&user)
                                    .ok_or_else(|| refused(wrong_password(&user, false)))?;
                                client
                                    .feed(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into_bytes().into()),
                                    ))
                                    .await?;
                                self.logged_in(client, principal, started, None).await?;
                            }
                            _ => {
                                gateway.throttle.failed(ip);
                                let secure = client.is_secure() || is_loopback(ip);
                                return Err(refused(wrong_password(&user, !secure)));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn lock(state: &LoginState) -> std::sync::MutexGuard<'_, Login> {
    state.0.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_loopback(ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|ip| ip.is_loopback())
}

fn wrong_password(user: &str, insecure: bool) -> QueryError {
    let mut message = format!("password authentication failed for user \"{user}\"");
    if insecure {
        // Said to everyone who fails here, so it tells nothing about who exists.
        message.push_str(
            " (without TLS, only users with a SCRAM-SHA-256 verifier can log in from another \
             host: `meshgate passwd` writes one)",
        );
    }
    QueryError::new(ErrorKind::Unauthenticated, message)
}

fn login_record(peer: &str, user: &str) -> AuditRecord {
    AuditRecord::new(
        &Principal::new(user, Vec::<String>::new()),
        peer,
        "login",
        "postgres",
    )
}

/// The client's first message (`n,,n=user,r=nonce`) → the server's first.
fn client_first(step: Login, data: &[u8]) -> Result<(Login, String), String> {
    let Login::ScramAsked { verifier, real } = step else {
        return Err("SCRAM out of order".into());
    };
    let text = std::str::from_utf8(data).map_err(|_| "malformed SCRAM message")?;
    // gs2 header: channel binding flag, authzid, then the bare message.
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or("malformed SCRAM message")?;
    let bare = parts.next().ok_or("malformed SCRAM message")?;
    if flag.starts_with("p=") {
        return Err("SCRAM channel binding is not offered (use SCRAM-SHA-256)".into());
    }
    if flag != "n" && flag != "y" {
        return Err("malformed SCRAM message".into());
    }
    let client_nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or("malformed SCRAM message: no nonce")?;
    let server_nonce: [u8; 18] = rand::random();
    let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&verifier.salt),
        verifier.iterations
    );
    Ok((
        Login::Scram {
            verifier,
            real,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            gs2_header: format!("{flag},{authzid},"),
        },
        server_first,
    ))
}

/// The client's final message (`c=…,r=…,p=proof`) → the server's final, if the proof holds.
fn client_final(step: &Login, data: &[u8]) -> Result<String, String> {
    let Login::Scram {
        verifier,
        client_first_bare,
        server_first,
        nonce,
        gs2_header,
        ..
    } = step
    else {
        return Err("SCRAM out of order".into());
    };
    let text = std::str::from_utf8(data).map_err(|_| "malformed SCRAM message")?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or("malformed SCRAM message: no proof")?;
    let mut binding = None;
    let mut final_nonce = None;
    for attr in without_proof.split(',') {
        if let Some(c) = attr.strip_prefix("c=") {
            binding = Some(c);
        } else if let Some(r) = attr.strip_prefix("r=") {
            final_nonce = Some(r);
        }
    }
    if binding != Some(STANDARD.encode(gs2_header).as_str()) || final_nonce != Some(nonce) {
        return Err("SCRAM channel binding or nonce mismatch".into());
    }
    let proof: [u8; 32] = STANDARD
        .decode(proof)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or("malformed SCRAM proof")?;
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    let stored: [u8; 32] = Sha256::digest(&client_key).into();
    if !bool::from(stored.ct_eq(&verifier.stored_key)) {
        return Err("wrong proof".into());
    }
    let server_signature = hmac_sha256(&verifier.server_key, auth_message.as_bytes());
    Ok(format!("v={}", STANDARD.encode(server_signature)))
}

impl PgService {
    /// A verified login: the session is set up (role narrowed as the startup asked) and
    /// the client told it may query.
    async fn logged_in<C>(
        &self,
        client: &mut C,
        principal: Principal,
        started: Instant,
        end: Option<u64>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = principal.name.clone();
        let session = match Session::start(principal, client.metadata()) {
            Ok(s) => s,
            Err(e) => {
                let record = login_record(&client.socket_addr().to_string(), &user);
                self.gateway.audit_now(record, started, Err(&e));
                return Err(fatal(&e, "28000"));
            }
        };
        if let Some(end) = end {
            session.end_at(end);
        }
        let mut record = login_record(&client.socket_addr().to_string(), &user);
        record.issuer = session.principal().issuer;
        record.roles = session.principal().roles.iter().cloned().collect();
        self.gateway.audit_now(record, started, Ok(()));
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        client.session_extensions().insert(session);
        let session = client
            .session_extensions()
            .get::<Session>()
            .expect("inserted");
        self.cancels.register(pid, &secret, &session);
        *lock(
            &client
                .session_extensions()
                .get::<LoginState>()
                .expect("login state"),
        ) = Login::Done;
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = super::SERVER_VERSION.into();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.search_path = "public".into();
        finish_authentication(client, &parameters).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_verifier_parses_and_a_proof_from_its_password_verifies() {
        let text = ScramVerifier::generate("s3cret");
        let verifier = ScramVerifier::parse(&text).unwrap();
        // A client's side of the exchange, as RFC 5802 computes it.
        let salted = {
            let mut out = [0u8; 32];
            pbkdf2_hmac(b"s3cret", &verifier.salt, verifier.iterations, &mut out);
            out
        };
        let client_key = hmac_sha256(&salted, b"Client Key");
        let step = Login::ScramAsked {
            verifier: verifier.clone(),
            real: true,
        };
        let (step, server_first) = client_first(step, b"n,,n=,r=abc").unwrap();
        let nonce = server_first
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=")
            .unwrap();
        let without_proof = format!("c={},r={nonce}", STANDARD.encode("n,,"));
        let auth = format!("n=,r=abc,{server_first},{without_proof}");
        let signature = hmac_sha256(&Sha256::digest(client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let good = format!("{without_proof},p={}", STANDARD.encode(&proof));
        let server_final = client_final(&step, good.as_bytes()).unwrap();
        let server_key = hmac_sha256(&salted, b"Server Key");
        assert_eq!(
            server_final,
            format!(
                "v={}",
                STANDARD.encode(hmac_sha256(&server_key, auth.as_bytes()))
            )
        );
        // A wrong password, a replayed nonce, a channel-binding switch: refused.
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        let bad = format!("{without_proof},p={}", STANDARD.encode(&wrong));
        assert!(client_final(&step, bad.as_bytes()).is_err());
        let other_nonce = format!(
            "c={},r=abc,p={}",
            STANDARD.encode("n,,"),
            STANDARD.encode(&proof)
        );
        assert!(client_final(&step, other_nonce.as_bytes()).is_err());
        let switched = format!(
            "c={},r={nonce},p={}",
            STANDARD.encode("y,,"),
            STANDARD.encode(&proof)
        );
        assert!(client_final(&step, switched.as_bytes()).is_err());
        // The verifier alone is not a password: using StoredKey as the client key fails.
        let forged_signature = hmac_sha256(&verifier.stored_key, auth.as_bytes());
        let forged: Vec<u8> = verifier
            .stored_key
            .iter()
            .zip(forged_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let forged = format!("{without_proof},p={}", STANDARD.encode(&forged));
        assert!(client_final(&step, forged.as_bytes()).is_err());
    }

    #[test]
    fn malformed_verifiers_say_what_is_expected() {
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB",
            "SCRAM-SHA-256$10:c2FsdA==$x:y",
        ] {
            let e = ScramVerifier::parse(bad).unwrap_err();
            assert!(
                e.contains("SCRAM-SHA-256") || e.contains("iterations"),
                "{e}"
            );
        }
    }

    fn pbkdf2_hmac(password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8; 32]) {
        // Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
        let mut u = hmac_sha256(password, &[salt, &1u32.to_be_bytes()].concat());
        *out = u;
        for _ in 1..rounds {
            u = hmac_sha256(password, &u);
            for (o, x) in out.iter_mut().zip(u) {
                *o ^= x;
            }
        }
    }
}
