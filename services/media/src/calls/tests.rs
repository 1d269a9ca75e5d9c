use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::cache::RedisHandle;
use centralita_platform::tenant::TenantId;

use super::*;
use crate::error::{ContactRefused, Error};

fn t(id: &str) -> TenantId {
    TenantId::parse(id).expect("tenant id")
}

fn inc(instance: &str) -> Incarnation {
    Incarnation::new(instance)
}

#[test]
fn incarnations_name_their_instance_and_parse_back() {
    let a = inc("media-0");
    assert_eq!(a.instance(), "media-0");
    assert_eq!(Incarnation::parse(a.as_str()), Some(a.clone()));
    assert_ne!(inc("media-0"), a, "each process is a new incarnation");
    assert_eq!(inc("pod name/../x").instance(), "pod_name_.._x");
    for junk in
        ["", "media-0", "~0123456789abcdef0123456789abcdef", "media-0~xyz", "a b~0123456789abcdef0123456789abcdef"]
    {
        assert_eq!(Incarnation::parse(junk), None, "{junk:?}");
    }
}

#[test]
fn what_is_swept_expired_leases_and_predecessors_never_oneself() {
    let me = inc("media-0");
    let predecessor = inc("media-0");
    let (alive, dead) = (inc("media-1"), inc("media-2"));
    let leases = vec![
        (me.to_string(), 500),
        (predecessor.to_string(), 5_000),
        (alive.to_string(), 1_001),
        (dead.to_string(), 1_000),
        ("not-an-incarnation".to_owned(), 0),
    ];
    let swept = to_sweep(&leases, 1_000, &me);
    assert_eq!(swept, vec![predecessor, dead], "my own expired lease is not swept by me; a live one is left alone");
    assert!(to_sweep(&leases, 1_000, &alive).iter().all(|i| i != &alive));
    assert!(to_sweep(&[], 1_000, &me).is_empty());
}

#[test]
fn an_end_settles_the_entry_unless_sessions_did_not_answer() {
    assert_eq!(Settled::of(&Ok(())), Settled::Ended);
    assert_eq!(Settled::of(&Err(Error::ContactRefused(ContactRefused::Closed))), Settled::Gone);
    assert_eq!(Settled::of(&Err(Error::ContactRefused(ContactRefused::TenantSuspended))), Settled::Gone);
    assert_eq!(Settled::of(&Err(Error::NoContact)), Settled::Gone);
    assert_eq!(Settled::of(&Err(Error::ContactRefused(ContactRefused::Unavailable))), Settled::Retry);
    assert_eq!(Settled::of(&Err(Error::Sessions("Internal".into()))), Settled::Retry);
    assert_eq!(Settled::of(&Err(Error::Token("no key".into()))), Settled::Retry);
}

#[test]
fn an_entry_acts_only_on_a_contact_of_its_tenant() {
    let acme = t("acme");
    assert!(of_tenant("tenants/acme/contacts/0191", &acme));
    assert!(!of_tenant("tenants/acme-b/contacts/0191", &acme));
    assert!(!of_tenant("tenants/globex/contacts/0191", &acme));
    assert!(!of_tenant("tenants/acme/contacts/", &acme));
    assert!(!of_tenant("tenants/acme/contacts/x/y", &acme));
    assert!(!of_tenant("acme/contacts/0191", &acme));
}

#[test]
fn settings_are_checked() {
    let ok = CallsArgs { lease: Duration::from_secs(15), sweep_interval: Duration::from_secs(5) };
    assert!(ok.validate().is_ok());
    let short = CallsArgs { lease: Duration::from_secs(1), ..ok.clone() };
    assert!(short.validate().unwrap_err().to_string().contains("CENTRALITA_VOICE_LEASE"));
    let slow = CallsArgs { sweep_interval: Duration::from_secs(20), ..ok.clone() };
    assert!(slow.validate().unwrap_err().to_string().contains("CENTRALITA_VOICE_SWEEP_INTERVAL"));
}

