//! Conversions between the conversation's types ([`super::model`]) and the wire
//! (`centralita.media.v1`), in one place.

use centralita_platform::tenant::{contact_name, timestamp};
use centralita_proto::media::v1 as pb;

use super::model::{AttachmentMeta, Kind, Message, Sender, Status};

pub fn sender(s: &Sender) -> pb::SenderKind {
    match s {
        Sender::Customer => pb::SenderKind::Customer,
        Sender::Agent(_) => pb::SenderKind::Agent,
        Sender::System => pb::SenderKind::System,
    }
}

pub fn status(s: Status) -> pb::DeliveryStatus {
    match s {
        Status::Sent => pb::DeliveryStatus::Sent,
        Status::Delivered => pb::DeliveryStatus::Delivered,
        Status::Read => pb::DeliveryStatus::Read,
        Status::Failed => pb::DeliveryStatus::Failed,
    }
}

pub fn kind(k: Kind) -> pb::MessageKind {
    match k {
        Kind::Text => pb::MessageKind::Text,
        Kind::Notice => pb::MessageKind::Notice,
        Kind::Attachment => pb::MessageKind::Attachment,
    }
}

/// `tenants/{tenant}/contacts/{id}/attachments/{attachment}`.
pub fn attachment_name(tenant: &str, contact: &str, id: &str) -> String {
    format!("{}/attachments/{id}", contact_name(tenant, contact))
}

pub fn attachment(tenant: &str, contact: &str, a: &AttachmentMeta) -> pb::Attachment {
    pb::Attachment {
        name: attachment_name(tenant, contact, &a.id),
        file_name: a.name.clone(),
        content_type: a.content_type.clone(),
        size_bytes: a.size,
        sha256: a.sha256.clone(),
    }
}

/// `tenants/{tenant}/contacts/{id}/messages/{sequence}`.
pub fn message_name(tenant: &str, contact: &str, sequence: i64) -> String {
    format!("{}/messages/{sequence}", contact_name(tenant, contact))
}

pub fn message(tenant: &str, contact: &str, m: &Message) -> pb::Message {
    pb::Message {
        name: message_name(tenant, contact, m.sequence),
        sequence: m.sequence,
        sender: sender(&m.sender) as i32,
        agent_id: m.sender.agent_id().to_owned(),
        kind: kind(m.kind) as i32,
        text: m.text.clone(),
        status: status(m.status) as i32,
        failure_reason: m.failure_reason.clone(),
        create_time: Some(timestamp(m.created_at)),
        provider_time: m.provider_time.map(timestamp),
        attachment: m.attachment.as_ref().map(|a| attachment(tenant, contact, a)),
    }
}
