//! `meshgate cluster scheduler` and `meshgate cluster executor`: Ballista's processes with
//! meshgate's codecs, meshgate's object stores and no REST API.
//!
//! A crate of its own so that the gateway, which only submits jobs
//! ([`meshgate_cluster::Cluster`]), does not link Ballista's scheduler and executor.
//!
//! Cluster ports carry plans and intermediate data that a masked caller must never see
//! unmasked (shuffles hold rows before the final projection of a query). They are inside
//! the trust boundary: loopback by default, and a routable address only with mutual TLS
//! ([`meshgate_cluster::tls`]) on every port. Ballista's push-mode task port has no TLS hook, so
//! a cluster with TLS schedules by pull: executors ask the scheduler for work.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::error::BallistaError;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::utils::{create_grpc_server, default_config_producer, get_time_before};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::flight_service::BallistaFlightService;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use meshgate_mesh::stores::{MeshStores, S3Config};
use meshgate_policy::HashKey;
use tracing::info;

use meshgate_cluster::{ClusterCodec, ClusterLogicalCodec, ClusterTls, check_reach};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Reach(#[from] meshgate_cluster::ClusterError),
    #[error(
        "TLS needs pull scheduling (--scheduling pull, the default with TLS): Ballista's \
         push-mode task port has no TLS"
    )]
    PushWithTls,
    #[error(
        "an executor bound to every interface needs --external-host: the name the scheduler, \
         the gateway and other executors reach it by (its certificate's name)"
    )]
    NoExternalHost,
    #[error("mesh.s3: {0}")]
    S3(String),
    #[error("cannot create the work folder {}: {error}", path.display())]
    WorkDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("ballista: {0}")]
    Ballista(String),
}

/// Default ports: clear of the gateway's 50051 and 8080, and of Ballista's own defaults.
pub const SCHEDULER_PORT: u16 = 50060;
pub const EXECUTOR_FLIGHT_PORT: u16 = 50061;
pub const EXECUTOR_GRPC_PORT: u16 = 50062;

/// How tasks reach executors: pushed by the scheduler (lower latency) or pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
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

/// The scheduling a process runs with: push unless TLS is on, which needs pull (the
/// scheduler would push tasks to a plaintext port).
pub fn scheduling(asked: Option<Scheduling>, tls: bool) -> Result<Scheduling, NodeError> {
    match (asked, tls) {
        (Some(Scheduling::Push), true) => Err(NodeError::PushWithTls),
        (Some(s), _) => Ok(s),
        (None, true) => Ok(Scheduling::Pull),
        (None, false) => Ok(Scheduling::Push),
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    pub scheduling: Option<Scheduling>,
    /// The scheduler opens no product file, but decoding a plan needs each location's
    /// store to exist: the same stores as the executors'.
    pub s3: S3Config,
    pub tls: Option<ClusterTls>,
}

#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub bind: IpAddr,
    /// The name the scheduler, the other executors and the gateway dial this one by (its
    /// certificate must be valid for it); the bind address when that is a specific one.
    pub external_host: Option<String>,
    /// Arrow Flight: shuffle data and results.
    pub flight_port: u16,
    /// Tasks pushed by the scheduler.
    pub grpc_port: u16,
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    pub scheduling: Option<Scheduling>,
    /// Tasks run at once; 0 means one per core.
    pub concurrent_tasks: usize,
    /// Shuffle files; a temporary folder when unset.
    pub work_dir: Option<PathBuf>,
    pub memory_pool_bytes: Option<u64>,
    /// The S3 settings of meshgate.yaml (`mesh.s3`); credentials come from `AWS_*`.
    pub s3: S3Config,
    pub tls: Option<ClusterTls>,
}

