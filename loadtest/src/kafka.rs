//! `kafka`: the raw capacity of the Kafka-protocol broker with the platform's own client
//! settings (idempotent, acks=all producer; consumer group), so the platform's figures can
//! be read as a fraction of what the broker allows. Produces `--messages` records of
//! `--bytes` each onto a fresh topic as fast as the producer takes them (pipelined), then
//! consumes them all with a new consumer group.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use centralita_platform::bus::{
    ensure_topics, ConsumerSettings, Event, Handler, Producer, TopicSpec, FETCH_WAIT_DEFAULT,
};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_proto::tenancy::v1 as tpb;

#[derive(Debug, clap::Args)]
pub struct KafkaArgs {
    #[arg(long, env = "CENTRALITA_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Approximate record size (the payload is padded to it).
    #[arg(long, default_value_t = 300)]
    bytes: usize,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

#[derive(Clone)]
struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Handler for Count {
    async fn handle(&mut self, _event: &Event) -> Result<(), centralita_platform::error::Error> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

pub async fn run(args: KafkaArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.bytes == 0 || args.partitions <= 0 {
        bail!("--messages, --bytes and --partitions must be positive");
    }
    let run = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let topic = format!("bench-raw-{run}");
    ensure_topics(
        &args.brokers,
        1,
        &[TopicSpec { name: topic.clone(), partitions: args.partitions, compacted: false }],
    )
    .await
    .context("the broker is not reachable")?;
    let producer = Producer::new(&args.brokers, None)?;
    let tenant = TenantId::parse("bench").map_err(anyhow::Error::msg)?;
    let payload = tpb::Tenant { display_name: "x".repeat(args.bytes.saturating_sub(120)), ..Default::default() };
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(args.messages as usize);
    for i in 0..args.messages {
        let event = Event::new(tenant.clone(), &payload);
        deliveries.push(producer.enqueue(&topic, &format!("k{}", i % 1000), &event)?);
    }
    for d in deliveries {
        d.await?;
    }
    let produced = started.elapsed();
    let count = Count(std::sync::Arc::default());
    let consumer = centralita_platform::bus::Consumer::new(
        ConsumerSettings {
            brokers: args.brokers.clone(),
            group_id: format!("bench-raw-{run}"),
            topics: vec![topic.clone()],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id: None,
        },
        count.clone(),
        centralita_platform::bus::MemoryDedupe::new(1),
        None,
    )?;
    let stop = Shutdown::new();
    let sd = stop.clone();
    let task = tokio::spawn(async move { consumer.run(sd).await });
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    loop {
        let n = count.0.load(std::sync::atomic::Ordering::Relaxed);
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= args.messages {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("consumed only {n} of {} records in 600 s", args.messages);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed = first.map_or_else(|| started.elapsed(), |f| f.elapsed());
    stop.trigger();
    task.await??;
    let result = serde_json::json!({
        "messages": args.messages, "bytes": args.bytes, "partitions": args.partitions,
        "produce_per_second": args.messages as f64 / produced.as_secs_f64(),
        "consume_per_second": args.messages as f64 / consumed.as_secs_f64(),
        "consumer_group_join_seconds": first.map(|f| f.duration_since(started).as_secs_f64()),
    });
    eprintln!(
        "[kafka] {} records of ~{} B over {} partitions: produced {:.0}/s (idempotent, acks=all, pipelined), consumed {:.0}/s (consumer group, after joining)",
        args.messages,
        args.bytes,
        args.partitions,
        args.messages as f64 / produced.as_secs_f64(),
        args.messages as f64 / consumed.as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
