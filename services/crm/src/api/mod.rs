//! gRPC adapter of `centralita.crm.v1.CustomerService`: validation with field-level errors,
//! the caller's tenant and role, then one transaction per call in [`store`].
//!
//! # Layout
//! - this module: [`Api`] and the handlers of the service, one per RPC.
//! - `access`: the caller's tenant and role, the agent holding a contact, the customer a
//!   note or answer is about.
//! - `validate`: request validation as field violations.
//! - `mask`: the update mask of `UpdateCustomer`, from the FieldMask or the deprecated list.
//! - `wire`: stored rows to their protobuf messages, resource names.
//! - `timeline`: the merged timeline of a family and its opaque page tokens.
//! - `export`: the GDPR export document.
//! - `stores`: the export's sections from sessions, media and recording, read with the
//!   caller's own credentials.
//! - `scrub`: an erasure's reason with what could name the person redacted.

use std::collections::BTreeMap;
use std::sync::Arc;

use centralita_platform::auth::{caller, Role};
use centralita_platform::bus::Event;
use centralita_platform::error::{Error, FieldViolation};
use centralita_platform::identity::Identity;
use centralita_platform::tenant::{from_timestamp, TenantId};
use centralita_proto::crm::v1::{self as pb, customer_service_server::CustomerService};
use chrono::Utc;
use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

use crate::metrics::{Entry, Metrics, Source};
use crate::store::{self, AnswerRow, ConsentRow, View};

mod access;
mod export;
mod mask;
mod scrub;
mod stores;
mod timeline;
mod validate;
mod wire;

use access::{author, tenant_for, STAFF, STAFF_AND_CHANNELS};
pub use stores::OtherStores;
use validate::{
    channel_code, check_attributes, check_language, check_tags, customer_id, done, identities, is_code, not_found, text,
};
use wire::{answer_pb, channel_name, consent_pb, customer_name, erasure_pb, merge_pb, note_pb};
pub use wire::{customer_pb, interaction_pb};

type R<T> = Result<Response<T>, Status>;

#[derive(Clone)]
pub struct Api {
    pub pool: Pool,
    /// Bumped by the contact-event consumer after every batch.
    pub applied: watch::Receiver<u64>,
    /// Wakes the outbox relay.
    pub outbox: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// The other services the subject access export reads from.
    pub stores: OtherStores,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
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
        self.metrics.customer_resolved(Source::Api, r.created);
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
        let mut v = Vec::new();
        let mask = mask::of(&req, &mut v);
        let c = req.customer.ok_or_else(|| Error::invalid("customer", "is required"))?;
        let mut ch = store::Changes::default();
        for field in &mask.fields {
            match field {
                mask::Field::DisplayName => {
                    text(&mut v, "customer.display_name", &c.display_name, 0, 200);
                    ch.display_name = Some(c.display_name.clone());
                }
                mask::Field::PreferredLanguage => {
                    check_language(&c.preferred_language, "customer.preferred_language", &mut v);
                    ch.preferred_language = Some(c.preferred_language.clone());
                }
                mask::Field::ValueTier => {
                    if pb::ValueTier::try_from(c.value_tier).is_err() {
                        v.push(FieldViolation::new("customer.value_tier", "is not a value tier"));
                    }
                    ch.value_tier = Some(i16::try_from(c.value_tier).unwrap_or(0));
                }
                mask::Field::Attributes => {
                    let a: BTreeMap<String, String> = c.attributes.clone().into_iter().collect();
                    check_attributes(&a, &mut v);
                    ch.attributes = Some(a);
                }
                mask::Field::Tags => {
                    check_tags(&c.tags, &mut v);
                    let mut tags = c.tags.clone();
                    tags.sort();
                    tags.dedup();
                    ch.tags = Some(tags);
                }
            }
        }
        let add = identities(&req.add_identities, &req.default_country_code, "add_identities", &mut v);
        let remove = identities(&req.remove_identities, &req.default_country_code, "remove_identities", &mut v);
        // An empty mask changes no field (as before masks were FieldMasks): the call is then
        // about identities only, and must change some.
        if mask.empty && add.is_empty() && remove.is_empty() {
            v.push(FieldViolation::new("update_field_mask", "names no field and no identity changes"));
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
        self.metrics.entry_written(Entry::Note);
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
        self.metrics.entry_written(Entry::Answer);
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
        self.metrics.merge(false);
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
        self.metrics.merge(true);
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
        let after = timeline::after(&req.customer, &req.page_token)?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let v = Self::view_of(&tx, &tenant, &req.customer, "customer").await?;
        let entries = timeline::entries(&tx, tenant.as_str(), &v.ids()).await?;
        tx.commit().await.map_err(Error::from)?;
        let (page, next) = timeline::page(entries, after.as_ref(), size);
        let next = next.map(|key| timeline::token(&req.customer, &key)).unwrap_or_default();
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
        self.metrics.consent_recorded(row.granted);
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
        self.metrics.do_not_contact(req.do_not_contact);
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
        let mut doc = export::export_json(&tx, &tenant, &v).await?;
        let contacts: Vec<String> = store::interactions(&tx, tenant.as_str(), &v.ids(), i64::MAX)
            .await?
            .into_iter()
            .map(|i| i.contact_id)
            .collect();
        tx.commit().await.map_err(Error::from)?;
        // What the other services keep about those contacts, asked with the caller's token.
        let (others, complete) = self.stores.export(request.metadata().get("authorization"), &tenant, &contacts).await;
        doc["other_stores"] = others;
        doc["complete"] = serde_json::Value::Bool(complete);
        self.metrics.export();
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
        // Kept on the audit record and published: never the person's name or identities.
        let reason = scrub::redact(&req.reason, &view);
        let e = store::erase(&tx, tenant.as_str(), &view.ids(), &caller.subject, &reason).await?;
        let t = tenant.as_str();
        let erasure = erasure_pb(t, &e);
        let event =
            Event::new(tenant.clone(), &pb::CustomerErased { tenant: t.to_owned(), erasure: Some(erasure.clone()) });
        store::outbox(&tx, t, "customers", &view.root.id, &event.encode()).await?;
        tx.commit().await.map_err(Error::from)?;
        self.metrics.erasure(e.deleted_rows.iter().map(|(table, n)| (table.as_str(), *n)));
        self.outbox.notify_one();
        tracing::info!(tenant = t, erasure = %erasure.name, profiles = e.customer_ids.len(), "customer erased");
        Ok(Response::new(erasure))
    }

    async fn get_erasure(&self, request: Request<pb::GetErasureRequest>) -> R<pb::Erasure> {
        let caller = caller(&request)?.clone();
        let tenant = tenant_for(&caller, &[Role::TenantAdmin])?;
        let name = request.into_inner().name;
        let id = name
            .strip_prefix("erasures/")
            .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Error::invalid("name", "must be `erasures/{id}`"))?;
        let mut client = self.client().await?;
        let tx = store::begin(&mut client, &tenant).await?;
        let e = store::erasure(&tx, tenant.as_str(), id).await?.ok_or_else(|| not_found(&name))?;
        tx.commit().await.map_err(Error::from)?;
        Ok(Response::new(erasure_pb(tenant.as_str(), &e)))
    }
}