/// Sessions as far as ending goes: a contact ends once, a second end is refused as sessions
/// does (FAILED_PRECONDITION); `down` answers UNAVAILABLE; each end takes `delay`.
#[derive(Debug, Default)]
struct FakeSessions {
    ended: Mutex<Vec<(TenantId, String, String)>>,
    down: Mutex<bool>,
    delay: Duration,
}

impl Ender for FakeSessions {
    async fn end(&self, tenant: &TenantId, contact: &str, cause: &str) -> Result<(), Error> {
        tokio::time::sleep(self.delay).await;
        if *self.down.lock().unwrap() {
            return Err(Error::ContactRefused(ContactRefused::Unavailable));
        }
        let mut ended = self.ended.lock().unwrap();
        if ended.iter().any(|(t, c, _)| t == tenant && c == contact) {
            return Err(Error::ContactRefused(ContactRefused::Closed));
        }
        ended.push((tenant.clone(), contact.to_owned(), cause.to_owned()));
        Ok(())
    }
}

/// Against the local stack's Redis (`CENTRALITA_REDIS_URL`); skipped without it.
async fn redis() -> Option<RedisHandle> {
    let url = std::env::var("CENTRALITA_REDIS_URL").ok()?;
    let conn = centralita_platform::cache::connect(&url).await.ok()?;
    Some(RedisHandle::connected(conn))
}

fn settings() -> CallsArgs {
    CallsArgs { lease: Duration::from_secs(3), sweep_interval: Duration::from_millis(200) }
}

fn carried(redis: &RedisHandle, ns: &str, instance: &str, sessions: Arc<FakeSessions>) -> Arc<Carried<FakeSessions>> {
    let platform = centralita_platform::metrics::Metrics::new("media");
    let metrics = Arc::new(crate::metrics::RecoveryMetrics::register(&platform));
    Arc::new(Carried::new(inc(instance), Store::new(redis.clone(), ns), sessions, settings(), metrics))
}

fn ns() -> String {
    format!("calls-test-{}.", uuid::Uuid::now_v7().simple())
}

fn contact(tenant: &str, n: usize) -> String {
    format!("tenants/{tenant}/contacts/c{n}")
}

