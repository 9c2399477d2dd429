//! Which engine runs a query: this process (DataFusion) or the Ballista cluster.
//!
//! The rule (README, "Cluster"): distributed when a cluster is configured and healthy
//! and the files the plan will read, after partition and file pruning, add up to at least
//! `distributed.min_scan_bytes`. Statements that read no product files (metadata,
//! `information_schema`, `EXPLAIN`) stay local. A caller may choose with the header (or
//! session option) `x-meshgate-execution: local|distributed|auto` when
//! `distributed.allow_override` is on.

use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use meshgate_cluster::{Cluster, scan_bytes};
use serde::Deserialize;
use tonic::Status;

/// The header and session option a caller chooses the engine with.
pub const EXECUTION_HEADER: &str = "x-meshgate-execution";

/// What a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    Local,
    Distributed,
    #[default]
    Auto,
}

impl Execution {
    pub fn parse(value: &str) -> Result<Execution, Status> {
        match value.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Execution::Local),
            "distributed" => Ok(Execution::Distributed),
            "auto" => Ok(Execution::Auto),
            other => Err(Status::invalid_argument(format!(
                "{EXECUTION_HEADER}: {other:?} is not one of local, distributed, auto"
            ))),
        }
    }

    /// The caller's choice from request metadata: the header, else the session option
    /// (the cookie `SetSessionOptions` sets, which cookie-aware clients send back on every
    /// call, so any replica sees it); `None` when the caller made no choice.
    pub fn from_metadata(
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Execution>, Status> {
        if let Some(v) = metadata.get(EXECUTION_HEADER) {
            let text = v
                .to_str()
                .map_err(|_| Status::invalid_argument(format!("{EXECUTION_HEADER} is not text")))?;
            return Execution::parse(text).map(Some);
        }
        session_cookie(metadata)
            .map(|v| Execution::parse(&v))
            .transpose()
    }

    /// The `Set-Cookie` value that makes a client send this choice back.
    pub fn cookie(self) -> String {
        format!("{EXECUTION_HEADER}={self}")
    }

    /// The `Set-Cookie` value that makes a client forget its choice.
    pub fn clear_cookie() -> String {
        format!("{EXECUTION_HEADER}=; Max-Age=0")
    }
}

/// The session option's value, from the request's `cookie` headers (HTTP/2 may split
/// them into several); an empty one, a cleared cookie a client still sends, is none.
pub fn session_cookie(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == EXECUTION_HEADER)
        .last()
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Execution::Local => "local",
            Execution::Distributed => "distributed",
            Execution::Auto => "auto",
        })
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
    /// Whether callers may choose with `x-meshgate-execution`.
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
        meshgate_cluster::process::check_reach("scheduler", host, self.tls.is_some())
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

/// Where a query runs, and why: named in the audit line and in EXPLAIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub engine: Engine,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Local,
    Distributed,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Local => "local",
            Engine::Distributed => "distributed",
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "engine={} ({})", self.engine, self.reason)
    }
}

fn local(reason: impl Into<String>) -> Route {
    Route {
        engine: Engine::Local,
        reason: reason.into(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Decides where `plan` runs for a caller that asked for `asked`.
pub async fn route(
    config: Option<&DistributedConfig>,
    cluster: Option<&Cluster>,
    asked: Option<Execution>,
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<Route, Status> {
    let (Some(config), Some(cluster)) = (config, cluster) else {
        return match asked {
            Some(Execution::Distributed) => Err(Status::failed_precondition(
                "x-meshgate-execution: distributed, but this gateway has no cluster \
                 configured (distributed.scheduler in meshgate.yaml)",
            )),
            _ => Ok(local("no cluster configured")),
        };
    };
    if asked.is_some_and(|a| a != Execution::Auto) && !config.allow_override {
        return Err(Status::permission_denied(
            "this gateway chooses the engine itself (distributed.allow_override is off); \
             send x-meshgate-execution: auto or nothing",
        ));
    }
    let asked = asked.unwrap_or_default();
    if asked == Execution::Local {
        return Ok(local("asked for by the caller"));
    }
    let Some(bytes) = scan_bytes(plan) else {
        return Ok(local("reads no product files"));
    };
    let reason = if asked == Execution::Distributed {
        "asked for by the caller".to_string()
    } else if bytes >= config.min_scan_bytes {
        format!(
            "estimated scan {} >= distributed.min_scan_bytes {}",
            mib(bytes),
            mib(config.min_scan_bytes)
        )
    } else {
        return Ok(local(format!(
            "estimated scan {} < distributed.min_scan_bytes {}",
            mib(bytes),
            mib(config.min_scan_bytes)
        )));
    };
    // Correct answers first: what the cluster cannot run runs here, and says why.
    if let Some(why) = cluster.refuses(plan) {
        return Ok(local(format!("cannot run distributed: {why}")));
    }
    match cluster.health().await {
        meshgate_cluster::Health::Ready(_) => Ok(Route {
            engine: Engine::Distributed,
            reason,
        }),
        meshgate_cluster::Health::Unavailable(why) => match config.when_unavailable {
            WhenUnavailable::Local => Ok(local(format!("cluster unavailable, ran here: {why}"))),
            WhenUnavailable::Fail => Err(Status::unavailable(format!(
                "the cluster is unavailable ({why}) and distributed.when_unavailable is fail"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
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
