//! The floor: customers arriving and waiting (and hanging up), agents answering offers,
//! handling and wrapping up, and the progress line.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centralita_platform::auth::Role;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1 as tpb;
use pb::agent_service_client::AgentServiceClient;
use pb::contact_service_client::ContactServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::draw::{channel_of, Rng};
use super::state::{answered_offer, lock, record_call, recovered, retrying, ContactRec};
use super::Setup;
use crate::scenario;
use crate::{req, unix_micros};

/// How long a simulated frontend keeps retrying a call that failed transiently (the service
/// restarting) before it counts the call as failed.
/// A debug-built service restarted by a chaos run is back within seconds; a minute covers
/// a slow restart on a loaded machine.
const CALL_BUDGET: Duration = Duration::from_secs(60);

/// One round of attempts to reopen an agent's event stream; rounds go on until the run is
/// over (`Setup::over`), so an agent is never lost to a long outage.
const STREAM_BUDGET: Duration = Duration::from_secs(30);

/// An agent's call on a contact, retried while sessions is unavailable, recorded by
/// `answered_offer` (whose answer it returns).
macro_rules! agent_call {
    ($shared:expr, $rpc:literal, $client:expr, $token:expr, $msg:expr, $method:ident) => {{
        let msg = $msg;
        let (result, t) = retrying($shared, $rpc, CALL_BUDGET, || {
            let (mut client, r) = ($client.clone(), req(msg.clone(), &$token));
            async move {
                let r = r.map_err(|e| tonic::Status::internal(e.to_string()))?;
                client.$method(r).await.map(|_| ())
            }
        })
        .await;
        (result, t)
    }};
}

/// Runs an RPC, timing it and counting its error.
macro_rules! call {
    ($shared:expr, $name:literal, $fut:expr) => {{
        let t = Instant::now();
        let r = $fut.await;
        $crate::simulate::state::record_call($shared, $name, t.elapsed(), r.as_ref().map(|_| ()));
        r
    }};
}

pub(super) async fn arrivals(
    setup: Arc<Setup>,
    ti: usize,
    qi: usize,
    multiplier: f64,
    end: Instant,
    step: usize,
    mut rng: Rng,
) -> anyhow::Result<()> {
    let sc = &setup.sc;
    let t = &sc.tenants[ti];
    let q = &t.queues[qi];
    let tenant = setup.tenant_id(&t.id);
    let token = setup.auth.token(Some(&tenant), Role::Channel, None)?;
    let rate = q.arrivals_per_second * sc.time_scale * multiplier;
    let mut next = Instant::now() + Duration::from_secs_f64(rng.exp(1.0 / rate));
    let mut n = 0u64;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        n += 1;
        let channel = channel_of(rng.pick(&q.channels));
        let handle = setup.scale(rng.draw(&q.handle));
        let patience = q.patience.map(|p| setup.scale(rng.draw(&p)));
        let client = ContactServiceClient::new(setup.channels[(n as usize) % setup.channels.len()].clone());
        let (setup2, token, tenant, queue) = (setup.clone(), token.clone(), tenant.clone(), q.id.clone());
        // With the full check, each customer is one of the tenant's CUSTOMERS phone numbers
        // (not drawn from `rng`: a seed's draws stay what they were), so CRM's timelines
        // can be checked; customers call more than once.
        let phone = setup.identities.then(|| phone_of(ti, qi, n));
        // Customers live on their own (a patient one may outlast the arrivals).
        tokio::spawn(async move {
            customer(setup2, client, token, tenant, queue, channel, handle, patience, step, phone).await
        });
        next += Duration::from_secs_f64(rng.exp(1.0 / rate));
    }
    Ok(())
}

/// How many customers (phone numbers) a tenant's arrivals are spread over in a full check.
pub(super) const CUSTOMERS: u64 = 30;

/// The phone number of a tenant's `n`th arrival in queue `qi`: one of `CUSTOMERS`, E.164.
pub(super) fn phone_of(ti: usize, qi: usize, n: u64) -> String {
    let i = (n.wrapping_mul(2_654_435_761).wrapping_add(qi as u64 * 7919)) % CUSTOMERS;
    format!("+3491{:02}{i:05}", ti % 100)
}