#[tokio::test]
async fn a_dead_replicas_calls_are_ended_once_with_the_cause_even_with_two_sweepers() {
    let Some(redis) = redis().await else {
        eprintln!("CENTRALITA_REDIS_URL not set: skipped");
        return;
    };
    let ns = ns();
    let sessions = Arc::new(FakeSessions { delay: Duration::from_millis(5), ..Default::default() });
    // The replica that will die carries 20 calls of tenant A and 10 of tenant B.
    let dead = carried(&redis, &ns, "media-0", sessions.clone());
    assert!(!dead.store.heartbeat(&dead.me, Duration::from_millis(300)).await.expect("lease"), "first heartbeat");
    let (a, b) =
        (t(&format!("ta{}", uuid::Uuid::now_v7().simple())), t(&format!("tb{}", uuid::Uuid::now_v7().simple())));
    for n in 0..20 {
        dead.carry(&a, &contact(a.as_str(), n), &format!("call-{n}@caller")).await;
    }
    for n in 0..10 {
        dead.carry(&b, &contact(b.as_str(), n), &format!("b-call-{n}@caller")).await;
    }
    // Keys are the tenant's: A's calls sit under A's hash-tagged key, none under B's.
    let a_calls = dead.store.calls(&dead.me, &a).await.expect("calls");
    assert_eq!(a_calls.len(), 20);
    assert!(a_calls.iter().all(|(c, _)| of_tenant(c, &a)));
    assert!(dead.store.calls_key(&a, &dead.me).starts_with(&format!("{{t:{a}}}:voice:calls:{ns}")));
    assert_eq!(dead.store.calls(&dead.me, &b).await.expect("calls").len(), 10);
    // An entry planted under A's key naming one of B's contacts is dropped, never ended.
    let planted = Entry { call_id: "planted".into(), started_ms: 0 };
    dead.store.add(&dead.me, &a, &contact(b.as_str(), 99), &planted, Duration::from_millis(300)).await.expect("plant");

    // Alive, its lease is not swept by another replica.
    let (one, two) =
        (carried(&redis, &ns, "media-1", sessions.clone()), carried(&redis, &ns, "media-2", sessions.clone()));
    one.store.heartbeat(&one.me, Duration::from_secs(30)).await.expect("lease");
    two.store.heartbeat(&two.me, Duration::from_secs(30)).await.expect("lease");
    one.sweep_all().await;
    assert!(sessions.ended.lock().unwrap().is_empty(), "a live replica's calls are not touched");

    // It dies (no more heartbeats): once its lease is over, both sweep at the same time.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tokio::join!(one.sweep_all(), two.sweep_all());
    let ended = sessions.ended.lock().unwrap().clone();
    assert_eq!(ended.len(), 30, "every call of the dead replica ended");
    let distinct: HashSet<_> = ended.iter().map(|(t, c, _)| (t.clone(), c.clone())).collect();
    assert_eq!(distinct.len(), 30, "none twice");
    assert!(ended.iter().all(|(_, _, cause)| cause == CAUSE_LOST));
    assert!(ended.iter().all(|(t, c, _)| of_tenant(c, t)), "each with its own tenant");
    assert!(!ended.iter().any(|(_, c, _)| c == &contact(b.as_str(), 99)), "the planted entry is not acted on");
    assert_eq!(one.metrics.recovered() + two.metrics.recovered(), 30, "counted once");
    // Nothing of it is left: no lease, no list, no entries.
    let (_, leases) = one.store.leases().await.expect("leases");
    assert!(!leases.iter().any(|(m, _)| m == dead.me.as_str()));
    assert!(one.store.tenants(&dead.me).await.expect("tenants").is_empty());
    assert!(one.store.calls(&dead.me, &a).await.expect("calls").is_empty());
    assert!(one.store.calls(&dead.me, &b).await.expect("calls").is_empty());
    // A later sweep finds nothing more.
    tokio::join!(one.sweep_all(), two.sweep_all());
    assert_eq!(sessions.ended.lock().unwrap().len(), 30);

    for c in [&one, &two] {
        c.retire().await;
    }
    let (_, leases) = one.store.leases().await.expect("leases");
    assert!(leases.is_empty(), "clean shutdowns leave no lease: {leases:?}");
}

#[tokio::test]
async fn a_restarted_replica_ends_its_predecessors_calls_at_once_and_adopts_none() {
    let Some(redis) = redis().await else {
        eprintln!("CENTRALITA_REDIS_URL not set: skipped");
        return;
    };
    let ns = ns();
    let sessions = Arc::new(FakeSessions::default());
    let a = t(&format!("tr{}", uuid::Uuid::now_v7().simple()));
    let old = carried(&redis, &ns, "media-0", sessions.clone());
    old.store.heartbeat(&old.me, Duration::from_secs(60)).await.expect("lease");
    old.carry(&a, &contact(a.as_str(), 1), "c1").await;
    old.carry(&a, &contact(a.as_str(), 2), "c2").await;
    // Killed: its lease still has a minute to run. The same pod starts again.
    let new = carried(&redis, &ns, "media-0", sessions.clone());
    new.store.heartbeat(&new.me, Duration::from_secs(60)).await.expect("lease");
    // Another pod does not touch them (the lease runs).
    let other = carried(&redis, &ns, "media-1", sessions.clone());
    other.sweep_all().await;
    assert!(sessions.ended.lock().unwrap().is_empty());
    new.sweep_all().await;
    let ended: Vec<String> = sessions.ended.lock().unwrap().iter().map(|(_, c, _)| c.clone()).collect();
    assert_eq!(ended, vec![contact(a.as_str(), 1), contact(a.as_str(), 2)]);
    assert!(new.store.calls(&new.me, &a).await.expect("calls").is_empty(), "nothing adopted");
    assert!(new.store.calls(&old.me, &a).await.expect("calls").is_empty());
    new.retire().await;
}

