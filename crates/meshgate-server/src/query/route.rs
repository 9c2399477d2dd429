//! Which engine runs a query: this process (DataFusion) or the Ballista cluster.
//!
//! The rule (README, "Cluster"): distributed when a cluster is configured and healthy
//! and the files the plan will read, after partition and file pruning, add up to at least
//! `distributed.min_scan_bytes`. Statements that read no product files (metadata,
//! `information_schema`, `EXPLAIN`) stay local. A caller may choose (`local`,
//! `distributed`, `auto`) when `distributed.allow_override` is on; how a protocol carries
//! that choice is the protocol's business, which choice wins is [`Execution::chosen`].

use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use meshgate_cluster::{Cluster, scan_bytes};

use super::{ErrorKind, QueryError};
use crate::config::{DistributedConfig, WhenUnavailable};

/// What a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    Local,
    Distributed,
    #[default]
    Auto,
}

impl Execution {
    pub fn parse(value: &str) -> Result<Execution, QueryError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Execution::Local),
            "distributed" => Ok(Execution::Distributed),
            "auto" => Ok(Execution::Auto),
            other => Err(QueryError::invalid(format!(
                "execution: {other:?} is not one of local, distributed, auto"
            ))),
        }
    }

    /// The one precedence rule: what this call says wins over the session's setting, which
    /// wins over the choice sealed into a ticket when the statement was planned.
    pub fn chosen(
        call: Option<Execution>,
        session: Option<Execution>,
        sealed: Option<Execution>,
    ) -> Option<Execution> {
        call.or(session).or(sealed)
    }
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
pub(crate) async fn route(
    config: Option<&DistributedConfig>,
    cluster: Option<&Cluster>,
    asked: Option<Execution>,
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<Route, QueryError> {
    let (Some(config), Some(cluster)) = (config, cluster) else {
        return match asked {
            Some(Execution::Distributed) => Err(QueryError::new(
                ErrorKind::FailedPrecondition,
                "distributed execution was asked for, but this gateway has no cluster \
                 configured (distributed.scheduler in meshgate.yaml)",
            )),
            _ => Ok(local("no cluster configured")),
        };
    };
    if asked.is_some_and(|a| a != Execution::Auto) && !config.allow_override {
        return Err(QueryError::new(
            ErrorKind::PermissionDenied,
            "this gateway chooses the engine itself (distributed.allow_override is off); \
             ask for auto or nothing",
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
            WhenUnavailable::Fail => Err(QueryError::new(
                ErrorKind::Unavailable,
                format!(
                    "the cluster is unavailable ({why}) and distributed.when_unavailable is fail"
                ),
            )),
        },
    }
}

/// The EXPLAIN of a statement, with a last line saying which engine would run it.
pub(crate) fn explain_with_route(
    physical: &Arc<dyn ExecutionPlan>,
    route: &Route,
) -> Arc<dyn ExecutionPlan> {
    use datafusion::common::display::{PlanType, StringifiedPlan};
    use datafusion::physical_plan::explain::ExplainExec;
    let Some(explain) = physical.downcast_ref::<ExplainExec>() else {
        return Arc::clone(physical);
    };
    let plans = explain
        .stringified_plans()
        .iter()
        .map(|p| match p.plan_type {
            PlanType::FinalPhysicalPlan => StringifiedPlan::new(
                p.plan_type.clone(),
                format!("{}meshgate: {route}\n", p.plan),
            ),
            _ => p.clone(),
        })
        .collect();
    Arc::new(ExplainExec::new(
        physical.schema(),
        plans,
        explain.verbose(),
    ))
}
