//! `centralita.tenancy.v1.TenantService`: the tenant set this replica acts on, scoped to
//! the caller (its own tenant; every tenant for a BPO admin).

use centralita_proto::tenancy::v1 as pb;
use pb::tenant_service_server::{TenantService, TenantServiceServer};
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::error::Error;
use crate::registry::TenantRegistry;
use crate::tenant::TenantId;

pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The tag of `ListTenants` page tokens (see [`crate::page`]).
const PAGE_TAG: &str = "t1";
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Clone)]
pub struct TenantApi {
    registry: TenantRegistry,
}

impl TenantApi {
    pub fn new(registry: TenantRegistry) -> Self {
        Self { registry }
    }

    pub fn into_server(self) -> TenantServiceServer<Self> {
        TenantServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    #[tracing::instrument(skip_all, fields(tenant))]
    async fn get_tenant(&self, request: Request<pb::GetTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        let caller = caller(&request)?;
        let id = TenantId::from_resource_name(&request.get_ref().name).map_err(|e| Error::invalid("name", e))?;
        tracing::Span::current().record("tenant", id.as_str());
        caller.authorize_tenant(&id)?;
        let tenant = self.registry.get(&id).ok_or_else(|| Error::NotFound(id.resource_name()))?;
        Ok(Response::new(pb::Tenant::from(tenant.as_ref())))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative").into()),
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        // The page token names the last tenant of the previous page.
        let after = match crate::page::untag(PAGE_TAG, &req.page_token)? {
            None => None,
            Some(id) => {
                Some(TenantId::parse(&id).map_err(|_| Error::invalid("page_token", "is not a token from this API"))?)
            }
        };
        let visible: Vec<_> = self
            .registry
            .list()
            .into_iter()
            .filter(|t| caller.is_bpo_admin() || caller.tenant.as_ref() == Some(&t.id))
            .filter(|t| after.as_ref().is_none_or(|a| t.id > *a))
            .collect();
        let more = visible.len() > page_size;
        let page: Vec<_> = visible.into_iter().take(page_size).collect();
        let next_page_token = if more {
            page.last().map(|t| crate::page::tagged(PAGE_TAG, t.id.as_str())).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: page.iter().map(|t| pb::Tenant::from(t.as_ref())).collect(),
            next_page_token,
        }))
    }
}
