//! `meshgate cluster scheduler|executor`: the Ballista processes that run heavy queries.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use meshgate_cluster::{ClusterTls, TlsFiles};
use meshgate_node::{
    EXECUTOR_FLIGHT_PORT, EXECUTOR_GRPC_PORT, ExecutorOptions, SCHEDULER_PORT, SchedulerOptions,
    Scheduling, run_executor, run_scheduler,
};
use meshgate_server::ServerConfig;

use crate::keys;
use crate::serve::init_tracing;

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Plan stages and hand tasks to executors; the gateway submits jobs here.
    Scheduler(SchedulerArgs),
    /// Run tasks: reads products (files, S3) and evaluates masks with its own hash key.
    Executor(ExecutorArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SchedulingArg {
    /// The scheduler pushes tasks (lower latency).
    Push,
    /// Executors poll the scheduler for tasks.
    Pull,
}

impl From<SchedulingArg> for Scheduling {
    fn from(s: SchedulingArg) -> Self {
        match s {
            SchedulingArg::Push => Scheduling::Push,
            SchedulingArg::Pull => Scheduling::Pull,
        }
    }
}

/// Mutual TLS on the cluster's ports: required off loopback.
#[derive(Args)]
struct TlsArgs {
    /// PEM: the cluster's own CA; every peer must present a certificate it signed.
    #[arg(long, env = "MESHGATE_CLUSTER_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// PEM: this process's certificate, valid for the name others dial it by.
    #[arg(long, env = "MESHGATE_CLUSTER_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// PEM: the key of --tls-cert.
    #[arg(long, env = "MESHGATE_CLUSTER_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn load(self) -> anyhow::Result<Option<ClusterTls>> {
        let (Some(ca), Some(cert), Some(key)) = (self.tls_ca, self.tls_cert, self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(ClusterTls::load(&TlsFiles { ca, cert, key })?))
    }
}

/// The gateway's hash key: a mask planned under another key is refused.
#[derive(Args)]
pub(crate) struct KeyArgs {
    #[arg(long, env = "MESHGATE_HASH_KEY", hide_env_values = true)]
    hash_key: Option<String>,
    /// The gateway's key file; default: `hash_key_file` of --config. Never created here.
    #[arg(long, env = "MESHGATE_HASH_KEY_FILE")]
    hash_key_file: Option<PathBuf>,
}

impl KeyArgs {
    fn load(self, config: &std::path::Path) -> anyhow::Result<Arc<meshgate_policy::HashKey>> {
        let file = match self.hash_key_file {
            Some(f) => Some(f),
            None if config.exists() => Some(ServerConfig::load(config)?.hash_key_path()),
            None => None,
        };
        let (key, source) = keys::hash_key(self.hash_key, file.as_deref(), false)?;
        tracing::info!("hash key from {source}");
        Ok(Arc::new(key))
    }
}

#[derive(Args)]
pub(crate) struct SchedulerArgs {
    /// Where the S3 settings (`mesh.s3`) are read from, as for executors.
    #[arg(long, env = "MESHGATE_CONFIG", default_value = "meshgate.yaml")]
    config: PathBuf,
    /// Loopback unless TLS is on: cluster ports are inside the trust boundary.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], SCHEDULER_PORT)))]
    bind: SocketAddr,
    /// Must match the executors'. Default: push, or pull with TLS.
    #[arg(long, value_enum)]
    scheduling: Option<SchedulingArg>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Stop when standard input closes: a supervisor (or a test) that dies takes the
    /// process with it.
    #[arg(long)]
    until_stdin_closes: bool,
}

