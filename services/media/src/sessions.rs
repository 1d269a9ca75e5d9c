//! Media as a client of sessions (`centralita.sessions.v1.ContactService`): creates a call's
//! voice contact, accepts or rejects its offer for the agent whose phone answered or
//! refused, and ends it. Media signs its own short-lived tokens, one per tenant, with the
//! `channel` role and that tenant (the role channel adapters create contacts with), and
//! reuses each until a minute before it expires. To accept or reject an offer it acts for
//! the offered agent: its token then also names that agent (`agent_id`), which is what
//! sessions checks an accept or reject against (the offer must be that agent's); such a
//! token is minted only for the agent an offer event named, for the call this replica
//! holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::tenant::TenantId;
use centralita_platform::tls::{lazy_channel, Tls};
use centralita_proto::crm::v1 as crm;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1::Channel as PbChannel;
use pb::agent_service_client::AgentServiceClient;
use pb::contact_service_client::ContactServiceClient;
use tonic::transport::Channel;

use crate::admission::Admitted;
use crate::error::{ContactRefused, Error};

const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The subject of media's tokens.
const SUBJECT: &str = "service:media";

/// A token's tenant and the agent it acts for, if any.
type TokenKey = (TenantId, Option<String>);

#[derive(Debug)]
pub struct Sessions {
    client: ContactServiceClient<Channel>,
    agents: AgentServiceClient<Channel>,
    signer: Signer,
    /// Tokens by tenant and, for an agent's offer, agent: each with its expiry.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
    /// Recorded on every contact this replica creates (`voice_media`): the pod that holds
    /// the call, which control of the call will have to reach.
    instance: String,
}

