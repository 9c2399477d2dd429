//! Quotas per role (`limits.roles` in meshgate.yaml): how many statements a role runs at
//! once and per minute, with how much memory, for how long, and how large an answer.
//!
//! A role's quota is shared by everyone who uses that role on this replica (a resource
//! group, as in Trino): a dashboard role cannot starve the analysts. The global limits
//! still bound everything. A caller whose roles all have a quota is charged to the most
//! generous of them; a caller holding a role without one has only the global limits (the
//! most permissive grant wins, as for access). Limits are per replica: N replicas admit
//! N times a role's quota.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::common::{Result, resources_datafusion_err};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use meshgate_policy::Principal;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ErrorKind, QueryError};
use crate::config::{Limits, RoleLimits};

/// Every role's quota and what it has in use.
pub(crate) struct Quotas {
    roles: HashMap<String, Arc<RoleQuota>>,
}

pub(crate) struct RoleQuota {
    pub(crate) role: String,
    pub(crate) limits: RoleLimits,
    slots: Option<Arc<Semaphore>>,
    /// When each statement of the last minute was admitted.
    admitted: Mutex<VecDeque<Instant>>,
    /// The engine's runtime with the role's memory capped, for its sessions.
    pub(crate) runtime: Option<Arc<RuntimeEnv>>,
}

/// What a statement holds while it runs: its slots (given back when it ends) and the
/// bounds its stream enforces.
pub struct Slot {
    _global: OwnedSemaphorePermit,
    _role: Option<OwnedSemaphorePermit>,
    pub(crate) timeout: Duration,
    pub(crate) max_rows: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    /// The role charged, for the messages.
    pub(crate) role: Option<String>,
}

impl Quotas {
    pub(crate) fn new(limits: &Limits, runtime: &Arc<RuntimeEnv>) -> Result<Quotas> {
        let mut roles = HashMap::new();
        for (role, l) in &limits.roles {
            let runtime = match l.memory_limit_mb {
                None => None,
                Some(mb) => Some(
                    RuntimeEnvBuilder::from_runtime_env(runtime)
                        .with_memory_pool(Arc::new(CappedPool {
                            role: role.clone(),
                            cap: mb << 20,
                            used: Mutex::new(0),
                            inner: Arc::clone(&runtime.memory_pool),
                        }))
                        .build_arc()?,
                ),
            };
            roles.insert(
                role.clone(),
                Arc::new(RoleQuota {
                    role: role.clone(),
                    slots: l
                        .max_concurrent_queries
                        .map(|n| Arc::new(Semaphore::new(n.max(1)))),
                    admitted: Mutex::new(VecDeque::new()),
                    runtime,
                    limits: l.clone(),
                }),
            );
        }
        Ok(Quotas { roles })
    }

    /// The quota `principal` is charged to, if any (see the module's doc).
    pub(crate) fn of(&self, principal: &Principal) -> Option<&Arc<RoleQuota>> {
        let quotas: Option<Vec<&Arc<RoleQuota>>> =
            principal.roles.iter().map(|r| self.roles.get(r)).collect();
        quotas?
            .into_iter()
            .max_by_key(|q| std::cmp::Reverse(q.limits.strictness()))
    }

    /// Admits a statement of `principal`: the role's rate, then a slot of the role's,
    /// then one of the gateway's, each waited for at most `queue`. RESOURCE_EXHAUSTED,
    /// with when to retry, when one is not to be had.
    pub(crate) async fn admit(
        &self,
        principal: &Principal,
        global: &Arc<Semaphore>,
        limits: &Limits,
    ) -> std::result::Result<Slot, QueryError> {
        let queue = limits.queue_timeout();
        let quota = self.of(principal);
        if let Some(q) = quota {
            q.count_start()?;
        }
        let role = match quota.and_then(|q| q.slots.as_ref().map(|s| (q, s))) {
            None => None,
            Some((q, slots)) => {
                match tokio::time::timeout(queue, Arc::clone(slots).acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        return Err(QueryError::new(
                            ErrorKind::ResourceExhausted,
                            format!(
                                "role {}: {} queries at once on this replica, and none \
                                 finished within {}s; retry shortly",
                                q.role,
                                q.limits.max_concurrent_queries.unwrap_or_default(),
                                queue.as_secs()
                            ),
                        )
                        .with_retry_after(1));
                    }
                }
            }
        };
        let global = match tokio::time::timeout(queue, Arc::clone(global).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(QueryError::new(
                    ErrorKind::ResourceExhausted,
                    format!(
                        "too many concurrent queries: no slot freed up within {}s",
                        queue.as_secs()
                    ),
                )
                .with_retry_after(1));
            }
        };
        let l = quota.map(|q| &q.limits);
        Ok(Slot {
            _global: global,
            _role: role,
            timeout: l
                .and_then(|l| l.query_timeout_secs)
                .map_or_else(|| limits.query_timeout(), Duration::from_secs),
            max_rows: l.and_then(|l| l.max_result_rows),
            max_bytes: l.and_then(|l| l.max_result_mb).map(|mb| mb << 20),
            role: quota.map(|q| q.role.clone()),
        })
    }
}

