//! `meshgate.yaml`: everything a deployment sets, resolved before the server is built.
//! Secrets (hash key, token key) never live here: they come from the environment, read by
//! the command line, and are passed in as [`Secrets`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshgate_cluster::Cluster;
use meshgate_mesh::MeshConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Flight SQL and meshgate's own gRPC services.
    pub flight_addr: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: SocketAddr,
    /// The Postgres wire protocol, for BI tools and Postgres drivers; `null` turns it off.
    /// The default port is not PostgreSQL's 5432, so a local PostgreSQL keeps its own.
    pub pg_addr: Option<SocketAddr>,
    pub mesh: MeshConfig,
    pub users: Vec<UserConfig>,
    /// Logins vouched for by an identity provider (`auth.oidc`), beside the users above.
    pub auth: AuthConfig,
    /// How long a bearer token (and the tickets it mints) stays valid.
    pub token_ttl_secs: u64,
    /// How long a session lasts after its password was checked: refreshing a token never
    /// goes past it.
    pub max_session_secs: u64,
    pub limits: Limits,
    /// Where the audit trail is appended; `None` keeps it in the log only.
    pub audit_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// Send view types (`Utf8View`…) as they are instead of their classic forms; older
    /// JDBC drivers and flightsql-dbapi cannot read them.
    pub view_types: bool,
    /// How often the contracts folder is checked for changes; 0 turns reloading off.
    pub reload_interval_secs: u64,
    /// A Ballista cluster for heavy queries; everything runs here without one.
    pub distributed: Option<DistributedConfig>,
    /// The `hash` mask's key when `MESHGATE_HASH_KEY` is not set: a file only the server's
    /// user may read, created with a random key on first start. Default
    /// `.meshgate/hash.key` beside meshgate.yaml.
    pub hash_key_file: Option<PathBuf>,
    /// Who each domain's derived products run as (domain → roles): their SQL reads the
    /// mesh with exactly these grants, masks and row filters. A domain without one has no
    /// derived product refreshed.
    pub service_principals: BTreeMap<String, ServicePrincipal>,
    /// Run the refresher of derived products in this process (`serve --refresh`). One
    /// process per mesh should: the other replicas serve what it publishes.
    pub refresh: bool,
    /// How often the refresher looks for derived products that are due.
    pub refresh_check_secs: u64,
    /// The file this configuration was read from: users are reloaded from it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            flight_addr: ([127, 0, 0, 1], 50051).into(),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            pg_addr: Some(([127, 0, 0, 1], 15432).into()),
            mesh: MeshConfig::default(),
            users: vec![],
            auth: AuthConfig::default(),
            token_ttl_secs: 3600,
            max_session_secs: 12 * 3600,
            limits: Limits::default(),
            audit_file: None,
            tls: None,
            view_types: false,
            reload_interval_secs: 5,
            distributed: None,
            hash_key_file: None,
            service_principals: BTreeMap::new(),
            refresh: false,
            refresh_check_secs: 10,
            source: None,
        }
    }
}

/// A domain's service principal: no password (it never logs in), only roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipal {
    pub roles: Vec<String>,
    /// What its grants' row filters read as `:user.<name>`.
    #[serde(default, deserialize_with = "attributes")]
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl ServicePrincipal {
    /// Named `service:<domain>` in the audit trail; no user can take that name (a user
    /// name holds no colon).
    pub fn principal(&self, domain: &str) -> meshgate_policy::Principal {
        meshgate_policy::Principal::new(format!("service:{domain}"), self.roles.iter().cloned())
            .with_attributes(self.attributes.clone())
    }
}

