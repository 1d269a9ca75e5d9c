//! GDPR export: the whole record of a customer's family as one JSON document.

use centralita_platform::error::Error;
use centralita_platform::tenant::{contact_name, TenantId};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;

use super::wire::{channel_name, customer_name};
use crate::store::{self, View};

/// The whole record of a family as JSON (export).
pub(super) async fn export_json(tx: &Transaction<'_>, tenant: &TenantId, v: &View) -> Result<serde_json::Value, Error> {
    let t = tenant.as_str();
    let ids = v.ids();
    let ts = |d: DateTime<Utc>| d.to_rfc3339();
    let profiles: Vec<_> = v
        .family
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "display_name": c.display_name, "preferred_language": c.preferred_language,
                "value_tier": c.value_tier, "attributes": c.attributes, "tags": c.tags,
                "do_not_contact": c.do_not_contact, "do_not_contact_reason": c.do_not_contact_reason,
                "merged_into": c.merged_into, "created_at": ts(c.created_at), "updated_at": ts(c.updated_at),
            })
        })
        .collect();
    let idents: Vec<_> = v.identities.iter().map(|i| json!({"kind": i.kind.as_str(), "value": i.value})).collect();
    let notes: Vec<_> = store::notes(tx, t, &ids, i64::MAX)
        .await?
        .iter()
        .map(|n| json!({"id": n.id, "profile": n.customer_id, "contact": n.contact, "author": n.author, "text": n.body, "created_at": ts(n.created_at)}))
        .collect();
    let answers: Vec<_> = store::answers(tx, t, &ids)
        .await?
        .iter()
        .map(|a| json!({"id": a.id, "profile": a.customer_id, "contact": a.contact, "question": a.question, "answer": a.answer, "asked_by": a.asked_by, "asked_at": ts(a.asked_at)}))
        .collect();
    let consents: Vec<_> = store::consents(tx, t, &ids)
        .await?
        .iter()
        .map(|c| json!({"id": c.id, "profile": c.customer_id, "channel": channel_name(c.channel), "purpose": c.purpose, "granted": c.granted, "effective_at": ts(c.effective_at), "source": c.source, "evidence": c.evidence, "recorded_by": c.recorded_by, "recorded_at": ts(c.recorded_at)}))
        .collect();
    let interactions: Vec<_> = store::interactions(tx, t, &ids, i64::MAX)
        .await?
        .iter()
        .map(|i| {
            json!({
                "contact": contact_name(t, &i.contact_id), "profile": i.customer_id, "channel": channel_name(i.channel),
                "direction": i.direction, "queue": i.queue, "state": i.state, "agents": i.agents,
                "created_at": ts(i.created_at), "connected_at": i.connected_at.map(ts), "ended_at": i.ended_at.map(ts),
                "disposition": i.disposition, "wrap_up_notes": i.wrap_up_notes,
            })
        })
        .collect();
    let merges: Vec<_> = store::merges_of(tx, t, &ids)
        .await?
        .iter()
        .map(|m| json!({"id": m.id, "target": m.target, "source": m.source, "reason": m.reason, "merged_by": m.merged_by, "merged_at": ts(m.merged_at), "undone_by": m.undone_by, "undone_at": m.undone_at.map(ts)}))
        .collect();
    Ok(json!({
        "schema": "centralita.crm.export.v1",
        "tenant": t,
        "customer": customer_name(&v.root.id),
        "exported_at": ts(Utc::now()),
        "profiles": profiles,
        "identities": idents,
        "notes": notes,
        "answers": answers,
        "consents": consents,
        "interactions": interactions,
        "merges": merges,
    }))
}
