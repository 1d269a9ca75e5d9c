//! The days whose usage record was published, per tenant.

use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use deadpool_postgres::Pool;

use super::tenant_query;

/// Which of `days` have their usage record published already.
pub async fn published_days(
    pool: &Pool,
    tenant: &TenantId,
    days: &[chrono::NaiveDate],
) -> Result<Vec<chrono::NaiveDate>, Error> {
    let sql = "SELECT day FROM usage_published WHERE tenant = $1 AND day = ANY ($2)";
    let rows = tenant_query(pool, tenant, sql, &[&tenant.as_str(), &days]).await?;
    rows.iter().map(|r| r.try_get(0).map_err(Error::from)).collect()
}

pub async fn mark_published(pool: &Pool, tenant: &TenantId, day: chrono::NaiveDate) -> Result<(), Error> {
    let sql = "INSERT INTO usage_published (tenant, day) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    tenant_query(pool, tenant, sql, &[&tenant.as_str(), &day]).await?;
    Ok(())
}