#[derive(Args)]
pub(crate) struct ExecutorArgs {
    /// Where the S3 settings (`mesh.s3`) are read from; credentials come from `AWS_*`.
    #[arg(long, env = "MESHGATE_CONFIG", default_value = "meshgate.yaml")]
    config: PathBuf,
    /// The scheduler to register with, HOST:PORT.
    #[arg(long, default_value_t = format!("127.0.0.1:{SCHEDULER_PORT}"), value_parser = host_port)]
    scheduler: String,
    /// Loopback unless TLS is on, like the scheduler.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The name others reach this executor by; needed when --bind is 0.0.0.0.
    #[arg(long)]
    external_host: Option<String>,
    /// Arrow Flight port: shuffle data and results.
    #[arg(long, default_value_t = EXECUTOR_FLIGHT_PORT)]
    flight_port: u16,
    /// Where the scheduler pushes tasks.
    #[arg(long, default_value_t = EXECUTOR_GRPC_PORT)]
    grpc_port: u16,
    /// Default: push, or pull with TLS.
    #[arg(long, value_enum)]
    scheduling: Option<SchedulingArg>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Tasks at once; 0 is one per core.
    #[arg(long, default_value_t = 0)]
    concurrent_tasks: usize,
    /// Shuffle files; a temporary folder by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Memory pool of the executor, in MiB; spills beyond it. Default: a share of the host's.
    #[arg(long)]
    memory_limit_mb: Option<u64>,
    #[command(flatten)]
    key: KeyArgs,
    /// Stop when standard input closes, as for the scheduler.
    #[arg(long)]
    until_stdin_closes: bool,
}

/// Runs `process` until it ends, or until standard input closes when asked to.
async fn supervised(
    until_stdin_closes: bool,
    process: impl std::future::Future<Output = Result<(), meshgate_node::NodeError>>,
) -> anyhow::Result<()> {
    if !until_stdin_closes {
        return Ok(process.await?);
    }
    let stdin_closed = async {
        use tokio::io::AsyncReadExt;
        let mut sink = [0u8; 256];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    // The process first: a refused setting fails on its first poll, and must not lose
    // the race to an input that is closed already (`< /dev/null`).
    tokio::select! {
        biased;
        r = process => Ok(r?),
        () = stdin_closed => Ok(()),
    }
}

pub(crate) async fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    init_tracing();
    match command {
        ClusterCommand::Scheduler(args) => {
            let key = args.key.load(&args.config)?;
            let opts = SchedulerOptions {
                bind: args.bind,
                scheduling: args.scheduling.map(Into::into),
                s3: s3_settings(&args.config)?,
                tls: args.tls.load()?,
            };
            println!("meshgate cluster scheduler on {}", args.bind);
            supervised(args.until_stdin_closes, run_scheduler(opts, key)).await?;
        }
        ClusterCommand::Executor(args) => {
            let key = args.key.load(&args.config)?;
            let s3 = s3_settings(&args.config)?;
            let (host, port) = args.scheduler.rsplit_once(':').expect("checked by clap");
            let opts = ExecutorOptions {
                bind: args.bind,
                external_host: args.external_host,
                flight_port: args.flight_port,
                grpc_port: args.grpc_port,
                scheduler: (host.to_string(), port.parse().expect("checked by clap")),
                scheduling: args.scheduling.map(Into::into),
                concurrent_tasks: args.concurrent_tasks,
                work_dir: args.work_dir,
                memory_pool_bytes: args.memory_limit_mb.map(|m| m << 20),
                s3,
                tls: args.tls.load()?,
            };
            println!(
                "meshgate cluster executor on {}:{} (tasks on {}), scheduler {}",
                args.bind, args.flight_port, args.grpc_port, args.scheduler
            );
            supervised(args.until_stdin_closes, run_executor(opts, key))
                .await
                .context("the executor stopped")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mesh.s3` of the configuration, if there is one; cluster processes need nothing else.
fn s3_settings(config: &std::path::Path) -> anyhow::Result<meshgate_mesh::stores::S3Config> {
    Ok(if config.exists() {
        crate::load_config(config)?.mesh.s3
    } else {
        meshgate_mesh::stores::S3Config::default().with_environment(std::env::vars())
    })
}

/// `HOST:PORT`, the host a name or an address (`[::1]` for IPv6).
fn host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not HOST:PORT")),
    }
}