impl Sessions {
    /// A client of `endpoint` (`http://host:port`), connected on first use.
    pub fn new(endpoint: &str, tls: Option<&Arc<Tls>>, signer: Signer, instance: String) -> Result<Self, Error> {
        let channel = lazy_channel(endpoint, tls, |e| e.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT))
            .map_err(|e| Error::Sessions(format!("sessions endpoint {e}")))?;
        Ok(Self {
            client: ContactServiceClient::new(channel.clone()),
            agents: AgentServiceClient::new(channel),
            signer,
            tokens: Mutex::default(),
            instance,
        })
    }

    fn token(&self, tenant: &TenantId, agent: Option<&str>) -> Result<String, Error> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let key = (tenant.clone(), agent.map(str::to_owned));
        if let Some((token, until)) = tokens.get(&key).filter(|(_, until)| *until > now + TOKEN_MARGIN) {
            let _ = until;
            return Ok(token.clone());
        }
        let token = self
            .signer
            .mint(&TokenRequest {
                subject: SUBJECT.into(),
                tenant: Some(tenant.clone()),
                roles: vec![Role::Channel],
                agent_id: agent.map(str::to_owned),
                ttl: TOKEN_TTL,
            })
            .map_err(|e| Error::Token(e.to_string()))?;
        tokens.insert(key, (token.clone(), now + TOKEN_TTL));
        Ok(token)
    }

    /// A request to another service carrying media's `channel` token of `tenant` (sessions, and
    /// recording's IngestCall).
    pub(crate) fn request<T>(&self, tenant: &TenantId, message: T) -> Result<tonic::Request<T>, Error> {
        self.request_as(tenant, None, message)
    }

    fn request_as<T>(&self, tenant: &TenantId, agent: Option<&str>, message: T) -> Result<tonic::Request<T>, Error> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {}", self.token(tenant, agent)?)
            .parse()
            .map_err(|_| Error::Token("not a header value".into()))?;
        request.metadata_mut().insert("authorization", value);
        centralita_platform::telemetry::inject_metadata(request.metadata_mut());
        Ok(request)
    }

    /// Creates the call's inbound voice contact in its queue, the caller's number as its
    /// identity. `request_id` makes a retry return the same contact. Returns its name.
    pub async fn create_voice_contact(&self, call: &Admitted, request_id: &str) -> Result<String, Error> {
        let identities = call
            .caller
            .iter()
            .map(|n| crm::Identity { kind: crm::IdentityKind::Phone as i32, value: n.clone(), network: String::new() })
            .collect();
        let attributes = [
            ("voice_number", call.called.to_string()),
            ("voice_trunk", call.trunk.clone()),
            ("voice_media", self.instance.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let contact = pb::Contact {
            channel: PbChannel::Voice as i32,
            direction: pb::Direction::Inbound as i32,
            queue: call.queue.clone(),
            customer_identities: identities,
            attributes,
            ..Default::default()
        };
        let request = self.request(
            &call.tenant.id,
            pb::CreateContactRequest { contact: Some(contact), request_id: request_id.to_owned() },
        )?;
        let created = self.client.clone().create_contact(request).await.map_err(refusal)?;
        Ok(created.into_inner().name)
    }

    /// Tells sessions that `agent`'s phone is registered with `tenant` for `expires` seconds
    /// from now (0: unregistered), so routing offers the tenant's calls to the agent only
    /// while a phone can ring. `Ok(false)`: sessions knows no such agent of the tenant's
    /// queues (nothing to retry).
    pub async fn report_phone(&self, tenant: &TenantId, agent: &str, expires: u32) -> Result<bool, Error> {
        let message = pb::ReportPhoneRequest {
            name: format!("agents/{agent}"),
            expires: Some(prost_types::Duration { seconds: i64::from(expires), nanos: 0 }),
        };
        let request = self.request(tenant, message)?;
        match self.agents.clone().report_phone(request).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Sessions(format!("{:?}: {}", s.code(), s.message()))),
        }
    }

    /// Accepts offer `offer_id` of contact `name` for `agent`, whose phone answered.
    pub async fn accept_contact(
        &self,
        tenant: &TenantId,
        name: &str,
        agent: &str,
        offer_id: &str,
    ) -> Result<(), Error> {
        let message = pb::AcceptContactRequest { name: name.to_owned(), offer_id: offer_id.to_owned() };
        let request = self.request_as(tenant, Some(agent), message)?;
        self.client.clone().accept_contact(request).await.map_err(refusal)?;
        Ok(())
    }

    /// Rejects offer `offer_id` of contact `name` for `agent`, whose phone refused it: the
    /// contact goes back to its queue for the next agent.
    pub async fn reject_contact(
        &self,
        tenant: &TenantId,
        name: &str,
        agent: &str,
        offer_id: &str,
    ) -> Result<(), Error> {
        let message = pb::RejectContactRequest { name: name.to_owned(), offer_id: offer_id.to_owned() };
        let request = self.request_as(tenant, Some(agent), message)?;
        self.client.clone().reject_contact(request).await.map_err(refusal)?;
        Ok(())
    }

    /// Puts contact `name` on hold (`on`) or takes it off, for `agent`, whose phone asked
    /// for it (a re-INVITE): the same HoldContact / ResumeContact the agent's desktop calls,
    /// checked by sessions against the contact's holder.
    pub async fn hold_contact(&self, tenant: &TenantId, name: &str, agent: &str, on: bool) -> Result<(), Error> {
        let mut client = self.client.clone();
        if on {
            let request = self.request_as(tenant, Some(agent), pb::HoldContactRequest { name: name.to_owned() })?;
            client.hold_contact(request).await.map_err(refusal)?;
        } else {
            let request = self.request_as(tenant, Some(agent), pb::ResumeContactRequest { name: name.to_owned() })?;
            client.resume_contact(request).await.map_err(refusal)?;
        }
        Ok(())
    }

    /// Transfers contact `name` for its holder `agent` (a REFER from the agent's phone) to
    /// a queue of the tenant or an agent: the same TransferContact the desktop calls.
    pub async fn transfer_contact(
        &self,
        tenant: &TenantId,
        name: &str,
        agent: &str,
        to: &crate::in_call::ReferTarget,
    ) -> Result<(), Error> {
        use pb::transfer_contact_request::Target;
        let target = match to {
            crate::in_call::ReferTarget::Queue(q) => Target::Queue(q.clone()),
            crate::in_call::ReferTarget::Agent(a) => Target::AgentId(a.clone()),
        };
        let message = pb::TransferContactRequest { name: name.to_owned(), target: Some(target) };
        let request = self.request_as(tenant, Some(agent), message)?;
        self.client.clone().transfer_contact(request).await.map_err(refusal)?;
        Ok(())
    }

    /// Ends the contact `name` because of `cause` (kept on the contact, up to 64 printable
    /// ASCII characters): sessions marks a contact still queued or offered abandoned.
    pub async fn end_contact(&self, tenant: &TenantId, name: &str, cause: &str) -> Result<(), Error> {
        let request = self.request(tenant, pb::EndContactRequest { name: name.to_owned(), cause: cause.to_owned() })?;
        self.client.clone().end_contact(request).await.map_err(refusal)?;
        Ok(())
    }

    /// Where contact `name` stands in its queue and the wait it can expect (queue
    /// announcements, [`crate::announce`]).
    pub async fn queue_position(&self, tenant: &TenantId, name: &str) -> Result<pb::QueuePosition, Error> {
        let request = self.request(tenant, pb::GetQueuePositionRequest { name: name.to_owned() })?;
        Ok(self.client.clone().get_queue_position(request).await.map_err(refusal)?.into_inner())
    }

    /// Stops the monitoring of contact `name` by `supervisor`, whose phone hung up or could
    /// not be reached (media acts for it, as for an agent's offer).
    pub async fn stop_monitoring(&self, tenant: &TenantId, name: &str, supervisor: &str) -> Result<(), Error> {
        let message = pb::StopMonitoringRequest { name: name.to_owned() };
        let request = self.request_as(tenant, Some(supervisor), message)?;
        self.client.clone().stop_monitoring(request).await.map_err(refusal)?;
        Ok(())
    }

    /// Completes the consult on contact `name` for its holder `agent` (the consulting agent,
    /// whose phone left a conference or a consult: the consulted agent takes the call over).
    pub async fn complete_consult(
        &self,
        tenant: &TenantId,
        name: &str,
        agent: &str,
        outcome: pb::complete_consult_request::Outcome,
    ) -> Result<(), Error> {
        let message = pb::CompleteConsultRequest { name: name.to_owned(), outcome: outcome as i32 };
        let request = self.request_as(tenant, Some(agent), message)?;
        self.client.clone().complete_consult(request).await.map_err(refusal)?;
        Ok(())
    }
}

/// Sessions' answer, read by its gRPC code: media's token is always of the tenant and
/// role sessions wants, so a permission refusal means the tenant itself is refused.
fn refusal(status: tonic::Status) -> Error {
    use tonic::Code;
    match status.code() {
        Code::PermissionDenied => Error::ContactRefused(ContactRefused::TenantSuspended),
        Code::NotFound => Error::NoContact,
        Code::FailedPrecondition => Error::ContactRefused(ContactRefused::Closed),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
            Error::ContactRefused(ContactRefused::Unavailable)
        }
        code => Error::Sessions(format!("{code:?}: {}", status.message())),
    }
}
