//! Agent pools: which router books a tenant's contacts and an agent's capacity. A tenant's
//! pool is its manifest's `agentPool` when sessions first routed for it, pinned in Redis
//! for good; an agent serves the tenants of one pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use centralita_platform::error::Error;
use centralita_platform::queue::DEFAULT_AGENT_POOL;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::TenantId;
use centralita_routing_contract::QueueRef;

use crate::store::Store;

/// Tenants' pinned agent pools, as read from Redis (they never change once pinned).
#[derive(Debug, Clone)]
pub struct Pools {
    store: Store,
    registry: TenantRegistry,
    pinned: Arc<Mutex<HashMap<String, String>>>,
}

impl Pools {
    pub fn new(store: Store, registry: TenantRegistry) -> Self {
        Self { store, registry, pinned: Arc::default() }
    }

    /// The agent pool of `tenant`. A later change of the manifest is not followed (it is
    /// logged): the tenant's queued contacts and booked agents are in the first pool's
    /// router, and moving them while both routers run could book an agent twice.
    pub async fn of_tenant(&self, tenant: &TenantId) -> Result<String, Error> {
        let known =
            self.registry.get(tenant).ok_or_else(|| Error::NotFound(format!("tenant {tenant} is not known here")))?;
        if let Some(pinned) = self.pinned.lock().unwrap_or_else(|p| p.into_inner()).get(tenant.as_str()) {
            return Ok(pinned.clone());
        }
        let wanted = match known.routing.agent_pool.as_str() {
            "" => DEFAULT_AGENT_POOL.to_owned(),
            p => p.to_owned(),
        };
        // Gone between the two calls: not cached, pinned again next time.
        let Some(pinned) = self.store.pin_pool(tenant, &wanted).await? else { return Ok(wanted) };
        if pinned != wanted {
            tracing::warn!(%tenant, pinned = %pinned, manifest = %wanted, "a tenant's agentPool cannot change once it is in use; the change is ignored");
        }
        self.pinned.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_string(), pinned.clone());
        Ok(pinned)
    }

    /// The agent pool of an agent serving `queues`: the one pool of their tenants. Queues
    /// of tenants in different pools, or of tenants not known here, are refused (`field`
    /// names them), since two routers would each book the agent; so is a queue its tenant
    /// does not have (no contact would ever reach the agent through it).
    pub async fn of_queues(&self, queues: &[QueueRef], field: &str) -> Result<String, Error> {
        let mut pools: BTreeMap<String, &str> = BTreeMap::new();
        for q in queues {
            let tenant = TenantId::parse(&q.tenant).map_err(|e| Error::invalid(field, e))?;
            if let Some(known) = self.registry.get(&tenant) {
                if !known.routing.queues.contains_key(&q.queue) {
                    return Err(Error::invalid(field, format!("tenant {tenant} has no queue `{}`", q.queue)));
                }
            }
            let pool = match self.of_tenant(&tenant).await {
                Ok(p) => p,
                Err(Error::NotFound(why)) => return Err(Error::invalid(field, why)),
                Err(e) => return Err(e),
            };
            pools.entry(pool).or_insert(&q.tenant);
        }
        if pools.len() > 1 {
            let list: Vec<String> = pools.iter().map(|(p, t)| format!("{p} (tenant {t})")).collect();
            return Err(Error::invalid(
                field,
                format!(
                    "the queues are in agent pools {}; an agent serves the tenants of one pool",
                    list.join(" and ")
                ),
            ));
        }
        Ok(pools.into_keys().next().unwrap_or_else(|| DEFAULT_AGENT_POOL.to_owned()))
    }
}
