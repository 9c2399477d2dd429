//! Who is calling: Basic credentials at the handshake, then signed bearer tokens; and the
//! signed envelopes (tickets, prepared-statement handles) bound to the principal that
//! made them.
//!
//! Everything a replica needs to verify a token or ticket is in it (key id, subject, roles
//! in effect, catalog epoch, expiry) and signed with the shared token key, so no session
//! state lives in a gateway's memory. The key id lets replicas rotate keys one at a time:
//! each signs with its current key and still verifies with the previous one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use meshgate_policy::Principal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::UserConfig;

const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The header that narrows a session to one of the principal's roles.
pub const ROLE_HEADER: &str = "x-meshgate-role";

/// The configured principals. Unknown users and wrong passwords are refused alike, after
/// the same work: an unknown name is checked against a hash of the same cost, so the time
/// an answer takes does not tell which users exist.
pub struct Users {
    users: HashMap<String, UserConfig>,
}

/// What a refused password costs when the user does not exist.
static DECOY: LazyLock<String> = LazyLock::new(|| hash_password("meshgate: no such user"));

impl Users {
    pub fn new(users: &[UserConfig]) -> Self {
        Users {
            users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
        }
    }

    /// The roles `name` holds now; `None` once the user is removed.
    pub fn roles_of(&self, name: &str) -> Option<BTreeSet<String>> {
        self.users
            .get(name)
            .map(|u| u.roles.iter().cloned().collect())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks `authorization: Basic …` and returns the principal with all its roles.
    pub fn verify_basic(&self, header: &str) -> Result<Principal, Status> {
        let (name, password) = basic_credentials(header)?;
        self.verify_password(&name, &password)
            .ok_or_else(|| Status::unauthenticated("invalid user name or password"))
    }

    /// What `login` stands for now: a configured user with the roles it logged in with
    /// that it still holds and its attributes as configured now (`None` once removed); a
    /// login an identity provider vouched for, as its token said.
    pub fn current(&self, login: &Principal) -> Option<Principal> {
        if login.issuer.is_some() {
            return Some(login.clone());
        }
        let held = self.roles_of(&login.name)?;
        let roles = login.roles.iter().filter(|r| held.contains(*r)).cloned();
        Some(
            Principal::new(login.name.clone(), roles)
                .with_attributes(self.attributes_of(&login.name)),
        )
    }

    /// The attributes `name` holds now.
    pub fn attributes_of(&self, name: &str) -> BTreeMap<String, Vec<String>> {
        self.users
            .get(name)
            .map(|u| u.attributes.clone())
            .unwrap_or_default()
    }
}

/// The user name and password of `authorization: Basic …`.
pub fn basic_credentials(header: &str) -> Result<(String, String), Status> {
    let encoded = strip_scheme(header, "basic")
        .ok_or_else(|| Status::unauthenticated("expected Basic credentials"))?;
    // Some clients (Go's, hence ADBC) leave out the base64 padding.
    let decoded = BASIC
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
    Ok((name.to_string(), password.to_string()))
}

impl Users {
    /// The principal `name` stands for now, with all its roles.
    pub fn principal(&self, name: &str) -> Option<Principal> {
        self.users.get(name).map(|u| {
            Principal::new(name, u.roles.iter().cloned()).with_attributes(u.attributes.clone())
        })
    }

    /// Checks a password given in the clear, at the same cost whether the user exists.
    pub fn verify_password(&self, name: &str, password: &str) -> Option<Principal> {
        let user = self.users.get(name);
        let stored = user.map_or(DECOY.as_str(), |u| u.password_hash.as_str());
        let verified = argon2_verify(stored, password);
        user.filter(|_| verified).map(|u| {
            Principal::new(name, u.roles.iter().cloned()).with_attributes(u.attributes.clone())
        })
    }

