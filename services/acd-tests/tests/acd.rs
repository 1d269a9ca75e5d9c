//! The ACD end to end: the sessions and routing services in-process on ephemeral ports,
//! against the real Redis and Kafka-protocol broker of the local stack, driven over gRPC.
//! Every test has its own topic prefix, tenants and agent ids, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use centralita_platform::auth::Role;
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::config::ServiceArgs;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantManifest;
use centralita_platform::testkit::{self, common, redis, request as req, token, unique, wait_ready};
use centralita_proto::crm::v1 as crm;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1 as tpb;
use pb::agent_service_client::AgentServiceClient;
use pb::agent_stream_event::Event as Notice;
use pb::contact_service_client::ContactServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

/// Tenants whose id starts with `closed` open only on the weekday three days from today;
/// those starting with `east` or `north` are in that agent pool; those starting with `reg`
/// have a registrar for their agents' phones (their calls reach an agent with a phone
/// registered there).
fn tenant_yaml(id: &str) -> String {
    let pool = ["east", "north"].into_iter().find(|p| id.starts_with(p));
    tenant_yaml_in(id, pool)
}

fn tenant_yaml_in(id: &str, pool: Option<&str>) -> String {
    let pool = pool.map(|p| format!("agentPool: {p}\n    ")).unwrap_or_default();
    let hours = if id.starts_with("closed") {
        let day = (chrono::Utc::now() + chrono::Duration::days(3)).format("%a").to_string().to_lowercase();
        format!("{{ timeZone: UTC, windows: [{{ days: [{day}], open: \"00:00\", close: \"24:00\" }}] }}")
    } else {
        "{ timeZone: Europe/Madrid }".to_owned()
    };
    let voice = if id.starts_with("reg") {
        format!("voice: {{ registrar: {{ domain: {id}.example.com, credentialsSecret: {id}-phones }} }}\n  ")
    } else {
        String::new()
    };
    format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  {voice}displayName: {id}
  channels: [voice, chat, email]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {hours}
  dataRetentionDays: 30
  recording: {{ voice: all }}
  routing:
    {pool}awayReasons: [break]
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 2, afterContactWorkSeconds: 60, preferredAgentSeconds: 30 }}
      - {{ id: sales, priority: 10 }}
"#
    )
}

async fn publish_tenant(topics: &Topics, id: &str, yaml: &str) {
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    let t = TenantManifest::parse_all(yaml, chrono::Utc::now()).unwrap().remove(0);
    producer.publish(&topics.tenants(), id, &Event::new(t.id.clone(), &tpb::Tenant::from(&t))).await.unwrap();
}

struct Platform {
    topics: Topics,
    sessions: Channel,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

async fn start(tenants: &[&str]) -> Platform {
    start_with(tenants, Duration::from_secs(30)).await
}

async fn start_with(tenants: &[&str], presence_grace: Duration) -> Platform {
    start_on(tenants, presence_grace, 1).await
}

/// With `partitions` partitions per topic (the routing logs included).
async fn start_on(tenants: &[&str], presence_grace: Duration, partitions: i32) -> Platform {
    let common = |prefix: &str| {
        let mut c = common(prefix);
        c.kafka.partitions = partitions;
        c
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let prefix = unique("acd-") + ".";
    let brokers = testkit::brokers();
    let topics = Topics::new(prefix.clone());
    ensure_topics(&brokers, 1, &[TopicSpec { name: topics.tenants(), partitions: 1, compacted: true }]).await.unwrap();
    for id in tenants {
        publish_tenant(&topics, id, &tenant_yaml(id)).await;
    }
    let shutdown = Shutdown::new();
    let routing_cfg = ServiceArgs {
        common: common(&prefix),
        service: centralita_routing::RoutingSettings {
            redis: redis(),
            tick: Duration::from_millis(100),
            snapshot_every: Duration::from_millis(500),
        },
    };
    let sessions_cfg = ServiceArgs {
        common: common(&prefix),
        service: centralita_sessions::SessionsSettings { redis: redis(), presence_grace },
    };
    let rl = Listeners::ephemeral().await.unwrap();
    let sl = Listeners::ephemeral().await.unwrap();
    let grpc = sl.grpc_addr();
    let admin = sl.admin_addr();
    let tasks = vec![
        tokio::spawn(centralita_routing::run(routing_cfg, rl, shutdown.clone())),
        tokio::spawn(centralita_sessions::run(sessions_cfg, sl, shutdown.clone())),
    ];
    // Ready once the tenants are consumed and the stores answer.
    let client = wait_ready(admin).await;
    assert!(client, "sessions did not become ready");
    let sessions = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    Platform { topics, sessions, shutdown, tasks }
}

impl Platform {
    fn agents(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.sessions.clone())
    }

    fn contacts(&self) -> ContactServiceClient<Channel> {
        ContactServiceClient::new(self.sessions.clone())
    }

    async fn stop(self) {
        self.shutdown.trigger();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }

    /// The agent as a BPO admin reads it.
    async fn agent_record(&self, id: &str) -> pb::Agent {
        let admin = token(None, Role::BpoAdmin, None);
        self.agents()
            .get_agent(req(pb::GetAgentRequest { name: format!("agents/{id}") }, &admin))
            .await
            .unwrap()
            .into_inner()
    }

    async fn agent(&self, id: &str, queues: &[(&str, &str)], capacity: &[(tpb::Channel, u32, bool)]) -> pb::Agent {
        let admin = token(None, Role::BpoAdmin, None);
        let agent = pb::Agent {
            name: format!("agents/{id}"),
            display_name: id.into(),
            queues: queues
                .iter()
                .map(|(t, q)| pb::QueueAssignment { tenant: (*t).into(), queue: (*q).into() })
                .collect(),
            skills: [("english".to_string(), 4)].into(),
            languages: vec!["en".into()],
            capacity: capacity
                .iter()
                .map(|(c, n, x)| pb::ChannelCapacity { channel: *c as i32, max_contacts: *n, exclusive: *x })
                .collect(),
            ..Default::default()
        };
        self.agents()
            .upsert_agent(req(pb::UpsertAgentRequest { agent: Some(agent) }, &admin))
            .await
            .unwrap()
            .into_inner()
    }

    async fn sign_in(&self, id: &str) -> tonic::Streaming<pb::AgentStreamEvent> {
        let t = token(None, Role::Agent, Some(id));
        self.agents()
            .sign_in(req(pb::SignInRequest { name: format!("agents/{id}"), available: true }, &t))
            .await
            .unwrap();
        self.agents()
            .stream_agent_events(req(pb::StreamAgentEventsRequest { name: format!("agents/{id}") }, &t))
            .await
            .unwrap()
            .into_inner()
    }

    /// The agent makes itself available (`away` empty) or away with that reason.
    async fn set_state(&self, id: &str, away: &str) {
        let state = if away.is_empty() { pb::AgentState::Available } else { pb::AgentState::Away };
        let r =
            pb::SetAgentStateRequest { name: format!("agents/{id}"), state: state as i32, away_reason: away.into() };
        self.agents().set_agent_state(req(r, &agent_token(id))).await.unwrap();
    }

    async fn create(&self, tenant: &str, queue: &str, channel: tpb::Channel) -> pb::Contact {
        let t = token(Some(tenant), Role::Channel, None);
        let contact = pb::Contact { channel: channel as i32, queue: queue.into(), ..Default::default() };
        self.contacts()
            .create_contact(req(pb::CreateContactRequest { contact: Some(contact), request_id: String::new() }, &t))
            .await
            .unwrap()
            .into_inner()
    }
}

/// The next offer on an agent stream (skipping other notices), within `timeout`.
async fn next_offer(stream: &mut tonic::Streaming<pb::AgentStreamEvent>, timeout: Duration) -> Option<pb::Contact> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(pb::AgentStreamEvent { event: Some(Notice::Offer(c)), .. }))) => return Some(c),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

