//! What the simulator records while the floor runs: contacts, agents' held contacts and
//! busy time, call latencies and errors, per ramp step.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::histogram;

/// What the simulator knows of one contact (real instants).
#[derive(Debug, Clone)]
pub(super) struct ContactRec {
    pub(super) tenant: String,
    pub(super) queue: String,
    pub(super) created: Instant,
    pub(super) step: usize,
    pub(super) offered: Option<Instant>,
    pub(super) accepted: Option<Instant>,
    /// When the offer that was accepted reached the agent: the end of the customer's wait
    /// (plus the agent's simulated think time). The accept call's own latency is left out:
    /// at time scale 15 each real millisecond would count as 15 simulated ones.
    pub(super) answered_offer: Option<Instant>,
    pub(super) think_sim: f64,
    pub(super) handle_sim: f64,
    pub(super) accepts: u32,
    pub(super) abandoned: bool,
    /// The customer's phone number (full check: CRM's timeline is checked by it).
    pub(super) phone: Option<String>,
}

impl ContactRec {
    pub(super) fn new(tenant: String, queue: String, created: Instant, step: usize) -> Self {
        Self {
            tenant,
            queue,
            created,
            step,
            offered: None,
            accepted: None,
            answered_offer: None,
            think_sim: 0.0,
            handle_sim: 0.0,
            accepts: 0,
            abandoned: false,
            phone: None,
        }
    }

    /// Wait until answered, simulated seconds.
    pub(super) fn wait_sim(&self, scale: f64) -> Option<f64> {
        self.answered_offer.map(|o| o.saturating_duration_since(self.created).as_secs_f64() * scale + self.think_sim)
    }
}

#[derive(Debug, Default)]
pub(super) struct StepStats {
    pub(super) multiplier: f64,
    pub(super) offered_rate: f64,
    pub(super) started: Option<Instant>,
    pub(super) ended: Option<Instant>,
    pub(super) created: u64,
    pub(super) enqueue_to_offer: Option<Histogram<u64>>,
    pub(super) errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) contacts: HashMap<String, ContactRec>,
    /// Per agent: (channel → held now), and busy intervals (real).
    pub(super) held: HashMap<String, BTreeMap<String, u32>>,
    pub(super) busy_since: HashMap<String, Instant>,
    pub(super) busy: HashMap<String, Vec<(Instant, Instant)>>,
    /// Wrap-ups sent and not answered yet (retried while sessions is unavailable): the
    /// drain waits for them.
    pub(super) wrapping: usize,
    pub(super) away: HashMap<String, Vec<(Instant, Instant)>>,
    pub(super) capacity_violations: Vec<String>,
    pub(super) calls: BTreeMap<&'static str, Option<Histogram<u64>>>,
    pub(super) errors: BTreeMap<String, u64>,
    /// Faults a real frontend rides out, by what was done: calls retried after a transient
    /// failure, event streams reopened.
    pub(super) recovered: BTreeMap<String, u64>,
    pub(super) steps: Vec<StepStats>,
    pub(super) step: usize,
    pub(super) offers: u64,
    pub(super) rejects: u64,
    /// Agent calls refused because the customer's side overtook them (hung up, offer
    /// expired): no error, a race a real agent meets too.
    pub(super) offers_gone: u64,
    pub(super) ignored: u64,
}

pub(super) type Shared = Arc<Mutex<State>>;

pub(super) fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn record_call(s: &Shared, rpc: &'static str, took: Duration, result: Result<(), &tonic::Status>) {
    let mut st = lock(s);
    let h = st.calls.entry(rpc).or_insert_with(|| Some(histogram()));
    if let Some(h) = h {
        let _ = h.record((took.as_micros() as u64).max(1));
    }
    if let Err(status) = result {
        let key = format!("{rpc}: {:?}", status.code());
        if !st.errors.contains_key(&key) {
            // The first of a kind with its message: what the service said.
            eprintln!("[sim] first {key}: {}", status.message());
        }
        *st.errors.entry(key.clone()).or_default() += 1;
        let step = st.step;
        if let Some(step) = st.steps.get_mut(step) {
            *step.errors.entry(key).or_default() += 1;
        }
    }
}

