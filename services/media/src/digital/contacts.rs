//! The digital role as a client of sessions (`centralita.sessions.v1.ContactService`):
//! creates a chat contact and reads a contact's state and holder. Like the voice role, it
//! signs its own short-lived `channel` tokens, one per tenant, reused until a minute
//! before they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::error::Error;
use centralita_platform::tenant::{contact_name, TenantId};
use centralita_proto::crm::v1 as crm;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1::Channel as PbChannel;
use crm::customer_service_client::CustomerServiceClient;
use pb::contact_service_client::ContactServiceClient;
use tonic::transport::Channel;

use super::access::{ContactView, Phase};

const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const SUBJECT: &str = "service:media-digital";
/// The purpose an SMS keyword grants or withdraws consent for: every message on the channel.
pub const SMS_CONSENT_PURPOSE: &str = "messaging";

#[derive(Debug)]
pub struct Contacts {
    client: ContactServiceClient<Channel>,
    crm: CustomerServiceClient<Channel>,
    signer: Signer,
    tokens: Mutex<HashMap<TenantId, (String, Instant)>>,
}

/// A chat contact to create.
#[derive(Debug, Clone)]
pub struct NewChat {
    pub queue: String,
    /// The visitor's id (a CRM chat identity).
    pub visitor: String,
    pub origin: String,
    pub request_id: String,
    /// What the customer gave in the widget's pre-chat form (a phone number, an email),
    /// normalised: CRM resolves the chat to the customer these identify, so a later SMS or
    /// email from them reaches the same customer.
    pub identities: Vec<crm::Identity>,
}

/// The channels whose customers write from a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByPhone {
    Sms,
    WhatsApp,
}

/// The channels whose customers are a handle on a social network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BySocial {
    Telegram,
    Messenger,
    Instagram,
}

/// An inbound contact a digital channel creates in sessions.
struct Inbound<'a> {
    channel: PbChannel,
    queue: &'a str,
    /// The customer's CRM identity (kind, value).
    identity: (crm::IdentityKind, &'a str),
    /// The identity's network (a social identity's), empty otherwise.
    network: &'a str,
    /// The channel's own address the customer wrote to (attribute key, value).
    attribute: (&'static str, &'a str),
    request_id: &'a str,
    /// Further identities of the same customer.
    extra: &'a [crm::Identity],
}