#[allow(clippy::too_many_arguments)]
async fn customer(
    setup: Arc<Setup>,
    client: ContactServiceClient<Channel>,
    token: String,
    tenant: String,
    queue: String,
    channel: tpb::Channel,
    handle: Duration,
    patience: Option<Duration>,
    step: usize,
    phone: Option<String>,
) {
    let shared = &setup.shared;
    let created = Instant::now();
    let contact = pb::Contact {
        channel: channel as i32,
        queue: queue.clone(),
        customer_identities: phone
            .iter()
            .map(|p| centralita_proto::crm::v1::Identity {
                kind: centralita_proto::crm::v1::IdentityKind::Phone as i32,
                value: p.clone(),
                network: String::new(),
            })
            .collect(),
        attributes: [
            ("t0".to_owned(), unix_micros().to_string()),
            ("handle_us".to_owned(), handle.as_micros().to_string()),
        ]
        .into(),
        ..Default::default()
    };
    // One request id for every attempt: a retry after the service restarted returns the
    // contact the first attempt made, never a second one.
    let request = pb::CreateContactRequest { contact: Some(contact), request_id: uuid::Uuid::now_v7().to_string() };
    let (result, t) = retrying(shared, "CreateContact", CALL_BUDGET, || {
        let (mut client, r) = (client.clone(), req(request.clone(), &token));
        async move {
            let r = r.map_err(|e| tonic::Status::internal(e.to_string()))?;
            client.create_contact(r).await.map(tonic::Response::into_inner)
        }
    })
    .await;
    record_call(shared, "CreateContact", t.elapsed(), result.as_ref().map(|_| ()));
    let Ok(c) = result else { return };
    let name = c.name;
    {
        let mut st = lock(shared);
        if let Some(s) = st.steps.get_mut(step) {
            s.created += 1;
        }
        let rec = st.contacts.entry(name.clone()).or_insert_with(|| ContactRec::new(tenant, queue, created, step));
        rec.created = created;
        rec.step = step;
        rec.handle_sim = handle.as_secs_f64() * setup.sc.time_scale;
        rec.phone = phone;
    }
    let Some(patience) = patience else { return };
    tokio::time::sleep(patience).await;
    let still_waiting = lock(shared).contacts.get(&name).is_some_and(|c| c.accepted.is_none());
    if !still_waiting {
        return;
    }
    // Refused (FAILED_PRECONDITION) when an agent took it meanwhile: that is no error.
    let (result, t) = retrying(shared, "EndContact (customer)", CALL_BUDGET, || {
        let (mut client, r) =
            (client.clone(), req(pb::EndContactRequest { name: name.clone(), ..Default::default() }, &token));
        async move {
            let r = r.map_err(|e| tonic::Status::internal(e.to_string()))?;
            client.end_contact(r).await.map(tonic::Response::into_inner)
        }
    })
    .await;
    match result {
        Ok(c) => {
            record_call(shared, "EndContact (customer)", t.elapsed(), Ok(()));
            if c.state == pb::ContactState::Abandoned as i32 {
                if let Some(rec) = lock(shared).contacts.get_mut(&name) {
                    rec.abandoned = true;
                }
            }
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            record_call(shared, "EndContact (customer)", t.elapsed(), Ok(()));
        }
        Err(s) => record_call(shared, "EndContact (customer)", t.elapsed(), Err(&s)),
    }
}

