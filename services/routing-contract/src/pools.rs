//! Agent pools on the routing logs: the record key that sends a pool to its router, and the
//! envelope tenant of records that belong to a pool rather than to one tenant.

use centralita_platform::queue::DEFAULT_AGENT_POOL;
use centralita_platform::tenant::TenantId;

/// Key of the routing log records of an agent pool (`spec.routing.agentPool` of the
/// tenants in it; empty is the default pool). Every input about a contact goes to the pool
/// it was created in, every input about an agent to the pool it signed in to, so one
/// router sees all of a pool's bookings.
pub fn pool_key(pool: &str) -> String {
    format!("pool-{}", if pool.is_empty() { DEFAULT_AGENT_POOL } else { pool })
}

/// The tenant on the envelope of BPO-wide events (ticks, agent events): an agent may
/// serve several tenants of its pool, so these records belong to none of them.
pub fn pool_tenant() -> TenantId {
    TenantId::bpo()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_pool_is_the_default_pool() {
        assert_eq!(pool_key(""), pool_key(DEFAULT_AGENT_POOL));
        assert_eq!(pool_key("north"), "pool-north");
    }
}