impl RoleQuota {
    /// Counts a statement against the role's rate, or says when the oldest of the last
    /// minute's leaves the window.
    fn count_start(&self) -> std::result::Result<(), QueryError> {
        let Some(per_minute) = self.limits.queries_per_minute else {
            return Ok(());
        };
        let window = Duration::from_secs(60);
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        while admitted.front().is_some_and(|t| t.elapsed() >= window) {
            admitted.pop_front();
        }
        if admitted.len() >= per_minute as usize {
            let oldest = admitted.front().copied().unwrap_or_else(Instant::now);
            let retry =
                (window.saturating_sub(oldest.elapsed()).as_secs_f64().ceil() as u64).max(1);
            return Err(QueryError::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "role {}: {per_minute} queries per minute on this replica; retry in {retry} s",
                    self.role
                ),
            )
            .with_retry_after(retry));
        }
        admitted.push_back(Instant::now());
        Ok(())
    }
}

impl RoleLimits {
    /// Orders quotas from the most generous (smallest) up: an unset bound is no bound.
    fn strictness(&self) -> [u64; 6] {
        let inv = |v: Option<u64>| v.map_or(0, |v| u64::MAX - v);
        [
            inv(self.max_concurrent_queries.map(|v| v as u64)),
            inv(self.queries_per_minute.map(u64::from)),
            inv(self.memory_limit_mb.map(|v| v as u64)),
            inv(self.query_timeout_secs),
            inv(self.max_result_rows),
            inv(self.max_result_mb),
        ]
    }
}

/// The gateway's pool with a role's share capped: what the role's running statements
/// reserve together stays under `cap`, and counts against the gateway's limit too.
struct CappedPool {
    role: String,
    cap: usize,
    used: Mutex<usize>,
    inner: Arc<dyn MemoryPool>,
}

impl fmt::Debug for CappedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CappedPool")
            .field("role", &self.role)
            .field("cap", &self.cap)
            .finish()
    }
}

impl fmt::Display for CappedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "role {}'s memory ({} MB) of {}",
            self.role,
            self.cap >> 20,
            self.inner
        )
    }
}

impl MemoryPool for CappedPool {
    fn name(&self) -> &str {
        "meshgate_role"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) += additional;
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if *used + additional > self.cap {
            return Err(resources_datafusion_err!(
                "role {}: its queries may hold {} MB of memory on this replica; this one \
                 needs more (retry when others finish, or aggregate or filter more)",
                self.role,
                self.cap >> 20
            ));
        }
        self.inner.try_grow(reservation, additional)?;
        *used += additional;
        Ok(())
    }

    fn reserved(&self) -> usize {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};

    use super::CappedPool;

    #[test]
    fn a_roles_share_is_capped_and_counts_against_the_gateways_pool() {
        let gateway: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(3 << 20));
        let role: Arc<dyn MemoryPool> = Arc::new(CappedPool {
            role: "marketing".into(),
            cap: 2 << 20,
            used: Default::default(),
            inner: Arc::clone(&gateway),
        });
        let a = MemoryConsumer::new("a").register(&role);
        let b = MemoryConsumer::new("b").register(&role);
        a.try_grow(1 << 20).unwrap();
        let e = b.try_grow(3 << 19).unwrap_err().to_string();
        assert!(
            e.contains("role marketing: its queries may hold 2 MB"),
            "{e}"
        );
        assert_eq!((role.reserved(), gateway.reserved()), (1 << 20, 1 << 20));
        b.try_grow(1 << 20).unwrap();
        // Freed memory is the role's again.
        a.free();
        assert_eq!((role.reserved(), gateway.reserved()), (1 << 20, 1 << 20));
        a.try_grow(1 << 20).unwrap();
        // The gateway's own limit still binds under the role's.
        let other = MemoryConsumer::new("other").register(&gateway);
        drop(other);
        let c = MemoryConsumer::new("c").register(&gateway);
        assert!(c.try_grow(2 << 20).is_err());
    }
}
