//! A gateway on port 0 over the test mesh, with one user per test role (password = name).

use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use meshgate_server::config::{Limits, UserConfig};
use meshgate_server::{RunningServer, Secrets, ServerConfig};
use tonic::transport::Channel;

use crate::common::{TEST_KEY, TestMesh};

pub type Client = FlightSqlServiceClient<Channel>;

pub struct TestServer {
    pub server: RunningServer,
    pub audit: std::path::PathBuf,
    pub mesh: TestMesh,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(|_| {}).await
    }

    pub async fn with_limits(limits: Limits) -> TestServer {
        Self::with(|c| {
            c.limits = Limits {
                sla_check_interval_secs: 0,
                ..limits
            }
        })
        .await
    }

    /// A server whose configuration the test adjusts before it starts.
    pub async fn with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        Self::with_mesh(TestMesh::load().await, adjust).await
    }

    /// A server on `mesh` (local or S3) whose configuration the test adjusts.
    pub async fn with_mesh(mesh: TestMesh, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        // Each role folder's principal, its password its name.
        let user = |role: &&str| {
            let p = super::principal(role);
            UserConfig {
                password_hash: meshgate_server::auth::hash_password(&p.name),
                scram_sha_256: Some(meshgate_server::pg::ScramVerifier::generate(&p.name)),
                attributes: p.attributes,
                roles: p.roles.into_iter().collect(),
                name: p.name,
            }
        };
        let mut config = ServerConfig {
            flight_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            pg_addr: Some("127.0.0.1:0".parse().unwrap()),
            users: super::ROLE_FOLDERS.iter().map(user).collect(),
            audit_file: Some(audit.clone()),
            // SLA evaluation scans every product; only the tests of it turn it on.
            limits: Limits {
                sla_check_interval_secs: 0,
                ..Limits::default()
            },
            ..Default::default()
        };
        adjust(&mut config);
        let secrets = Secrets {
            hash_key: meshgate_policy::HashKey::new(TEST_KEY).unwrap(),
            token_key: b"test-token-key-0123456789".to_vec(),
            previous_token_keys: vec![],
        };
        // The mesh is shared with the server; the TestMesh keeps the temp data alive.
        let shared = Arc::new(
            meshgate_mesh::Mesh::load(mesh.mesh.config().clone())
                .await
                .unwrap(),
        );
        let server = RunningServer::start(shared, config, secrets).await.unwrap();
        TestServer {
            server,
            audit,
            mesh,
            _dir: dir,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.server.flight_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The catalog API's page of one product, as `user` (logged in by a Flight handshake).
    pub async fn describe_product(
        &self,
        user: &str,
        name: &str,
    ) -> meshgate_proto::catalog::ProductDetail {
        use meshgate_proto::catalog::DescribeProductRequest;
        use meshgate_proto::catalog::catalog_service_client::CatalogServiceClient;
        let token = self.client(user).await.token().unwrap().clone();
        let mut req = tonic::Request::new(DescribeProductRequest { name: name.into() });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        CatalogServiceClient::new(self.channel().await)
            .describe_product(req)
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn client(&self, user: &str) -> Client {
        let mut c = FlightSqlServiceClient::new(self.channel().await);
        c.handshake(user, user).await.unwrap();
        c
    }
}

/// The Flight handshake with `authorization: <header>` on `channel`: the session token the
/// gateway answers with, or its refusal.
pub async fn handshake(channel: Channel, header: &str) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(futures::stream::iter(vec![
        arrow_flight::HandshakeRequest::default(),
    ]));
    req.metadata_mut()
        .insert("authorization", header.parse().unwrap());
    let response = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .handshake(req)
        .await?;
    Ok(response
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start_matches("Bearer ")
        .to_string())
}
