//! The gateway's shared state: the query path ([`QueryEngine`]), who may call (users,
//! tokens, login throttle), the products' last check reports, and the parameters bound
//! to handles. Protocols reach the query path through it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use meshgate_mesh::Mesh;
use meshgate_mesh::checks::ProductReport;
use meshgate_policy::{MeshSession, Principal};
use tonic::Status;

use crate::ServerError;
use crate::audit::{AuditLog, AuditRecord};
use crate::auth::{Envelope, LoginThrottle, Signer, Users, now};
use crate::config::{Secrets, ServerConfig};
use crate::query::{BoundParams, EngineOptions, Execution, QueryEngine, QueryError};

pub struct Gateway {
    pub(crate) query: Arc<QueryEngine>,
    /// The last data-check report of each product, by display name.
    reports: std::sync::RwLock<std::collections::HashMap<String, ProductReport>>,
    pub(crate) config: ServerConfig,
    pub(crate) signer: Signer,
    /// Swapped whole when meshgate.yaml changes, like the mesh.
    users: std::sync::RwLock<Arc<Users>>,
    pub(crate) throttle: LoginThrottle,
    /// Parameters bound through DoPut, for clients that keep using the old handle.
    bound: Mutex<BoundParams>,
    /// Identity providers and their keys (`auth.oidc`; read at start).
    pub(crate) oidc: crate::oidc::Oidc,
}

impl Gateway {
    pub fn new(
        mesh: Arc<Mesh>,
        config: ServerConfig,
        secrets: Secrets,
    ) -> Result<Gateway, ServerError> {
        let key = Arc::new(secrets.hash_key);
        let cluster = config
            .distributed
            .as_ref()
            .map(|d| d.cluster(Arc::clone(&key)))
            .transpose()
            .map_err(ServerError::Cluster)?;
        let audit =
            AuditLog::open(config.audit_file.as_deref()).map_err(|source| ServerError::Audit {
                path: config.audit_file.clone().unwrap_or_default(),
                error: source,
            })?;
        // pg_catalog in every session, whichever protocol plans in it: one session per
        // principal, and the same answers on both doors.
        let pg_catalog = crate::pg::PgCatalog::new().map_err(|e| ServerError::Engine(e.message))?;
        let options = EngineOptions {
            limits: config.limits.clone(),
            view_types: config.view_types,
            distributed: config.distributed.clone(),
            session_setup: vec![Arc::new(pg_catalog)],
        };
        let query = QueryEngine::new(mesh, options, key, cluster, audit)
            .map_err(|e| ServerError::Engine(e.message))?;
        Ok(Gateway {
            query: Arc::new(query),
            signer: Signer::with_previous(&secrets.token_key, &secrets.previous_token_keys),
            users: std::sync::RwLock::new(Arc::new(Users::new(&config.users))),
            throttle: LoginThrottle::new(config.limits.max_failed_logins_per_minute),
            bound: Mutex::new(BoundParams::default()),
            oidc: crate::oidc::Oidc::new(&config.auth.oidc),
            reports: Default::default(),
            config,
        })
    }

    /// The users as of now.
    pub(crate) fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn set_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// The caller of an RPC, under the users configured now (see [`crate::auth::caller`]).
    pub(crate) fn caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Principal, Status> {
        crate::auth::caller(&self.signer, &self.users(), metadata)
    }

    /// A login with an identity provider's token, and when its session ends: the
    /// configured session length, never past the token's expiry. `name`, when the client
    /// sent one, must be the token's user. The message says why a token was refused.
    pub(crate) async fn token_login(
        &self,
        token: &str,
        name: Option<&str>,
    ) -> Result<(Principal, u64), String> {
        let verified = self
            .oidc
            .verify(token)
            .await
            .map_err(|e| format!("identity token refused: {e}"))?;
        if let Some(name) = name.filter(|n| !n.is_empty())
            && name != verified.principal.name
        {
            return Err(format!(
                "identity token refused: it is {:?}'s, not {name:?}'s",
                verified.principal.name
            ));
        }
        let end = (now() + self.config.max_session_secs).min(verified.expires);
        Ok((verified.principal, end))
    }

    /// Whether `password` is to be checked as an identity provider's token.
    pub(crate) fn is_token(&self, password: &str) -> bool {
        !self.oidc.is_empty() && crate::oidc::Oidc::looks_like_jwt(password)
    }

    /// The mesh as of now.
    pub(crate) fn mesh(&self) -> Arc<Mesh> {
        self.query.mesh()
    }

    pub(crate) fn set_mesh(&self, mesh: Arc<Mesh>) {
        self.query.set_mesh(mesh);
    }

    pub(crate) fn session(&self, principal: &Principal) -> Arc<MeshSession> {
        self.query.session(principal)
    }

    pub(crate) fn reports(&self) -> std::collections::HashMap<String, ProductReport> {
        self.reports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_report(&self, report: ProductReport) {
        self.reports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(report.product.clone(), report);
    }

    /// Audits and counts a request that ended before streaming.
    pub(crate) fn audit_now(
        &self,
        record: AuditRecord,
        started: Instant,
        result: Result<(), &QueryError>,
    ) {
        self.query.audit_now(record, started, result);
    }

    pub(crate) fn envelope(
        &self,
        principal: &Principal,
        sql: &str,
        params: Option<String>,
        execution: Option<Execution>,
    ) -> Vec<u8> {
        self.signer.seal_envelope(&Envelope {
            sub: principal.name.clone(),
            roles: principal.roles.iter().cloned().collect(),
            sql: sql.to_string(),
            params,
            epoch: self.mesh().epoch().to_string(),
            exp: now() + self.config.token_ttl_secs,
            exec: execution.map(|e| e.to_string()),
            iss: principal.issuer.clone(),
        })
    }

    pub(crate) fn remember_params(&self, handle: &[u8], params: &str) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.insert(handle, params.to_string());
    }

    pub(crate) fn recall_params(&self, handle: &[u8]) -> Option<String> {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.get(handle)
    }

    pub(crate) fn forget_params(&self, handle: &[u8]) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.remove(handle);
    }
}
