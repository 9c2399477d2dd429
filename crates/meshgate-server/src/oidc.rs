//! Logins vouched for by the company's identity provider: a JWT checked against the
//! provider's published keys (JWKS), its groups mapped to roles, its claims to attributes.
//! meshgate then mints its own session token, as for a password login; the session never
//! outlives the provider's token.
//!
//! The checking itself is `jsonwebtoken`'s (signature, `exp`, `nbf`, `iss`, `aud`); what is
//! meshgate's: which issuer a token claims to come from picks the only keys that may have
//! signed it, the algorithm must be one the configuration lists for that issuer and the
//! one the key was published for, and HMAC is never accepted (a JWKS holds public keys,
//! and a public key used as an HMAC secret is the classic forgery).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use meshgate_policy::Principal;
use serde_json::Value;

use crate::config::OidcIssuer;

/// The algorithms an issuer may list.
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// An unknown key id fetches the keys again, but not more often than this: a stream of
/// forged key ids must not turn the gateway into a load generator for the provider.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Why a token was refused. The client is told this much, never more (no claim values).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("issuer {0:?} is not configured")]
    UnknownIssuer(String),
    #[error("algorithm {0} is not accepted for this issuer")]
    Algorithm(String),
    #[error("no signing key {0:?} at this issuer")]
    UnknownKey(String),
    #[error("the issuer's keys cannot be read: {0}")]
    Keys(String),
    #[error("{0}")]
    Invalid(String),
    #[error("claim {0:?} (the user's name) is missing or empty")]
    NoUser(String),
}

/// A token that passed: who, until when.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Named by the issuer's user claim, with the groups' roles and the mapped attributes.
    pub principal: Principal,
    /// The token's `exp` (seconds since the epoch).
    pub expires: u64,
}

/// Every configured identity provider, with its keys as last fetched.
pub struct Oidc {
    issuers: Vec<Issuer>,
}