fn agent_token(id: &str) -> String {
    token(None, Role::Agent, Some(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_agent_serves_two_tenants_within_capacity_and_wraps_up() {
    let (a, b) = (unique("ta"), unique("tb"));
    let p = start(&[&a, &b]).await;
    let ana = unique("ana");
    p.agent(
        &ana,
        &[(&a, "support"), (&b, "support")],
        &[(tpb::Channel::Voice, 1, true), (tpb::Channel::Chat, 2, false)],
    )
    .await;
    let mut stream = p.sign_in(&ana).await;
    let t = agent_token(&ana);

    // Two chats of two tenants: both offered to the one shared agent (chat capacity 2).
    let c1 = p.create(&a, "support", tpb::Channel::Chat).await;
    let c2 = p.create(&b, "support", tpb::Channel::Chat).await;
    let o1 = next_offer(&mut stream, Duration::from_secs(10)).await.expect("first chat offered");
    let o2 = next_offer(&mut stream, Duration::from_secs(10)).await.expect("second chat offered");
    let mut offered = [o1.name.clone(), o2.name.clone()];
    offered.sort();
    let mut created = [c1.name.clone(), c2.name.clone()];
    created.sort();
    assert_eq!(offered, created);
    // Accept both chats (offers time out after 2 s in this queue).
    for o in [&o1, &o2] {
        let r = p
            .contacts()
            .accept_contact(req(pb::AcceptContactRequest { name: o.name.clone(), offer_id: o.offer_id.clone() }, &t))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state, pb::ContactState::Connected as i32);
    }
    // A voice call is exclusive: not offered while the agent holds chats.
    let v = p.create(&a, "support", tpb::Channel::Voice).await;
    assert!(next_offer(&mut stream, Duration::from_secs(2)).await.is_none(), "voice offered over chats");
    // End both chats and wrap up with a disposition; the voice call then comes.
    for o in [&o1, &o2] {
        let r = p
            .contacts()
            .end_contact(req(pb::EndContactRequest { name: o.name.clone(), ..Default::default() }, &t))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state, pb::ContactState::AfterContactWork as i32);
    }
    let bad = p
        .contacts()
        .wrap_up_contact(req(
            pb::WrapUpContactRequest { name: o1.name.clone(), disposition: "nope".into(), notes: String::new() },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    for o in [&o1, &o2] {
        let r = p
            .contacts()
            .wrap_up_contact(req(
                pb::WrapUpContactRequest { name: o.name.clone(), disposition: "resolved".into(), notes: "ok".into() },
                &t,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state, pb::ContactState::Closed as i32);
    }
    let ov = next_offer(&mut stream, Duration::from_secs(10)).await.expect("voice offered once the chats are closed");
    assert_eq!(ov.name, v.name);
    // An illegal transition is refused and changes nothing.
    let e = p
        .contacts()
        .wrap_up_contact(req(
            pb::WrapUpContactRequest { name: ov.name.clone(), disposition: "resolved".into(), notes: String::new() },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let still =
        p.contacts().get_contact(req(pb::GetContactRequest { name: ov.name.clone() }, &t)).await.unwrap().into_inner();
    assert_eq!(still.state, pb::ContactState::Offered as i32);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rona_abandon_and_transfer() {
    let a = unique("tr");
    let p = start(&[&a]).await;
    let (ana, bob) = (unique("ana"), unique("bob"));
    for id in [&ana, &bob] {
        p.agent(id, &[(&a, "support"), (&a, "sales")], &[(tpb::Channel::Voice, 1, true)]).await;
    }
    let mut sa = p.sign_in(&ana).await;
    // RONA: only ana is available; she lets the offer ring out (2 s) and goes away.
    let c = p.create(&a, "support", tpb::Channel::Voice).await;
    let o = next_offer(&mut sa, Duration::from_secs(10)).await.expect("offered to ana");
    assert_eq!(o.name, c.name);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ag = p
        .agents()
        .get_agent(req(pb::GetAgentRequest { name: format!("agents/{ana}") }, &agent_token(&ana)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ag.state, ag.away_reason.as_str()), (pb::AgentState::Away as i32, "not_responding"));
    let late = p
        .contacts()
        .accept_contact(req(
            pb::AcceptContactRequest { name: o.name.clone(), offer_id: o.offer_id.clone() },
            &agent_token(&ana),
        ))
        .await
        .unwrap_err();
    assert!(matches!(late.code(), Code::FailedPrecondition | Code::NotFound), "{late:?}");
    // Bob signs in and gets it, back at its place in the queue.
    let mut sb = p.sign_in(&bob).await;
    let ob = next_offer(&mut sb, Duration::from_secs(10)).await.expect("offered to bob after RONA");
    assert_eq!(ob.name, c.name);
    let tb = agent_token(&bob);
    p.contacts()
        .accept_contact(req(pb::AcceptContactRequest { name: ob.name.clone(), offer_id: ob.offer_id.clone() }, &tb))
        .await
        .unwrap();
    // Cold transfer to the sales queue: bob (now on a break) is released, ana (available
    // again) gets it.
    p.set_state(&bob, "break").await;
    p.set_state(&ana, "").await;
    let moved = p
        .contacts()
        .transfer_contact(req(
            pb::TransferContactRequest {
                name: ob.name.clone(),
                target: Some(pb::transfer_contact_request::Target::Queue("sales".into())),
            },
            &tb,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (moved.state, moved.queue.as_str(), moved.transfer_count),
        (pb::ContactState::Queued as i32, "sales", 1)
    );
    let oa = next_offer(&mut sa, Duration::from_secs(10)).await.expect("transferred contact offered to ana");
    assert_eq!(oa.name, c.name);
    // Abandon while queued: nobody is free (ana holds the offer), the customer hangs up.
    let d = p.create(&a, "support", tpb::Channel::Voice).await;
    let ch = token(Some(&a), Role::Channel, None);
    let gone = p
        .contacts()
        .end_contact(req(pb::EndContactRequest { name: d.name.clone(), ..Default::default() }, &ch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.state, pb::ContactState::Abandoned as i32);
    assert!(next_offer(&mut sb, Duration::from_secs(2)).await.is_none(), "an abandoned contact was offered");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_a_cannot_see_or_touch_tenant_b() {
    let (a, b) = (unique("ia"), unique("ib"));
    let p = start(&[&a, &b]).await;
    let ana = unique("ana");
    p.agent(&ana, &[(&b, "support")], &[(tpb::Channel::Chat, 1, false)]).await;
    let cb = p.create(&b, "support", tpb::Channel::Chat).await;
    let sup_a = token(Some(&a), Role::Supervisor, None);
    let admin_a = token(Some(&a), Role::TenantAdmin, None);
    // Contacts: get, hold, end, list.
    let e = p.contacts().get_contact(req(pb::GetContactRequest { name: cb.name.clone() }, &sup_a)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = p
        .contacts()
        .end_contact(req(pb::EndContactRequest { name: cb.name.clone(), ..Default::default() }, &admin_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let listed =
        p.contacts().list_contacts(req(pb::ListContactsRequest::default(), &sup_a)).await.unwrap().into_inner();
    assert!(listed.contacts.is_empty());
    let listed_b = p
        .contacts()
        .list_contacts(req(pb::ListContactsRequest::default(), &token(Some(&b), Role::Supervisor, None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed_b.contacts.len(), 1);
    // Agents: B's agent is invisible to A's supervisor; A cannot manage agents.
    let e = p.agents().get_agent(req(pb::GetAgentRequest { name: format!("agents/{ana}") }, &sup_a)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(p
        .agents()
        .list_agents(req(pb::ListAgentsRequest::default(), &sup_a))
        .await
        .unwrap()
        .into_inner()
        .agents
        .is_empty());
    let e = p.agents().upsert_agent(req(pb::UpsertAgentRequest { agent: None }, &admin_a)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Even a BPO admin cannot assign an agent to a queue its tenant does not have (no contact
    // would ever reach the agent through it); nothing is written.
    let nowhere = pb::Agent {
        name: format!("agents/{}", unique("nowhere")),
        queues: vec![
            pb::QueueAssignment { tenant: a.clone(), queue: "support".into() },
            pb::QueueAssignment { tenant: b.clone(), queue: "nosuchqueue".into() },
        ],
        capacity: vec![pb::ChannelCapacity { channel: tpb::Channel::Chat as i32, max_contacts: 1, exclusive: false }],
        ..Default::default()
    };
    let bpo = token(None, Role::BpoAdmin, None);
    let e =
        p.agents().upsert_agent(req(pb::UpsertAgentRequest { agent: Some(nowhere.clone()) }, &bpo)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(&b) && e.message().contains("nosuchqueue"), "{e:?}");
    let e = p.agents().get_agent(req(pb::GetAgentRequest { name: nowhere.name.clone() }, &bpo)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Queues: A cannot create a contact in a queue it does not have, nor impersonate an agent.
    let bad = pb::Contact { channel: tpb::Channel::Chat as i32, queue: "billing".into(), ..Default::default() };
    let e = p
        .contacts()
        .create_contact(req(pb::CreateContactRequest { contact: Some(bad), request_id: String::new() }, &admin_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = p
        .agents()
        .sign_in(req(
            pb::SignInRequest { name: format!("agents/{ana}"), available: true },
            &agent_token("someone-else"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Queue stats: each supervisor sees only its own tenant's queues and agents.
    let stats = |t: String, queue: &str| {
        let mut c = p.contacts();
        let r = req(pb::ListQueueStatsRequest { queue: queue.into() }, &t);
        async move { c.list_queue_stats(r).await }
    };
    let a_stats = stats(sup_a.clone(), "").await.unwrap().into_inner();
    assert_eq!(a_stats.queues.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(), ["sales", "support"]);
    assert!(a_stats.queues.iter().all(|q| q.waiting == 0 && q.agents_offline == 0), "{a_stats:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b_stats = stats(token(Some(&b), Role::Supervisor, None), "support").await.unwrap().into_inner();
    assert_eq!(b_stats.queues.len(), 1);
    let q = &b_stats.queues[0];
    assert_eq!((q.waiting, q.agents_offline, q.agents_available), (1, 1, 0), "{q:?}");
    assert!(q.longest_wait_ms >= 50, "the contact has waited at least 50 ms: {q:?}");
    assert_eq!(stats(sup_a.clone(), "nope").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(stats(agent_token(&ana), "").await.unwrap_err().code(), Code::PermissionDenied);
    // Consults: an agent serving only tenant A cannot consult on or complete B's contact.
    let ann = unique("ann");
    p.agent(&ann, &[(&a, "support")], &[(tpb::Channel::Chat, 1, false)]).await;
    let target = Some(pb::consult_contact_request::Target::Queue("support".into()));
    let consult = pb::ConsultContactRequest { name: cb.name.clone(), target };
    let e = p.contacts().consult_contact(req(consult, &agent_token(&ann))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let cancel = pb::complete_consult_request::Outcome::Cancel as i32;
    let complete = pb::CompleteConsultRequest { name: cb.name.clone(), outcome: cancel };
    let e = p.contacts().complete_consult(req(complete, &agent_token(&ann))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    p.stop().await;
}

#[tokio::test]
async fn closed_tenant_turns_live_channels_away_and_queues_email() {
    let closed = unique("closed");
    let p = start(&[&closed]).await;
    let channel = token(Some(&closed), Role::Channel, None);
    let contact = |ch: tpb::Channel| pb::CreateContactRequest {
        contact: Some(pb::Contact { channel: ch as i32, queue: "support".into(), ..Default::default() }),
        request_id: String::new(),
    };
    for ch in [tpb::Channel::Voice, tpb::Channel::Chat] {
        let e = p.contacts().create_contact(req(contact(ch), &channel)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{ch:?}");
        assert!(e.message().contains("closed"), "{}", e.message());
    }
    let email = p.contacts().create_contact(req(contact(tpb::Channel::Email), &channel)).await.unwrap().into_inner();
    assert_eq!(email.state, pb::ContactState::Queued as i32);
    let listed = p
        .contacts()
        .list_contacts(req(pb::ListContactsRequest::default(), &token(Some(&closed), Role::Supervisor, None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.contacts.len(), 1, "only the email was queued");
    p.stop().await;
}

#[tokio::test]
async fn customer_identities_are_normalised_or_refused_by_field() {
    let a = unique("ids-");
    let p = start(&[&a]).await;
    let admin = token(Some(&a), Role::TenantAdmin, None);
    // Customer identities are normalised at creation (E.164, lower-case email); a malformed
    // one is refused with its field.
    let ident = |kind: crm::IdentityKind, value: &str| crm::Identity {
        kind: kind as i32,
        value: value.into(),
        network: String::new(),
    };
    let with_ids = |ids: Vec<crm::Identity>| pb::Contact {
        channel: tpb::Channel::Email as i32,
        queue: "support".into(),
        customer_identities: ids,
        ..Default::default()
    };
    let e = p
        .contacts()
        .create_contact(req(
            pb::CreateContactRequest {
                contact: Some(with_ids(vec![
                    ident(crm::IdentityKind::Phone, "+34 600 1"),
                    ident(crm::IdentityKind::Email, "no-at-sign"),
                ])),
                request_id: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("customer_identities[0]") && e.message().contains("customer_identities[1]"),
        "{}",
        e.message()
    );
    let c = p
        .contacts()
        .create_contact(req(
            pb::CreateContactRequest {
                contact: Some(with_ids(vec![
                    ident(crm::IdentityKind::Phone, "0034 600 111 222"),
                    ident(crm::IdentityKind::Email, "Ana@Example.COM"),
                ])),
                request_id: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let values: Vec<_> = c.customer_identities.iter().map(|i| i.value.as_str()).collect();
    assert_eq!(values, ["+34600111222", "ana@example.com"]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_stream_is_gone_is_made_away_and_its_offer_goes_back() {
    let a = unique("tp");
    let p = start_with(&[&a], Duration::from_secs(1)).await;
    let (gone, stays) = (unique("gone"), unique("stays"));
    for id in [&gone, &stays] {
        p.agent(id, &[(&a, "sales")], &[(tpb::Channel::Voice, 1, true)]).await;
    }
    let agent = |id: &str| {
        let (p, id) = (&p, id.to_owned());
        async move {
            p.agents()
                .get_agent(req(pb::GetAgentRequest { name: format!("agents/{id}") }, &agent_token(&id)))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // The only agent signed in gets the call (offer timeout 15 s in `sales`), then its
    // frontend goes away without a word.
    let mut gone_stream = p.sign_in(&gone).await;
    let c = p.create(&a, "sales", tpb::Channel::Voice).await;
    let offer = next_offer(&mut gone_stream, Duration::from_secs(10)).await.expect("offered to the only agent");
    assert_eq!(offer.name, c.name);
    let mut stays_stream = p.sign_in(&stays).await;
    drop(gone_stream);
    // Well before the 15 s offer timeout, the offer comes back and goes to the agent whose
    // stream is open.
    let again = next_offer(&mut stays_stream, Duration::from_secs(8)).await.expect("offer back in the queue");
    assert_eq!(again.name, c.name);
    let g = agent(&gone).await;
    assert_eq!((g.state, g.away_reason.as_str()), (pb::AgentState::Away as i32, "disconnected"));
    assert!(g.contacts.is_empty(), "the disconnected agent still holds {:?}", g.contacts);
    // The open stream keeps its agent present through several graces.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = agent(&stays).await;
    assert_eq!(s.state, pb::AgentState::Available as i32);
    let t = agent_token(&stays);
    let accepted = p
        .contacts()
        .accept_contact(req(
            pb::AcceptContactRequest { name: again.name.clone(), offer_id: again.offer_id.clone() },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state, pb::ContactState::Connected as i32);
    // A connected agent whose frontend goes away keeps its contact (the customer may still be
    // on the line); it is made away so that nothing new is offered.
    drop(stays_stream);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = agent(&stays).await;
    assert_eq!((s.state, s.away_reason.as_str()), (pb::AgentState::Away as i32, "disconnected"));
    assert_eq!(s.contacts, vec![c.name.clone()]);
    let still =
        p.contacts().get_contact(req(pb::GetContactRequest { name: c.name.clone() }, &t)).await.unwrap().into_inner();
    assert_eq!(still.state, pb::ContactState::Connected as i32);
    p.stop().await;
}

/// A contact read by its tenant's supervisor, polled until `done` holds (effects on the
/// other contact of a consult land just after the call that caused them).
async fn contact_until(p: &Platform, tenant: &str, name: &str, done: impl Fn(&pb::Contact) -> bool) -> pb::Contact {
    let sup = token(Some(tenant), Role::Supervisor, None);
    let mut c = pb::Contact::default();
    for _ in 0..50 {
        c = p
            .contacts()
            .get_contact(req(pb::GetContactRequest { name: name.into() }, &sup))
            .await
            .unwrap()
            .into_inner();
        if done(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reached the expected state: {c:?}");
}

fn open_participants(c: &pb::Contact) -> Vec<(String, i32)> {
    c.participants.iter().filter(|p| p.leave_time.is_none()).map(|p| (p.agent_id.clone(), p.role)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_transfer_conference_and_a_cancelled_consult() {
    use pb::complete_consult_request::Outcome;
    use pb::consult_contact_request::Target;
    use pb::participant::Role as P;
    let a = unique("warm");
    let p = start(&[&a]).await;
    let (ana, bob) = (unique("ana"), unique("bob"));
    for id in [&ana, &bob] {
        p.agent(id, &[(&a, "support"), (&a, "sales")], &[(tpb::Channel::Voice, 1, true)]).await;
    }
    let (ta, tb) = (agent_token(&ana), agent_token(&bob));
    let mut sa = p.sign_in(&ana).await;
    let c = p.create(&a, "support", tpb::Channel::Voice).await;
    let o = next_offer(&mut sa, Duration::from_secs(10)).await.expect("offered to ana");
    p.contacts()
        .accept_contact(req(pb::AcceptContactRequest { name: o.name.clone(), offer_id: o.offer_id.clone() }, &ta))
        .await
        .unwrap();
    let consult = |name: &str, target: Target| pb::ConsultContactRequest { name: name.into(), target: Some(target) };
    let complete =
        |name: &str, outcome: Outcome| pb::CompleteConsultRequest { name: name.into(), outcome: outcome as i32 };

    // Ana consults Bob (not signed in yet): the customer waits on hold, the leg is queued.
    let leg = p
        .contacts()
        .consult_contact(req(consult(&c.name, Target::AgentId(bob.clone())), &ta))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((leg.state, leg.consult_of.as_str()), (pb::ContactState::Queued as i32, c.name.as_str()));
    let held = contact_until(&p, &a, &c.name, |c| c.on_hold).await;
    assert_eq!(held.consult_leg, leg.name);
    // Bob has not accepted: no transfer or conference yet; one consult at a time; no cold
    // transfer over an open consult; Bob may not act for Ana.
    for (call, code) in [
        (p.contacts().complete_consult(req(complete(&c.name, Outcome::Transfer), &ta)).await, Code::FailedPrecondition),
        (
            p.contacts().consult_contact(req(consult(&c.name, Target::Queue("sales".into())), &ta)).await,
            Code::FailedPrecondition,
        ),
        (p.contacts().complete_consult(req(complete(&c.name, Outcome::Unspecified), &ta)).await, Code::InvalidArgument),
        (p.contacts().complete_consult(req(complete(&c.name, Outcome::Cancel), &tb)).await, Code::NotFound),
        (
            p.contacts()
                .transfer_contact(req(
                    pb::TransferContactRequest {
                        name: c.name.clone(),
                        target: Some(pb::transfer_contact_request::Target::Queue("sales".into())),
                    },
                    &ta,
                ))
                .await,
            Code::FailedPrecondition,
        ),
    ] {
        assert_eq!(call.map(|_| ()).unwrap_err().code(), code);
    }

    // Bob signs in and is offered the leg first (the preferred agent); he accepts.
    let mut sb = p.sign_in(&bob).await;
    let ob = next_offer(&mut sb, Duration::from_secs(10)).await.expect("leg offered to bob");
    assert_eq!(ob.name, leg.name);
    p.contacts()
        .accept_contact(req(pb::AcceptContactRequest { name: ob.name.clone(), offer_id: ob.offer_id.clone() }, &tb))
        .await
        .unwrap();

    // Conference: the customer is off hold with both agents; Bob reads the contact but
    // only Ana, who holds it, ends it.
    let conf =
        p.contacts().complete_consult(req(complete(&c.name, Outcome::Conference), &ta)).await.unwrap().into_inner();
    assert!(!conf.on_hold);
    assert_eq!(open_participants(&conf), vec![(ana.clone(), P::Holder as i32), (bob.clone(), P::Conferenced as i32)]);
    p.contacts().get_contact(req(pb::GetContactRequest { name: c.name.clone() }, &tb)).await.unwrap();
    let end = p
        .contacts()
        .end_contact(req(pb::EndContactRequest { name: c.name.clone(), ..Default::default() }, &tb))
        .await
        .unwrap_err();
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");

    // Ana leaves: the contact is Bob's, the leg closes, Bob keeps his one voice slot.
    let done =
        p.contacts().complete_consult(req(complete(&c.name, Outcome::Transfer), &ta)).await.unwrap().into_inner();
    assert_eq!(
        (done.agent_id.as_str(), done.previous_agents.clone(), done.transfer_count, done.on_hold),
        (bob.as_str(), vec![ana.clone()], 1, false)
    );
    assert_eq!(open_participants(&done), vec![(bob.clone(), P::Holder as i32)]);
    assert_eq!(done.participants.len(), 3, "{:?}", done.participants);
    let closed = contact_until(&p, &a, &leg.name, |l| l.state == pb::ContactState::Closed as i32).await;
    assert!(closed.close_time.is_some());
    let mut bobs = Vec::new();
    for _ in 0..50 {
        let get = req(pb::GetAgentRequest { name: format!("agents/{bob}") }, &tb);
        bobs = p.agents().get_agent(get).await.unwrap().into_inner().contacts;
        if bobs == vec![c.name.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bobs, vec![c.name.clone()], "bob holds the customer's contact, not the leg");
    // Ana is released (and goes on a break); a new call is not offered to Bob, who is
    // still on the transferred one.
    p.set_state(&ana, "break").await;
    let d = p.create(&a, "support", tpb::Channel::Voice).await;
    if let Some(second) = next_offer(&mut sb, Duration::from_secs(2)).await {
        panic!(
            "bob was offered a second voice call: {} (offer {}, state {})",
            second.name, second.offer_id, second.state
        );
    }
    // Bob finishes the transferred call: his slot frees and the waiting call comes to him.
    p.contacts()
        .end_contact(req(pb::EndContactRequest { name: c.name.clone(), ..Default::default() }, &tb))
        .await
        .unwrap();
    let wrap = pb::WrapUpContactRequest { name: c.name.clone(), disposition: "resolved".into(), notes: String::new() };
    p.contacts().wrap_up_contact(req(wrap, &tb)).await.unwrap();
    let od = next_offer(&mut sb, Duration::from_secs(10)).await.expect("the waiting call offered to bob");
    assert_eq!(od.name, d.name);
    p.contacts()
        .accept_contact(req(pb::AcceptContactRequest { name: od.name.clone(), offer_id: od.offer_id.clone() }, &tb))
        .await
        .unwrap();

    // A consult to a queue nobody serves now, cancelled: the leg closes and is never
    // offered, the customer stays on hold with Bob until he resumes.
    let leg2 = p
        .contacts()
        .consult_contact(req(consult(&d.name, Target::Queue("sales".into())), &tb))
        .await
        .unwrap()
        .into_inner();
    // The queued leg is a consult in the queue's figures, not a waiting customer.
    let sup = token(Some(&a), Role::Supervisor, None);
    let sales = req(pb::ListQueueStatsRequest { queue: "sales".into() }, &sup);
    let q = p.contacts().list_queue_stats(sales).await.unwrap().into_inner().queues.remove(0);
    assert_eq!((q.waiting, q.longest_wait_ms, q.consults), (0, 0, 1), "{q:?}");
    let back = p.contacts().complete_consult(req(complete(&d.name, Outcome::Cancel), &tb)).await.unwrap().into_inner();
    assert_eq!((back.consult_leg.as_str(), back.on_hold, back.agent_id.as_str()), ("", true, bob.as_str()));
    contact_until(&p, &a, &leg2.name, |l| l.state == pb::ContactState::Closed as i32).await;
    p.set_state(&ana, "").await;
    assert!(next_offer(&mut sa, Duration::from_secs(2)).await.is_none(), "a cancelled leg was offered");
    p.contacts().resume_contact(req(pb::ResumeContactRequest { name: d.name.clone() }, &tb)).await.unwrap();
    p.stop().await;
}

/// The transfer directory of a contact: the holding agent sees its tenant's queues (who
/// waits, who is available) and the tenant's other signed-in agents with only that tenant's
/// queues; signed-out agents, agents of other tenants only and the caller are left out.
/// Another agent, a channel adapter and tenant B's supervisor are refused; A's supervisor
/// reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_directory_lists_the_tenants_queues_and_signed_in_agents() {
    let (a, b) = (unique("dira"), unique("dirb"));
    let p = start(&[&a, &b]).await;
    let (ana, bob, carl, dora) = (unique("ana"), unique("bob"), unique("carl"), unique("dora"));
    let voice = [(tpb::Channel::Voice, 1, true)];
    p.agent(&ana, &[(&a, "support")], &voice).await;
    p.agent(&bob, &[(&a, "support"), (&b, "sales"), (&b, "support")], &voice).await;
    p.agent(&carl, &[(&b, "support")], &voice).await;
    p.agent(&dora, &[(&a, "sales")], &voice).await;
    let mut sa = p.sign_in(&ana).await;
    let _sb = p.sign_in(&bob).await;
    let _sc = p.sign_in(&carl).await;
    p.set_state(&bob, "break").await;
    let c = p.create(&a, "support", tpb::Channel::Voice).await;
    let o = next_offer(&mut sa, Duration::from_secs(10)).await.expect("offered to ana");
    assert_eq!(o.name, c.name);
    let ta = agent_token(&ana);
    p.contacts()
        .accept_contact(req(pb::AcceptContactRequest { name: o.name.clone(), offer_id: o.offer_id.clone() }, &ta))
        .await
        .unwrap();
    // A customer waits in sales (Dora, its one agent, is signed out).
    p.create(&a, "sales", tpb::Channel::Voice).await;
    let list = |token: String, name: String| {
        let mut contacts = p.contacts();
        async move { contacts.list_transfer_targets(req(pb::ListTransferTargetsRequest { name }, &token)).await }
    };
    let mut d = pb::ListTransferTargetsResponse::default();
    for _ in 0..50 {
        d = list(ta.clone(), c.name.clone()).await.unwrap().into_inner();
        if d.queues.iter().any(|q| q.queue == "sales" && q.waiting == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queues: Vec<(&str, u32, u32)> =
        d.queues.iter().map(|q| (q.queue.as_str(), q.waiting, q.agents_available)).collect();
    // Available is the agent's state: Ana, on the call, is available in support.
    assert_eq!(queues, vec![("sales", 1, 0), ("support", 0, 1)], "{d:?}");
    assert!(d.queues[0].longest_wait_ms >= 0);
    let agents: Vec<(String, i32, Vec<String>)> =
        d.agents.iter().map(|x| (x.name.clone(), x.state, x.queues.clone())).collect();
    assert_eq!(
        agents,
        vec![(format!("agents/{bob}"), pb::AgentState::Away as i32, vec!["support".to_owned()])],
        "bob only, with only A's queue: not ana (the caller), carl (B only) or dora (signed out)"
    );
    assert_eq!(d.agents[0].activity, pb::AgentActivity::Idle as i32);
    // Bob available again comes first and counts in support.
    p.set_state(&bob, "").await;
    let d = list(ta.clone(), c.name.clone()).await.unwrap().into_inner();
    assert_eq!((d.agents[0].state, d.queues[1].agents_available), (pb::AgentState::Available as i32, 2));

    // A's supervisor reads it (and sees Ana, on the call, too).
    let sup_a = token(Some(&a), Role::Supervisor, None);
    let d = list(sup_a, c.name.clone()).await.unwrap().into_inner();
    let on_call = d.agents.iter().find(|x| x.name == format!("agents/{ana}")).expect("ana listed to the supervisor");
    assert_eq!(on_call.activity, pb::AgentActivity::OnContact as i32);
    // Refused: Bob (not on the contact) and B's supervisor do not learn it exists; A's
    // channel adapter may read the contact but is no agent; a malformed name.
    let refused = [
        (agent_token(&bob), c.name.clone(), Code::NotFound),
        (token(Some(&b), Role::Supervisor, None), c.name.clone(), Code::NotFound),
        (token(Some(&b), Role::TenantAdmin, None), c.name.clone(), Code::NotFound),
        (token(Some(&a), Role::Channel, None), c.name.clone(), Code::PermissionDenied),
        (ta.clone(), "contacts/x".to_owned(), Code::InvalidArgument),
    ];
    for (token, name, code) in refused {
        assert_eq!(list(token, name).await.unwrap_err().code(), code);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_contact_learns_its_position_and_expected_wait() {
    let (a, b) = (unique("posa"), unique("posb"));
    let p = start(&[&a, &b]).await;
    let ana = unique("ana");
    p.agent(&ana, &[(&a, "support")], &[(tpb::Channel::Voice, 1, true)]).await;
    let channel = token(Some(&a), Role::Channel, None);
    let position = |token: String, name: String| {
        let mut contacts = p.contacts();
        async move { contacts.get_queue_position(req(pb::GetQueuePositionRequest { name }, &token)).await }
    };
    // Two callers wait; nobody is signed in: positions, but no expected wait.
    let c1 = p.create(&a, "support", tpb::Channel::Voice).await;
    let c2 = p.create(&a, "support", tpb::Channel::Voice).await;
    let q2 = position(channel.clone(), c2.name.clone()).await.unwrap().into_inner();
    assert_eq!((q2.queue.as_str(), q2.position, q2.waiting, q2.agents_available), ("support", 2, 2, 0), "{q2:?}");
    assert_eq!((q2.mean_handle_ms, q2.expected_wait_ms), (0, -1));
    assert_eq!(position(channel.clone(), c1.name.clone()).await.unwrap().into_inner().position, 1);

    // Ana takes the first, handles it about 300 ms and wraps up: the queue has a handle time.
    let mut sa = p.sign_in(&ana).await;
    let ta = agent_token(&ana);
    let o = next_offer(&mut sa, Duration::from_secs(10)).await.expect("first offered");
    assert_eq!(o.name, c1.name);
    let accept = |o: pb::Contact| {
        let mut contacts = p.contacts();
        let t = ta.clone();
        async move {
            contacts.accept_contact(req(pb::AcceptContactRequest { name: o.name, offer_id: o.offer_id }, &t)).await
        }
    };
    accept(o).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.contacts()
        .end_contact(req(pb::EndContactRequest { name: c1.name.clone(), ..Default::default() }, &ta))
        .await
        .unwrap();
    let wrap = pb::WrapUpContactRequest { name: c1.name.clone(), disposition: "resolved".into(), notes: String::new() };
    p.contacts().wrap_up_contact(req(wrap, &ta)).await.unwrap();
    // She takes the second; a third caller is first in line behind a busy agent.
    let o = next_offer(&mut sa, Duration::from_secs(10)).await.expect("second offered");
    assert_eq!(o.name, c2.name);
    accept(o).await.unwrap();
    let c3 = p.create(&a, "support", tpb::Channel::Voice).await;
    let mut q3 = pb::QueuePosition::default();
    for _ in 0..50 {
        q3 = position(channel.clone(), c3.name.clone()).await.unwrap().into_inner();
        if q3.mean_handle_ms > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((q3.position, q3.waiting, q3.agents_available), (1, 1, 1), "{q3:?}");
    assert!((300..10_000).contains(&q3.mean_handle_ms), "{q3:?}");
    assert_eq!(q3.expected_wait_ms, q3.mean_handle_ms, "one ahead of nobody, one agent: one handle time");
    // The contact being handled is not waiting.
    let q2 = position(channel.clone(), c2.name.clone()).await.unwrap().into_inner();
    assert_eq!((q2.position, q2.expected_wait_ms), (0, -1));
    // A's supervisor may ask; B's supervisor, B's channel and an agent not on the contact
    // do not learn it exists; a malformed name is refused.
    position(token(Some(&a), Role::Supervisor, None), c3.name.clone()).await.unwrap();
    let refused = [
        (token(Some(&b), Role::Supervisor, None), c3.name.clone(), Code::NotFound),
        (token(Some(&b), Role::Channel, None), c3.name.clone(), Code::NotFound),
        (ta.clone(), c3.name.clone(), Code::NotFound),
        (channel.clone(), "contacts/x".to_owned(), Code::InvalidArgument),
    ];
    for (token, name, code) in refused {
        assert_eq!(position(token, name).await.unwrap_err().code(), code);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_calls_reach_an_agent_only_while_its_phone_is_registered_there() {
    let (a, b) = (unique("rega"), unique("regb"));
    let p = start(&[&a, &b]).await;
    let ana = unique("ana");
    p.agent(&ana, &[(&a, "support")], &[(tpb::Channel::Voice, 1, false), (tpb::Channel::Chat, 1, false)]).await;
    let channel = token(Some(&a), Role::Channel, None);
    let report = |token: String, name: String, seconds: i64| {
        let mut agents = p.agents();
        let expires = Some(prost_types::Duration { seconds, nanos: 0 });
        async move { agents.report_phone(req(pb::ReportPhoneRequest { name, expires }, &token)).await }
    };
    let ta = agent_token(&ana);
    let handle = |o: pb::Contact| {
        let (mut contacts, t) = (p.contacts(), ta.clone());
        async move {
            contacts
                .accept_contact(req(pb::AcceptContactRequest { name: o.name.clone(), offer_id: o.offer_id }, &t))
                .await?;
            contacts.end_contact(req(pb::EndContactRequest { name: o.name.clone(), ..Default::default() }, &t)).await?;
            let wrap = pb::WrapUpContactRequest { name: o.name, disposition: "resolved".into(), notes: String::new() };
            contacts.wrap_up_contact(req(wrap, &t)).await
        }
    };
    let mut sa = p.sign_in(&ana).await;
    let name = format!("agents/{ana}");

    // No phone registered with A: A's call waits, A's chat is offered.
    let call = p.create(&a, "support", tpb::Channel::Voice).await;
    assert!(
        next_offer(&mut sa, Duration::from_millis(1500)).await.is_none(),
        "a call offered to an agent without a phone"
    );
    let chat = p.create(&a, "support", tpb::Channel::Chat).await;
    let o = next_offer(&mut sa, Duration::from_secs(5)).await.expect("the chat offered");
    assert_eq!(o.name, chat.name);
    handle(o).await.unwrap();

    // Who may report: A's channel, for an agent of A's queues, for at most a day.
    let refused = [
        (token(Some(&b), Role::Channel, None), name.clone(), 60, Code::NotFound),
        (token(Some(&a), Role::Supervisor, None), name.clone(), 60, Code::PermissionDenied),
        (ta.clone(), name.clone(), 60, Code::PermissionDenied),
        (token(None, Role::BpoAdmin, None), name.clone(), 60, Code::PermissionDenied),
        (channel.clone(), "agents/nobody-here".to_owned(), 60, Code::NotFound),
        (channel.clone(), "ana".to_owned(), 60, Code::InvalidArgument),
        (channel.clone(), name.clone(), 86_401, Code::InvalidArgument),
        (channel.clone(), name.clone(), -1, Code::InvalidArgument),
    ];
    for (token, name, seconds, code) in refused {
        assert_eq!(report(token, name.clone(), seconds).await.unwrap_err().code(), code, "{name} {seconds}");
    }
    assert!(next_offer(&mut sa, Duration::from_millis(500)).await.is_none(), "no refused report let the call through");

    // The phone registers with A: the waiting call is offered at once.
    let agent = report(channel.clone(), name.clone(), 60).await.unwrap().into_inner();
    assert_eq!(agent.phones.iter().map(|p| p.tenant.as_str()).collect::<Vec<_>>(), [a.as_str()]);
    let o = next_offer(&mut sa, Duration::from_secs(5)).await.expect("the call offered once the phone registered");
    assert_eq!(o.name, call.name);
    handle(o).await.unwrap();
    // A's supervisor sees the phone; B's does not see the agent.
    let get = |token: String| {
        let (mut agents, name) = (p.agents(), name.clone());
        async move { agents.get_agent(req(pb::GetAgentRequest { name }, &token)).await }
    };
    assert_eq!(get(token(Some(&a), Role::Supervisor, None)).await.unwrap().into_inner().phones.len(), 1);
    assert_eq!(get(token(Some(&b), Role::Supervisor, None)).await.unwrap_err().code(), Code::NotFound);

    // Unregistered: the next call waits again.
    assert!(report(channel.clone(), name.clone(), 0).await.unwrap().into_inner().phones.is_empty());
    let call2 = p.create(&a, "support", tpb::Channel::Voice).await;
    assert!(next_offer(&mut sa, Duration::from_millis(1500)).await.is_none(), "offered after the phone unregistered");
    // A registration of 1 s that nobody refreshes lapses: the call still waits after it.
    report(channel.clone(), name.clone(), 1).await.unwrap();
    let o = next_offer(&mut sa, Duration::from_secs(5)).await.expect("offered while registered");
    assert_eq!(o.name, call2.name);
    handle(o).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let call3 = p.create(&a, "support", tpb::Channel::Voice).await;
    assert!(next_offer(&mut sa, Duration::from_millis(1500)).await.is_none(), "offered after the registration lapsed");
    let agent = get(token(Some(&a), Role::Supervisor, None)).await.unwrap().into_inner();
    assert!(agent.phones.is_empty(), "{agent:?}");
    report(channel.clone(), name.clone(), 60).await.unwrap();
    assert_eq!(next_offer(&mut sa, Duration::from_secs(5)).await.expect("offered").name, call3.name);
    p.stop().await;
}

/// The routing input log as (key, envelope tenant, partition), read from the start.
fn routing_input_keys(topics: &Topics) -> Vec<(String, String, i32)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::Message as _;
    let topic = centralita_routing_contract::input_topic(topics);
    let consumer: BaseConsumer = centralita_platform::bus::client_config(&testkit::brokers())
        .set("group.id", unique("acd-read-"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let meta = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)).unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in meta.topics()[0].partitions() {
        list.add_partition_offset(&topic, p.id(), rdkafka::Offset::Beginning).unwrap();
        let (_, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(5)).unwrap();
        ends.push((p.id(), high));
    }
    consumer.assign(&list).unwrap();
    let mut seen: std::collections::BTreeMap<i32, i64> = Default::default();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ends.iter().any(|(p, high)| seen.get(p).map_or(0, |o| o + 1) < *high) && std::time::Instant::now() < deadline
    {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else { continue };
        seen.insert(m.partition(), m.offset());
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if key == "tick" {
            continue;
        }
        let event = Event::decode(m.payload().unwrap_or_default()).unwrap();
        out.push((key, event.tenant.as_str().to_owned(), m.partition()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pools_route_apart_and_an_agent_changes_pool_only_when_free() {
    use centralita_routing_contract as rc;
    let (e, n) = (unique("east"), unique("north"));
    // Three partitions: `pool-east` and `pool-north` land on different ones (checked below),
    // so each pool has a router of its own.
    let p = start_on(&[&e, &n], Duration::from_secs(30), 3).await;
    let voice = [(tpb::Channel::Voice, 1, true)];
    // An agent serves the tenants of one pool.
    let shared = pb::Agent {
        name: format!("agents/{}", unique("shared")),
        queues: [&e, &n]
            .iter()
            .map(|t| pb::QueueAssignment { tenant: (*t).clone(), queue: "support".into() })
            .collect(),
        capacity: vec![pb::ChannelCapacity { channel: tpb::Channel::Voice as i32, max_contacts: 1, exclusive: true }],
        ..Default::default()
    };
    let admin = token(None, Role::BpoAdmin, None);
    let refused =
        p.agents().upsert_agent(req(pb::UpsertAgentRequest { agent: Some(shared) }, &admin)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("east") && refused.message().contains("north"), "{refused:?}");

    let (ana, bob) = (unique("ana"), unique("bob"));
    assert_eq!(p.agent(&ana, &[(&e, "support")], &voice).await.agent_pool, "east");
    assert_eq!(p.agent(&bob, &[(&n, "support")], &voice).await.agent_pool, "north");
    let (mut sa, mut sb) = (p.sign_in(&ana).await, p.sign_in(&bob).await);
    let ce = p.create(&e, "support", tpb::Channel::Voice).await;
    let cn = p.create(&n, "support", tpb::Channel::Voice).await;
    assert_eq!((ce.agent_pool.as_str(), cn.agent_pool.as_str()), ("east", "north"));
    let oa = next_offer(&mut sa, Duration::from_secs(10)).await.expect("ana offered");
    assert_eq!(oa.name, ce.name);
    let ob = next_offer(&mut sb, Duration::from_secs(10)).await.expect("bob offered");
    assert_eq!(ob.name, cn.name);
    let (ta, tb) = (agent_token(&ana), agent_token(&bob));
    for (o, t) in [(&oa, &ta), (&ob, &tb)] {
        let accept = pb::AcceptContactRequest { name: o.name.clone(), offer_id: o.offer_id.clone() };
        p.contacts().accept_contact(req(accept, t)).await.unwrap();
    }

    // A tenant's pool is fixed once in use: a manifest moving the north tenant to the east
    // pool is not followed (its queued contacts and booked agents are in the north router).
    publish_tenant(&p.topics, &n, &tenant_yaml_in(&n, Some("east"))).await;
    let sup = token(Some(&n), Role::Supervisor, None);
    let mut tenants =
        centralita_proto::tenancy::v1::tenant_service_client::TenantServiceClient::new(p.sessions.clone());
    let mut seen = false;
    for _ in 0..100 {
        let get = req(tpb::GetTenantRequest { name: format!("tenants/{n}") }, &sup);
        seen = tenants.get_tenant(get).await.unwrap().into_inner().routing.unwrap_or_default().agent_pool == "east";
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "sessions never read the changed manifest");
    assert_eq!(p.create(&n, "support", tpb::Channel::Voice).await.agent_pool, "north");

    // Bob, busy on a north call, is reassigned to the east tenant: refused while he is
    // signed in; once he is signed out with his call wrapped up, he moves.
    let mut to_east = p.agent_record(&bob).await;
    to_east.queues = vec![pb::QueueAssignment { tenant: e.clone(), queue: "support".into() }];
    let upsert = |a: &pb::Agent| req(pb::UpsertAgentRequest { agent: Some(a.clone()) }, &admin);
    let refused = p.agents().upsert_agent(upsert(&to_east)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    p.contacts()
        .end_contact(req(pb::EndContactRequest { name: cn.name.clone(), ..Default::default() }, &tb))
        .await
        .unwrap();
    let wrap = pb::WrapUpContactRequest { name: cn.name.clone(), disposition: "resolved".into(), notes: String::new() };
    p.contacts().wrap_up_contact(req(wrap, &tb)).await.unwrap();
    // Signed out once the wrapped-up call has left his list.
    let mut signed_out = Err(tonic::Status::unknown("not tried"));
    for _ in 0..50 {
        signed_out = p.agents().sign_out(req(pb::SignOutRequest { name: format!("agents/{bob}") }, &tb)).await;
        if signed_out.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signed_out.unwrap();
    drop(sb);
    // Not at once: an offer made just before he signed out could still be on its way to
    // his list. After the quiet period he moves.
    let early = p.agents().upsert_agent(upsert(&to_east)).await.unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    let mut moved = None;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(a) = p.agents().upsert_agent(upsert(&to_east)).await {
            moved = Some(a.into_inner());
            break;
        }
    }
    assert_eq!(moved.expect("moved after the quiet period").agent_pool, "east");

    // An offer decided by a router with a stale view of Bob (the north router, for a north
    // contact, before it read his move) is void: the contact stays queued, Bob is not
    // offered it.
    let mut sb = p.sign_in(&bob).await;
    let stale = p.create(&n, "support", tpb::Channel::Voice).await;
    let offer = rc::Decision::Offer {
        contact: rc::ContactId(stale.name.rsplit('/').next().unwrap().to_owned()),
        agent: rc::AgentId(bob.clone()),
        queue: rc::QueueRef { tenant: n.clone(), queue: "support".into() },
        channel: rc::Channel::Voice,
        expires_at: chrono::Utc::now().timestamp_millis() + 30_000,
    };
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    let event = Event::new(
        centralita_platform::tenant::TenantId::parse(&n).unwrap(),
        &centralita_proto::routing::v1::RoutingDecision::from(&offer),
    );
    producer.publish(&centralita_routing_contract::decision_topic(&p.topics), "pool-north", &event).await.unwrap();
    assert!(next_offer(&mut sb, Duration::from_secs(2)).await.is_none(), "a stale router's offer reached bob");
    let still = contact_until(&p, &n, &stale.name, |c| c.state == pb::ContactState::Queued as i32).await;
    assert!(still.agent_id.is_empty(), "{still:?}");

    // Every routing input of a contact went to its pool; agents' inputs to theirs.
    let keys = routing_input_keys(&p.topics);
    let of = |tenant: &str| {
        keys.iter()
            .filter(|(_, t, _)| t == tenant)
            .map(|(k, _, _)| k.as_str())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(of(&e), ["pool-east"].into());
    assert_eq!(of(&n), ["pool-north"].into());
    assert_eq!(of("bpo"), ["pool-east", "pool-north"].into());
    let partitions = |pool: &str| {
        keys.iter().filter(|(k, _, _)| k == pool).map(|(_, _, p)| *p).collect::<std::collections::BTreeSet<_>>()
    };
    let (east, north) = (partitions("pool-east"), partitions("pool-north"));
    assert!(
        east.len() == 1 && north.len() == 1 && east != north,
        "the pools must be on two partitions: {east:?} {north:?}"
    );
    p.stop().await;
}
