//! `meshgate cluster scheduler` and `meshgate cluster executor`: Ballista's processes with
//! meshgate's codecs, meshgate's object stores and no REST API.
//!
//! Cluster ports carry plans and intermediate data that a masked caller must never see
//! unmasked (shuffles hold rows before the final projection of a query). They are inside
//! the trust boundary: loopback by default, and a routable address is refused, since
//! these ports have no TLS yet.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use meshgate_catalog::stores::{MeshStores, S3Config};
use meshgate_policy::HashKey;
use tracing::info;

use crate::ClusterError;
use crate::codec::{ClusterCodec, ClusterLogicalCodec};

/// Default ports: clear of the gateway's 50051 and 8080, and of Ballista's own defaults.
pub const SCHEDULER_PORT: u16 = 50060;
pub const EXECUTOR_FLIGHT_PORT: u16 = 50061;
pub const EXECUTOR_GRPC_PORT: u16 = 50062;

/// How tasks reach executors: pushed by the scheduler (lower latency) or pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    #[default]
    Push,
    Pull,
}

impl From<Scheduling> for TaskSchedulingPolicy {
    fn from(s: Scheduling) -> Self {
        match s {
            Scheduling::Push => TaskSchedulingPolicy::PushStaged,
            Scheduling::Pull => TaskSchedulingPolicy::PullStaged,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    pub scheduling: Scheduling,
    /// The scheduler opens no product file, but decoding a plan needs each location's
    /// store to exist: the same stores as the executors'.
    pub s3: S3Config,
}

#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub bind: IpAddr,
    /// Arrow Flight: shuffle data and results.
    pub flight_port: u16,
    /// Tasks pushed by the scheduler.
    pub grpc_port: u16,
    pub scheduler: SocketAddr,
    pub scheduling: Scheduling,
    /// Tasks run at once; 0 means one per core.
    pub concurrent_tasks: usize,
    /// Shuffle files; a temporary folder when unset.
    pub work_dir: Option<PathBuf>,
    pub memory_pool_bytes: Option<u64>,
    /// The S3 settings of meshgate.yaml (`mesh.s3`); credentials come from `AWS_*`.
    pub s3: S3Config,
}

/// Refuses an address outside this machine: cluster ports are inside the trust boundary.
pub fn check_loopback(what: &str, ip: IpAddr) -> Result<(), ClusterError> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(ClusterError::NotLoopback {
            what: what.to_string(),
            ip,
        })
    }
}

/// Runs a scheduler until the process ends.
pub async fn run_scheduler(opts: SchedulerOptions, key: Arc<HashKey>) -> Result<(), ClusterError> {
    check_loopback("scheduler", opts.bind.ip())?;
    let mut config = SchedulerConfig::default()
        .with_hostname(opts.bind.ip().to_string())
        .with_port(opts.bind.port())
        .with_scheduler_policy(opts.scheduling.into());
    config.bind_host = opts.bind.ip().to_string();
    // Executors heartbeat every 5 s; one silent for 20 s is gone and its tasks rerun.
    config.executor_timeout_seconds = 20;
    config.expire_dead_executor_interval_seconds = 5;
    config.override_physical_codec = Some(Arc::new(ClusterCodec::new(Arc::clone(&key))));
    config.override_logical_codec = Some(Arc::new(ClusterLogicalCodec::new(key)));
    opts.s3.validate().map_err(ClusterError::S3)?;
    let stores = Arc::new(MeshStores::new(opts.s3.clone()));
    config.override_session_builder = Some(Arc::new(move |session| {
        let state = ballista_core::utils::default_session_builder(session)?;
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::clone(&stores) as _)
            .build_arc()?;
        Ok(SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build())
    }));
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ClusterError::Ballista(e.to_string()))?;
    info!(addr = %opts.bind, scheduling = ?opts.scheduling, "meshgate cluster scheduler");
    start_server(cluster, opts.bind, config)
        .await
        .map_err(|e| ClusterError::Ballista(e.to_string()))
}

/// Runs an executor until the process ends.
pub async fn run_executor(opts: ExecutorOptions, key: Arc<HashKey>) -> Result<(), ClusterError> {
    check_loopback("executor", opts.bind)?;
    check_loopback("scheduler", opts.scheduler.ip())?;
    opts.s3.validate().map_err(ClusterError::S3)?;
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("meshgate-executor-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir).map_err(|e| ClusterError::WorkDir {
        path: work_dir.clone(),
        source: e,
    })?;
    let stores = Arc::new(MeshStores::new(opts.s3.clone()));
    let temp = work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.to_string(),
        external_host: Some(opts.bind.to_string()),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.ip().to_string(),
        scheduler_port: opts.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrent_tasks,
        task_scheduling_policy: opts.scheduling.into(),
        work_dir: Some(work_dir.display().to_string()),
        memory_pool_size: opts.memory_pool_bytes,
        executor_heartbeat_interval_seconds: 5,
        override_physical_codec: Some(Arc::new(ClusterCodec::new(Arc::clone(&key)))),
        override_logical_codec: Some(Arc::new(ClusterLogicalCodec::new(key))),
        // The mesh's stores: `file://` and `s3://bucket`, built from mesh.s3 and AWS_*.
        override_runtime_producer: Some(Arc::new(move |_| {
            RuntimeEnvBuilder::new()
                .with_object_store_registry(Arc::clone(&stores) as _)
                .with_temp_file_path(temp.clone())
                .build_arc()
        })),
        ..ExecutorProcessConfig::default()
    };
    info!(
        flight = opts.flight_port,
        grpc = opts.grpc_port,
        scheduler = %opts.scheduler,
        "meshgate cluster executor"
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ClusterError::Ballista(e.to_string()))
}
