//! The CRM as a reader of sessions' contact records (`GetContact`), for what the contacts
//! topic no longer carries: the customer's identities (to resolve the contact's customer)
//! and the agent's wrap-up notes.
//!
//! Why (issue 23, "references, not crypto-shredding"): a Kafka topic cannot be erased per
//! person, and replaying it must not bring an erased customer back. So contact events carry
//! ids and flags only (`ContactEvent.customer_identified`, `has_notes`); the personal values
//! stay in sessions' record, which the customer's erasure clears and which expires after the
//! contact closes. The CRM asks for them while the record exists; after an erasure (or the
//! record's expiry) sessions has nothing left to give, and a replay links nothing.
//!
//! The CRM signs its own short-lived tokens, one per tenant (subject `service:crm`, the
//! tenant, role `supervisor`: the narrowest role sessions lets read a tenant's contacts),
//! with `CENTRALITA_JWT_PRIVATE_KEY_FILE`, and reuses each until a minute before it expires.
//! Sessions enforces the tenant as for any caller: a token of tenant A cannot read B's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::crm::v1 as pb;
use centralita_proto::sessions::v1::{contact_service_client::ContactServiceClient, GetContactRequest};
use tonic::transport::Channel;
use tonic::Code;

const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The subject of the CRM's tokens.
pub const SUBJECT: &str = "service:crm";

/// What sessions' record of a contact holds that the CRM keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactDetails {
    pub identities: Vec<pb::Identity>,
    pub wrap_up_notes: String,
}

/// Reads contact records from sessions.
pub struct ContactReader {
    client: ContactServiceClient<Channel>,
    signer: Signer,
    tokens: Mutex<HashMap<TenantId, (String, Instant)>>,
}

impl std::fmt::Debug for ContactReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactReader").finish_non_exhaustive()
    }
}

/// How the CRM treats a refusal of `GetContact`: `None` when the record is not to be had
/// (gone, erased, or refused for good: nothing to link, the event is applied without it);
/// an error to retry the batch with when sessions may answer later.
pub fn outcome(status: &tonic::Status) -> Result<(), Error> {
    match status.code() {
        Code::NotFound | Code::PermissionDenied | Code::InvalidArgument | Code::FailedPrecondition => Ok(()),
        code => Err(Error::Unavailable(format!("sessions (GetContact: {code:?}: {})", status.message()))),
    }
}

impl ContactReader {
    /// A client of `endpoint` (`http://host:port`), connected on first use.
    pub fn new(
        endpoint: &str,
        tls: Option<&std::sync::Arc<centralita_platform::tls::Tls>>,
        signer: Signer,
    ) -> Result<Self, String> {
        let channel = centralita_platform::tls::lazy_channel(endpoint, tls, |e| {
            e.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT)
        })?;
        Ok(Self { client: ContactServiceClient::new(channel), signer, tokens: Mutex::default() })
    }

    fn token(&self, tenant: &TenantId) -> Result<String, Error> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((token, _)) = tokens.get(tenant).filter(|(_, until)| *until > now + TOKEN_MARGIN) {
            return Ok(token.clone());
        }
        let token = self.signer.mint(&TokenRequest {
            subject: SUBJECT.into(),
            tenant: Some(tenant.clone()),
            roles: vec![Role::Supervisor],
            agent_id: None,
            ttl: TOKEN_TTL,
        })?;
        tokens.insert(tenant.clone(), (token.clone(), now + TOKEN_TTL));
        Ok(token)
    }

    /// The identities and wrap-up notes of contact `name` (`tenants/{tenant}/contacts/{id}`)
    /// of `tenant`, or `None` when sessions has no record to give (see [`outcome`]).
    pub async fn read(&self, tenant: &TenantId, name: &str) -> Result<Option<ContactDetails>, Error> {
        let mut request = tonic::Request::new(GetContactRequest { name: name.to_owned() });
        let value = format!("Bearer {}", self.token(tenant)?)
            .parse()
            .map_err(|_| Error::internal("a token that is not a header value"))?;
        request.metadata_mut().insert("authorization", value);
        centralita_platform::telemetry::inject_metadata(request.metadata_mut());
        match self.client.clone().get_contact(request).await {
            Ok(c) => {
                let c = c.into_inner();
                Ok(Some(ContactDetails { identities: c.customer_identities, wrap_up_notes: c.wrap_up_notes }))
            }
            Err(status) => {
                outcome(&status)?;
                tracing::warn!(code = ?status.code(), contact = %name, "sessions has no record of the contact to give");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_or_refused_records_are_skipped_and_the_rest_retried() {
        for code in [Code::NotFound, Code::PermissionDenied, Code::InvalidArgument, Code::FailedPrecondition] {
            assert!(outcome(&tonic::Status::new(code, "x")).is_ok(), "{code:?}");
        }
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::ResourceExhausted, Code::Unknown]
        {
            let e = outcome(&tonic::Status::new(code, "x")).expect_err("retried");
            assert!(matches!(e, Error::Unavailable(_)), "{code:?}: {e}");
        }
    }
}
