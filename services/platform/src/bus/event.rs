//! The event and its envelope (`centralita.events.v1.Envelope`), and the payload types
//! that travel in it.

use bytes::Bytes;
use centralita_proto::events::v1 as pb;
use chrono::{DateTime, Utc};
use prost::Message as _;
use uuid::Uuid;

use crate::error::Error;
use crate::tenant::{from_timestamp, timestamp, TenantId};

/// A protobuf message that travels as an event payload.
pub trait EventPayload: prost::Message + Default {
    /// Fully qualified protobuf name, written into the envelope's `type`.
    const TYPE: &'static str;
}

impl EventPayload for centralita_proto::tenancy::v1::Tenant {
    const TYPE: &'static str = "centralita.tenancy.v1.Tenant";
}

impl EventPayload for centralita_proto::routing::v1::RoutingInput {
    const TYPE: &'static str = "centralita.routing.v1.RoutingInput";
}

impl EventPayload for centralita_proto::routing::v1::RoutingDecision {
    const TYPE: &'static str = "centralita.routing.v1.RoutingDecision";
}

impl EventPayload for centralita_proto::sessions::v1::ContactEvent {
    const TYPE: &'static str = "centralita.sessions.v1.ContactEvent";
}

impl EventPayload for centralita_proto::reporting::v1::UsageRecord {
    const TYPE: &'static str = "centralita.reporting.v1.UsageRecord";
}

impl EventPayload for centralita_proto::crm::v1::CustomerErased {
    const TYPE: &'static str = "centralita.crm.v1.CustomerErased";
}

impl EventPayload for centralita_proto::crm::v1::StoreErased {
    const TYPE: &'static str = "centralita.crm.v1.StoreErased";
}

impl EventPayload for centralita_proto::sessions::v1::AgentEvent {
    const TYPE: &'static str = "centralita.sessions.v1.AgentEvent";
}

impl EventPayload for centralita_proto::media::v1::ConversationEvent {
    const TYPE: &'static str = "centralita.media.v1.ConversationEvent";
}

impl EventPayload for centralita_proto::media::v1::LegEvent {
    const TYPE: &'static str = "centralita.media.v1.LegEvent";
}

/// One event in its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub tenant: TenantId,
    pub occurred_at: DateTime<Utc>,
    pub type_name: String,
    pub payload: Bytes,
}

/// Largest envelope accepted from the bus.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

impl Event {
    pub fn new<P: EventPayload>(tenant: TenantId, payload: &P) -> Self {
        Self::at(tenant, payload, Utc::now())
    }

    pub fn at<P: EventPayload>(tenant: TenantId, payload: &P, occurred_at: DateTime<Utc>) -> Self {
        Event {
            id: Uuid::now_v7(),
            tenant,
            occurred_at,
            type_name: P::TYPE.to_owned(),
            payload: Bytes::from(payload.encode_to_vec()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        pb::Envelope {
            event_id: self.id.to_string(),
            tenant_id: self.tenant.to_string(),
            occurred_at: Some(timestamp(self.occurred_at)),
            r#type: self.type_name.clone(),
            payload: self.payload.to_vec(),
        }
        .encode_to_vec()
    }

    /// Decodes and validates an envelope read from the bus.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(Error::invalid("envelope", format!("is {} bytes, more than {MAX_EVENT_BYTES}", bytes.len())));
        }
        let e = pb::Envelope::decode(bytes).map_err(|e| Error::invalid("envelope", e.to_string()))?;
        let id = Uuid::parse_str(&e.event_id).map_err(|_| Error::invalid("event_id", "is not a UUID"))?;
        let tenant = TenantId::parse(&e.tenant_id).map_err(|m| Error::invalid("tenant_id", m))?;
        let occurred_at = e
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| Error::invalid("occurred_at", "is missing or out of range"))?;
        if e.r#type.is_empty() {
            return Err(Error::invalid("type", "is empty"));
        }
        Ok(Event { id, tenant, occurred_at, type_name: e.r#type, payload: Bytes::from(e.payload) })
    }

    /// The payload as `P`, refusing an event of another type.
    pub fn payload<P: EventPayload>(&self) -> Result<P, Error> {
        if self.type_name != P::TYPE {
            return Err(Error::invalid("type", format!("is `{}`, expected `{}`", self.type_name, P::TYPE)));
        }
        P::decode(self.payload.as_ref()).map_err(|e| Error::invalid("payload", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralita_proto::tenancy::v1 as tpb;

    #[test]
    fn envelope_round_trip_and_validation() {
        let t = tpb::Tenant { name: "tenants/acme".into(), ..Default::default() };
        let e = Event::new(TenantId::parse("acme").expect("id"), &t);
        let back = Event::decode(&e.encode()).expect("decode");
        assert_eq!(back, e);
        assert_eq!(back.payload::<tpb::Tenant>().expect("payload").name, "tenants/acme");
        assert!(Event::decode(b"\xff\xff garbage").is_err());
        let mut bad = pb::Envelope::decode(e.encode().as_slice()).expect("decode");
        bad.tenant_id = "Not A Tenant".into();
        assert!(Event::decode(&bad.encode_to_vec()).is_err());
    }
}