#[tokio::test]
async fn sessions_unreachable_leaves_the_calls_for_the_next_sweep_and_own_stale_entries_are_retried() {
    let Some(redis) = redis().await else {
        eprintln!("CENTRALITA_REDIS_URL not set: skipped");
        return;
    };
    let ns = ns();
    let sessions = Arc::new(FakeSessions::default());
    let a = t(&format!("tu{}", uuid::Uuid::now_v7().simple()));
    let dead = carried(&redis, &ns, "media-0", sessions.clone());
    dead.store.heartbeat(&dead.me, Duration::from_millis(100)).await.expect("lease");
    dead.carry(&a, &contact(a.as_str(), 1), "c1").await;
    let me = carried(&redis, &ns, "media-1", sessions.clone());
    me.store.heartbeat(&me.me, Duration::from_secs(60)).await.expect("lease");
    // My own call: live, then ended while sessions is down.
    me.carry(&a, &contact(a.as_str(), 2), "c2").await;
    me.carry(&a, &contact(a.as_str(), 3), "c3").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    *sessions.down.lock().unwrap() = true;
    me.ended(&a, &contact(a.as_str(), 2), &Err(Error::ContactRefused(ContactRefused::Unavailable))).await;
    me.sweep_all().await;
    assert!(sessions.ended.lock().unwrap().is_empty());
    assert_eq!(me.store.calls(&dead.me, &a).await.expect("calls").len(), 1, "kept for the next sweep");
    let (_, leases) = me.store.leases().await.expect("leases");
    assert!(leases.iter().any(|(m, _)| m == dead.me.as_str()), "the dead lease stays until its calls are ended");
    // Sessions back: the dead replica's call and my stale entry are ended, my live call is not.
    *sessions.down.lock().unwrap() = false;
    me.sweep_all().await;
    let ended: HashSet<String> = sessions.ended.lock().unwrap().iter().map(|(_, c, _)| c.clone()).collect();
    assert_eq!(ended, [contact(a.as_str(), 1), contact(a.as_str(), 2)].into_iter().collect());
    assert_eq!(me.store.calls(&me.me, &a).await.expect("calls").len(), 1, "the live call stays");
    // A clean shutdown with a call still up leaves the lease to run out…
    me.retire().await;
    let (_, leases) = me.store.leases().await.expect("leases");
    assert!(leases.iter().any(|(m, _)| m == me.me.as_str()));
    // …and once it is ended, releases it.
    me.ended(&a, &contact(a.as_str(), 3), &Ok(())).await;
    me.retire().await;
    let (_, leases) = me.store.leases().await.expect("leases");
    assert!(leases.is_empty(), "{leases:?}");
}

#[tokio::test]
async fn a_call_written_down_before_the_first_heartbeat_is_under_a_lease_that_runs_out() {
    let Some(redis) = redis().await else {
        eprintln!("CENTRALITA_REDIS_URL not set: skipped");
        return;
    };
    let ns = ns();
    let sessions = Arc::new(FakeSessions::default());
    let a = t(&format!("tl{}", uuid::Uuid::now_v7().simple()));
    // Killed before its heartbeat ever reached Redis, with one call written down (lease 3 s).
    let dead = carried(&redis, &ns, "media-0", sessions.clone());
    dead.carry(&a, &contact(a.as_str(), 1), "c1").await;
    let (_, leases) = dead.store.leases().await.expect("leases");
    assert!(leases.iter().any(|(m, _)| m == dead.me.as_str()), "the call brought a lease: {leases:?}");
    let other = carried(&redis, &ns, "media-1", sessions.clone());
    other.sweep_all().await;
    assert!(sessions.ended.lock().unwrap().is_empty(), "not before it runs out");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    other.sweep_all().await;
    assert_eq!(sessions.ended.lock().unwrap().len(), 1);
    other.retire().await;
}