/// Runs a scheduler until the process ends.
pub async fn run_scheduler(opts: SchedulerOptions, key: Arc<HashKey>) -> Result<(), NodeError> {
    let tls = opts.tls.clone();
    check_reach("scheduler", &opts.bind.ip().to_string(), tls.is_some())?;
    let scheduling = scheduling(opts.scheduling, tls.is_some())?;
    let mut config = SchedulerConfig::default()
        .with_hostname(opts.bind.ip().to_string())
        .with_port(opts.bind.port())
        .with_scheduler_policy(scheduling.into());
    config.bind_host = opts.bind.ip().to_string();
    // Executors heartbeat every 5 s; one silent for 20 s is gone and its tasks rerun.
    config.executor_timeout_seconds = 20;
    config.expire_dead_executor_interval_seconds = 5;
    config.override_physical_codec = Some(Arc::new(ClusterCodec::new(Arc::clone(&key))));
    config.override_logical_codec = Some(Arc::new(ClusterLogicalCodec::new(key)));
    if let Some(tls) = &tls {
        // Cancelling tasks dials executors' task ports (none listens with pull): over
        // TLS, or not at all.
        config.override_create_grpc_client_endpoint = Some(tls.endpoint_override());
        // Jobs' settings reach every task: executors then fetch shuffles over https with
        // Ballista's own connection settings.
        config.override_config_producer = Some(Arc::new(|| {
            default_config_producer().with_ballista_use_tls(true)
        }));
    }
    opts.s3.validate().map_err(NodeError::S3)?;
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
    config.validate().map_err(ballista)?;
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista)?;
    let scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> =
        create_scheduler(cluster, Arc::clone(&config))
            .await
            .map_err(ballista)?;
    let grpc = SchedulerGrpcServer::new(scheduler.clone())
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    // Ballista's own server has no TLS: the same gRPC service and `/readyz`, served by
    // tonic with or without it. No Flight proxy, no REST API: the gateway fetches results
    // from executors itself.
    let ready = Arc::new(scheduler);
    let router = tonic::service::Routes::new(grpc)
        .into_axum_router()
        .route(
            "/readyz",
            axum::routing::get(move || readyz(Arc::clone(&ready))),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::map_request(with_peer_address));
    let mut server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(300)));
    server = match &tls {
        Some(tls) => server.tls_config(tls.server()).map_err(ballista)?,
        // `/readyz` for curl and probes, as Ballista's server answers it.
        None => server.accept_http1(true),
    };
    info!(addr = %opts.bind, ?scheduling, tls = tls.is_some(), "meshgate cluster scheduler");
    server
        .add_routes(tonic::service::Routes::from(router))
        .serve(opts.bind)
        .await
        .map_err(ballista)
}

/// The caller's address where Ballista's handlers look for it (axum's `ConnectInfo`, which
/// its own server sets): an executor that does not name its host is known by it.
async fn with_peer_address(mut request: axum::extract::Request) -> axum::extract::Request {
    // tonic sets it for TLS connections too.
    let peer = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|i| i.remote_addr());
    if let Some(addr) = peer {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
    }
    request
}

/// Ballista's readiness answer: ready with enough executors alive, and how many (alive as
/// Ballista counts them: active, or without status under pull, with a recent heartbeat).
async fn readyz(
    scheduler: Arc<SchedulerServer<LogicalPlanNode, PhysicalPlanNode>>,
) -> (axum::http::StatusCode, String) {
    use ballista_core::serde::protobuf::executor_status::Status;
    let config = &scheduler.state.config;
    let executors = &scheduler.state.executor_manager;
    let recent = get_time_before(config.executor_timeout_seconds);
    let alive = match executors.get_executors_state().await {
        Ok(state) => state
            .iter()
            .filter_map(|(meta, _, _)| executors.get_executor_hearbeat(&meta.id))
            .filter(|beat| {
                let active = match beat.status.as_ref().and_then(|s| s.status.as_ref()) {
                    Some(Status::Active(_)) => true,
                    None => !config.is_push_staged_scheduling(),
                    _ => false,
                };
                active && beat.timestamp > recent
            })
            .count(),
        Err(e) => {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {e}\n"),
            );
        }
    };
    let required = scheduler.state.config.min_ready_executors;
    if scheduler.is_ready() {
        (
            axum::http::StatusCode::OK,
            format!("ready: {alive} executors registered\n"),
        )
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {alive}/{required} executors registered\n"),
        )
    }
}

