//! The `meshgate` command line: one binary, one verb per job (docs/DESIGN.md §7).

mod catalog;
mod check;
mod cluster;
mod connect;
mod diff;
mod keys;
mod lint;
mod publish;
mod refresh;
pub mod remote;
mod serve;
mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "Contract-enforcing Flight SQL gateway for a data mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway on the contracts and data of meshgate.yaml.
    Serve(serve::ServeArgs),
    /// Query the gateway: one statement, or an interactive shell.
    Sql(sql::SqlArgs),
    /// Check contracts against the contract format and governance.yaml.
    Lint(lint::LintArgs),
    /// Check products' data against their contracts: column checks, quality, freshness.
    Check(check::CheckArgs),
    /// Browse the data products: list, search, or describe one.
    Catalog(catalog::CatalogArgs),
    /// Write a lint-clean contract to start a new data product from.
    Init(publish::InitArgs),
    /// Check data against its contract, then publish it atomically.
    Publish(publish::PublishArgs),
    /// Compute derived products again: what is due, for ever (one process per mesh), or
    /// the ones named, now.
    Refresh(refresh::RefreshArgs),
    /// Classify the changes between two contract versions; breaking ones need a new major.
    Diff(diff::DiffArgs),
    /// Run the Ballista processes that execute heavy queries (see README, "Cluster").
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print what meshgate.yaml keeps of a password: its argon2 hash, and its SCRAM-SHA-256
    /// verifier for Postgres clients (neither is enough to log in with).
    Passwd {
        /// Read from MESHGATE_PASSWORD, else asked for.
        #[arg(long, env = "MESHGATE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that no line of an audit file was removed or edited.
    Verify { file: PathBuf },
}

/// `meshgate.yaml` over this process's `AWS_*` variables: the one place the S3 settings
/// read the environment.
pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<meshgate_server::ServerConfig> {
    Ok(meshgate_server::ServerConfig::load(path)?.with_environment(std::env::vars())?)
}

/// Runs the command line; `main` is only this.
pub fn main() -> ExitCode {
    meshgate_mesh::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Sql(args) => sql::run(args).await,
            Command::Lint(args) => lint::run(args).await,
            Command::Diff(args) => diff::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Init(args) => publish::init(args),
            Command::Catalog(args) => catalog::run(args).await,
            Command::Publish(args) => publish::publish_cmd(args).await,
            Command::Refresh(args) => refresh::run(args).await,
            Command::Cluster { command } => cluster::run(command).await,
            Command::Audit {
                command: AuditCommand::Verify { file },
            } => match meshgate_server::audit::verify(&file) {
                Ok(n) => {
                    println!("{}: {n} lines, chain intact", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            },
            Command::Passwd { password } => {
                let password = match password {
                    Some(p) => p,
                    None => rpassword::prompt_password("password: ")?,
                };
                println!(
                    "password_hash: {}\nscram_sha_256: {}",
                    meshgate_server::auth::hash_password(&password),
                    meshgate_server::pg::ScramVerifier::generate(&password)
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
