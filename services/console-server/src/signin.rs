//! The development sign-in: the page names a tenant, a role and (for an agent) the agent id
//! — or the BPO admin role, which names no tenant; the server mints a token with the
//! development key. Every field is validated here; the
//! services still check the token's tenant on every call, so a token of tenant A reaches
//! nothing of tenant B.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use centralita_platform::auth::{Role, TokenRequest};
use centralita_platform::tenant::TenantId;
use serde::{Deserialize, Serialize};

use crate::metrics::SignIn;
use crate::AppState;

/// What the page sends.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignInRequest {
    /// Empty for a BPO admin (every tenant), required otherwise.
    #[serde(default)]
    pub tenant: String,
    /// `agent`, `supervisor` or `bpo_admin`.
    pub role: String,
    /// Required for an agent (`agents/{id}` in sessions), refused otherwise.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// What the page gets.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInResponse {
    pub token: String,
    pub tenant: String,
    pub role: String,
    pub agent_id: Option<String>,
    pub subject: String,
    /// Seconds since the epoch.
    pub expire_time: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("development sign-in is disabled")]
    Disabled,
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("cannot mint a token")]
    Internal,
}

impl IntoResponse for SignInError {
    fn into_response(self) -> Response {
        let (status, field) = match &self {
            SignInError::Disabled => (StatusCode::NOT_FOUND, None),
            SignInError::Invalid { field, .. } => (StatusCode::BAD_REQUEST, Some(*field)),
            SignInError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        (status, Json(serde_json::json!({ "error": self.to_string(), "field": field }))).into_response()
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> SignInError {
    SignInError::Invalid { field, message: message.into() }
}

/// An agent id as sessions accepts it in `agents/{id}`: 1-64 of a-z, 0-9, `-`, `_`, `.`,
/// starting with a letter or digit.
fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Checks a request and turns it into what to mint.
pub fn token_request(req: &SignInRequest, ttl: std::time::Duration) -> Result<TokenRequest, SignInError> {
    let role = match req.role.as_str() {
        "agent" => Role::Agent,
        "supervisor" => Role::Supervisor,
        "bpo_admin" => Role::BpoAdmin,
        other => return Err(invalid("role", format!("`{other}` is not agent, supervisor or bpo_admin"))),
    };
    let tenant = match role {
        Role::BpoAdmin if req.tenant.is_empty() => None,
        Role::BpoAdmin => return Err(invalid("tenant", "a BPO admin signs in for every tenant: leave it empty")),
        _ => Some(TenantId::parse(&req.tenant).map_err(|m| invalid("tenant", m))?),
    };
    let agent_id = match (role, req.agent_id.as_deref()) {
        (Role::Agent, Some(id)) if valid_agent_id(id) => Some(id.to_owned()),
        (Role::Agent, Some(_)) => {
            return Err(invalid("agentId", "must be 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit"))
        }
        (Role::Agent, None) => return Err(invalid("agentId", "an agent signs in with its agent id")),
        (_, Some(_)) => return Err(invalid("agentId", "only an agent has an agent id")),
        (_, None) => None,
    };
    let subject = match (&agent_id, &tenant) {
        (Some(id), _) => id.clone(),
        (None, Some(t)) => format!("{}@{}", role.as_str(), t.as_str()),
        (None, None) => role.as_str().to_owned(),
    };
    Ok(TokenRequest { subject, tenant, roles: vec![role], agent_id, ttl })
}

pub async fn handle(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, SignInError> {
    let outcome = mint(&app, &body);
    app.metrics.dev_sign_in(match &outcome {
        Ok(_) => SignIn::Minted,
        Err(SignInError::Disabled) => SignIn::Disabled,
        Err(_) => SignIn::Refused,
    });
    outcome
}

fn mint(app: &AppState, body: &[u8]) -> Result<Response, SignInError> {
    let p = &app.prepared;
    let signer = p.signer.as_ref().ok_or(SignInError::Disabled)?;
    let req: SignInRequest = serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))?;
    let token_req = token_request(&req, p.ttl)?;
    let now = chrono::Utc::now().timestamp();
    let token = signer.mint_at(&token_req, now).map_err(|e| {
        tracing::error!(error = %e, "development sign-in could not mint");
        SignInError::Internal
    })?;
    tracing::info!(tenant = %req.tenant, role = %req.role, subject = %token_req.subject, "development sign-in");
    let body = SignInResponse {
        token,
        tenant: req.tenant,
        role: req.role,
        agent_id: token_req.agent_id,
        subject: token_req.subject,
        expire_time: now + token_req.ttl.as_secs() as i64,
    };
    Ok(([(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(tenant: &str, role: &str, agent: Option<&str>) -> SignInRequest {
        SignInRequest { tenant: tenant.into(), role: role.into(), agent_id: agent.map(Into::into) }
    }

    fn field(r: Result<TokenRequest, SignInError>) -> &'static str {
        match r {
            Err(SignInError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn agents_and_supervisors_of_one_tenant_only() {
        let ttl = Duration::from_secs(60);
        let a = token_request(&req("acme", "agent", Some("ana-1")), ttl).unwrap();
        assert_eq!(
            (a.tenant.unwrap().as_str(), a.roles, a.agent_id.as_deref()),
            ("acme", vec![Role::Agent], Some("ana-1"))
        );
        let s = token_request(&req("acme", "supervisor", None), ttl).unwrap();
        assert_eq!((s.subject.as_str(), s.agent_id), ("supervisor@acme", None));

        assert_eq!(field(token_request(&req("ACME", "agent", Some("a")), ttl)), "tenant");
        assert_eq!(field(token_request(&req("", "supervisor", None), ttl)), "tenant");
        assert_eq!(field(token_request(&req("acme/../x", "supervisor", None), ttl)), "tenant");
        for role in ["tenant_admin", "channel", "", "BPO_ADMIN"] {
            assert_eq!(field(token_request(&req("acme", role, None), ttl)), "role", "{role}");
        }
        // A BPO admin names no tenant and no agent id.
        let b = token_request(&req("", "bpo_admin", None), ttl).unwrap();
        assert_eq!(
            (b.subject.as_str(), b.tenant, b.roles, b.agent_id),
            ("bpo_admin", None, vec![Role::BpoAdmin], None)
        );
        assert_eq!(field(token_request(&req("acme", "bpo_admin", None), ttl)), "tenant");
        assert_eq!(field(token_request(&req("", "bpo_admin", Some("ana")), ttl)), "agentId");
        assert_eq!(field(token_request(&req("", "supervisor", None), ttl)), "tenant");
        assert_eq!(field(token_request(&req("acme", "agent", None), ttl)), "agentId");
        assert_eq!(field(token_request(&req("acme", "agent", Some("Ana Gil")), ttl)), "agentId");
        assert_eq!(field(token_request(&req("acme", "agent", Some(&"a".repeat(65))), ttl)), "agentId");
        assert_eq!(field(token_request(&req("acme", "supervisor", Some("ana")), ttl)), "agentId");
    }
}