impl Contacts {
    pub fn new(
        endpoint: &str,
        crm_endpoint: &str,
        tls: Option<&Arc<centralita_platform::tls::Tls>>,
        signer: Signer,
    ) -> Result<Self, Error> {
        let lazy = |endpoint: &str, what: &str| -> Result<Channel, Error> {
            centralita_platform::tls::lazy_channel(endpoint, tls, |e| {
                e.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT)
            })
            .map_err(|e| Error::Internal(format!("{what} endpoint {e}")))
        };
        Ok(Self {
            client: ContactServiceClient::new(lazy(endpoint, "sessions")?),
            crm: CustomerServiceClient::new(lazy(crm_endpoint, "crm")?),
            signer,
            tokens: Mutex::default(),
        })
    }

    /// Records a consent keyword in CRM's consent ledger: the customer of the phone number
    /// (resolved, created if new) granted or withdrew consent to be messaged on `channel`
    /// (SMS; WhatsApp is `social`), purpose [`SMS_CONSENT_PURPOSE`], from `source`.
    pub async fn record_consent(
        &self,
        tenant: &TenantId,
        phone: &str,
        channel: PbChannel,
        source: &str,
        granted: bool,
        evidence: &str,
    ) -> Result<(), Error> {
        let unavailable = |s: tonic::Status| Error::Unavailable(format!("crm ({:?}: {})", s.code(), s.message()));
        let resolve = self.request(
            tenant,
            crm::ResolveCustomerRequest { identities: vec![phone_identity(phone)], ..Default::default() },
        )?;
        let customer = self
            .crm
            .clone()
            .resolve_customer(resolve)
            .await
            .map_err(unavailable)?
            .into_inner()
            .customer
            .ok_or_else(|| Error::Internal("crm resolved no customer".into()))?;
        let record = self.request(
            tenant,
            crm::RecordConsentRequest {
                customer: customer.name,
                consent: Some(crm::ConsentRecord {
                    channel: channel as i32,
                    purpose: SMS_CONSENT_PURPOSE.into(),
                    granted,
                    source: source.into(),
                    evidence: evidence.to_owned(),
                    ..Default::default()
                }),
            },
        )?;
        self.crm.clone().record_consent(record).await.map_err(unavailable)?;
        Ok(())
    }

    /// Whether the customer of `phone` may be messaged on `channel` now: refused (with CRM's
    /// reason) when they are marked do-not-contact or withdrew consent (a keyword); allowed
    /// when consent is granted or none is recorded (they wrote to us first).
    pub async fn may_message(
        &self,
        tenant: &TenantId,
        phone: &str,
        channel: PbChannel,
    ) -> Result<Result<(), String>, Error> {
        let unavailable = |s: tonic::Status| Error::Unavailable(format!("crm ({:?}: {})", s.code(), s.message()));
        let check = self.request(
            tenant,
            crm::CheckContactPermissionRequest {
                identity: Some(phone_identity(phone)),
                channel: channel as i32,
                purpose: SMS_CONSENT_PURPOSE.into(),
                ..Default::default()
            },
        )?;
        let answer = self.crm.clone().check_contact_permission(check).await.map_err(unavailable)?.into_inner();
        let refused =
            answer.reason.starts_with("do not contact") || answer.consent.as_ref().is_some_and(|c| !c.granted);
        Ok(if refused { Err(answer.reason) } else { Ok(()) })
    }

    /// A request carrying the role's `channel` token of `tenant` (sessions, CRM, recording).
    pub(crate) fn request<T>(&self, tenant: &TenantId, message: T) -> Result<tonic::Request<T>, Error> {
        let token = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match tokens.get(tenant).filter(|(_, until)| *until > now + TOKEN_MARGIN) {
                Some((token, _)) => token.clone(),
                None => {
                    let token = self.signer.mint(&TokenRequest {
                        subject: SUBJECT.into(),
                        tenant: Some(tenant.clone()),
                        roles: vec![Role::Channel],
                        agent_id: None,
                        ttl: TOKEN_TTL,
                    })?;
                    tokens.insert(tenant.clone(), (token.clone(), now + TOKEN_TTL));
                    token
                }
            }
        };
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}").parse().map_err(|_| Error::Internal("token is not a header".into()))?;
        request.metadata_mut().insert("authorization", value);
        centralita_platform::telemetry::inject_metadata(request.metadata_mut());
        Ok(request)
    }

    /// Creates the inbound chat contact; returns its id.
    pub async fn create_chat(&self, tenant: &TenantId, chat: &NewChat) -> Result<String, Error> {
        let inbound = Inbound {
            channel: PbChannel::Chat,
            queue: &chat.queue,
            identity: (crm::IdentityKind::Chat, &chat.visitor),
            network: "",
            attribute: ("chat_origin", &chat.origin),
            request_id: &chat.request_id,
            extra: &chat.identities,
        };
        self.create_inbound(tenant, inbound).await
    }

    /// Creates the inbound contact of a customer's number (a CRM phone identity, so the
    /// customer of their calls) that wrote to one of the tenant's numbers on `via`: an SMS
    /// contact, or a WhatsApp one (channel `social`); returns its id.
    pub async fn create_by_phone(
        &self,
        tenant: &TenantId,
        via: ByPhone,
        queue: &str,
        customer: &str,
        number: &str,
        request_id: &str,
    ) -> Result<String, Error> {
        let (channel, attribute) = match via {
            ByPhone::Sms => (PbChannel::Sms, "sms_number"),
            ByPhone::WhatsApp => (PbChannel::Social, "whatsapp_number"),
        };
        let inbound = Inbound {
            channel,
            queue,
            identity: (crm::IdentityKind::Phone, customer),
            network: "",
            attribute: (attribute, number),
            request_id,
            extra: &[],
        };
        self.create_inbound(tenant, inbound).await
    }

    /// Creates the inbound contact of a customer's handle (a CRM social identity of the
    /// network) that wrote to the tenant's account `origin` on `via`; returns its id.
    pub async fn create_by_social(
        &self,
        tenant: &TenantId,
        via: BySocial,
        queue: &str,
        handle: &str,
        origin: &str,
        request_id: &str,
    ) -> Result<String, Error> {
        let (network, attribute) = match via {
            BySocial::Telegram => ("telegram", "telegram_bot"),
            BySocial::Messenger => ("messenger", "messenger_page"),
            BySocial::Instagram => ("instagram", "instagram_account"),
        };
        let inbound = Inbound {
            channel: PbChannel::Social,
            queue,
            identity: (crm::IdentityKind::Social, handle),
            network,
            attribute: (attribute, origin),
            request_id,
            extra: &[],
        };
        self.create_inbound(tenant, inbound).await
    }

    /// Creates the inbound email contact of a customer's address (a CRM email identity)
    /// that wrote to one of the tenant's addresses; returns its id.
    pub async fn create_email(
        &self,
        tenant: &TenantId,
        queue: &str,
        customer: &str,
        address: &str,
        request_id: &str,
    ) -> Result<String, Error> {
        let inbound = Inbound {
            channel: PbChannel::Email,
            queue,
            identity: (crm::IdentityKind::Email, customer),
            network: "",
            attribute: ("email_address", address),
            request_id,
            extra: &[],
        };
        self.create_inbound(tenant, inbound).await
    }

    /// Creates an inbound contact in sessions (the customer's identity and the channel's
    /// address as an attribute); returns its id. `request_id` makes a retry return it again.
    async fn create_inbound(&self, tenant: &TenantId, i: Inbound<'_>) -> Result<String, Error> {
        let contact = pb::Contact {
            channel: i.channel as i32,
            direction: pb::Direction::Inbound as i32,
            queue: i.queue.to_owned(),
            customer_identities: std::iter::once(crm::Identity {
                kind: i.identity.0 as i32,
                value: i.identity.1.to_owned(),
                network: i.network.to_owned(),
            })
            .chain(i.extra.iter().cloned())
            .collect(),
            attributes: [(i.attribute.0.to_owned(), i.attribute.1.to_owned())].into_iter().collect(),
            ..Default::default()
        };
        let request = self.request(
            tenant,
            pb::CreateContactRequest { contact: Some(contact), request_id: i.request_id.to_owned() },
        )?;
        let created = self.client.clone().create_contact(request).await.map_err(refusal)?.into_inner();
        let (_, id) = centralita_platform::tenant::parse_contact_name("name", &created.name)
            .map_err(|_| Error::Internal("sessions answered with a malformed contact name".into()))?;
        Ok(id)
    }

    /// The contact's phase and holder; `None` if sessions does not know it.
    pub async fn view(&self, tenant: &TenantId, contact: &str) -> Result<Option<ContactView>, Error> {
        let request = self.request(tenant, pb::GetContactRequest { name: contact_name(tenant.as_str(), contact) })?;
        match self.client.clone().get_contact(request).await {
            Ok(c) => {
                let c = c.into_inner();
                let state = pb::ContactState::try_from(c.state).unwrap_or(pb::ContactState::Unspecified);
                let open =
                    matches!(state, pb::ContactState::Queued | pb::ContactState::Offered | pb::ContactState::Connected);
                let phase = match state {
                    pb::ContactState::Queued | pb::ContactState::Unspecified => Phase::Queued,
                    pb::ContactState::Offered | pb::ContactState::Connected | pb::ContactState::AfterContactWork => {
                        Phase::Held
                    }
                    pb::ContactState::Closed | pb::ContactState::Abandoned | pb::ContactState::TimedOut => Phase::Ended,
                };
                Ok(Some(ContactView { phase, agent_id: c.agent_id, open }))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(refusal(s)),
        }
    }

    /// Ends the contact (the customer left): sessions abandons it if still queued or offered.
    pub async fn end(&self, tenant: &TenantId, contact: &str) -> Result<(), Error> {
        let request = self.request(
            tenant,
            pb::EndContactRequest { name: contact_name(tenant.as_str(), contact), ..Default::default() },
        )?;
        match self.client.clone().end_contact(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(s) => Err(refusal(s)),
        }
    }
}

/// Sessions' refusal as the platform error a caller of media gets: its own tenant or
/// queue problems are passed on, anything else is "sessions unavailable".
fn refusal(status: tonic::Status) -> Error {
    use tonic::Code;
    match status.code() {
        Code::PermissionDenied => Error::FailedPrecondition("the tenant does not take chats now".into()),
        Code::FailedPrecondition => Error::FailedPrecondition(format!("sessions refused: {}", status.message())),
        Code::InvalidArgument => Error::FailedPrecondition(format!("sessions refused the chat: {}", status.message())),
        Code::ResourceExhausted => Error::ResourceExhausted {
            reason: centralita_platform::error::Reason::TenantRateLimited,
            message: "the tenant is at its limit of contacts".into(),
        },
        code => Error::Unavailable(format!("sessions ({code:?})")),
    }
}

fn phone_identity(phone: &str) -> crm::Identity {
    crm::Identity { kind: crm::IdentityKind::Phone as i32, value: phone.to_owned(), network: String::new() }
}