pub(super) async fn agent_loop(
    setup: Arc<Setup>,
    id: String,
    channel: Channel,
    token: String,
    mut stream: tonic::Streaming<pb::AgentStreamEvent>,
    behaviour: scenario::AgentGroup,
    mut rng: Rng,
) {
    let shared = setup.shared.clone();
    let mut seen_offers: HashSet<String> = HashSet::new();
    loop {
        let Some(Ok(event)) = stream.next().await else {
            // The stream ended or failed (sessions restarting, the connection lost): a real
            // frontend opens it again and carries on; the offers it holds come back first
            // (already-seen ones are skipped).
            match reopen(&setup, &id, &channel, &token).await {
                Some(s) => {
                    stream = s;
                    recovered(&shared, "StreamAgentEvents: reopened".to_owned());
                    continue;
                }
                None => break,
            }
        };
        match event.event {
            Some(pb::agent_stream_event::Event::Offer(c)) => {
                if !seen_offers.insert(c.offer_id.clone()) {
                    continue; // re-sent on reconnect
                }
                let now = Instant::now();
                let t0 = c.attributes.get("t0").and_then(|v| v.parse::<u64>().ok());
                let handle =
                    c.attributes.get("handle_us").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_micros);
                {
                    let mut st = lock(&shared);
                    st.offers += 1;
                    let step = st.step;
                    let first = st.contacts.get(&c.name).is_none_or(|r| r.offered.is_none());
                    if first {
                        if let (Some(t0), Some(s)) = (t0, st.steps.get_mut(step)) {
                            if let Some(h) = s.enqueue_to_offer.as_mut() {
                                let _ = h.record(unix_micros().saturating_sub(t0).max(1));
                            }
                        }
                        // The offer may beat the CreateContact response: the record is made here.
                        let rec = st
                            .contacts
                            .entry(c.name.clone())
                            .or_insert_with(|| ContactRec::new(c.tenant.clone(), c.queue.clone(), now, step));
                        rec.offered = Some(now);
                    }
                }
                let u = rng.next_f64();
                let think = setup.scale(behaviour.think_seconds);
                if u < behaviour.ignore_probability {
                    lock(&shared).ignored += 1;
                    continue;
                }
                let reject = u < behaviour.ignore_probability + behaviour.reject_probability;
                let wrap = setup.scale(behaviour.wrap_up_seconds);
                let behaviour_think = behaviour.think_seconds;
                let capacity = behaviour.capacity.clone();
                let (setup, id, token, channel_name) = (
                    setup.clone(),
                    id.clone(),
                    token.clone(),
                    tpb::Channel::try_from(c.channel)
                        .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_ascii_lowercase())
                        .unwrap_or_default(),
                );
                let client = ContactServiceClient::new(channel.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(think).await;
                    let timing =
                        Timing { offer_at: now, think_sim: behaviour_think, handle: handle.unwrap_or_default(), wrap };
                    work(setup, client, id, token, c, channel_name, capacity, reject, timing).await;
                });
            }
            // Let an offer ring out: the agent is made away (not responding); it comes back.
            // Made away as disconnected (its stream was gone for the presence grace while
            // sessions restarted): once the stream is back, the agent is available again.
            Some(pb::agent_stream_event::Event::Agent(a))
                if a.state == pb::AgentState::Away as i32
                    && (a.away_reason == "not_responding" || a.away_reason == "disconnected") =>
            {
                let (shared, token, name) = (shared.clone(), token.clone(), a.name.clone());
                let mut agents = AgentServiceClient::new(channel.clone());
                let id = id.clone();
                tokio::spawn(async move {
                    let since = Instant::now();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(r) = req(
                        pb::SetAgentStateRequest {
                            name,
                            state: pb::AgentState::Available as i32,
                            away_reason: String::new(),
                        },
                        &token,
                    ) {
                        let _ = call!(&shared, "SetAgentState", agents.set_agent_state(r));
                    }
                    lock(&shared).away.entry(id).or_default().push((since, Instant::now()));
                });
            }
            _ => {}
        }
    }
    // The stream could not be reopened while the run still needed this agent: the floor is
    // one agent short from here, which the results must show.
    *lock(&shared).errors.entry("StreamAgentEvents: ended".to_owned()).or_default() += 1;
}

/// Opens the agent's event stream again, retrying while sessions is unavailable (backoff
/// with jitter, capped); `None` once sessions answers for good (the agent refused) or the
/// run is over. Sessions sends the agent's state and every contact it holds first (offers
/// made while the stream was closed among them), so nothing offered is lost; offers
/// already seen are skipped by their offer id.
async fn reopen(
    setup: &Setup,
    id: &str,
    channel: &Channel,
    token: &str,
) -> Option<tonic::Streaming<pb::AgentStreamEvent>> {
    let name = format!("agents/{id}");
    loop {
        let (result, _) = retrying(&setup.shared, "StreamAgentEvents", STREAM_BUDGET, || {
            let mut agents = AgentServiceClient::new(channel.clone());
            let r = req(pb::StreamAgentEventsRequest { name: name.clone() }, token);
            async move {
                let r = r.map_err(|e| tonic::Status::internal(e.to_string()))?;
                agents.stream_agent_events(r).await.map(tonic::Response::into_inner)
            }
        })
        .await;
        match result {
            Ok(s) => return Some(s),
            // Transient the whole round (sessions down longer than that): another round,
            // unless the run is over.
            Err(s) if super::state::transient(&s) && !setup.over.load(std::sync::atomic::Ordering::Relaxed) => {
                recovered(&setup.shared, "StreamAgentEvents: still retrying".to_owned());
            }
            Err(_) => return None,
        }
    }
}