fn ballista(e: impl std::fmt::Display) -> NodeError {
    NodeError::Ballista(e.to_string())
}

/// Runs an executor until the process ends.
pub async fn run_executor(opts: ExecutorOptions, key: Arc<HashKey>) -> Result<(), NodeError> {
    let tls = opts.tls.clone();
    check_reach("executor", &opts.bind.to_string(), tls.is_some())?;
    check_reach("scheduler", &opts.scheduler.0, tls.is_some())?;
    let scheduling = scheduling(opts.scheduling, tls.is_some())?;
    let external_host = match &opts.external_host {
        Some(h) => h.clone(),
        None if opts.bind.is_unspecified() => return Err(NodeError::NoExternalHost),
        None => opts.bind.to_string(),
    };
    // Others would dial it there: in the clear, across the network.
    check_reach("executor", &external_host, tls.is_some())?;
    opts.s3.validate().map_err(NodeError::S3)?;
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("meshgate-executor-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir).map_err(|e| NodeError::WorkDir {
        path: work_dir.clone(),
        error: e,
    })?;
    let stores = Arc::new(MeshStores::new(opts.s3.clone()));
    let temp = work_dir.clone();
    let mut config = ExecutorProcessConfig {
        bind_host: opts.bind.to_string(),
        external_host: Some(external_host),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.0.clone(),
        scheduler_port: opts.scheduler.1,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrent_tasks,
        task_scheduling_policy: scheduling.into(),
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
    if let Some(tls) = &tls {
        let secure = tls.endpoint_override();
        // To the scheduler.
        config.override_create_grpc_client_endpoint = Some(Arc::clone(&secure));
        // To the other executors, for shuffle data: tasks read it through their session.
        config.override_config_producer = Some(Arc::new(move || {
            default_config_producer()
                .with_ballista_use_tls(true)
                .with_ballista_override_create_grpc_client_endpoint(Arc::clone(&secure))
        }));
        // Its own Flight port, where results and shuffle data are fetched.
        let server = tls.server();
        let (max_encoding, max_decoding) = (
            config.grpc_max_encoding_message_size as usize,
            config.grpc_max_decoding_message_size as usize,
        );
        config.override_arrow_flight_service =
            Some(Arc::new(move |work_dir, addr, mut shutdown, grpc| {
                let server = server.clone();
                tokio::spawn(async move {
                    create_grpc_server(&grpc)
                        .tls_config(server)?
                        .add_service(
                            FlightServiceServer::new(BallistaFlightService::new(work_dir))
                                .max_encoding_message_size(max_encoding)
                                .max_decoding_message_size(max_decoding),
                        )
                        .serve_with_shutdown(addr, shutdown.recv())
                        .await
                        .map_err(BallistaError::TonicError)
                })
            }));
    }
    info!(
        flight = opts.flight_port,
        grpc = opts.grpc_port,
        scheduler = ?opts.scheduler,
        ?scheduling,
        tls = tls.is_some(),
        "meshgate cluster executor"
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(ballista)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_needs_pull() {
        assert_eq!(scheduling(None, false).unwrap(), Scheduling::Push);
        assert_eq!(scheduling(None, true).unwrap(), Scheduling::Pull);
        assert_eq!(
            scheduling(Some(Scheduling::Pull), true).unwrap(),
            Scheduling::Pull
        );
        assert!(matches!(
            scheduling(Some(Scheduling::Push), true),
            Err(NodeError::PushWithTls)
        ));
    }
}