    /// `name`'s SCRAM-SHA-256 verifier, if it has one (malformed: why).
    pub fn scram_verifier(&self, name: &str) -> Option<Result<crate::pg::ScramVerifier, String>> {
        let text = self.users.get(name)?.scram_sha_256.as_deref()?;
        Some(crate::pg::ScramVerifier::parse(text))
    }
}

/// One argon2 verification of `password` against a PHC string.
fn argon2_verify(stored: &str, password: &str) -> bool {
    #[cfg(test)]
    tests::VERIFICATIONS.with(|n| n.set(n.get() + 1));
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Failed logins per client address, so that a client cannot try passwords (each an
/// argon2 run) without limit. Counted per connecting address: behind a proxy, that is the
/// proxy's.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses remembered at most; the oldest windows are forgotten first.
const THROTTLE_CAPACITY: usize = 100_000;

impl LoginThrottle {
    pub fn new(max_failures_per_minute: u32) -> Self {
        LoginThrottle {
            max_failures: max_failures_per_minute,
            window: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// RESOURCE_EXHAUSTED, with when to retry, once `ip` has failed too often; checked
    /// before any password is.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Status> {
        let (Some(ip), true) = (ip, self.max_failures > 0) else {
            return Ok(());
        };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((since, n)) if *n >= self.max_failures && since.elapsed() < self.window => {
                let retry = (self.window - since.elapsed()).as_secs().max(1);
                let mut status = Status::resource_exhausted(format!(
                    "too many failed logins from this address: retry in {retry} s"
                ));
                if let Ok(v) = retry.to_string().parse() {
                    status.metadata_mut().insert("retry-after", v);
                }
                Err(status)
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= THROTTLE_CAPACITY {
            let window = self.window;
            failures.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// `Scheme value` with a case-insensitive scheme.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

/// What a bearer token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub roles: Vec<String>,
    /// Seconds since the epoch.
    pub exp: u64,
    /// When the session ends, whatever refreshing happens (seconds since the epoch): the
    /// password was checked `max_session_secs` before, or the identity provider's token
    /// expires.
    pub end: u64,
    /// The identity provider that vouched for the login; `None` for configured users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The attributes the provider's token gave (a configured user's are read from the
    /// configuration at each call instead).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, Vec<String>>,
}

impl Claims {
    pub fn principal(&self) -> Principal {
        Principal::new(self.sub.clone(), self.roles.iter().cloned())
            .with_attributes(self.attrs.clone())
            .with_issuer(self.iss.clone())
    }
}

/// What a ticket or prepared-statement handle carries: the statement, its bound parameters,
/// whom it was made for and under which contracts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub sub: String,
    /// The roles in effect when it was made; redeeming it under other roles re-checks.
    pub roles: Vec<String>,
    pub sql: String,
    /// Bound parameters as one Arrow IPC row, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// The catalog epoch ([`meshgate_mesh::Mesh::epoch`]) it was planned under. Redeeming
    /// always re-plans under the current contracts; a different epoch is audited.
    pub epoch: String,
    pub exp: u64,
    /// The engine the caller asked for when it was made (`x-meshgate-execution`), so that
    /// any replica redeeming it honours the choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// The maker's identity provider: the same name at another issuer is someone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Why a sealed value was refused; all are UNAUTHENTICATED, the message says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    Malformed,
    /// Signed with a key this gateway does not hold (another deployment, or a key retired
    /// by rotation).
    UnknownKey,
    BadSignature,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealError::Malformed => "malformed",
            SealError::UnknownKey => "signed with a key this gateway does not hold",
            SealError::BadSignature => "bad signature",
        })
    }
}

/// Signs tokens and envelopes with HMAC-SHA256 under the current key, and verifies them
/// under the current or a previous key, chosen by the key id they carry.
#[derive(Clone)]
pub struct Signer {
    current: SigningKey,
    previous: Vec<SigningKey>,
}

#[derive(Clone)]
struct SigningKey {
    /// Public, short and stable: the first 4 bytes of SHA-256 over a label and the key.
    id: String,
    mac: Hmac<Sha256>,
}

impl SigningKey {
    fn new(key: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"meshgate token key id\0")
            .chain_update(key)
            .finalize();
        SigningKey {
            id: hex::encode(&digest[..4]),
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length"),
        }
    }

    fn mac(&self, prefix: &str, body: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(prefix.as_bytes());
        mac.update(self.id.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac
    }
}

const TOKEN_PREFIX: &str = "mg2.";
const ENVELOPE_PREFIX: &str = "mge2.";

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Signer::with_previous(key, &[])
    }

    /// Signs with `key`; still accepts what was signed with one of `previous`.
    pub fn with_previous(key: &[u8], previous: &[Vec<u8>]) -> Self {
        Signer {
            current: SigningKey::new(key),
            previous: previous.iter().map(|k| SigningKey::new(k)).collect(),
        }
    }

    /// The id of the key new tokens and tickets are signed with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// `prefix` `key id` `.` `body` `.` `signature`, all URL-safe.
    fn seal<T: Serialize>(&self, prefix: &str, value: &T) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serializable"));
        let sig = URL_SAFE_NO_PAD.encode(self.current.mac(prefix, &body).finalize().into_bytes());
        format!("{prefix}{}.{body}.{sig}", self.current.id)
    }