struct Issuer {
    config: OidcIssuer,
    algorithms: Vec<Algorithm>,
    keys: RwLock<Keys>,
    /// One fetch at a time per issuer.
    fetching: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

#[derive(Default)]
struct Keys {
    /// By key id; a key without one is stored under "".
    by_id: HashMap<String, PublishedKey>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

#[derive(Clone)]
struct PublishedKey {
    key: DecodingKey,
    /// The algorithm the key was published for, when the JWKS says.
    alg: Option<Algorithm>,
}

impl Oidc {
    pub fn new(issuers: &[OidcIssuer]) -> Oidc {
        // reqwest's rustls needs a crypto provider.
        meshgate_mesh::install_crypto_provider();
        Oidc {
            issuers: issuers
                .iter()
                .map(|c| Issuer {
                    algorithms: c.algorithms.iter().filter_map(|a| a.parse().ok()).collect(),
                    config: c.clone(),
                    keys: RwLock::new(Keys::default()),
                    fetching: tokio::sync::Mutex::new(()),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Whether `text` could be a JWT (three base64url parts, the first a JSON header):
    /// a password that looks like one is checked as one.
    pub fn looks_like_jwt(text: &str) -> bool {
        let mut parts = text.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .is_some_and(|h| h.get("alg").is_some())
    }

    /// Checks `token` against the issuer it names, fetching that issuer's keys when they
    /// are due or the token names a key not seen yet.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let iss = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer(iss.clone()))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let key = issuer.key(&kid).await?;
        if key.alg.is_some_and(|a| a != header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&[&issuer.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = issuer.config.leeway_secs;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(|e| TokenError::Invalid(describe(&e)))?;
        issuer.principal(&data.claims)
    }
}

/// The `iss` a token claims, read before its signature is checked only to choose the
/// keys that must have signed it.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(TokenError::Malformed)?;
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(TokenError::Invalid(
            "the token names no issuer (iss)".into(),
        )),
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidAudience => "the token is for another audience (aud)".into(),
        K::InvalidIssuer => "the token is from another issuer (iss)".into(),
        K::InvalidSignature => "bad signature".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        K::InvalidAlgorithm => "the key was not published for this algorithm".into(),
        _ => "the token cannot be checked".into(),
    }
}

impl Issuer {
    async fn key(&self, kid: &str) -> Result<PublishedKey, TokenError> {
        let due = {
            let keys = self.read();
            keys.fetched
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(self.config.jwks_refresh_secs))
        };
        if due {
            self.fetch().await;
        }
        if let Some(k) = self.read().by_id.get(kid) {
            return Ok(k.clone());
        }
        let may_refetch = self
            .read()
            .tried
            .is_none_or(|at| at.elapsed() >= REFETCH_AT_MOST_EVERY);
        if may_refetch {
            self.fetch().await;
        }
        let keys = self.read();
        if let Some(k) = keys.by_id.get(kid) {
            return Ok(k.clone());
        }
        if keys.fetched.is_none() {
            return Err(TokenError::Keys("never fetched".into()));
        }
        Err(TokenError::UnknownKey(kid.to_string()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the keys with what the issuer publishes now. A failed fetch keeps the
    /// keys it had (the provider being down must not log everyone out) and is logged.
    async fn fetch(&self) {
        let _one = self.fetching.lock().await;
        if self
            .read()
            .tried
            .is_some_and(|at| at.elapsed() < Duration::from_millis(200))
        {
            return; // another caller just fetched
        }
        let fetched = self.fetch_set().await.and_then(|set| keys_of(&set));
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.tried = Some(Instant::now());
        match fetched {
            Ok(by_id) => {
                keys.by_id = by_id;
                keys.fetched = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, "cannot refresh the signing keys: {e}")
            }
        }
    }

    async fn fetch_set(&self) -> Result<JwkSet, String> {
        let bytes = match (&self.config.jwks_url, &self.config.jwks_file) {
            (Some(url), _) => {
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("{url}: HTTP {}", response.status()));
                }
                response
                    .bytes()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?
                    .to_vec()
            }
            (None, Some(file)) => read_file(file).await?,
            (None, None) => return Err("no jwks_url or jwks_file".into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS: {e}"))
    }

    /// The principal the claims describe: roles from the mapped groups only (a group
    /// without a mapping grants nothing), attributes from the mapped claims.
    fn principal(&self, claims: &serde_json::Map<String, Value>) -> Result<Verified, TokenError> {
        let c = &self.config;
        let name = claims
            .get(&c.user_claim)
            .and_then(scalar)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| TokenError::NoUser(c.user_claim.clone()))?;
        let groups = claims.get(&c.groups_claim).map(values).unwrap_or_default();
        let roles: BTreeSet<String> = groups
            .iter()
            .filter_map(|g| c.group_roles.get(g))
            .flatten()
            .cloned()
            .collect();
        let attributes: BTreeMap<String, Vec<String>> = c
            .attribute_claims
            .iter()
            .filter_map(|(attr, claim)| Some((attr.clone(), values(claims.get(claim)?))))
            .collect();
        let expires = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Verified {
            principal: Principal::new(name, roles)
                .with_attributes(attributes)
                .with_issuer(Some(c.issuer.clone())),
            expires,
        })
    }
}

async fn read_file(file: &Path) -> Result<Vec<u8>, String> {
    tokio::fs::read(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// The keys of a JWKS meshgate can use; HMAC (`oct`) keys and keys for encryption are
/// left out.
fn keys_of(set: &JwkSet) -> Result<HashMap<String, PublishedKey>, String> {
    let mut out = HashMap::new();
    for jwk in &set.keys {
        if !usable(jwk) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match algorithm(a) {
                Some(a) => Some(a),
                None => continue,
            },
        };
        out.insert(
            jwk.common.key_id.clone().unwrap_or_default(),
            PublishedKey { key, alg },
        );
    }
    if out.is_empty() && !set.keys.is_empty() {
        return Err("the JWKS holds no signing key meshgate can use".into());
    }
    Ok(out)
}

fn usable(jwk: &Jwk) -> bool {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        && !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
}

fn algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        // HMAC or an encryption algorithm: never a signing key here.
        _ => return None,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as a list of values: a scalar is a list of one; nested values are left out.
fn values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}
