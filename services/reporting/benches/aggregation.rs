//! The aggregation core alone: contact events folded into legs, and legs rolled up into
//! 15-minute rows per queue (what every history, SLA and real-time query does).
//!
//! `cargo bench -p centralita-reporting --bench aggregation`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use centralita_reporting::core::rollup::{rows, GroupBy, Period};
use centralita_reporting::core::{apply, Channel, ContactFact, Kind, Leg, QueueRules};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const CONTACTS: usize = 20_000;
const QUEUES: usize = 10;

/// A day of contacts: most handled (queued, offered, accepted, ended, wrapped up), some
/// abandoned, every tenth transferred once; deterministic.
fn events() -> Vec<ContactFact> {
    let mut out = Vec::new();
    let start = 1_790_000_000_000i64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for i in 0..CONTACTS {
        let contact = format!("c{i}");
        let queue = format!("q{}", i % QUEUES);
        let q = start + (i as i64) * 4_000;
        let wait = rnd(60_000) as i64;
        let fact = |kind, at, queue: &str| ContactFact {
            tenant: "acme".into(),
            contact: contact.clone(),
            kind,
            queue: queue.to_owned(),
            channel: Channel::Voice,
            agent: "agent-1".into(),
            disposition: String::new(),
            enqueued_at: Some(q),
            consult: false,
            at,
        };
        out.push(fact(Kind::Queued, q, &queue));
        if rnd(10) == 0 {
            out.push(fact(Kind::Abandoned, q + wait, &queue));
            continue;
        }
        out.push(fact(Kind::Offered, q + wait - 500, &queue));
        out.push(fact(Kind::Accepted, q + wait, &queue));
        if i % 10 == 1 {
            out.push(fact(Kind::Transferred, q + wait + 30_000, "q0"));
            out.push(fact(Kind::Accepted, q + wait + 40_000, "q0"));
        }
        out.push(fact(Kind::Held, q + wait + 50_000, &queue));
        out.push(fact(Kind::Resumed, q + wait + 60_000, &queue));
        out.push(fact(Kind::Ended, q + wait + 200_000, &queue));
        out.push(fact(Kind::WrappedUp, q + wait + 230_000, &queue));
    }
    out
}

fn fold(events: &[ContactFact]) -> Vec<Leg> {
    let mut last: HashMap<&str, Leg> = HashMap::new();
    let mut done = Vec::new();
    for e in events {
        for leg in apply(last.remove(e.contact.as_str()), e) {
            if let Some(prev) = last.insert(e.contact.as_str(), leg) {
                done.push(prev);
            }
        }
    }
    done.extend(last.into_values());
    done
}

fn bench(c: &mut Criterion) {
    let events = events();
    let mut g = c.benchmark_group("reporting");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function(format!("fold {} events into legs", events.len()), |b| b.iter(|| fold(&events)));
    let legs = fold(&events);
    g.throughput(Throughput::Elements(legs.len() as u64));
    let utc: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
    let rules = |_: &str| QueueRules::default();
    let by_queue = GroupBy { queue: true, ..GroupBy::default() };
    g.bench_function(format!("roll {} legs into 15-minute rows per queue", legs.len()), |b| {
        b.iter_batched(
            || (),
            |()| rows(&legs, 0, i64::MAX, Period::Interval, utc, by_queue, rules),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
