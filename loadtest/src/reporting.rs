//! `reporting`: how fast contact events become visible in the reporting service.
//!
//! 1. Latency: `--probes` times, one new contact's QUEUED event is published on the
//!    contacts topic and `GetRealtimeMetrics` is polled (every 2 ms) until the probe queue
//!    shows it waiting. Event→visible is from just before the publish to the first answer
//!    that shows it.
//! 2. Throughput: `--contacts` contacts of five events each (queued, offered, accepted,
//!    ended, wrapped up) are published as fast as the producer takes them; the history is
//!    polled until every contact is counted. Events per second is all events over the time
//!    from the first publish to the poll that saw the last contact.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use centralita_platform::auth::Role;
use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::tenant::TenantId;
use centralita_proto::reporting::v1 as rpb;
use centralita_proto::sessions::v1::{self as spb, contact_event::Kind};
use centralita_proto::tenancy::v1 as tpb;
use rpb::reporting_service_client::ReportingServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::{histogram, publish_tenants, req, tenant_yaml, Auth};

#[derive(Debug, clap::Args)]
pub struct ReportingArgs {
    /// The reporting service's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50056")]
    reporting: String,
    #[command(flatten)]
    pub stack: crate::StackArgs,
    #[arg(long, default_value_t = 200)]
    probes: u32,
    #[arg(long, default_value_t = 5000)]
    contacts: u32,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn event(tenant: &TenantId, contact: &str, queue: &str, kind: Kind, at_ms: i64) -> Event {
    let ts = prost_types::Timestamp { seconds: at_ms / 1000, nanos: ((at_ms % 1000) * 1_000_000) as i32 };
    let payload = spb::ContactEvent {
        kind: kind as i32,
        contact: Some(spb::Contact {
            name: format!("contacts/{contact}"),
            tenant: tenant.as_str().into(),
            channel: tpb::Channel::Voice as i32,
            queue: queue.into(),
            agent_id: "agent-1".into(),
            create_time: Some(ts),
            enqueue_time: Some(ts),
            ..Default::default()
        }),
        agent_id: "agent-1".into(),
        ..Default::default()
    };
    Event::at(tenant.clone(), &payload, chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default())
}

async fn waiting(client: &mut ReportingServiceClient<Channel>, token: &str) -> anyhow::Result<u64> {
    let q = rpb::GetRealtimeMetricsRequest { tenant: String::new(), queue: "probe".into() };
    let m = client.get_realtime_metrics(req(q, token)?).await?.into_inner();
    Ok(m.queues.first().map_or(0, |q| q.waiting))
}

pub async fn run(args: ReportingArgs, auth: Auth) -> anyhow::Result<()> {
    if args.probes == 0 || args.contacts == 0 {
        bail!("--probes and --contacts must be at least 1");
    }
    let channel = Endpoint::from_shared(args.reporting.clone())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("the reporting service at {} is not reachable", args.reporting))?;
    let mut client = ReportingServiceClient::new(channel);
    let run = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let id = format!("lr{run}");
    let tenant = TenantId::parse(&id).map_err(anyhow::Error::msg)?;
    let topics = Topics::new(args.stack.topic_prefix.clone());
    let routing = "    queues: [{ id: probe }, { id: bulk }]";
    publish_tenants(&args.stack.brokers, &topics, &[tenant_yaml(&id, "Reporting load", &["voice"], routing)]).await?;
    let producer = Producer::new(&args.stack.brokers, None)?;
    let token = auth.token(Some(&id), Role::Supervisor, None)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting(&mut client, &token).await.is_err() {
        if Instant::now() > deadline {
            bail!("reporting did not see tenant {id} within 60 s (is it consuming {}?)", topics.tenants());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut latency = histogram();
    for i in 0..args.probes {
        let started = Instant::now();
        let now = chrono::Utc::now().timestamp_millis();
        let probe = event(&tenant, &format!("p{run}-{i}"), "probe", Kind::Queued, now);
        producer.publish(&topics.contacts(), &format!("contacts/p{run}-{i}"), &probe).await?;
        loop {
            if waiting(&mut client, &token).await? > u64::from(i) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("probe {i} not visible after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latency.record(started.elapsed().as_micros() as u64)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let q = |p: f64| latency.value_at_quantile(p) as f64 / 1000.0;
    eprintln!(
        "[reporting] event→visible over {} probes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.probes,
        q(0.5),
        q(0.99),
        latency.max() as f64 / 1000.0
    );

    let started = Instant::now();
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut deliveries = Vec::new();
    for i in 0..args.contacts {
        let c = format!("b{run}-{i}");
        let at = base + i64::from(i) * 10;
        for (kind, offset) in [
            (Kind::Queued, 0),
            (Kind::Offered, 1_000),
            (Kind::Accepted, 2_000),
            (Kind::Ended, 60_000),
            (Kind::WrappedUp, 70_000),
        ] {
            let e = event(&tenant, &c, "bulk", kind, at + offset);
            deliveries.push(producer.enqueue(&topics.contacts(), &format!("contacts/{c}"), &e)?);
        }
    }
    for d in deliveries {
        d.await?;
    }
    let published = started.elapsed();
    let ts = |ms: i64| Some(prost_types::Timestamp { seconds: ms / 1000, nanos: 0 });
    let query = rpb::QueryHistoryRequest {
        tenant: String::new(),
        start_time: ts(base - 60_000),
        end_time: ts(base + 3_600_000),
        granularity: rpb::Granularity::Day as i32,
        group_by: vec![rpb::Dimension::Queue as i32],
        queue: "bulk".into(),
        service_level_definition: String::new(),
    };
    let handled = loop {
        let h = client.query_history(req(query.clone(), &token)?).await?.into_inner();
        let handled: u64 = h.rows.iter().filter_map(|r| r.figures.as_ref()).map(|f| f.handled).sum();
        if handled >= u64::from(args.contacts) {
            break handled;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {handled} of {} contacts visible after 600 s", args.contacts);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    let events = u64::from(args.contacts) * 5;
    let rate = events as f64 / elapsed.as_secs_f64();
    eprintln!(
        "[reporting] {events} events ({handled} contacts) published in {:.2} s, all visible after {:.2} s: {rate:.0} events/s",
        published.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    let result = serde_json::json!({
        "probes": args.probes,
        "event_to_visible_ms": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": latency.max() as f64 / 1000.0 },
        "throughput": { "events": events, "contacts": args.contacts, "published_s": published.as_secs_f64(),
                        "visible_s": elapsed.as_secs_f64(), "events_per_s": rate },
    });
    match &args.json {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&result)?)?,
        None => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(())
}
