use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use meshgate_mesh::Mesh;
use meshgate_policy::HashKey;
use meshgate_server::{RunningServer, Secrets};
use tracing::warn;

use crate::keys;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The deployment's configuration.
    #[arg(long, env = "MESHGATE_CONFIG", default_value = "meshgate.yaml")]
    config: PathBuf,
    /// Overrides `flight_addr`.
    #[arg(long, env = "MESHGATE_FLIGHT_ADDR")]
    flight_addr: Option<SocketAddr>,
    /// Overrides `http_addr`.
    #[arg(long, env = "MESHGATE_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Overrides `pg_addr` (the Postgres port).
    #[arg(long, env = "MESHGATE_PG_ADDR")]
    pg_addr: Option<SocketAddr>,
    /// The key of the `hash` mask: its bytes as given, at least 16. Without it, the key
    /// in `hash_key_file` (created with a random key on first start).
    #[arg(long, env = "MESHGATE_HASH_KEY", hide_env_values = true)]
    hash_key: Option<String>,
    /// Signs tokens and tickets; replicas that share it accept each other's.
    #[arg(long, env = "MESHGATE_TOKEN_KEY", hide_env_values = true)]
    token_key: Option<String>,
    /// The token key before a rotation: still accepted, never used to sign. Rotate replicas
    /// one at a time with the new key here and the old one in this variable.
    #[arg(long, env = "MESHGATE_TOKEN_KEY_PREVIOUS", hide_env_values = true)]
    previous_token_key: Option<String>,
    /// Serves the sample mesh as of today: the sample data, regenerated with its times
    /// moved to now under `.meshgate/sample-today/`, instead of `mesh.data`. Every
    /// product meets its freshness SLA but one, left stale on purpose.
    #[arg(long)]
    sample_today: bool,
    /// Also refresh derived products on schedule in this process (one per mesh: other
    /// replicas serve what it publishes). `meshgate refresh` does it as its own process.
    #[arg(long)]
    refresh: bool,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let mut config = crate::load_config(&args.config)?;
    if let Some(a) = args.flight_addr {
        config.flight_addr = a;
    }
    if let Some(a) = args.http_addr {
        config.http_addr = a;
    }
    if let Some(a) = args.pg_addr {
        config.pg_addr = Some(a);
    }
    // The sample's derived product has no data in a fresh copy: compute it at once.
    config.refresh |= args.refresh || args.sample_today;
    if args.sample_today {
        let dir = config.mesh.root.join(".meshgate/sample-today");
        // A fresh copy: files of an earlier day must not linger.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        meshgate_sample::write_sample_mesh_today(&dir, 1)
            .with_context(|| format!("cannot write the sample mesh under {}", dir.display()))?;
        tracing::info!("serving the sample mesh as of today from {}", dir.display());
        config.mesh.data = dir;
    }
    let (hash_key, key_source) =
        keys::hash_key(args.hash_key, Some(&config.hash_key_path()), true)?;
    let secrets = secrets(hash_key, args.token_key, args.previous_token_key)?;
    let mesh = Mesh::load(config.mesh.clone())
        .await
        .context("cannot load the mesh")?;
    let server = RunningServer::start(Arc::new(mesh), config, secrets).await?;
    let pg = server
        .pg_addr
        .map(|a| format!(", Postgres on postgres://{a}"))
        .unwrap_or_default();
    println!(
        "meshgate: Flight SQL on grpc://{}, HTTP on http://{}{pg}",
        server.flight_addr, server.http_addr
    );
    // Where the key is, never the key (stderr: supervisors may stop reading stdout).
    tracing::info!("hash key from {key_source}");
    server
        .wait(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

fn secrets(
    hash_key: HashKey,
    token_key: Option<String>,
    previous_token_key: Option<String>,
) -> anyhow::Result<Secrets> {
    let token_key = match token_key {
        Some(k) if k.len() >= 16 => k.into_bytes(),
        Some(_) => bail!("MESHGATE_TOKEN_KEY must be at least 16 bytes"),
        None => {
            warn!(
                "MESHGATE_TOKEN_KEY is not set: tokens are signed with a random key and \
                 are valid on this process only"
            );
            uuid::Uuid::new_v4().as_bytes().repeat(2)
        }
    };
    let previous_token_keys = match previous_token_key {
        Some(k) if k.len() >= 16 => vec![k.into_bytes()],
        Some(_) => bail!("MESHGATE_TOKEN_KEY_PREVIOUS must be at least 16 bytes"),
        None => vec![],
    };
    Ok(Secrets {
        hash_key,
        token_key,
        previous_token_keys,
    })
}

pub(crate) fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // Ballista logs every plan and task at info: useful when debugging it, noise otherwise.
    let filter = EnvFilter::try_from_env("MESHGATE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "info,meshgate::audit=info,ballista_core=warn,ballista_scheduler=warn,\
             ballista_executor=warn",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