/// When an offer arrived and how long the agent thinks (simulated), talks and wraps up.
struct Timing {
    offer_at: Instant,
    think_sim: f64,
    handle: Duration,
    wrap: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn work(
    setup: Arc<Setup>,
    mut client: ContactServiceClient<Channel>,
    id: String,
    token: String,
    c: pb::Contact,
    channel: String,
    capacity: BTreeMap<String, u32>,
    reject: bool,
    timing: Timing,
) {
    let Timing { offer_at, think_sim, handle, wrap } = timing;
    let shared = &setup.shared;
    if reject {
        let msg = pb::RejectContactRequest { name: c.name.clone(), offer_id: c.offer_id.clone() };
        let (result, t) = agent_call!(shared, "RejectContact", client, token, msg, reject_contact);
        answered_offer(shared, "RejectContact", t, result);
        lock(shared).rejects += 1;
        return;
    }
    let msg = pb::AcceptContactRequest { name: c.name.clone(), offer_id: c.offer_id.clone() };
    let (mut result, t) = agent_call!(shared, "AcceptContact", client, token, msg, accept_contact);
    if matches!(&result, Err(s) if s.code() == tonic::Code::FailedPrecondition) {
        // A retry after a lost answer finds the contact already accepted: by this agent,
        // it is ours (a frontend reads the contact back, as here).
        if let Ok(r) = req(pb::GetContactRequest { name: c.name.clone() }, &token) {
            if let Ok(now) = client.get_contact(r).await {
                let now = now.into_inner();
                if now.state == pb::ContactState::Connected as i32 && now.agent_id == id {
                    result = Ok(());
                }
            }
        }
    }
    if !answered_offer(shared, "AcceptContact", t, result) {
        return;
    }
    let now = Instant::now();
    {
        let mut st = lock(shared);
        if let Some(rec) = st.contacts.get_mut(&c.name) {
            rec.accepted.get_or_insert(now);
            rec.answered_offer.get_or_insert(offer_at);
            rec.think_sim = think_sim;
            rec.accepts += 1;
        }
        let held = st.held.entry(id.clone()).or_default();
        *held.entry(channel.clone()).or_default() += 1;
        let total: u32 = held.values().sum();
        let over_channel = held.get(&channel).copied().unwrap_or(0) > capacity.get(&channel).copied().unwrap_or(0);
        let voice_not_alone = held.get("voice").copied().unwrap_or(0) > 0 && total > 1;
        if over_channel || voice_not_alone {
            let v = format!("agent {id} held {held:?} (capacity {capacity:?})");
            st.capacity_violations.push(v);
        }
        st.busy_since.entry(id.clone()).or_insert(now);
    }
    setup.pause(handle).await;
    // Refused only when the customer hung up first (the conversation is over already).
    let (result, t) = agent_call!(
        shared,
        "EndContact",
        client,
        token,
        pb::EndContactRequest { name: c.name.clone(), ..Default::default() },
        end_contact
    );
    answered_offer(shared, "EndContact", t, result);
    setup.pause(wrap).await;
    // The capacity is counted free from the moment the wrap-up is sent: the platform frees it
    // when it processes the call and may offer the next contact before our response arrives.
    // An offer that came before this point and overlapped would still count as a violation.
    {
        let mut st = lock(shared);
        let released = Instant::now();
        let idle = {
            let held = st.held.entry(id.clone()).or_default();
            if let Some(n) = held.get_mut(&channel) {
                *n = n.saturating_sub(1);
            }
            held.values().all(|n| *n == 0)
        };
        if idle {
            if let Some(since) = st.busy_since.remove(&id) {
                st.busy.entry(id).or_default().push((since, released));
            }
        }
        st.wrapping += 1;
    }
    let wrap_up =
        pb::WrapUpContactRequest { name: c.name.clone(), disposition: "resolved".into(), notes: String::new() };
    let (result, t) = agent_call!(shared, "WrapUpContact", client, token, wrap_up, wrap_up_contact);
    lock(shared).wrapping -= 1;
    answered_offer(shared, "WrapUpContact", t, result);
}

pub(super) async fn progress_loop(setup: Arc<Setup>, every: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.tick().await;
    loop {
        tick.tick().await;
        let st = lock(&setup.shared);
        let created = st.contacts.len();
        let answered = st.contacts.values().filter(|c| c.accepted.is_some()).count();
        let abandoned = st.contacts.values().filter(|c| c.abandoned).count();
        let waiting = created - answered - abandoned;
        let errors: u64 = st.errors.values().sum();
        eprintln!(
            "[sim] {:>6.0} s real ({:>7.0} s simulated): {created} created, {answered} answered, {abandoned} abandoned, {waiting} waiting, {} busy agents, {errors} errors",
            setup.started.elapsed().as_secs_f64(),
            setup.started.elapsed().as_secs_f64() * setup.sc.time_scale,
            st.busy_since.len()
        );
    }
}
