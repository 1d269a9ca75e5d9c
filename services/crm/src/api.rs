//! gRPC adapter of `centralita.crm.v1.CustomerService`: validation with field-level errors,
//! the caller's tenant and role, then one transaction per call in [`store`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::bus::Event;
use centralita_platform::error::{Error, FieldViolation, Reason};
use centralita_platform::identity::{self, Identity, MAX_IDENTITIES};
use centralita_platform::tenant::{contact_name, from_timestamp, parse_contact_name, timestamp, TenantId};
use centralita_proto::crm::v1::{self as pb, customer_service_server::CustomerService};
use centralita_proto::tenancy::v1::Channel;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use serde_json::json;
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

use crate::store::{self, AnswerRow, ConsentRow, InteractionRow, MergeRow, NoteRow, View};

type R<T> = Result<Response<T>, Status>;

/// How long a screen-pop waits for the contact events to show the calling agent holding
/// the contact (an offer reaches the agent and the CRM at about the same time).
const HOLD_WAIT: Duration = Duration::from_secs(2);
const MAX_ATTRIBUTES: usize = 50;
const MAX_TAGS: usize = 50;

#[derive(Clone)]
pub struct Api {
    pub pool: Pool,
    /// Bumped by the contact-event consumer after every batch.
    pub applied: watch::Receiver<u64>,
    /// Wakes the outbox relay.
    pub outbox: Arc<Notify>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

const STAFF: &[Role] = &[Role::TenantAdmin, Role::Supervisor];
const STAFF_AND_CHANNELS: &[Role] = &[Role::TenantAdmin, Role::Supervisor, Role::Channel];

/// The caller's own tenant, if it has one of `roles`. Customer data is the tenant's: a BPO
/// admin token without a tenant is refused.
fn tenant_for(caller: &Caller, roles: &[Role]) -> Result<TenantId, Error> {
    caller.require_any_role(roles)?;
    Ok(caller.own_tenant()?.clone())
}

/// A customer id from `customers/{id}`.
fn customer_id(name: &str, field: &str) -> Result<String, Error> {
    match name.strip_prefix("customers/") {
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            Ok(id.to_owned())
        }
        _ => Err(Error::invalid(field, "must be `customers/{id}`")),
    }
}

fn customer_name(id: &str) -> String {
    format!("customers/{id}")
}

fn not_found(name: &str) -> Error {
    Error::NotFound(name.to_owned())
}

fn text(v: &mut Vec<FieldViolation>, field: &str, s: &str, min: usize, max: usize) {
    let n = s.chars().count();
    if n < min || n > max {
        let what = if min == 0 { format!("at most {max} characters") } else { format!("{min} to {max} characters") };
        v.push(FieldViolation::new(field, format!("must be {what} (is {n})")));
    }
}

fn is_code(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn done(v: Vec<FieldViolation>) -> Result<(), Error> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(v))
    }
}

fn identities(raw: &[pb::Identity], cc: &str, field: &str, v: &mut Vec<FieldViolation>) -> Vec<Identity> {
    if raw.len() > MAX_IDENTITIES {
        v.push(FieldViolation::new(field, format!("at most {MAX_IDENTITIES}")));
        return Vec::new();
    }
    if let Err(e) = identity::country_code(cc) {
        v.push(FieldViolation::new("default_country_code", e));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        match Identity::parse(r, cc) {
            Ok(id) if !out.contains(&id) => out.push(id),
            Ok(_) => {}
            Err(e) => v.push(FieldViolation::new(format!("{field}[{i}]"), e)),
        }
    }
    out
}

fn channel_code(channel: i32, field: &str, v: &mut Vec<FieldViolation>) -> i16 {
    match Channel::try_from(channel) {
        Ok(Channel::Unspecified) | Err(_) => {
            v.push(FieldViolation::new(field, "is required (voice, chat, sms, email, social, task)"));
            0
        }
        Ok(c) => c as i16,
    }
}

fn channel_name(code: i16) -> String {
    Channel::try_from(i32::from(code))
        .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_lowercase())
        .unwrap_or_default()
}