/// A principal: who it is, how it proves it, which roles it holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// An argon2 hash in PHC format (`meshgate passwd` makes one).
    pub password_hash: String,
    /// The SCRAM-SHA-256 verifier of the same password, as PostgreSQL stores it
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`; `meshgate passwd`
    /// writes it too). It lets Postgres clients log in without sending the password; it
    /// is not enough to log in with.
    #[serde(default)]
    pub scram_sha_256: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// What row filters read as `:user.<name>` (`regions: [EU, US]`, `tier: gold`): a
    /// value or a list of values.
    #[serde(default, deserialize_with = "attributes")]
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Attributes as text: a scalar is a list of one; maps and nulls are refused, so a typo
/// in the file is an error rather than a user who silently sees nothing.
fn attributes<'de, D>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let raw = BTreeMap::<String, serde_yaml::Value>::deserialize(d)?;
    let text = |name: &str, v: &serde_yaml::Value| match v {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(D::Error::custom(format!(
            "attribute {name}: expected a value or a list of values"
        ))),
    };
    raw.into_iter()
        .map(|(name, v)| {
            let values = match &v {
                serde_yaml::Value::Sequence(items) => items
                    .iter()
                    .map(|i| text(&name, i))
                    .collect::<Result<_, _>>()?,
                other => vec![text(&name, other)?],
            };
            Ok((name, values))
        })
        .collect()
}

/// `auth:` in meshgate.yaml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Identity providers whose tokens (JWTs) are accepted as logins.
    pub oidc: Vec<OidcIssuer>,
}

/// One identity provider: how its tokens are checked and what its groups grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// Where its signing keys are published (JWKS): `https://`, or `http://` on this
    /// machine only (keys fetched in the clear could be swapped on the way).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Or a JWKS file (relative to meshgate.yaml), read again at each refresh.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The `aud` a token must carry: meshgate's client id at the provider.
    pub audience: String,
    /// The signature algorithms accepted; HMAC ones never are (a JWKS holds public keys).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim that names the user (audited, and the login name a client sends).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group → the roles it grants. A group not listed grants nothing.
    #[serde(default)]
    pub group_roles: BTreeMap<String, Vec<String>>,
    /// Attribute (`:user.<name>` in row filters) → the claim it is read from.
    #[serde(default)]
    pub attribute_claims: BTreeMap<String, String>,
    /// How often the keys are fetched again; an unknown key id fetches at once (at most
    /// every 10 s).
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, at most 300 s.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_jwks_refresh_secs() -> u64 {
    300
}

fn default_leeway_secs() -> u64 {
    60
}

impl OidcIssuer {
    /// Refuses, at start, what would make tokens easy to forge or keys easy to swap.
    pub fn validate(&self) -> Result<(), String> {
        let at = &self.issuer;
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("an issuer and an audience are required".into());
        }
        match (&self.jwks_url, &self.jwks_file) {
            (Some(url), None) => {
                let u = url::Url::parse(url).map_err(|e| format!("{at}: jwks_url {url:?}: {e}"))?;
                let local = u.host_str().is_some_and(|h| {
                    h == "localhost"
                        || h.trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                });
                if !(u.scheme() == "https" || (u.scheme() == "http" && local)) {
                    return Err(format!(
                        "{at}: jwks_url {url:?}: keys are fetched over https (http only on \
                         this machine)"
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => return Err(format!("{at}: give one of jwks_url and jwks_file")),
        }
        if self.algorithms.is_empty() {
            return Err(format!("{at}: algorithms: list at least one"));
        }
        for a in &self.algorithms {
            if !crate::oidc::ALGORITHMS.contains(&a.as_str()) {
                return Err(format!(
                    "{at}: algorithms: {a} is not accepted (one of {})",
                    crate::oidc::ALGORITHMS.join(", ")
                ));
            }
        }
        if self.leeway_secs > 300 {
            return Err(format!("{at}: leeway_secs: at most 300"));
        }
        Ok(())
    }
}

/// Protection for the gateway and the machine it runs on; defaults suit a laptop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub query_timeout_secs: u64,
    /// DataFusion's memory pool; operators that can spill do so beyond it.
    pub memory_limit_mb: usize,
    pub max_concurrent_queries: usize,
    /// How long a query waits for a slot before RESOURCE_EXHAUSTED.
    pub queue_timeout_secs: u64,
    pub target_partitions: Option<usize>,
    /// How often data checks and SLAs are evaluated for /metrics; 0 turns it off.
    pub sla_check_interval_secs: u64,
    /// Failed logins a client address may make per minute before it must wait; 0 turns
    /// the limit off.
    pub max_failed_logins_per_minute: u32,
    /// Quotas per role, on top of the limits above (which stay every role's default).
    pub roles: BTreeMap<String, RoleLimits>,
}

/// One role's quota on one replica, shared by everyone using the role; every bound is
/// optional (unset: the global limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleLimits {
    pub max_concurrent_queries: Option<usize>,
    pub queries_per_minute: Option<u32>,
    /// What the role's running queries may hold together (within the global pool).
    pub memory_limit_mb: Option<usize>,
    pub query_timeout_secs: Option<u64>,
    /// Rows and size of one answer; beyond them the answer ends with RESOURCE_EXHAUSTED.
    pub max_result_rows: Option<u64>,
    pub max_result_mb: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            query_timeout_secs: 300,
            memory_limit_mb: 1024,
            max_concurrent_queries: 8,
            queue_timeout_secs: 30,
            target_partitions: None,
            sla_check_interval_secs: 300,
            max_failed_logins_per_minute: 10,
            roles: BTreeMap::new(),
        }
    }
}

impl Limits {
    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_secs)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the gateway presents on the Flight port.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
}

