//! What the gateway benchmarks share: a gateway on port 0 over a loaded mesh, an embedded
//! DataFusion session on the same mesh, and one authenticated client per role.

use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_catalog::{CATALOG, Mesh};
use meshgate_server::config::{Limits, UserConfig};
use meshgate_server::{RunningServer, Secrets, ServerConfig};
use tonic::transport::Channel;

pub(crate) type Client = FlightSqlServiceClient<Channel>;

/// The same mesh without the gateway: the baseline every ratio is taken against.
pub(crate) fn embedded(mesh: &Mesh, default_schema: &str) -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_default_catalog_and_schema(CATALOG, default_schema),
    );
    ctx.register_catalog(CATALOG, mesh.catalog());
    ctx
}

/// A gateway with `analyst` (data_analyst) and `marketer` (marketing), and a client for
/// each, in that order. SLA evaluation and reloading are off: they would scan in the
/// background of the measurements.
pub(crate) async fn gateway(mesh: Arc<Mesh>) -> (RunningServer, Vec<Client>) {
    let user = |name: &str, role: &str| UserConfig {
        name: name.into(),
        password_hash: meshgate_server::auth::hash_password(name),
        roles: vec![role.into()],
    };
    let config = ServerConfig {
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        users: vec![
            user("analyst", "data_analyst"),
            user("marketer", "marketing"),
        ],
        limits: Limits {
            sla_check_interval_secs: 0,
            memory_limit_mb: 4096,
            ..Limits::default()
        },
        reload_interval_secs: 0,
        ..Default::default()
    };
    let secrets = Secrets {
        hash_key: meshgate_policy::HashKey::new(b"benchmark-hash-key-0123456789").unwrap(),
        token_key: b"benchmark-token-key-0123456789".to_vec(),
    };
    let server = RunningServer::start(mesh, config, secrets).await.unwrap();
    let channel =
        meshgate_server::client::endpoint(&format!("grpc://{}", server.flight_addr), None)
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut clients = Vec::new();
    for u in ["analyst", "marketer"] {
        let mut c = FlightSqlServiceClient::new(channel.clone());
        c.handshake(u, u).await.unwrap();
        clients.push(c);
    }
    (server, clients)
}
