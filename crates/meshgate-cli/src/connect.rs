//! How the client verbs (`sql`, `catalog`) reach and authenticate to a gateway.

use std::path::PathBuf;

use crate::remote::MeshClient;
use clap::Args;

#[derive(Args)]
pub(crate) struct ConnectArgs {
    /// `grpc://` (plaintext) or `grpc+tls://` (TLS).
    #[arg(long, env = "MESHGATE_URL", default_value = "grpc://127.0.0.1:50051")]
    url: String,
    /// PEM certificate of the CA that signed the gateway's (TLS); system roots otherwise.
    #[arg(long, env = "MESHGATE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long, short, env = "MESHGATE_USER")]
    pub(crate) user: String,
    /// Read from MESHGATE_PASSWORD, else asked for.
    #[arg(long, env = "MESHGATE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Narrow the session to one of your roles.
    #[arg(long, env = "MESHGATE_ROLE")]
    role: Option<String>,
}

impl ConnectArgs {
    pub(crate) async fn connect(&self) -> anyhow::Result<MeshClient> {
        let password = match &self.password {
            Some(p) => p.clone(),
            None => rpassword::prompt_password(format!("password for {}: ", self.user))?,
        };
        let ca = match &self.tls_ca {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        MeshClient::connect(
            &self.url,
            ca.as_deref(),
            &self.user,
            &password,
            self.role.as_deref(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