/// Keys that must not be written in a file that is committed.
#[derive(Clone)]
pub struct Secrets {
    pub hash_key: meshgate_policy::HashKey,
    /// Signs tokens and tickets; replicas that share it accept each other's.
    pub token_key: Vec<u8>,
    /// Keys retired by a rotation: what they signed is still accepted until it expires.
    pub previous_token_keys: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

impl ServerConfig {
    /// Where the hash key is kept when the environment gives none.
    pub fn hash_key_path(&self) -> PathBuf {
        self.hash_key_file
            .clone()
            .unwrap_or_else(|| self.mesh.root.join(".meshgate").join("hash.key"))
    }

    /// These settings over the process's `AWS_*` variables, checked: plaintext to an object
    /// store is refused at start, not at the first query. The caller reads the environment
    /// (the CLI); this library does not.
    pub fn with_environment(
        mut self,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ServerConfig, ConfigError> {
        self.mesh.s3 = std::mem::take(&mut self.mesh.s3).with_environment(variables);
        self.mesh
            .s3
            .validate()
            .map_err(|message| ConfigError::Parse {
                path: self.source.clone().unwrap_or_default(),
                message: format!("mesh.s3: {message}"),
            })?;
        Ok(self)
    }

    /// Reads `meshgate.yaml`; relative paths in it are relative to the file's folder.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            error: source,
        })?;
        let mut config: ServerConfig =
            serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.source = Some(path.to_path_buf());
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        config.mesh.root = base.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        if let (Some(base), Some(audit)) = (base, &config.audit_file)
            && audit.is_relative()
        {
            config.audit_file = Some(base.join(audit));
        }
        if let (Some(base), Some(file)) = (base, &config.hash_key_file)
            && file.is_relative()
        {
            config.hash_key_file = Some(base.join(file));
        }
        if let (Some(base), Some(tls)) = (
            base,
            config.distributed.as_mut().and_then(|d| d.tls.as_mut()),
        ) {
            for p in [&mut tls.ca, &mut tls.cert, &mut tls.key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        for user in &config.users {
            if user.name.contains(':') {
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!(
                        "users: {:?}: a user name holds no ':' (`service:<domain>` names \
                         the domains' service principals in the audit trail)",
                        user.name
                    ),
                });
            }
            if let Some(verifier) = &user.scram_sha_256 {
                crate::pg::ScramVerifier::parse(verifier).map_err(|message| {
                    ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: format!("users: {}: scram_sha_256: {message}", user.name),
                    }
                })?;
            }
        }
        for issuer in &mut config.auth.oidc {
            if let (Some(base), Some(file)) = (base, &issuer.jwks_file)
                && file.is_relative()
            {
                issuer.jwks_file = Some(base.join(file));
            }
            issuer.validate().map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("auth.oidc: {message}"),
            })?;
        }
        if let Some(d) = &config.distributed {
            d.validate().map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("distributed: {message}"),
            })?;
        }
        Ok(config)
    }
}

/// `distributed:` in meshgate.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// The scheduler: `http://127.0.0.1:50060` on this machine, or `https://host:port`
    /// with `tls` anywhere else.
    pub scheduler: String,
    /// Mutual TLS to the scheduler and executors: the cluster's CA and the gateway's own
    /// certificate and key (paths relative to meshgate.yaml).
    #[serde(default)]
    pub tls: Option<meshgate_cluster::TlsFiles>,
    /// Queries reading at least this much (after pruning) run on the cluster.
    #[serde(default = "default_min_scan_bytes")]
    pub min_scan_bytes: u64,
    /// Whether callers may choose the engine (Flight's `x-meshgate-execution`).
    #[serde(default = "yes")]
    pub allow_override: bool,
    /// What a query bound for the cluster does when the scheduler is down.
    #[serde(default)]
    pub when_unavailable: WhenUnavailable,
}