fn check_attributes(a: &BTreeMap<String, String>, v: &mut Vec<FieldViolation>) {
    if a.len() > MAX_ATTRIBUTES {
        v.push(FieldViolation::new("customer.attributes", format!("at most {MAX_ATTRIBUTES}")));
    }
    for (k, val) in a {
        if k.is_empty() || k.len() > 64 || val.len() > 1024 {
            v.push(FieldViolation::new(
                format!("customer.attributes[{k}]"),
                "keys must be 1-64 bytes, values at most 1024",
            ));
        }
    }
}

fn check_tags(tags: &[String], v: &mut Vec<FieldViolation>) {
    if tags.len() > MAX_TAGS {
        v.push(FieldViolation::new("customer.tags", format!("at most {MAX_TAGS}")));
    }
    for (i, t) in tags.iter().enumerate() {
        if !is_code(t, 64) {
            v.push(FieldViolation::new(format!("customer.tags[{i}]"), "must be 1-64 of a-z, 0-9, - and _"));
        }
    }
}

fn check_language(l: &str, field: &str, v: &mut Vec<FieldViolation>) {
    let tag = (2..=8).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
    if !l.is_empty() && !tag {
        v.push(FieldViolation::new(field, "must be a BCP 47 primary language tag such as `en`"));
    }
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

fn note_pb(n: &NoteRow) -> pb::Note {
    pb::Note {
        name: format!("customers/{}/notes/{}", n.customer_id, n.id),
        text: n.body.clone(),
        contact: n.contact.clone(),
        author: n.author.clone(),
        create_time: Some(timestamp(n.created_at)),
    }
}

fn answer_pb(a: &AnswerRow) -> pb::Answer {
    pb::Answer {
        name: format!("customers/{}/answers/{}", a.customer_id, a.id),
        question: a.question.clone(),
        answer: a.answer.clone(),
        contact: a.contact.clone(),
        asked_by: a.asked_by.clone(),
        asked_time: Some(timestamp(a.asked_at)),
    }
}

fn consent_pb(c: &ConsentRow) -> pb::ConsentRecord {
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

fn merge_pb(m: &MergeRow) -> pb::Merge {
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

/// Who wrote something: the agent id for an agent, the token subject otherwise.
fn author(caller: &Caller) -> String {
    caller.agent_id.clone().unwrap_or_else(|| caller.subject.clone())
}

impl Api {
    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        Ok(self.pool.get().await?)
    }

    /// The view of customer `name` (its root's view when it was merged), or NOT_FOUND.
    async fn view_of(tx: &Transaction<'_>, tenant: &TenantId, name: &str, field: &str) -> Result<View, Error> {
        let id = customer_id(name, field)?;
        store::view(tx, tenant.as_str(), &id).await?.ok_or_else(|| not_found(name))
    }

    /// The interaction of `contact` if the calling agent holds it, waiting up to
    /// [`HOLD_WAIT`] for the contact events to catch up. The same PERMISSION_DENIED for a
    /// contact held by another agent, unknown, or of another tenant.
    async fn held(&self, caller: &Caller, contact: &str) -> Result<(TenantId, InteractionRow), Error> {
        let denied = || Error::PermissionDenied {
            reason: Reason::WrongTenant,
            message: "only the agent holding this contact may do that".into(),
        };
        let (tenant, id) = parse_contact_name("contact", contact)?;
        let agent = match (&caller.agent_id, caller.has_role(Role::Agent)) {
            (Some(a), true) => a.clone(),
            _ => return Err(denied()),
        };
        if caller.tenant.as_ref().is_some_and(|own| *own != tenant) {
            return Err(denied());
        }
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        let mut applied = self.applied.clone();
        loop {
            applied.borrow_and_update();
            let mut client = self.client().await?;
            let tx = store::begin(&mut client, &tenant).await?;
            let row = store::interaction(&tx, tenant.as_str(), &id).await?;
            tx.commit().await?;
            if let Some(row) = row.filter(|r| r.holder == agent) {
                return Ok((tenant, row));
            }
            if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                return Err(denied());
            }
        }
    }

    /// The customer a note or answer is about: for an agent, the customer of the contact it
    /// holds; for staff, the customer named (and the contact, if given, must be the tenant's).
    async fn subject_of(
        &self,
        caller: &Caller,
        customer: &str,
        contact: &str,
    ) -> Result<(TenantId, String, String), Error> {
        if caller.has_role(Role::Agent) && !caller.has_role(Role::TenantAdmin) && !caller.has_role(Role::Supervisor) {
            if contact.is_empty() {
                return Err(Error::invalid("contact", "is required: an agent writes about the contact it holds"));
            }
            let (tenant, row) = self.held(caller, contact).await?;
            let cid = row
                .customer_id
                .ok_or_else(|| Error::FailedPrecondition("this contact carries no customer identity".into()))?;
            if !customer.is_empty() {
                let named = customer_id(customer, "customer")?;
                let mut client = self.client().await?;
                let tx = store::begin(&mut client, &tenant).await?;
                let same = store::root_of(&tx, tenant.as_str(), &named).await?
                    == store::root_of(&tx, tenant.as_str(), &cid).await?;
                tx.commit().await?;
                if !same {
                    return Err(Error::invalid("customer", "is not the customer of this contact"));
                }
            }
            return Ok((tenant, cid, contact.to_owned()));
        }
        let tenant = tenant_for(caller, STAFF)?;
        let id = customer_id(customer, "customer")?;
        if !contact.is_empty() && parse_contact_name("contact", contact)?.0 != tenant {
            return Err(Error::invalid("contact", "is a contact of another tenant"));
        }
        Ok((tenant, id, contact.to_owned()))
    }

    /// Roots whose family carries any of `ids`, with their views.
    async fn views_with(tx: &Transaction<'_>, tenant: &TenantId, ids: &[Identity]) -> Result<Vec<View>, Error> {
        let mut out = Vec::new();
        for root in store::roots_with(tx, tenant.as_str(), ids).await? {
            if let Some(v) = store::view(tx, tenant.as_str(), &root).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The whole record of a family as JSON (export).
    async fn export_json(tx: &Transaction<'_>, tenant: &TenantId, v: &View) -> Result<serde_json::Value, Error> {
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
            .map(|i| json!({
                "contact": contact_name(t, &i.contact_id), "profile": i.customer_id, "channel": channel_name(i.channel),
                "direction": i.direction, "queue": i.queue, "state": i.state, "agents": i.agents,
                "created_at": ts(i.created_at), "connected_at": i.connected_at.map(ts), "ended_at": i.ended_at.map(ts),
                "disposition": i.disposition, "wrap_up_notes": i.wrap_up_notes,
            }))
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
}

#[tonic::async_trait]
impl CustomerService for Api {
    async fn resolve_customer(&self, request: Request<pb::ResolveCustomerRequest>) -> R<pb::ResolveCustomerResponse> {
        let tenant = tenant_for(caller(&request)?, STAFF_AND_CHANNELS)?;
        let req = request.into_inner();
        let mut v = Vec::new();
        let ids = identities(&req.identities, &req.default_country_code, "identities", &mut v);
        if req.identities.is_empty() {
            v.push(FieldViolation::new("identities", "at least one is required"));
        }
        text(&mut v, "display_name", &req.display_name, 0, 200);
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let r = store::resolve(&tx, tenant.as_str(), &ids, &req.display_name).await?;
        let view = store::view(&tx, tenant.as_str(), &r.root)
            .await?
            .ok_or_else(|| Error::internal("resolved root vanished"))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::ResolveCustomerResponse {
            customer: Some(customer_pb(&view)),
            created: r.created,
            duplicate_customers: r.duplicates.iter().map(|d| customer_name(d)).collect(),
        }))
    }

    async fn get_customer(&self, request: Request<pb::GetCustomerRequest>) -> R<pb::Customer> {
        let tenant = tenant_for(caller(&request)?, STAFF_AND_CHANNELS)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let view = Self::view_of(&tx, &tenant, &request.get_ref().name, "name").await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(customer_pb(&view)))
    }

    async fn find_customers(&self, request: Request<pb::FindCustomersRequest>) -> R<pb::FindCustomersResponse> {
        let tenant = tenant_for(caller(&request)?, STAFF_AND_CHANNELS)?;
        let req = request.into_inner();
        let mut v = Vec::new();
        let raw = req.identity.ok_or_else(|| Error::invalid("identity", "is required"))?;
        let ids = identities(std::slice::from_ref(&raw), &req.default_country_code, "identity", &mut v);
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let views = Self::views_with(&tx, &tenant, &ids).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::FindCustomersResponse { customers: views.iter().map(customer_pb).collect() }))
    }

    async fn update_customer(&self, request: Request<pb::UpdateCustomerRequest>) -> R<pb::Customer> {
        let tenant = tenant_for(caller(&request)?, STAFF)?;
        let req = request.into_inner();
        let c = req.customer.ok_or_else(|| Error::invalid("customer", "is required"))?;
        let mut v = Vec::new();
        let mut ch = store::Changes::default();
        for path in &req.update_mask {
            match path.as_str() {
                "display_name" => {
                    text(&mut v, "customer.display_name", &c.display_name, 0, 200);
                    ch.display_name = Some(c.display_name.clone());
                }
                "preferred_language" => {
                    check_language(&c.preferred_language, "customer.preferred_language", &mut v);
                    ch.preferred_language = Some(c.preferred_language.clone());
                }
                "value_tier" => {
                    if pb::ValueTier::try_from(c.value_tier).is_err() {
                        v.push(FieldViolation::new("customer.value_tier", "is not a value tier"));
                    }
                    ch.value_tier = Some(i16::try_from(c.value_tier).unwrap_or(0));
                }
                "attributes" => {
                    let a: BTreeMap<String, String> = c.attributes.clone().into_iter().collect();
                    check_attributes(&a, &mut v);
                    ch.attributes = Some(a);
                }
                "tags" => {
                    check_tags(&c.tags, &mut v);
                    let mut tags = c.tags.clone();
                    tags.sort();
                    tags.dedup();
                    ch.tags = Some(tags);
                }
                other => v.push(FieldViolation::new(
                    "update_mask",
                    format!(
                        "`{other}` cannot be updated (display_name, preferred_language, value_tier, attributes, tags)"
                    ),
                )),
            }
        }
        let add = identities(&req.add_identities, &req.default_country_code, "add_identities", &mut v);
        let remove = identities(&req.remove_identities, &req.default_country_code, "remove_identities", &mut v);
        if req.update_mask.is_empty() && add.is_empty() && remove.is_empty() {
            v.push(FieldViolation::new("update_mask", "names no field and no identity changes"));
        }
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let before = Self::view_of(&tx, &tenant, &c.name, "customer.name").await?;
        let root = before.root.id.clone();
        store::update(&tx, tenant.as_str(), &root, &ch).await?;
        for i in &add {
            store::add_identity(&tx, tenant.as_str(), &root, i).await?;
        }
        for i in &remove {
            store::remove_identity(&tx, tenant.as_str(), &before.ids(), i).await?;
        }
        let after = store::view(&tx, tenant.as_str(), &root).await?.ok_or_else(|| not_found(&c.name))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(customer_pb(&after)))
    }

    async fn add_note(&self, request: Request<pb::AddNoteRequest>) -> R<pb::Note> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Vec::new();
        text(&mut v, "text", &req.text, 1, 4096);
        done(v)?;
        let (tenant, id, contact) = self.subject_of(&caller, &req.customer, &req.contact).await?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let root = store::root_of(&tx, tenant.as_str(), &id).await?.ok_or_else(|| not_found(&customer_name(&id)))?;
        let note = store::add_note(&tx, tenant.as_str(), &root, &contact, &author(&caller), &req.text).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(note_pb(&note)))
    }

    async fn record_answer(&self, request: Request<pb::RecordAnswerRequest>) -> R<pb::Answer> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Vec::new();
        text(&mut v, "question", &req.question, 1, 500);
        text(&mut v, "answer", &req.answer, 1, 2000);
        done(v)?;
        let (tenant, id, contact) = self.subject_of(&caller, &req.customer, &req.contact).await?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let root = store::root_of(&tx, tenant.as_str(), &id).await?.ok_or_else(|| not_found(&customer_name(&id)))?;
        let row = AnswerRow {
            id: store::new_id(),
            customer_id: root,
            contact,
            question: req.question,
            answer: req.answer,
            asked_by: author(&caller),
            asked_at: Utc::now(),
        };
        let row = store::add_answer(&tx, tenant.as_str(), &row).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(answer_pb(&row)))
    }

    async fn merge_customers(&self, request: Request<pb::MergeCustomersRequest>) -> R<pb::Merge> {
        let caller = caller(&request)?.clone();
        let tenant = tenant_for(&caller, STAFF)?;
        let req = request.into_inner();
        let mut v = Vec::new();
        for (field, name) in [("target", &req.target), ("source", &req.source)] {
            if let Err(Error::InvalidArgument(mut e)) = customer_id(name, field) {
                v.append(&mut e);
            }
        }
        text(&mut v, "reason", &req.reason, 1, 500);
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let target = Self::view_of(&tx, &tenant, &req.target, "target").await?;
        let source = Self::view_of(&tx, &tenant, &req.source, "source").await?;
        if target.root.id == source.root.id {
            return Err(Error::FailedPrecondition("these are already the same customer".into()).into());
        }
        let m =
            store::merge(&tx, tenant.as_str(), &target.root.id, &source.root.id, &req.reason, &author(&caller)).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(merge_pb(&m)))
    }

    async fn undo_merge(&self, request: Request<pb::UndoMergeRequest>) -> R<pb::Merge> {
        let caller = caller(&request)?.clone();
        let tenant = tenant_for(&caller, STAFF)?;
        let name = request.into_inner().name;
        let id = name
            .strip_prefix("merges/")
            .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Error::invalid("name", "must be `merges/{id}`"))?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let m = store::get_merge(&tx, tenant.as_str(), id).await?.ok_or_else(|| not_found(&name))?;
        if m.undone_at.is_some() {
            return Err(Error::FailedPrecondition(format!("{name} was already undone")).into());
        }
        let m = store::undo_merge(&tx, tenant.as_str(), &m, &author(&caller)).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(merge_pb(&m)))
    }

    async fn list_timeline(&self, request: Request<pb::ListTimelineRequest>) -> R<pb::ListTimelineResponse> {
        let tenant = tenant_for(caller(&request)?, STAFF)?;
        let req = request.into_inner();
        let size = match req.page_size {
            0 => 50,
            n @ 1..=200 => n as usize,
            _ => return Err(Error::invalid("page_size", "must be 1 to 200").into()),
        };
        let offset: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .strip_prefix("o")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::invalid("page_token", "is not a token this API returned"))?
        };
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let v = Self::view_of(&tx, &tenant, &req.customer, "customer").await?;
        let (t, ids) = (tenant.as_str(), v.ids());
        let mut entries: Vec<(DateTime<Utc>, u8, String, pb::timeline_entry::Entry)> = Vec::new();
        for i in store::interactions(&tx, t, &ids, i64::MAX).await? {
            entries.push((
                i.created_at,
                0,
                i.contact_id.clone(),
                pb::timeline_entry::Entry::Interaction(interaction_pb(t, &i)),
            ));
        }
        for n in store::notes(&tx, t, &ids, i64::MAX).await? {
            entries.push((n.created_at, 1, n.id.clone(), pb::timeline_entry::Entry::Note(note_pb(&n))));
        }
        for a in store::answers(&tx, t, &ids).await? {
            entries.push((a.asked_at, 2, a.id.clone(), pb::timeline_entry::Entry::Answer(answer_pb(&a))));
        }
        for c in store::consents(&tx, t, &ids).await? {
            entries.push((c.recorded_at, 3, c.id.clone(), pb::timeline_entry::Entry::Consent(consent_pb(&c))));
        }
        tx.commit().await.map_err(Error::from)?;
        entries.sort_by(|a, b| (b.0, b.1, &b.2).cmp(&(a.0, a.1, &a.2)));
        let next = if offset + size < entries.len() { format!("o{}", offset + size) } else { String::new() };
        let page = entries
            .into_iter()
            .skip(offset)
            .take(size)
            .map(|(at, _, _, e)| pb::TimelineEntry { time: Some(timestamp(at)), entry: Some(e) })
            .collect();
        Ok(Response::new(pb::ListTimelineResponse { entries: page, next_page_token: next }))
    }

    async fn record_consent(&self, request: Request<pb::RecordConsentRequest>) -> R<pb::ConsentRecord> {
        let caller = caller(&request)?.clone();
        let tenant = tenant_for(&caller, STAFF_AND_CHANNELS)?;
        let req = request.into_inner();
        let c = req.consent.ok_or_else(|| Error::invalid("consent", "is required"))?;
        let mut v = Vec::new();
        let channel = channel_code(c.channel, "consent.channel", &mut v);
        if !is_code(&c.purpose, 64) {
            v.push(FieldViolation::new("consent.purpose", "must be 1-64 of a-z, 0-9, - and _ (marketing, service, …)"));
        }
        text(&mut v, "consent.source", &c.source, 1, 200);
        text(&mut v, "consent.evidence", &c.evidence, 0, 2000);
        let now = Utc::now();
        let effective = match &c.effective_time {
            None => now,
            Some(t) => match from_timestamp(t) {
                Some(at) if at <= now + chrono::Duration::minutes(5) && at.timestamp() >= 0 => at,
                _ => {
                    v.push(FieldViolation::new("consent.effective_time", "must be a valid time, not in the future"));
                    now
                }
            },
        };
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let view = Self::view_of(&tx, &tenant, &req.customer, "customer").await?;
        let row = ConsentRow {
            id: store::new_id(),
            customer_id: view.root.id.clone(),
            channel,
            purpose: c.purpose,
            granted: c.granted,
            effective_at: effective,
            source: c.source,
            evidence: c.evidence,
            recorded_by: author(&caller),
            recorded_at: now,
        };
        let row = store::add_consent(&tx, tenant.as_str(), &row).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(consent_pb(&row)))
    }

    async fn set_do_not_contact(&self, request: Request<pb::SetDoNotContactRequest>) -> R<pb::Customer> {
        let tenant = tenant_for(caller(&request)?, STAFF)?;
        let req = request.into_inner();
        let mut v = Vec::new();
        text(&mut v, "reason", &req.reason, 0, 500);
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let view = Self::view_of(&tx, &tenant, &req.customer, "customer").await?;
        let ch =
            store::Changes { do_not_contact: Some((req.do_not_contact, req.reason.clone())), ..Default::default() };
        // Setting marks the root; clearing clears the whole family (the view ORs it).
        let targets = if req.do_not_contact { vec![view.root.id.clone()] } else { view.ids() };
        for id in targets {
            store::update(&tx, tenant.as_str(), &id, &ch).await?;
        }
        let after = store::view(&tx, tenant.as_str(), &view.root.id).await?.ok_or_else(|| not_found(&req.customer))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(customer_pb(&after)))
    }

    async fn check_contact_permission(
        &self,
        request: Request<pb::CheckContactPermissionRequest>,
    ) -> R<pb::CheckContactPermissionResponse> {
        let tenant = tenant_for(caller(&request)?, STAFF_AND_CHANNELS)?;
        let req = request.into_inner();
        let mut v = Vec::new();
        let channel = channel_code(req.channel, "channel", &mut v);
        if !is_code(&req.purpose, 64) {
            v.push(FieldViolation::new("purpose", "must be 1-64 of a-z, 0-9, - and _"));
        }
        let by_identity = match (&req.customer.is_empty(), &req.identity) {
            (true, Some(i)) => identities(std::slice::from_ref(i), &req.default_country_code, "identity", &mut v),
            (false, None) => Vec::new(),
            _ => {
                v.push(FieldViolation::new("customer", "give either a customer or an identity"));
                Vec::new()
            }
        };
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let views = if req.customer.is_empty() {
            Self::views_with(&tx, &tenant, &by_identity).await?
        } else {
            vec![Self::view_of(&tx, &tenant, &req.customer, "customer").await?]
        };
        let family: Vec<String> = views.iter().flat_map(View::ids).collect();
        let customer = views.first().map(|v| customer_name(&v.root.id)).unwrap_or_default();
        let consent = if family.is_empty() {
            None
        } else {
            store::consent_in_force(&tx, tenant.as_str(), &family, channel, &req.purpose, Utc::now()).await?
        };
        tx.commit().await.map_err(Error::from)?;
        let ch = channel_name(channel);
        let (allowed, reason) = if views.is_empty() {
            (false, "no customer carries this identity, so no consent is recorded".to_owned())
        } else if let Some(v) = views.iter().map(View::merged).find(|m| m.do_not_contact) {
            (false, format!("do not contact: {}", v.do_not_contact_reason))
        } else {
            match &consent {
                Some(c) if c.granted => (
                    true,
                    format!(
                        "consent for {} on {ch} granted at {} ({})",
                        c.purpose,
                        c.effective_at.to_rfc3339(),
                        c.source
                    ),
                ),
                Some(c) => {
                    (false, format!("consent for {} on {ch} withdrawn at {}", c.purpose, c.effective_at.to_rfc3339()))
                }
                None => (false, format!("no consent recorded for {} on {ch}", req.purpose)),
            }
        };
        Ok(Response::new(pb::CheckContactPermissionResponse {
            allowed,
            reason,
            consent: consent.as_ref().map(consent_pb),
            customer,
        }))
    }

    async fn get_screen_pop(&self, request: Request<pb::GetScreenPopRequest>) -> R<pb::ScreenPop> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let count = match req.interaction_count {
            0 => 5,
            n @ 1..=50 => i64::from(n),
            _ => return Err(Error::invalid("interaction_count", "must be 1 to 50").into()),
        };
        let (tenant, row) = self.held(&caller, &req.contact).await?;
        let t = tenant.as_str();
        let mut pop = pb::ScreenPop { contact: Some(interaction_pb(t, &row)), ..Default::default() };
        if let Some(cid) = &row.customer_id {
            let mut client = self.client().await?;
            let tx = store::begin(&mut client, &tenant).await?;
            if let Some(v) = store::view(&tx, t, cid).await? {
                let ids = v.ids();
                pop.interactions = store::interactions(&tx, t, &ids, count + 1)
                    .await?
                    .iter()
                    .filter(|i| i.contact_id != row.contact_id)
                    .take(count as usize)
                    .map(|i| interaction_pb(t, i))
                    .collect();
                pop.notes = store::notes(&tx, t, &ids, 5).await?.iter().map(note_pb).collect();
                pop.customer = Some(customer_pb(&v));
            }
            tx.commit().await.map_err(Error::from)?;
        }
        Ok(Response::new(pop))
    }

    async fn export_customer(&self, request: Request<pb::ExportCustomerRequest>) -> R<pb::ExportCustomerResponse> {
        let tenant = tenant_for(caller(&request)?, &[Role::TenantAdmin])?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let v = Self::view_of(&tx, &tenant, &request.get_ref().name, "name").await?;
        let doc = Self::export_json(&tx, &tenant, &v).await?;
        tx.commit().await.map_err(Error::from)?;
        let json = serde_json::to_vec_pretty(&doc).map_err(Error::internal)?;
        Ok(Response::new(pb::ExportCustomerResponse { json }))
    }

    async fn erase_customer(&self, request: Request<pb::EraseCustomerRequest>) -> R<pb::Erasure> {
        let caller = caller(&request)?.clone();
        let tenant = tenant_for(&caller, &[Role::TenantAdmin])?;
        let req = request.into_inner();
        let mut v = Vec::new();
        text(&mut v, "reason", &req.reason, 1, 200);
        done(v)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let view = Self::view_of(&tx, &tenant, &req.name, "name").await?;
        let e = store::erase(&tx, tenant.as_str(), &view.ids(), &caller.subject, &req.reason).await?;
        let t = tenant.as_str();
        let erasure = pb::Erasure {
            name: format!("erasures/{}", e.id),
            customers: e.customer_ids.iter().map(|c| customer_name(c)).collect(),
            contacts: e.contact_ids.iter().map(|c| contact_name(t, c)).collect(),
            deleted_rows: e.deleted_rows.clone().into_iter().collect(),
            requested_by: e.requested_by.clone(),
            reason: e.reason.clone(),
            erase_time: Some(timestamp(e.erased_at)),
        };
        let event =
            Event::new(tenant.clone(), &pb::CustomerErased { tenant: t.to_owned(), erasure: Some(erasure.clone()) });
        store::outbox(&tx, t, "customers", &view.root.id, &event.encode()).await?;
        tx.commit().await.map_err(Error::from)?;
        self.outbox.notify_one();
        tracing::info!(tenant = t, erasure = %erasure.name, profiles = e.customer_ids.len(), "customer erased");
        Ok(Response::new(erasure))
    }
}