/// Whether a failed call may succeed if repeated (the service restarting, a connection
/// being made again): what a real frontend retries. Everything else is an answer.
pub(super) fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
    )
}

/// Counts a fault ridden out (`what`: the call retried, the stream reopened).
pub(super) fn recovered(s: &Shared, what: String) {
    *lock(s).recovered.entry(what).or_default() += 1;
}

/// Runs `call` until it answers, or fails for good, or `budget` runs out: transient
/// failures are retried with backoff (counted as recovered, not as errors), like a real
/// frontend does; callers keep requests idempotent (CreateContact carries a request id).
/// Returns the final outcome and when its attempt started, for the caller to record.
pub(super) async fn retrying<T, F, Fut>(
    shared: &Shared,
    rpc: &'static str,
    budget: Duration,
    mut call: F,
) -> (Result<T, tonic::Status>, Instant)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let until = Instant::now() + budget;
    let mut backoff = Duration::from_millis(100);
    loop {
        let t = Instant::now();
        let result = call().await;
        match &result {
            Err(s) if transient(s) && Instant::now() + backoff < until => {
                recovered(shared, format!("{rpc}: retried"));
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ => return (result, t),
        }
    }
}

/// The longest pause between two attempts of a call.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `d` less up to half of it, drawn afresh each time, so a floor's agents that lost sessions
/// together do not all come back in the same instant.
pub(super) fn jittered(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    // A cheap mix of the clock's nanoseconds (no shared generator on this path).
    let x = u64::from(nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    let fraction = (x as f64) / f64::from(1u32 << 24);
    d.mul_f64(1.0 - 0.5 * fraction)
}

/// Records an agent's call on an offer or contact; one the customer's side overtook (the
/// offer gone, the conversation already over: FAILED_PRECONDITION, NOT_FOUND) is counted
/// apart, not as an error. Returns whether the call succeeded.
pub(super) fn answered_offer(
    shared: &Shared,
    rpc: &'static str,
    started: Instant,
    result: Result<(), tonic::Status>,
) -> bool {
    match result {
        Ok(()) => {
            record_call(shared, rpc, started.elapsed(), Ok(()));
            true
        }
        Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {
            record_call(shared, rpc, started.elapsed(), Ok(()));
            lock(shared).offers_gone += 1;
            false
        }
        Err(s) => {
            record_call(shared, rpc, started.elapsed(), Err(&s));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_the_whole() {
        let d = Duration::from_millis(800);
        let draws: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(draws.iter().all(|j| *j <= d && *j >= d / 2), "{draws:?}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_an_answer() {
        let shared = Shared::default();
        let mut n = 0;
        let (r, _) = retrying(&shared, "Test", Duration::from_secs(10), || {
            n += 1;
            let k = n;
            async move {
                if k < 3 {
                    Err(tonic::Status::unavailable("restarting"))
                } else {
                    Ok(k)
                }
            }
        })
        .await;
        assert_eq!(r.expect("answered"), 3);
        assert_eq!(lock(&shared).recovered.get("Test: retried"), Some(&2));
        // An answer that is not transient is returned at once.
        let mut calls = 0;
        let (r, _) = retrying(&shared, "Test2", Duration::from_secs(10), || {
            calls += 1;
            async { Err::<(), _>(tonic::Status::failed_precondition("already done")) }
        })
        .await;
        assert_eq!(r.expect_err("refused").code(), tonic::Code::FailedPrecondition);
        assert_eq!(calls, 1);
        // A budget shorter than the first pause: one attempt.
        let (r, _) = retrying(&shared, "Test3", Duration::from_millis(10), || async {
            Err::<(), _>(tonic::Status::unavailable("down"))
        })
        .await;
        assert_eq!(r.expect_err("down").code(), tonic::Code::Unavailable);
    }
}
