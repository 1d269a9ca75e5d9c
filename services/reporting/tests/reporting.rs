//! The reporting service end to end: in-process on ephemeral ports against the local
//! stack's PostgreSQL and Kafka-protocol broker. Hand-built contact events go onto the
//! contacts topic; figures are read back over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use centralita_platform::auth::Role;
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::config::ServiceArgs;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{TenantId, TenantManifest};
use centralita_platform::testkit::{self, request, token, unique};
use centralita_proto::reporting::v1 as pb;
use centralita_proto::sessions::v1::{self as spb, contact_event::Kind};
use centralita_reporting::Settings;
use pb::reporting_service_client::ReportingServiceClient;
use pb::staffing_service_client::StaffingServiceClient;
use tonic::transport::Channel;
use tonic::Code;

const S: i64 = 1000;

fn manifest(id: &str) -> String {
    format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [voice, chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: 30
  recording: {{ voice: all }}
  routing:
    queues:
      - {{ id: support }}
      - {{ id: billing, serviceLevelDefinition: answered, shortAbandonSeconds: 10, serviceLevelTargetPercent: 60 }}
"#
    )
}

struct Service {
    grpc: Channel,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A pool on the reporting schema, for the tests that read or write it directly.
fn pool() -> deadpool_postgres::Pool {
    centralita_platform::db::pool(testkit::postgres().url.expose(), "reporting", 2).unwrap()
}

fn config(prefix: &str) -> ServiceArgs<Settings> {
    ServiceArgs { common: testkit::common(prefix), service: Settings::new(testkit::postgres(), testkit::redis()) }
}

async fn start(prefix: &str) -> Service {
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(centralita_reporting::run(config(prefix), listeners, shutdown.clone()));
    assert!(testkit::wait_ready(admin).await, "reporting did not become ready");
    let grpc = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    Service { grpc, shutdown, task }
}

impl Service {
    fn reports(&self) -> ReportingServiceClient<Channel> {
        ReportingServiceClient::new(self.grpc.clone())
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }

    /// Ends the service the hard way: its tasks are dropped wherever they are.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// An interval start yesterday, 10:00 UTC.
fn base() -> i64 {
    let day = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    day.and_hms_opt(10, 0, 0).unwrap().and_utc().timestamp_millis()
}

fn contact_event(tenant: &str, contact: &str, queue: &str, kind: Kind, at: i64, enqueued: i64) -> Event {
    let ts = |ms: i64| prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 };
    let payload = spb::ContactEvent {
        kind: kind as i32,
        contact: Some(spb::Contact {
            name: format!("contacts/{contact}"),
            tenant: tenant.into(),
            channel: 1,
            queue: queue.into(),
            agent_id: "agent-1".into(),
            create_time: Some(ts(enqueued)),
            enqueue_time: Some(ts(enqueued)),
            disposition: if kind == Kind::WrappedUp { "resolved".into() } else { String::new() },
            ..Default::default()
        }),
        agent_id: "agent-1".into(),
        ..Default::default()
    };
    let at = chrono::DateTime::from_timestamp_millis(at).unwrap();
    Event::at(TenantId::parse(tenant).unwrap(), &payload, at)
}

/// The floor of the core tests, in `support`: ten contacts at `t`: six answered (waits 5,
/// 10, 20, 15, 30, 40 s; talk 60 s, wrap-up 10 s), three abandoned (3, 12, 50 s), one
/// still waiting; plus in `billing` one contact queued 10 s before the next interval,
/// answered 25 s later and one abandoned after 8 s (short for billing).
fn floor(tenant: &str, t: i64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut handled = |c: &str, queue: &str, q: i64, wait: i64| {
        let a = q + wait * S;
        out.push(contact_event(tenant, c, queue, Kind::Queued, q, q));
        out.push(contact_event(tenant, c, queue, Kind::Offered, a - 500, q));
        out.push(contact_event(tenant, c, queue, Kind::Accepted, a, q));
        out.push(contact_event(tenant, c, queue, Kind::Ended, a + 60 * S, q));
        out.push(contact_event(tenant, c, queue, Kind::WrappedUp, a + 70 * S, q));
    };
    for (i, wait) in [5, 10, 20, 15, 30, 40].into_iter().enumerate() {
        handled(&format!("h{i}"), "support", t, wait);
    }
    handled("span", "billing", t + 15 * 60 * S - 10 * S, 25);
    for (i, gone) in [3, 12, 50].into_iter().enumerate() {
        out.push(contact_event(tenant, &format!("a{i}"), "support", Kind::Queued, t, t));
        out.push(contact_event(tenant, &format!("a{i}"), "support", Kind::Abandoned, t + gone * S, t));
    }
    out.push(contact_event(tenant, "b-short", "billing", Kind::Queued, t, t));
    out.push(contact_event(tenant, "b-short", "billing", Kind::Abandoned, t + 8 * S, t));
    out.push(contact_event(tenant, "w", "support", Kind::Queued, t + 100 * S, t + 100 * S));
    out
}

fn agent_event(agent: &str, state: spb::AgentState, queues: &[(&str, &str)], at: i64) -> Event {
    let payload = spb::AgentEvent {
        kind: spb::agent_event::Kind::StateChanged as i32,
        agent: Some(spb::Agent {
            name: format!("agents/{agent}"),
            state: state as i32,
            queues: queues
                .iter()
                .map(|(t, q)| spb::QueueAssignment { tenant: (*t).into(), queue: (*q).into() })
                .collect(),
            ..Default::default()
        }),
    };
    Event::at(TenantId::parse("bpo").unwrap(), &payload, chrono::DateTime::from_timestamp_millis(at).unwrap())
}

async fn publish_agents(topics: &Topics, events: &[Event]) {
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    for e in events {
        let key = e.payload::<spb::AgentEvent>().unwrap().agent.unwrap().name;
        producer.publish(&topics.agents(), &key, e).await.unwrap();
    }
}

async fn publish(topics: &Topics, events: &[Event]) {
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    for e in events {
        let key = e.payload::<spb::ContactEvent>().unwrap().contact.unwrap().name;
        producer.publish(&topics.contacts(), &key, e).await.unwrap();
    }
}

fn history_request(tenant: &str, from: i64, to: i64, granularity: pb::Granularity) -> pb::QueryHistoryRequest {
    let ts = |ms: i64| Some(prost_types::Timestamp { seconds: ms / 1000, nanos: 0 });
    pb::QueryHistoryRequest {
        tenant: tenant.into(),
        start_time: ts(from),
        end_time: ts(to),
        granularity: granularity as i32,
        group_by: vec![pb::Dimension::Queue as i32],
        queue: String::new(),
        service_level_definition: String::new(),
    }
}

async fn history(svc: &Service, tenant: &str, t: i64) -> pb::QueryHistoryResponse {
    let admin = token(Some(tenant), Role::Supervisor, None);
    let req = history_request("", t - 3600 * S, t + 3600 * S, pb::Granularity::Interval);
    svc.reports().query_history(request(req, &admin)).await.unwrap().into_inner()
}

/// Waits until the history has `offered` contacts in total.
async fn until_offered(svc: &Service, tenant: &str, t: i64, offered: u64) -> pb::QueryHistoryResponse {
    for _ in 0..300 {
        let h = history(svc, tenant, t).await;
        let total: u64 = h.rows.iter().map(|r| r.figures.as_ref().unwrap().offered).sum();
        if total == offered {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("history of {tenant} never reached {offered} offered");
}

fn row<'a>(h: &'a pb::QueryHistoryResponse, queue: &str, at: i64) -> &'a pb::Figures {
    h.rows
        .iter()
        .find(|r| r.queue == queue && r.period_start.as_ref().unwrap().seconds * 1000 == at)
        .and_then(|r| r.figures.as_ref())
        .unwrap_or_else(|| panic!("no row for {queue} at {at}"))
}

async fn setup() -> (String, Topics, [String; 2]) {
    testkit::two_tenants("rep-", manifest, |t| vec![t.contacts(), t.agents()]).await
}

#[tokio::test]
async fn figures_of_each_definition_from_hand_built_events() {
    let (prefix, topics, [a, _]) = setup().await;
    let svc = start(&prefix).await;
    let t = base();
    publish(&topics, &floor(&a, t)).await;
    let h = until_offered(&svc, &a, t, 12).await;
    assert_eq!(h.time_zone, "Europe/Madrid");
    let support = row(&h, "support", t);
    assert_eq!((support.offered, support.answered, support.abandoned, support.short_abandoned), (10, 6, 3, 1));
    assert_eq!(support.waiting, 1);
    assert_eq!((support.service_level_percent, support.service_level_definition.as_str()), (Some(50.0), "default"));
    assert_eq!(support.asa_seconds, Some(20.0));
    assert_eq!(
        (support.aht_seconds, support.talk_seconds, support.after_contact_work_seconds),
        (Some(70.0), Some(60.0), Some(10.0))
    );
    assert_eq!(support.abandon_rate_percent, Some(30.0));
    // billing: the contact queued before the boundary counts in the first interval (answered
    // after 25 s: not within 20 s) and its handling in the second; "answered" definition.
    let billing = row(&h, "billing", t);
    assert_eq!(
        (billing.offered, billing.answered, billing.answered_within_threshold, billing.short_abandoned),
        (2, 1, 0, 1)
    );
    assert_eq!((billing.service_level_percent, billing.service_level_definition.as_str()), (Some(0.0), "answered"));
    assert_eq!((billing.handled, billing.asa_seconds), (0, Some(25.0)));
    let next = row(&h, "billing", t + 15 * 60 * S);
    assert_eq!((next.offered, next.handled, next.aht_seconds), (0, 1, Some(70.0)));

    // Another definition on request: (4 + 2) / (6 + 3).
    let supervisor = token(Some(&a), Role::Supervisor, None);
    let mut req = history_request("", t, t + 15 * 60 * S, pb::Granularity::Interval);
    req.queue = "support".into();
    req.service_level_definition = "answered-and-abandoned".into();
    let h2 = svc.reports().query_history(request(req, &supervisor)).await.unwrap().into_inner();
    let f = h2.rows[0].figures.as_ref().unwrap();
    assert_eq!(f.service_level_definition, "answered-and-abandoned");
    assert_eq!(format!("{:.4}", f.service_level_percent.unwrap()), "66.6667");

    // Day roll-up in Madrid time: one row per queue, summing the intervals.
    let day = svc
        .reports()
        .query_history(request(history_request("", t - 86_400 * S, t + 86_400 * S, pb::Granularity::Day), &supervisor))
        .await
        .unwrap()
        .into_inner();
    let billing_day: Vec<_> = day.rows.iter().filter(|r| r.queue == "billing").collect();
    assert_eq!(billing_day.len(), 1);
    let f = billing_day[0].figures.as_ref().unwrap();
    assert_eq!((f.offered, f.handled), (2, 1));
    let midnight = chrono::DateTime::from_timestamp(billing_day[0].period_start.unwrap().seconds, 0).unwrap();
    let local = midnight.with_timezone(&chrono_tz::Europe::Madrid);
    assert_eq!(local.format("%H:%M").to_string(), "00:00");

    // SLA compliance: support's 50 % breaches the tenant's 80 %; billing's target is 60 %.
    let sla = svc
        .reports()
        .get_sla_compliance(request(
            pb::GetSlaComplianceRequest {
                tenant: String::new(),
                start_time: Some(prost_types::Timestamp { seconds: (t - 3600 * S) / 1000, nanos: 0 }),
                end_time: Some(prost_types::Timestamp { seconds: (t + 3600 * S) / 1000, nanos: 0 }),
                queue: String::new(),
            },
            &supervisor,
        ))
        .await
        .unwrap()
        .into_inner();
    let support_sla = sla.queues.iter().find(|q| q.queue == "support").unwrap();
    assert_eq!((support_sla.target_percent, support_sla.breaches.len()), (80.0, 1));
    assert_eq!(support_sla.breaches[0].achieved_percent, Some(50.0));
    assert_eq!(support_sla.breaches[0].judged, 8);
    assert_eq!(support_sla.days.len(), 1);
    // The threshold as a Duration and, for clients older than that, in whole seconds.
    assert_eq!(support_sla.service_level_threshold, Some(prost_types::Duration { seconds: 20, nanos: 0 }));
    #[allow(deprecated)]
    let threshold_seconds = support_sla.threshold_seconds;
    assert_eq!(threshold_seconds, 20);
    let billing_sla = sla.queues.iter().find(|q| q.queue == "billing").unwrap();
    assert_eq!((billing_sla.target_percent, billing_sla.service_level_definition.as_str()), (60.0, "answered"));

    // CSV: a header and one line per row.
    let csv = svc
        .reports()
        .export_history_csv(request(
            pb::ExportHistoryCsvRequest {
                query: Some(history_request("", t - 3600 * S, t + 3600 * S, pb::Granularity::Interval)),
            },
            &supervisor,
        ))
        .await
        .unwrap()
        .into_inner()
        .csv;
    assert_eq!(csv.lines().count(), 1 + h.rows.len());
    assert!(
        csv.lines().any(|l| l.ends_with(",support,,,10,6,4,3,1,1,6,50.0000,default,20.0000,70.0000,30.0000,default")),
        "{csv}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn duplicates_replays_and_a_killed_service_change_nothing() {
    let (prefix, topics, [a, b]) = setup().await;
    let t = base();
    let events = floor(&a, t);
    // Tenant b gets the same traffic in one clean pass: the reference.
    let reference_events = floor(&b, t);
    let svc = start(&prefix).await;
    publish(&topics, &reference_events).await;
    let reference = until_offered(&svc, &b, t, 12).await;
    // Tenant a: half, then the service is killed mid-stream (whatever it was doing is
    // dropped), then the rest plus every event of the first half again.
    let (first, rest) = events.split_at(events.len() / 2);
    publish(&topics, first).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    svc.kill().await;
    publish(&topics, rest).await;
    publish(&topics, first).await;
    let svc = start(&prefix).await;
    let mut after = until_offered(&svc, &a, t, 12).await;
    // Give a late duplicate the chance to (wrongly) count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    after = {
        let again = history(&svc, &a, t).await;
        assert_eq!(again, after);
        again
    };
    assert_eq!(after.rows, reference.rows, "a killed and restarted run differs from a clean pass");

    // Replay: a's history wiped and rebuilt by a new consumer group reading the topic from
    // the start (tenant b's events are on it too and are already applied: unchanged).
    let pool = pool();
    {
        let mut client = pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        centralita_platform::db::set_tenant(&tx, &TenantId::parse(&a).unwrap()).await.unwrap();
        tx.execute("DELETE FROM legs WHERE tenant = $1", &[&a]).await.unwrap();
        tx.execute("DELETE FROM applied_events WHERE tenant = $1", &[&a]).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert!(history(&svc, &a, t).await.rows.is_empty());
    let replay_stop = Shutdown::new();
    let consumer = centralita_reporting::store::contact_consumer(
        &testkit::brokers(),
        format!("{prefix}replay"),
        topics.contacts(),
        None,
        pool,
        Default::default(),
        None,
    )
    .unwrap();
    let sd = replay_stop.clone();
    let replay = tokio::spawn(async move { consumer.run(sd).await });
    let rebuilt = until_offered(&svc, &a, t, 12).await;
    assert_eq!(rebuilt.rows, reference.rows, "a replay of the topic differs");
    replay_stop.trigger();
    replay.await.unwrap().unwrap();
    svc.stop().await;
}

#[tokio::test]
async fn tenants_see_only_their_own_figures() {
    let (prefix, topics, [a, b]) = setup().await;
    let svc = start(&prefix).await;
    let t = base();
    publish(&topics, &floor(&a, t)).await;
    until_offered(&svc, &a, t, 12).await;
    let b_token = token(Some(&b), Role::TenantAdmin, None);
    let range = |tenant: &str| history_request(tenant, t - 3600 * S, t + 3600 * S, pb::Granularity::Interval);
    // b naming a is refused, on every API.
    let err = svc.reports().query_history(request(range(&a), &b_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = svc
        .reports()
        .export_history_csv(request(pb::ExportHistoryCsvRequest { query: Some(range(&a)) }, &b_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = svc
        .reports()
        .get_realtime_metrics(request(
            pb::GetRealtimeMetricsRequest { tenant: a.clone(), queue: String::new() },
            &b_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = svc
        .reports()
        .get_sla_compliance(request(
            pb::GetSlaComplianceRequest {
                tenant: a.clone(),
                start_time: range(&a).start_time,
                end_time: range(&a).end_time,
                queue: String::new(),
            },
            &b_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = svc
        .reports()
        .stream_realtime_metrics(request(
            pb::StreamRealtimeMetricsRequest {
                query: Some(pb::GetRealtimeMetricsRequest { tenant: a.clone(), queue: String::new() }),
            },
            &b_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // b's own history is empty; an agent token may not read reports at all.
    let own = svc.reports().query_history(request(range(""), &b_token)).await.unwrap().into_inner();
    assert!(own.rows.is_empty());
    let agent = token(Some(&a), Role::Agent, Some("agent-1"));
    assert_eq!(
        svc.reports().query_history(request(range(""), &agent)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A BPO admin reads any tenant it names, and must name one.
    let bpo = token(None, Role::BpoAdmin, None);
    let seen = svc.reports().query_history(request(range(&a), &bpo)).await.unwrap().into_inner();
    assert_eq!(seen.rows.iter().map(|r| r.figures.as_ref().unwrap().offered).sum::<u64>(), 12);
    assert_eq!(svc.reports().query_history(request(range(""), &bpo)).await.unwrap_err().code(), Code::PermissionDenied);
    // Bad input names the field.
    let mut bad = range("");
    bad.granularity = 0;
    bad.end_time = bad.start_time;
    let err = svc.reports().query_history(request(bad, &b_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("end_time") && err.message().contains("granularity"), "{}", err.message());
    svc.stop().await;
}

#[tokio::test]
async fn realtime_figures_and_the_wallboard_stream() {
    let (prefix, topics, [a, _]) = setup().await;
    let svc = start(&prefix).await;
    let now = chrono::Utc::now().timestamp_millis();
    let supervisor = token(Some(&a), Role::Supervisor, None);
    let query = pb::GetRealtimeMetricsRequest { tenant: String::new(), queue: "support".into() };
    let mut stream = svc
        .reports()
        .stream_realtime_metrics(request(pb::StreamRealtimeMetricsRequest { query: Some(query.clone()) }, &supervisor))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.queues.len(), 1);
    assert_eq!(first.queues[0].waiting, 0);
    // An agent of a's support queue, available since two minutes ago (and one of another
    // tenant's queue only, which a's floor does not show).
    let agent = unique("agent-");
    publish_agents(
        &topics,
        &[
            agent_event(&agent, spb::AgentState::Available, &[(&a, "support")], now - 120 * S),
            agent_event(&unique("other-"), spb::AgentState::Available, &[("someone-else", "support")], now - 120 * S),
        ],
    )
    .await;
    // Two contacts arrive: one answered (by that agent) after 4 s, one still waiting since
    // 30 s ago.
    let answered = |kind| {
        let mut e = contact_event(&a, "r1", "support", kind, now - 56 * S, now - 60 * S);
        let mut p: spb::ContactEvent = e.payload().unwrap();
        p.agent_id.clone_from(&agent);
        e.payload = prost::Message::encode_to_vec(&p).into();
        e
    };
    publish(
        &topics,
        &[
            contact_event(&a, "r1", "support", Kind::Queued, now - 60 * S, now - 60 * S),
            answered(Kind::Accepted),
            contact_event(&a, "r2", "support", Kind::Queued, now - 30 * S, now - 30 * S),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    let pushed = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap().unwrap();
        if m.queues[0].waiting == 1 && m.queues[0].rolling_15m.as_ref().unwrap().answered == 1 && m.agents.len() == 1 {
            break m;
        }
    };
    let q = &pushed.queues[0];
    assert!(q.longest_wait_ms >= 30_000, "{q:?}");
    // The thresholds as Durations and, for clients older than those, in whole seconds.
    let secs = |seconds| Some(prost_types::Duration { seconds, nanos: 0 });
    assert_eq!((q.service_level_threshold, q.short_abandon_threshold), (secs(20), secs(5)));
    #[allow(deprecated)]
    let (threshold_seconds, short_abandon_seconds) = (q.threshold_seconds, q.short_abandon_seconds);
    assert_eq!(threshold_seconds, 20);
    assert_eq!(short_abandon_seconds, 5);
    let rolling = q.rolling_15m.as_ref().unwrap();
    assert_eq!(
        (rolling.offered, rolling.answered, rolling.asa_seconds, rolling.service_level_percent),
        (2, 1, Some(4.0), Some(100.0))
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The agent holds r1 since 56 s ago and was available (idle) for the 64 s before.
    let ag = &pushed.agents[0];
    assert_eq!((ag.agent.as_str(), ag.state.as_str(), ag.handling), (agent.as_str(), "AGENT_STATE_AVAILABLE", true));
    let today = ag.rolling_15m.as_ref().unwrap();
    assert!((56_000..60_000).contains(&today.handling_ms), "{today:?}");
    assert_eq!(today.idle_ms, 64_000, "{today:?}");
    let busy = q.agents.as_ref().unwrap();
    assert_eq!((busy.busy, busy.available, busy.away), (1, 0, 0));
    assert!(q.agents_rolling_15m.as_ref().unwrap().occupancy_percent.unwrap() > 45.0);
    // Pushes come at most once per second.
    let t1 = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap();
    assert!(t1.elapsed() >= Duration::from_millis(900), "{:?}", t1.elapsed());
    let once = svc.reports().get_realtime_metrics(request(query, &supervisor)).await.unwrap().into_inner();
    // Today (since midnight in Madrid) holds both, unless Madrid's midnight fell within the
    // last minute.
    let midnight = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Madrid)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(chrono_tz::Europe::Madrid)
        .earliest()
        .unwrap()
        .timestamp_millis();
    if now - 60 * S >= midnight {
        assert_eq!(once.queues[0].today.as_ref().unwrap().offered, 2);
    }
    drop(stream);
    svc.stop().await;
}

#[tokio::test]
// Asks with the deprecated seconds as an older client would, then with the Durations.
#[allow(deprecated)]
async fn staffing_reproduces_erlang_c_over_grpc() {
    let (prefix, _topics, [a, _]) = setup().await;
    let svc = start(&prefix).await;
    let mut client = StaffingServiceClient::new(svc.grpc.clone());
    let caller = token(Some(&a), Role::Supervisor, None);
    let ask = pb::ComputeStaffingRequest {
        arrivals_per_second: 0.2,
        aht_seconds: 240.0,
        threshold_seconds: 15.0,
        target_service_level_percent: 80.0,
        max_occupancy_percent: 0.0,
        evaluate_agents: vec![53, 57],
        average_handle_time: None,
        service_level_threshold: None,
    };
    let r = client.compute_staffing(request(ask.clone(), &caller)).await.unwrap().into_inner();
    let req = r.required.unwrap();
    assert_eq!((req.agents, r.agents_for_service_level, r.occupancy_capped), (55, 55, false));
    assert_eq!(
        format!(
            "{:.4} {:.2} {:.1} {:.1}",
            req.probability_of_waiting, req.asa_seconds, req.service_level_percent, req.occupancy_percent
        ),
        "0.2387 8.18 84.6 87.3"
    );
    assert_eq!(format!("{:.2}", r.evaluated[0].asa_seconds), "18.07");
    assert_eq!(format!("{:.1}", r.evaluated[1].service_level_percent), "91.7");
    let capped = client
        .compute_staffing(request(pb::ComputeStaffingRequest { max_occupancy_percent: 85.0, ..ask.clone() }, &caller))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((capped.required.unwrap().agents, capped.occupancy_capped), (57, true));
    let err = client
        .compute_staffing(request(pb::ComputeStaffingRequest { aht_seconds: -3.0, ..ask.clone() }, &caller))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("aht_seconds"));
    let err = client
        .compute_staffing(request(pb::ComputeStaffingRequest { evaluate_agents: vec![40], ..ask }, &caller))
        .await
        .unwrap_err();
    assert!(err.message().contains("evaluate_agents[0]"), "{}", err.message());
    // The same question with Durations, which win over the deprecated seconds.
    let secs = |seconds| Some(prost_types::Duration { seconds, nanos: 0 });
    let ask = pb::ComputeStaffingRequest {
        arrivals_per_second: 0.2,
        aht_seconds: 1.0,
        threshold_seconds: 1.0,
        target_service_level_percent: 80.0,
        average_handle_time: secs(240),
        service_level_threshold: secs(15),
        ..Default::default()
    };
    let r = client.compute_staffing(request(ask.clone(), &caller)).await.unwrap().into_inner();
    assert_eq!(r.required.unwrap().agents, 55);
    let err = client
        .compute_staffing(request(pb::ComputeStaffingRequest { average_handle_time: secs(-3), ..ask }, &caller))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("average_handle_time"), "{}", err.message());
    svc.stop().await;
}

#[tokio::test]
async fn usage_of_a_month_for_billing() {
    let (prefix, topics, [a, b]) = setup().await;
    let svc = start(&prefix).await;
    let t = base();
    publish(&topics, &floor(&a, t)).await;
    // Agent x serves a from an hour before to two hours after (then goes offline); agent y
    // serves b only; agent z is shared and signed in for 30 minutes, away for 15 of them.
    // Agent w serves a for 10 minutes; the event of its break at 5 minutes arrives late.
    let (x, y, z, w) = (unique("x-"), unique("y-"), unique("z-"), unique("w-"));
    publish_agents(
        &topics,
        &[
            agent_event(&x, spb::AgentState::Available, &[(&a, "support")], t - 3600 * S),
            agent_event(&x, spb::AgentState::Offline, &[(&a, "support")], t + 7200 * S),
            agent_event(&y, spb::AgentState::Available, &[(&b, "support")], t),
            agent_event(&y, spb::AgentState::Offline, &[(&b, "support")], t + 600 * S),
            agent_event(&z, spb::AgentState::Available, &[(&a, "billing"), (&b, "support")], t),
            agent_event(&z, spb::AgentState::Away, &[(&a, "billing"), (&b, "support")], t + 900 * S),
            agent_event(&z, spb::AgentState::Offline, &[(&a, "billing"), (&b, "support")], t + 1800 * S),
            agent_event(&w, spb::AgentState::Available, &[(&a, "support")], t),
            agent_event(&w, spb::AgentState::Offline, &[(&a, "support")], t + 600 * S),
            agent_event(&w, spb::AgentState::Away, &[(&a, "support")], t + 300 * S),
        ],
    )
    .await;
    until_offered(&svc, &a, t, 12).await;
    let month = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .with_timezone(&chrono_tz::Europe::Madrid)
        .format("%Y-%m")
        .to_string();
    let supervisor = token(Some(&a), Role::TenantAdmin, None);
    let ask = pb::GetUsageRequest { tenant: String::new(), month: month.clone() };
    let mut usage = pb::Usage::default();
    for _ in 0..100 {
        usage = svc.reports().get_usage(request(ask.clone(), &supervisor)).await.unwrap().into_inner();
        if usage.agents == 3 && (usage.agent_signed_in_hours - (3.5 + 600.0 / 3600.0)).abs() < 1e-9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Agent history per hour: x took no contact (the floor's contacts are agent-1's), so it
    // was idle all the time it was available; z was available 10:00-10:15 and away
    // 10:15-10:30.
    let mut hist = history_request("", t - 3600 * S, t + 3 * 3600 * S, pb::Granularity::Hour);
    hist.group_by = vec![pb::Dimension::Agent as i32];
    // w's late break is the last agent event published: wait until it is applied.
    let late_applied = |rows: &[pb::HistoryRow]| {
        rows.iter().any(|r| r.agent == w && r.agent_time.is_some_and(|a| a.away_ms == 300 * S))
    };
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = svc.reports().query_history(request(hist.clone(), &supervisor)).await.unwrap().into_inner().rows;
        if late_applied(&rows) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = |agent: &str, hour: i64| {
        rows.iter()
            .find(|r| r.agent == agent && r.period_start.unwrap().seconds * 1000 == t + hour * 3600 * S)
            .and_then(|r| r.agent_time)
            .unwrap_or_else(|| panic!("no agent time of {agent} at hour {hour}: {rows:?}"))
    };
    let z10 = at(&z, 0);
    assert_eq!((z10.signed_in_ms, z10.available_ms, z10.away_ms, z10.idle_ms), (1800 * S, 900 * S, 900 * S, 900 * S));
    assert_eq!(z10.occupancy_percent, Some(0.0));
    let x9 = at(&x, -1);
    assert_eq!((x9.signed_in_ms, x9.idle_ms, x9.occupancy_percent), (3600 * S, 3600 * S, Some(0.0)));
    assert_eq!(at(&x, 1).signed_in_ms, 3600 * S);
    assert!(!rows.iter().any(|r| r.agent == y), "y serves b only");
    // w's late break landed where it belongs: 5 minutes available, then 5 away.
    let w10 = at(&w, 0);
    assert_eq!((w10.available_ms, w10.away_ms), (300 * S, 300 * S));
    // 3 h of x, 30 min of z and 10 min of w (available or away both count as signed in).
    assert_eq!((usage.agents, format!("{:.4}", usage.agent_signed_in_hours)), (3, "3.6667".into()), "{usage:?}");
    // Seven contacts handled (six in support, one in billing), 70 s each.
    assert_eq!(usage.channels.len(), 1);
    assert_eq!((usage.channels[0].channel.as_str(), usage.channels[0].handled), ("voice", 7));
    assert_eq!(format!("{:.4}", usage.channels[0].handle_minutes), "8.1667");
    assert_eq!(usage.time_zone, "Europe/Madrid");
    // Another tenant's token cannot ask for a's usage; a bad month names the field.
    let other = token(Some(&b), Role::TenantAdmin, None);
    let err =
        svc.reports().get_usage(request(pb::GetUsageRequest { tenant: a.clone(), month }, &other)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = svc
        .reports()
        .get_usage(request(pb::GetUsageRequest { tenant: String::new(), month: "2026-13".into() }, &supervisor))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("month"));
    svc.stop().await;

    // The day's usage record, published once the day is over (here: as if it were the next
    // day), read back from the usage topic; publishing again finds nothing due.
    let registry = centralita_platform::registry::TenantRegistry::new();
    registry.upsert(TenantManifest::parse_all(&manifest(&a), chrono::Utc::now()).unwrap().remove(0));
    let pool = pool();
    let api = centralita_reporting::api::Api { pool, registry, shutdown: Shutdown::new(), metrics: Default::default() };
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    ensure_topics(&testkit::brokers(), 1, &[TopicSpec { name: topics.usage(), partitions: 1, compacted: false }])
        .await
        .unwrap();
    let next_day = t + 86_400 * S;
    let n = centralita_reporting::usage::publish_due(&api, &producer, &topics.usage(), next_day).await.unwrap();
    assert_eq!(n, 7, "a week of days is caught up");
    assert_eq!(centralita_reporting::usage::publish_due(&api, &producer, &topics.usage(), next_day).await.unwrap(), 0);
    let records = read_usage(&topics, 7).await;
    let day =
        chrono::DateTime::from_timestamp_millis(t).unwrap().with_timezone(&chrono_tz::Europe::Madrid).date_naive();
    let r = records.iter().find(|r| r.day == day.to_string()).expect("a record of the day");
    assert_eq!(
        (r.tenant.as_str(), r.agents, format!("{:.4}", r.agent_signed_in_hours)),
        (a.as_str(), 3, "3.6667".into())
    );
    assert_eq!((r.channels[0].handled, format!("{:.4}", r.channels[0].handle_minutes)), (7, "8.1667".into()));
    assert!(records.iter().filter(|r| r.day != day.to_string()).all(|r| r.channels.is_empty()));
}

#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<pb::UsageRecord>>>);

impl centralita_platform::bus::Handler for Collect {
    async fn handle(&mut self, event: &Event) -> Result<(), centralita_platform::error::Error> {
        self.0.lock().unwrap().push(event.payload()?);
        Ok(())
    }
}

async fn read_usage(topics: &Topics, want: usize) -> Vec<pb::UsageRecord> {
    let collect = Collect::default();
    let consumer = centralita_platform::bus::Consumer::new(
        centralita_platform::bus::ConsumerSettings {
            brokers: testkit::brokers(),
            group_id: unique("usage-reader-"),
            topics: vec![topics.usage()],
            fetch_wait: centralita_platform::bus::FETCH_WAIT_DEFAULT,
            group_instance_id: None,
        },
        collect.clone(),
        centralita_platform::bus::MemoryDedupe::new(100),
        None,
    )
    .unwrap();
    let stop = Shutdown::new();
    let sd = stop.clone();
    let task = tokio::spawn(async move { consumer.run(sd).await });
    for _ in 0..300 {
        if collect.0.lock().unwrap().len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.trigger();
    task.await.unwrap().unwrap();
    let got = collect.0.lock().unwrap().clone();
    assert_eq!(got.len(), want, "usage records on the topic");
    got
}

#[tokio::test]
async fn a_batch_applies_each_event_once_in_order() {
    let (_prefix, _topics, [a, b]) = setup().await;
    let pool = pool();
    centralita_platform::db::migrate(&pool, &centralita_reporting::MIGRATIONS).await.unwrap();
    let t = base();
    let q = contact_event(&a, "c1", "support", Kind::Queued, t, t);
    let acc = contact_event(&a, "c1", "support", Kind::Accepted, t + 7 * S, t);
    let other = contact_event(&b, "c9", "support", Kind::Queued, t, t);
    let garbage = {
        let mut e = contact_event(&a, "c2", "support", Kind::Queued, t, t);
        e.payload = b"\xff\xff not a contact event".to_vec().into();
        e
    };
    // Two tenants, a duplicate inside the batch, an unreadable event: three applied.
    let batch = [q.clone(), q.clone(), garbage, acc.clone(), other];
    assert_eq!(centralita_reporting::store::apply_batch(&pool, &batch).await.unwrap(), 3);
    // The same events again (a redelivered batch) change nothing.
    assert_eq!(centralita_reporting::store::apply_batch(&pool, &batch).await.unwrap(), 0);
    let legs =
        centralita_reporting::store::legs_between(&pool, &TenantId::parse(&a).unwrap(), t - 1, t + 1).await.unwrap();
    assert_eq!(legs.len(), 1);
    assert_eq!((legs[0].wait_ms(), legs[0].agent.as_str()), (Some(7 * S), "agent-1"));
    let other =
        centralita_reporting::store::legs_between(&pool, &TenantId::parse(&b).unwrap(), t - 1, t + 1).await.unwrap();
    assert_eq!(other.len(), 1);
}

#[tokio::test]
async fn a_database_of_channel_numbers_upgrades_to_channel_names() {
    use centralita_platform::db::{migrate, set_tenant, Migrations};
    use centralita_reporting::core::Channel;
    // A schema of its own, at version 5 (channels stored as protobuf numbers).
    let schema: &'static str = Box::leak(unique("reporting_up_").into_boxed_str());
    let pool = centralita_platform::db::pool(testkit::postgres().url.expose(), schema, 2).unwrap();
    let steps = centralita_reporting::MIGRATIONS.steps;
    let v5 = steps.iter().position(|m| m.version == 6).expect("migration 6");
    migrate(&pool, &Migrations { schema, steps: &steps[..v5] }).await.unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let t = base();
    {
        let mut client = pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        set_tenant(&tx, &tenant).await.unwrap();
        for (contact, number) in [("c1", 1), ("c2", 2), ("c3", 0), ("c4", 9)] {
            tx.execute(
                "INSERT INTO legs (tenant, contact_id, seq, queue, channel, enqueued_at, outcome) \
                 VALUES ('acme', $1, 0, 'support', $2, $3, 0)",
                &[&contact, &number, &t],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // The service's migrations take it to the current version; the legs read back.
    migrate(&pool, &Migrations { schema, steps }).await.unwrap();
    let mut legs = centralita_reporting::store::legs_between(&pool, &tenant, t, t + 1).await.unwrap();
    legs.sort_by(|a, b| a.contact.cmp(&b.contact));
    let channels: Vec<(&str, Channel)> = legs.iter().map(|l| (l.contact.as_str(), l.channel)).collect();
    assert_eq!(
        channels,
        [("c1", Channel::Voice), ("c2", Channel::Chat), ("c3", Channel::Unspecified), ("c4", Channel::Unspecified)]
    );
    pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

#[tokio::test]
async fn a_batch_reports_the_legs_it_wrote_and_how_they_left_their_queue() {
    use centralita_reporting::core::{Outcome, Role};
    use centralita_reporting::store::{fold_batch, Folded};
    let (_prefix, _topics, [a, _]) = setup().await;
    let pool = pool();
    centralita_platform::db::migrate(&pool, &centralita_reporting::MIGRATIONS).await.unwrap();
    let t = base();
    let first = [
        contact_event(&a, "c1", "support", Kind::Queued, t, t),
        contact_event(&a, "c1", "support", Kind::Accepted, t + 7 * S, t),
        contact_event(&a, "c2", "support", Kind::Queued, t, t),
    ];
    let folded = fold_batch(&pool, &first).await.unwrap();
    assert_eq!(
        folded,
        Folded { events: 3, legs_written: vec![Role::Customer, Role::Customer], left_queue: vec![Outcome::Answered] }
    );
    // A leg leaves its queue once: wrapping up the answered one records no outcome again.
    let second = [
        contact_event(&a, "c1", "support", Kind::WrappedUp, t + 60 * S, t),
        contact_event(&a, "c2", "support", Kind::Abandoned, t + 9 * S, t),
    ];
    let folded = fold_batch(&pool, &second).await.unwrap();
    assert_eq!(
        folded,
        Folded { events: 2, legs_written: vec![Role::Customer, Role::Customer], left_queue: vec![Outcome::Abandoned] }
    );
    // Redelivered, the batches change nothing and report nothing.
    assert_eq!(fold_batch(&pool, &first).await.unwrap(), Folded::default());
}

/// Every figure a tenant's reports give: history by queue (15-minute intervals and days),
/// SLA compliance, and the month's usage for billing.
async fn all_figures(
    svc: &Service,
    tenant: &str,
    t: i64,
) -> (pb::QueryHistoryResponse, pb::QueryHistoryResponse, pb::SlaCompliance, pb::Usage) {
    let admin = token(Some(tenant), Role::TenantAdmin, None);
    let (from, to) = (t - 3600 * S, t + 3600 * S);
    let mut reports = svc.reports();
    let history = |g| request(history_request("", from, to, g), &admin);
    let interval = reports.query_history(history(pb::Granularity::Interval)).await.unwrap().into_inner();
    let day = reports.query_history(history(pb::Granularity::Day)).await.unwrap().into_inner();
    let ts = |ms: i64| Some(prost_types::Timestamp { seconds: ms / 1000, nanos: 0 });
    let sla = pb::GetSlaComplianceRequest {
        tenant: String::new(),
        start_time: ts(from),
        end_time: ts(to),
        queue: String::new(),
    };
    let sla = reports.get_sla_compliance(request(sla, &admin)).await.unwrap().into_inner();
    let month =
        chrono::DateTime::from_timestamp_millis(t).unwrap().with_timezone(&chrono_tz::Europe::Madrid).format("%Y-%m");
    let usage = pb::GetUsageRequest { tenant: String::new(), month: month.to_string() };
    let usage = reports.get_usage(request(usage, &admin)).await.unwrap().into_inner();
    (interval, day, sla, usage)
}

/// `(legs, of which anonymised, distinct contact ids)` of a tenant, read under its own
/// row-level security.
async fn leg_ids(pool: &deadpool_postgres::Pool, tenant: &str) -> (i64, i64, i64) {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    centralita_platform::db::set_tenant(&tx, &TenantId::parse(tenant).unwrap()).await.unwrap();
    let prefix = format!("{}%", centralita_reporting::store::ANONYMOUS_PREFIX);
    let r = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE contact_id LIKE $1), count(DISTINCT contact_id) FROM legs",
            &[&prefix],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Retention with the sweeper's clock moved past tenant A's 30 days: A's legs lose their
/// contact ids (each contact one pseudonym) while every figure — history, SLA compliance,
/// usage — stays exactly as it was; tenant B (365 days) is untouched; a second pass changes
/// nothing.
#[tokio::test]
async fn retention_anonymises_expired_legs_and_every_figure_stays() {
    let limit = |id: &str| {
        let days = if id.starts_with("rep-ret-b-") { 365 } else { 30 };
        manifest(id).replace("dataRetentionDays: 30", &format!("dataRetentionDays: {days}"))
    };
    let (prefix, topics, [a, b]) = testkit::two_tenants("rep-ret-", limit, |t| vec![t.contacts(), t.agents()]).await;
    let svc = start(&prefix).await;
    let t = base();
    publish(&topics, &floor(&a, t)).await;
    publish(&topics, &floor(&b, t)).await;
    until_offered(&svc, &a, t, 12).await;
    until_offered(&svc, &b, t, 12).await;
    let (a_before, b_before) = (all_figures(&svc, &a, t).await, all_figures(&svc, &b, t).await);
    assert_eq!(a_before.0.rows.iter().map(|r| r.figures.as_ref().unwrap().offered).sum::<u64>(), 12);
    assert!(a_before.3.channels.iter().any(|c| c.handled == 7), "{:?}", a_before.3);
    let pool = pool();
    let (a_legs, a_anon, a_contacts) = leg_ids(&pool, &a).await;
    assert_eq!((a_anon, a_contacts), (0, 12));
    let b_ids = leg_ids(&pool, &b).await;

    let registry = centralita_platform::registry::TenantRegistry::new();
    for id in [&a, &b] {
        registry.upsert(TenantManifest::parse_all(&limit(id), chrono::Utc::now()).unwrap().remove(0));
    }
    let metrics = centralita_reporting::metrics::Metrics::default();
    let sweep = |now| centralita_reporting::retention::sweep(&pool, &registry, &metrics, now);
    let report = sweep(chrono::Utc::now()).await.unwrap();
    assert_eq!(report, Default::default(), "yesterday's legs are within both limits");
    let report = sweep(chrono::Utc::now() + chrono::Duration::days(31)).await.unwrap();
    assert_eq!((report.contacts, report.legs as i64), (12, a_legs), "A's contacts, none of B's");
    assert_eq!(leg_ids(&pool, &a).await, (a_legs, a_legs, 12), "every leg anonymised, one pseudonym per contact");
    assert_eq!(leg_ids(&pool, &b).await, b_ids, "B untouched");
    // No leg of A still carries a contact id it was written with.
    {
        let mut client = pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        centralita_platform::db::set_tenant(&tx, &TenantId::parse(&a).unwrap()).await.unwrap();
        let named: i64 = tx
            .query_one("SELECT count(*) FROM legs WHERE contact_id IN ('h0', 'a0', 'w', 'span', 'b-short')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(named, 0);
    }
    // Every figure of both tenants is what it was.
    assert_eq!(all_figures(&svc, &a, t).await, a_before);
    assert_eq!(all_figures(&svc, &b, t).await, b_before);
    // A second pass at the same time changes nothing.
    assert_eq!(sweep(chrono::Utc::now() + chrono::Duration::days(31)).await.unwrap(), Default::default());
    svc.stop().await;
}

/// Collects every event a test consumer reads.
#[derive(Clone, Default)]
struct CollectEvents(std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

impl centralita_platform::bus::Handler for CollectEvents {
    async fn handle(&mut self, event: &Event) -> Result<(), centralita_platform::Error> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Issue 23: a customer's erasure (CRM's `CustomerErased` on the customers topic, contacts
/// named `tenants/{tenant}/contacts/{id}`) gives the legs of the erased customer's contacts a
/// pseudonym each and reports the `reporting` store done with the number of legs; every
/// figure stays; the erasure reaches only its own tenant, whatever it names; a redelivered
/// erasure changes nothing more and is reported again with nothing erased.
#[tokio::test]
async fn an_erasure_anonymises_the_customers_legs_and_reports_the_store_done() {
    use centralita_platform::bus::{Consumer, ConsumerSettings, EventPayload as _, MemoryDedupe, FETCH_WAIT_DEFAULT};
    use centralita_proto::crm::v1 as crm;
    let (prefix, topics, [a, b]) =
        testkit::two_tenants("rep-era-", manifest, |t| vec![t.contacts(), t.agents(), t.customers()]).await;
    let svc = start(&prefix).await;
    let collected = CollectEvents::default();
    let reader = Consumer::new(
        ConsumerSettings {
            brokers: testkit::brokers(),
            group_id: unique("rep-era-reader-"),
            topics: vec![topics.customers()],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id: None,
        },
        collected.clone(),
        MemoryDedupe::new(1000),
        None,
    )
    .unwrap();
    let reader = tokio::spawn(reader.run(svc.shutdown.clone()));
    let t = base();
    publish(&topics, &floor(&a, t)).await;
    publish(&topics, &floor(&b, t)).await;
    until_offered(&svc, &a, t, 12).await;
    until_offered(&svc, &b, t, 12).await;
    let (a_before, b_before) = (all_figures(&svc, &a, t).await, all_figures(&svc, &b, t).await);
    let pool = pool();
    let (a_legs, _, _) = leg_ids(&pool, &a).await;
    let b_ids = leg_ids(&pool, &b).await;
    let legs_of = |tenant: String, ids: &'static [&'static str]| {
        let pool = pool.clone();
        async move {
            let mut client = pool.get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            centralita_platform::db::set_tenant(&tx, &TenantId::parse(&tenant).unwrap()).await.unwrap();
            let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
            let n: i64 =
                tx.query_one("SELECT count(*) FROM legs WHERE contact_id = ANY($1)", &[&ids]).await.unwrap().get(0);
            n
        }
    };
    let h0h1 = legs_of(a.clone(), &["h0", "h1"]).await;
    assert!(h0h1 >= 2, "h0 and h1 have legs: {h0h1}");
    assert!(legs_of(b.clone(), &["h2"]).await >= 1);

    // A's erasure names two of A's contacts and one of B's (which it must not reach).
    let name = format!("erasures/{}", unique("e"));
    let erasure = crm::Erasure {
        name: name.clone(),
        customers: vec![format!("customers/{}", unique("cu"))],
        contacts: vec![
            format!("tenants/{a}/contacts/h0"),
            format!("tenants/{a}/contacts/h1"),
            format!("tenants/{b}/contacts/h2"),
        ],
        ..Default::default()
    };
    let event = crm::CustomerErased { tenant: a.clone(), erasure: Some(erasure) };
    let event = Event::new(TenantId::parse(&a).unwrap(), &event);
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    producer.publish(&topics.customers(), &name, &event).await.unwrap();
    let reported = |n: usize| {
        let collected = collected.clone();
        let name = name.clone();
        async move {
            for _ in 0..300 {
                let found: Vec<(String, crm::StoreErased)> = collected
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| e.type_name == crm::StoreErased::TYPE)
                    .map(|e| (e.tenant.as_str().to_owned(), e.payload::<crm::StoreErased>().unwrap()))
                    .filter(|(_, s)| s.erasure == name && s.store == "reporting")
                    .collect();
                if found.len() >= n {
                    return found[n - 1].clone();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("reporting did not report erasure {name} done ({n})");
        }
    };
    let (tenant, done) = reported(1).await;
    assert_eq!((tenant.as_str(), done.tenant.as_str(), done.records_erased), (a.as_str(), a.as_str(), h0h1));
    assert!(done.erase_time.is_some());
    assert_eq!(
        legs_of(a.clone(), &["h0", "h1"]).await,
        0,
        "the erased customer's legs no longer carry its contacts' ids"
    );
    let (legs, anon, contacts) = leg_ids(&pool, &a).await;
    assert_eq!((legs, anon, contacts), (a_legs, h0h1, 12), "one pseudonym per contact, the other legs as they were");
    assert_eq!(leg_ids(&pool, &b).await, b_ids, "B untouched");
    assert!(legs_of(b.clone(), &["h2"]).await >= 1, "B's contact named in A's erasure is untouched");
    assert_eq!(all_figures(&svc, &a, t).await, a_before, "every figure of A stays");
    assert_eq!(all_figures(&svc, &b, t).await, b_before);

    // Redelivered (a new event of the same erasure): nothing more erased, reported again.
    let again =
        crm::CustomerErased { tenant: a.clone(), erasure: event.payload::<crm::CustomerErased>().unwrap().erasure };
    producer.publish(&topics.customers(), &name, &Event::new(TenantId::parse(&a).unwrap(), &again)).await.unwrap();
    let (_, second) = reported(2).await;
    assert_eq!(second.records_erased, 0);
    assert_eq!(leg_ids(&pool, &a).await, (a_legs, h0h1, 12));
    svc.stop().await;
    reader.await.unwrap().unwrap();
}