fn default_min_scan_bytes() -> u64 {
    256 << 20
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnavailable {
    /// Run it here instead.
    #[default]
    Local,
    /// Refuse it with UNAVAILABLE.
    Fail,
}

impl DistributedConfig {
    /// Refuses, at start, a scheduler URL that would send plans in the clear off this
    /// machine, or whose scheme disagrees with `tls`.
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.scheduler)
            .map_err(|e| format!("scheduler {:?}: {e}", self.scheduler))?;
        let expected = match self.tls {
            Some(_) => "https",
            None => "http",
        };
        if url.port().is_none() || !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheduler {:?}: expected http://127.0.0.1:PORT, or https://HOST:PORT with tls",
                self.scheduler
            ));
        }
        if url.scheme() != expected {
            return Err(match self.tls {
                Some(_) => format!(
                    "scheduler {:?}: with tls configured the scheduler is https://",
                    self.scheduler
                ),
                None => format!(
                    "scheduler {:?}: https:// needs tls (ca, cert, key) for the cluster",
                    self.scheduler
                ),
            });
        }
        let host = url.host_str().unwrap_or_default();
        meshgate_cluster::check_reach("scheduler", host, self.tls.is_some())
            .map_err(|e| e.to_string())
    }

    /// The cluster client this configuration describes, once valid; reads the TLS files.
    pub fn cluster(&self, key: Arc<meshgate_policy::HashKey>) -> Result<Cluster, String> {
        self.validate()?;
        let tls = self
            .tls
            .as_ref()
            .map(meshgate_cluster::ClusterTls::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Cluster::new(
            &self.scheduler,
            meshgate_cluster::ClusterCodec::new(key),
            tls,
        ))
    }
}

#[cfg(test)]
mod distributed_tests {
    use super::*;

    fn config(scheduler: &str, tls: bool) -> DistributedConfig {
        DistributedConfig {
            scheduler: scheduler.into(),
            tls: tls.then(|| meshgate_cluster::TlsFiles {
                ca: "ca.pem".into(),
                cert: "gateway.pem".into(),
                key: "gateway-key.pem".into(),
            }),
            min_scan_bytes: 0,
            allow_override: true,
            when_unavailable: WhenUnavailable::Local,
        }
    }

    #[test]
    fn plans_leave_this_machine_only_over_tls() {
        for (url, tls) in [
            ("http://127.0.0.1:50060", false),
            ("http://localhost:50060", false),
            ("https://scheduler.mesh.internal:50060", true),
            ("https://10.0.0.7:50060", true),
            ("https://127.0.0.1:50060", true),
        ] {
            assert_eq!(config(url, tls).validate(), Ok(()), "{url}");
        }
        for (url, tls, says) in [
            ("http://10.0.0.7:50060", false, "mutual TLS"),
            ("http://scheduler.mesh.internal:50060", false, "mutual TLS"),
            ("https://10.0.0.7:50060", false, "needs tls"),
            ("http://10.0.0.7:50060", true, "https://"),
            ("grpc://127.0.0.1:50060", false, "expected"),
            ("http://127.0.0.1", false, "expected"),
        ] {
            let e = config(url, tls).validate().unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn issuer(url: &str) -> OidcIssuer {
        serde_yaml::from_str(&format!(
            "{{issuer: 'https://idp.example.com/', jwks_url: '{url}', audience: meshgate}}"
        ))
        .unwrap()
    }

    #[test]
    fn keys_are_fetched_over_https_or_on_this_machine_only() {
        for ok in [
            "https://idp.example.com/keys",
            "http://127.0.0.1:8081/keys",
            "http://localhost/keys",
            "http://[::1]:80/keys",
        ] {
            assert_eq!(issuer(ok).validate(), Ok(()), "{ok}");
        }
        for bad in [
            "http://idp.example.com/keys",
            "http://10.0.0.7/keys",
            "file:///etc/keys",
        ] {
            let e = issuer(bad).validate().unwrap_err();
            assert!(e.contains("over https"), "{bad}: {e}");
        }
    }

    #[test]
    fn hmac_and_unknown_algorithms_a_missing_key_source_and_wide_skew_are_refused() {
        let mut i = issuer("https://idp.example.com/keys");
        assert_eq!(i.algorithms, ["RS256"], "RS256 unless listed");
        for alg in ["HS256", "none", "RS1"] {
            i.algorithms = vec![alg.into()];
            let e = i.validate().unwrap_err();
            assert!(e.contains(&format!("{alg} is not accepted")), "{e}");
        }
        i.algorithms = vec!["ES256".into()];
        i.leeway_secs = 3600;
        assert!(i.validate().unwrap_err().contains("at most 300"));
        i.leeway_secs = 60;
        i.jwks_file = Some("keys.json".into());
        assert!(
            i.validate()
                .unwrap_err()
                .contains("one of jwks_url and jwks_file")
        );
    }

    #[test]
    fn attributes_are_values_or_lists_of_values() {
        let u: UserConfig = serde_yaml::from_str(
            "{name: a, password_hash: x, attributes: {regions: [EU, US], tier: 3, vip: true}}",
        )
        .unwrap();
        assert_eq!(u.attributes["regions"], ["EU", "US"]);
        assert_eq!(u.attributes["tier"], ["3"]);
        assert_eq!(u.attributes["vip"], ["true"]);
        let e = serde_yaml::from_str::<UserConfig>(
            "{name: a, password_hash: x, attributes: {regions: {eu: 1}}}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("attribute regions"), "{e}");
    }
}
