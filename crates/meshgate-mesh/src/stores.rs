//! Where product files are read from: the local file system, or S3 (and S3-compatible
//! servers) through `object_store`'s `AmazonS3Builder`.
//!
//! One registry serves the mesh loader, the data checks and the gateway's queries, so a
//! location resolves to the same store everywhere. S3 stores are built on first use, one
//! per bucket, from `mesh.s3` in meshgate.yaml over the `AWS_*` variables, which the CLI
//! hands in ([`S3Config::with_environment`]: this library reads no environment). Credentials
//! come only from those variables (or from code) and are scrubbed from every error message
//! meshgate shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, RetryConfig};
use serde::Deserialize;
use url::Url;

/// `mesh.s3` in meshgate.yaml; what is left out comes from the `AWS_*` variables handed in
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`…, as the AWS tools read them).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// An S3-compatible server (MinIO, moto, Ceph); AWS itself when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Must be set to use an `http://` endpoint: plaintext is never chosen by accident.
    pub allow_http: Option<bool>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: Option<bool>,
    /// Bounds how long an unreachable store can hold up loading the mesh.
    pub connect_timeout_secs: Option<u64>,
    /// Access key id and secret given in code (tests, embedding); never read from YAML,
    /// where secrets do not belong. Otherwise the `AWS_*` variables and the usual chain.
    #[serde(skip)]
    pub credentials: Option<(String, String)>,
    /// The process's `AWS_*` variables, given by whoever reads the environment (the CLI).
    #[serde(skip)]
    pub environment: BTreeMap<String, String>,
}

/// Never shows the credentials, whoever logs a configuration.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .finish()
    }
}

const CREDENTIAL_VARS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

impl S3Config {
    /// These settings over the `AWS_*` ones among `variables` (other variables are ignored).
    pub fn with_environment(
        mut self,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        self.environment = variables
            .into_iter()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        self
    }

    fn variable(&self, name: &str) -> Option<&str> {
        self.environment.get(name).map(String::as_str)
    }

    fn endpoint(&self) -> Option<String> {
        self.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|v| self.variable(v).map(str::to_string))
        })
    }

    fn allow_http(&self) -> bool {
        self.allow_http.unwrap_or_else(|| {
            self.variable("AWS_ALLOW_HTTP")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
    }

    /// Refuses, before anything is served, an `http://` endpoint that was not explicitly
    /// allowed.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self.endpoint() {
            Some(e) if e.starts_with("http://") && !self.allow_http() => Err(format!(
                "S3 endpoint {e} is plaintext HTTP: set mesh.s3.allow_http: true \
                 (or AWS_ALLOW_HTTP=true) if that is really meant"
            )),
            _ => Ok(()),
        }
    }

    fn build(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        self.validate().map_err(DataFusionError::Configuration)?;
        // The S3 client's rustls needs a process-wide crypto provider.
        crate::install_crypto_provider();
        // Client options first: they replace allow_http, which lives among them.
        // As `AmazonS3Builder::from_env` would, from the variables handed in.
        let mut b = self
            .environment
            .iter()
            .filter_map(|(k, v)| Some((k.to_ascii_lowercase().parse().ok()?, v)))
            .fold(AmazonS3Builder::new(), |b, (key, value)| {
                b.with_config(key, value)
            })
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(
                        self.connect_timeout_secs.unwrap_or(5),
                    ))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_allow_http(self.allow_http())
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if let Some(e) = self.endpoint() {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(p) = self.path_style {
            b = b.with_virtual_hosted_style_request(!p);
        }
        if let Some((id, secret)) = &self.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(|e| {
            DataFusionError::Configuration(self.scrub(&format!("S3 bucket {bucket}: {e}")))
        })?;
        Ok(Arc::new(store))
    }
}

impl S3Config {
    /// `message` with every credential (from the variables or given in code) replaced by
    /// `***`: S3 servers echo access key ids in their error bodies, and errors end up in
    /// logs and quarantines.
    pub fn scrub(&self, message: &str) -> String {
        let from_environment = CREDENTIAL_VARS.iter().filter_map(|v| self.variable(v));
        let in_code = self
            .credentials
            .iter()
            .flat_map(|(id, secret)| [id.as_str(), secret.as_str()]);
        from_environment
            .chain(in_code)
            .filter(|v| v.len() >= 4)
            .fold(message.to_string(), |out, v| out.replace(v, "***"))
    }
}

/// The object store registry of a mesh: `file://` and `s3://bucket/`.
#[derive(Debug)]
pub struct MeshStores {
    s3: S3Config,
    local: Arc<dyn ObjectStore>,
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl MeshStores {
    pub fn new(s3: S3Config) -> Self {
        MeshStores {
            s3,
            local: Arc::new(LocalFileSystem::new()),
            buckets: Mutex::default(),
        }
    }
}

impl ObjectStoreRegistry for MeshStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        match url.scheme() {
            "s3" => self
                .buckets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(url.host_str().unwrap_or_default().to_string(), store),
            _ => None,
        }
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match url.scheme() {
            "file" => Ok(Arc::clone(&self.local)),
            "s3" => {
                let bucket = url.host_str().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(DataFusionError::Configuration(format!(
                        "{url}: an S3 location names its bucket: s3://bucket/prefix/"
                    )));
                }
                let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = buckets.get(bucket) {
                    return Ok(Arc::clone(s));
                }
                let store = self.s3.build(bucket)?;
                buckets.insert(bucket.to_string(), Arc::clone(&store));
                Ok(store)
            }
            other => Err(DataFusionError::Configuration(format!(
                "{url}: meshgate reads file:// and s3:// locations, not {other}://"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> S3Config {
        S3Config::default()
            .with_environment(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn settings_come_from_the_variables_handed_in_and_yaml_wins() {
        let c = with(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("HOME", "/root"),
        ]);
        assert_eq!(c.environment.len(), 1, "only AWS_* is kept");
        let e = c.validate().unwrap_err();
        assert!(e.contains("http://127.0.0.1:9000"), "{e}");
        let c = with(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "TRUE"),
        ]);
        assert!(c.validate().is_ok());
        let c = S3Config {
            endpoint: Some("https://minio.internal".into()),
            ..with(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")])
        };
        assert_eq!(c.endpoint().as_deref(), Some("https://minio.internal"));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn credentials_are_scrubbed_and_never_debug_printed() {
        let c = S3Config {
            credentials: Some(("AKIDINCODE".into(), "code-secret".into())),
            ..with(&[
                ("AWS_ACCESS_KEY_ID", "AKIDFROMENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ])
        };
        let said = c.scrub("denied for AKIDFROMENV (env-secret), AKIDINCODE code-secret");
        assert_eq!(said, "denied for *** (***), *** ***");
        let debug = format!("{c:?}");
        for secret in ["AKIDFROMENV", "env-secret", "AKIDINCODE", "code-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("AWS_ACCESS_KEY_ID"), "{debug}");
    }
}
