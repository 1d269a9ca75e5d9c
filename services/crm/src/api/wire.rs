//! Stored rows to their `centralita.crm.v1` messages, and resource names.

use centralita_platform::identity::Identity;
use centralita_platform::tenant::{contact_name, timestamp};
use centralita_proto::crm::v1 as pb;
use centralita_proto::tenancy::v1::Channel;

use crate::store::{AnswerRow, ConsentRow, ErasureRow, InteractionRow, MergeRow, NoteRow, View};

pub(super) fn customer_name(id: &str) -> String {
    format!("customers/{id}")
}

pub(super) fn channel_name(code: i16) -> String {
    Channel::try_from(i32::from(code))
        .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_lowercase())
        .unwrap_or_default()
}

pub fn customer_pb(v: &View) -> pb::Customer {
    let m = v.merged();
    pb::Customer {
        name: customer_name(&m.id),
        display_name: m.display_name,
        preferred_language: m.preferred_language,
        value_tier: i32::from(m.value_tier),
        attributes: m.attributes.into_iter().collect(),
        tags: m.tags,
        identities: v.identities.iter().map(Identity::to_pb).collect(),
        do_not_contact: m.do_not_contact,
        do_not_contact_reason: m.do_not_contact_reason,
        merged_customers: v.family.iter().filter(|c| c.id != v.root.id).map(|c| customer_name(&c.id)).collect(),
        create_time: Some(timestamp(v.root.created_at)),
        update_time: v.family.iter().map(|c| c.updated_at).max().map(timestamp),
    }
}

pub fn interaction_pb(tenant: &str, i: &InteractionRow) -> pb::Interaction {
    pb::Interaction {
        contact: contact_name(tenant, &i.contact_id),
        channel: i32::from(i.channel),
        direction: i.direction.clone(),
        queue: i.queue.clone(),
        state: i.state.clone(),
        agents: i.agents.clone(),
        create_time: Some(timestamp(i.created_at)),
        connect_time: i.connected_at.map(timestamp),
        end_time: i.ended_at.map(timestamp),
        disposition: i.disposition.clone(),
        wrap_up_notes: i.wrap_up_notes.clone(),
    }
}

pub(super) fn note_pb(n: &NoteRow) -> pb::Note {
    pb::Note {
        name: format!("customers/{}/notes/{}", n.customer_id, n.id),
        text: n.body.clone(),
        contact: n.contact.clone(),
        author: n.author.clone(),
        create_time: Some(timestamp(n.created_at)),
    }
}

pub(super) fn answer_pb(a: &AnswerRow) -> pb::Answer {
    pb::Answer {
        name: format!("customers/{}/answers/{}", a.customer_id, a.id),
        question: a.question.clone(),
        answer: a.answer.clone(),
        contact: a.contact.clone(),
        asked_by: a.asked_by.clone(),
        asked_time: Some(timestamp(a.asked_at)),
    }
}

pub(super) fn consent_pb(c: &ConsentRow) -> pb::ConsentRecord {
    pb::ConsentRecord {
        name: format!("customers/{}/consents/{}", c.customer_id, c.id),
        channel: i32::from(c.channel),
        purpose: c.purpose.clone(),
        granted: c.granted,
        effective_time: Some(timestamp(c.effective_at)),
        source: c.source.clone(),
        evidence: c.evidence.clone(),
        recorded_by: c.recorded_by.clone(),
        record_time: Some(timestamp(c.recorded_at)),
    }
}

pub(super) fn merge_pb(m: &MergeRow) -> pb::Merge {
    pb::Merge {
        name: format!("merges/{}", m.id),
        target: customer_name(&m.target),
        source: customer_name(&m.source),
        reason: m.reason.clone(),
        merged_by: m.merged_by.clone(),
        merge_time: Some(timestamp(m.merged_at)),
        undone_by: m.undone_by.clone(),
        undo_time: m.undone_at.map(timestamp),
    }
}

/// The audit record of an erasure of `tenant`, with each store's progress.
pub(super) fn erasure_pb(tenant: &str, e: &ErasureRow) -> pb::Erasure {
    pb::Erasure {
        name: format!("erasures/{}", e.id),
        customers: e.customer_ids.iter().map(|c| customer_name(c)).collect(),
        contacts: e.contact_ids.iter().map(|c| contact_name(tenant, c)).collect(),
        deleted_rows: e.deleted_rows.clone().into_iter().collect(),
        requested_by: e.requested_by.clone(),
        reason: e.reason.clone(),
        erase_time: Some(timestamp(e.erased_at)),
        stores: e
            .stores
            .iter()
            .map(|s| pb::ErasureStore {
                store: s.store.clone(),
                state: if s.done_at.is_some() {
                    pb::erasure_store::State::Done
                } else {
                    pb::erasure_store::State::Pending
                } as i32,
                done_time: s.done_at.map(timestamp),
                records_erased: s.records_erased,
            })
            .collect(),
    }
}