    fn open<T: DeserializeOwned>(&self, prefix: &str, sealed: &str) -> Result<T, SealError> {
        let rest = sealed.strip_prefix(prefix).ok_or(SealError::Malformed)?;
        let mut parts = rest.splitn(3, '.');
        let (Some(id), Some(body), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Malformed);
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or(SealError::UnknownKey)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| SealError::Malformed)?;
        key.mac(prefix, body)
            .verify_slice(&sig)
            .map_err(|_| SealError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| SealError::Malformed)
    }

    /// A token for a session that began now and ends after `max_session_secs`.
    pub fn mint_session(
        &self,
        principal: &Principal,
        ttl_secs: u64,
        max_session_secs: u64,
    ) -> String {
        self.mint_token(principal, ttl_secs, now() + max_session_secs)
    }

    /// A token valid for `ttl_secs`, never past the session's `end`.
    pub fn mint_token(&self, principal: &Principal, ttl_secs: u64, end: u64) -> String {
        self.seal(
            TOKEN_PREFIX,
            &Claims {
                sub: principal.name.clone(),
                roles: principal.roles.iter().cloned().collect(),
                exp: (now() + ttl_secs).min(end),
                end,
                iss: principal.issuer.clone(),
                attrs: match principal.issuer {
                    Some(_) => principal.attributes.clone(),
                    None => BTreeMap::new(),
                },
            },
        )
    }

    /// Refuses a missing, forged, malformed or expired token alike.
    pub fn verify_token(&self, token: &str) -> Result<Claims, Status> {
        let claims: Claims = self
            .open(TOKEN_PREFIX, token)
            .map_err(|e| Status::unauthenticated(format!("invalid bearer token: {e}")))?;
        if claims.end <= now() {
            return Err(Status::unauthenticated(
                "the session has ended: log in again with a password",
            ));
        }
        if claims.exp <= now() {
            return Err(Status::unauthenticated(
                "bearer token expired: authenticate again",
            ));
        }
        Ok(claims)
    }

    pub fn seal_envelope(&self, envelope: &Envelope) -> Vec<u8> {
        self.seal(ENVELOPE_PREFIX, envelope).into_bytes()
    }

    /// Opens an envelope for `caller`. One made for another principal or other roles is
    /// refused: tickets and handles are useless to anyone but their maker.
    pub fn open_envelope(&self, sealed: &[u8], caller: &Principal) -> Result<Envelope, Status> {
        let text = std::str::from_utf8(sealed)
            .map_err(|_| Status::invalid_argument("malformed ticket or handle"))?;
        let envelope: Envelope = self
            .open(ENVELOPE_PREFIX, text)
            .map_err(|e| Status::unauthenticated(format!("invalid ticket or handle: {e}")))?;
        if envelope.exp <= now() {
            return Err(Status::unauthenticated("ticket or handle expired"));
        }
        let roles: Vec<String> = caller.roles.iter().cloned().collect();
        if envelope.sub != caller.name || envelope.roles != roles || envelope.iss != caller.issuer {
            return Err(Status::permission_denied(
                "this ticket or handle was issued to another principal or role",
            ));
        }
        Ok(envelope)
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The caller of an RPC: a valid bearer token of a user who still exists, with the
/// token's roles that the user still holds, narrowed by `x-meshgate-role` if present.
pub fn caller(signer: &Signer, users: &Users, metadata: &MetadataMap) -> Result<Principal, Status> {
    let header = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("no authorization header: authenticate first"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let token = strip_scheme(header, "bearer")
        .ok_or_else(|| Status::unauthenticated("expected a Bearer token"))?;
    let principal = current(users, &signer.verify_token(token)?)?;
    match metadata.get(ROLE_HEADER) {
        None => Ok(principal),
        Some(role) => {
            let role = role
                .to_str()
                .map_err(|_| Status::invalid_argument("malformed x-meshgate-role header"))?;
            principal.narrowed_to(role).ok_or_else(|| {
                Status::permission_denied(format!(
                    "{} does not hold role {role}; x-meshgate-role can only narrow",
                    principal.name
                ))
            })
        }
    }
}

/// The principal a token stands for under the users configured now: a removed user is
/// refused, a revoked role is gone (a token never grants more than the configuration).
/// A login an identity provider vouched for stands as the provider's token said, until
/// that token's expiry ends the session.
pub fn current(users: &Users, claims: &Claims) -> Result<Principal, Status> {
    users.current(&claims.principal()).ok_or_else(|| {
        Status::unauthenticated(format!(
            "user {} no longer exists: log in again",
            claims.sub
        ))
    })
}

/// An argon2id hash in PHC format, for `users[].password_hash` in meshgate.yaml.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("argon2 with default parameters")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(b"test-token-key-0123456789abcdef")
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let p = Principal::new("analyst", ["data_analyst"]);
        let t = signer().mint_session(&p, 60, 600);
        assert_eq!(signer().verify_token(&t).unwrap().principal(), p);
        // Another key, a flipped character, an expired token: all UNAUTHENTICATED.
        assert!(
            Signer::new(b"another-key-entirely-0123456789")
                .verify_token(&t)
                .is_err()
        );
        let mut forged = t.clone().into_bytes();
        let i = forged.len() / 2;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            signer().verify_token(&forged).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let expired = signer().mint_session(&p, 0, 600);
        assert_eq!(
            signer().verify_token(&expired).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn envelopes_are_bound_to_their_principal() {
        let analyst = Principal::new("analyst", ["data_analyst"]);
        let marketer = Principal::new("marketer", ["marketing"]);
        let e = Envelope {
            sub: "analyst".into(),
            roles: vec!["data_analyst".into()],
            sql: "SELECT 1".into(),
            params: None,
            epoch: "e1".into(),
            exp: now() + 60,
            exec: None,
            iss: None,
        };
        let sealed = signer().seal_envelope(&e);
        assert_eq!(signer().open_envelope(&sealed, &analyst).unwrap(), e);
        let err = signer().open_envelope(&sealed, &marketer).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn rotation_accepts_the_previous_key_and_names_an_unknown_one() {
        let p = Principal::new("analyst", ["data_analyst"]);
        let old = signer();
        let rotated = Signer::with_previous(
            b"the-next-token-key-0123456789ab",
            &[b"test-token-key-0123456789abcdef".to_vec()],
        );
        assert_ne!(old.key_id(), rotated.key_id());
        // A replica that rotated still accepts tokens of one that has not, and mints its
        // own under the new key, which the old replica does not know.
        let t = old.mint_session(&p, 60, 600);
        assert_eq!(rotated.verify_token(&t).unwrap().principal(), p);
        let t2 = rotated.mint_session(&p, 60, 600);
        assert!(t2.starts_with(&format!("mg2.{}.", rotated.key_id())));
        let err = old.verify_token(&t2).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(
            err.message().contains("a key this gateway does not hold"),
            "{err:?}"
        );
        // Relabelling a token with another key id does not make its signature valid.
        let relabelled = t.replacen(old.key_id(), rotated.key_id(), 1);
        let err = rotated.verify_token(&relabelled).unwrap_err();
        assert!(err.message().contains("bad signature"), "{err:?}");
    }

    fn users() -> Users {
        Users::new(&[
            UserConfig {
                name: "analyst".into(),
                password_hash: hash_password("analyst"),
                scram_sha_256: None,
                attributes: Default::default(),
                roles: vec!["data_analyst".into(), "marketing".into()],
            },
            UserConfig {
                name: "marketer".into(),
                password_hash: hash_password("marketer"),
                scram_sha_256: None,
                attributes: Default::default(),
                roles: vec!["marketing".into()],
            },
        ])
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", BASIC.encode(format!("{user}:{password}")))
    }

    #[test]
    fn refreshing_never_extends_a_session() {
        let p = Principal::new("analyst", ["data_analyst"]);
        let s = signer();
        // A session that ends in 2 s, tokens of an hour: the token ends with the session.
        let t = s.mint_session(&p, 3600, 2);
        let claims = s.verify_token(&t).unwrap();
        assert!(claims.exp <= claims.end && claims.end <= now() + 2);
        let refreshed = s.mint_token(&p, 3600, claims.end);
        assert_eq!(s.verify_token(&refreshed).unwrap().exp, claims.end);
        // Once the session has ended, no token of it is accepted, refreshed or not.
        let ended = s.mint_token(&p, 3600, now());
        let err = s.verify_token(&ended).unwrap_err();
        assert!(err.message().contains("session has ended"), "{err:?}");
    }

    #[test]
    fn a_removed_user_or_a_revoked_role_loses_access() {
        let s = signer();
        let claims = s
            .verify_token(&s.mint_session(
                &Principal::new("analyst", ["data_analyst", "marketing"]),
                60,
                600,
            ))
            .unwrap();
        let p = current(&users(), &claims).unwrap();
        assert_eq!(p.roles.len(), 2);
        // The configuration now grants analyst only marketing; then nothing at all.
        let narrowed = Users::new(&[UserConfig {
            name: "analyst".into(),
            password_hash: String::new(),
            scram_sha_256: None,
            attributes: Default::default(),
            roles: vec!["marketing".into()],
        }]);
        let p = current(&narrowed, &claims).unwrap();
        assert_eq!(p.roles.iter().collect::<Vec<_>>(), ["marketing"]);
        let err = current(&Users::new(&[]), &claims).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        // A token never grants a role the user holds now but did not log in with.
        let token_roles = Claims {
            roles: vec!["marketing".into()],
            ..claims
        };
        let p = current(&users(), &token_roles).unwrap();
        assert_eq!(p.roles.iter().collect::<Vec<_>>(), ["marketing"]);
    }

    thread_local! {
        /// argon2 verifications run on this thread.
        pub(super) static VERIFICATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Equal work, counted rather than timed (a loaded machine makes timings lie): an
    /// unknown user runs one argon2 verification, as a wrong password does, against a
    /// decoy hashed with the same parameters as every user's.
    #[test]
    fn unknown_users_cost_what_wrong_passwords_cost() {
        let users = users();
        assert!(users.verify_basic(&basic("analyst", "analyst")).is_ok());
        let runs = |f: &dyn Fn()| {
            let before = VERIFICATIONS.with(|n| n.get());
            f();
            VERIFICATIONS.with(|n| n.get()) - before
        };
        let wrong = runs(&|| {
            let e = users.verify_basic(&basic("analyst", "nope")).unwrap_err();
            assert_eq!(e.message(), "invalid user name or password");
        });
        let unknown = runs(&|| {
            let e = users.verify_basic(&basic("mallory", "nope")).unwrap_err();
            assert_eq!(e.message(), "invalid user name or password");
        });
        assert_eq!((wrong, unknown), (1, 1));
        let params = |phc: &str| PasswordHash::new(phc).unwrap().params.to_string();
        assert_eq!(params(&DECOY), params(&hash_password("analyst")));
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let throttle = LoginThrottle::new(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(throttle.check(Some(a)).is_ok());
            throttle.failed(Some(a));
        }
        let err = throttle.check(Some(a)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("retry in"), "{err:?}");
        let retry: u64 = err
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));
        // Another address is not held up; a limit of 0 is no limit.
        assert!(throttle.check(Some(b)).is_ok());
        let off = LoginThrottle::new(0);
        for _ in 0..100 {
            off.failed(Some(a));
        }
        assert!(off.check(Some(a)).is_ok());
    }
}
