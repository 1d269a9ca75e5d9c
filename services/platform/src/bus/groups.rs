//! Consumer groups that never settle.
//!
//! A group member is settled when librdkafka's group handler is `up` and its join state is
//! `steady` (it has its assignment and consumes). A broker can leave a group forming
//! forever: the member never settles and its topic is never consumed (routing makes no
//! offers) although the broker is back. Unpatched tansu 0.6 did, after a broker outage
//! longer than the session timeout or a static member that never came back — its coordinator
//! never expired static members (`deploy/local/tansu-broker.patch` fixes that;
//! `deploy/local/README.md`). The broker's coordinator is at fault then, so the liveness
//! failure below is opt-in; the gauge `centralita_bus_consumer_group_unsettled_seconds` and
//! its alert are on.
//!
//! Every consumer's statistics (every [`super::STATISTICS_INTERVAL`]) report its group's
//! state here. [`GroupWatch::liveness`] fails for a group unsettled for longer than the
//! timeout (`CENTRALITA_KAFKA_STUCK_GROUP_TIMEOUT`) *counted from when the broker check last
//! started passing*, so Kubernetes restarts the replica (the runtime's `/livez`). A broker
//! outage alone restarts nothing: while the broker cannot be reached, and for a whole timeout
//! after it is back (rejoining takes seconds), an unsettled group is expected.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::statistics::ConsumerGroup;

#[derive(Debug, Clone)]
struct Member {
    /// `state/join_state` as last reported.
    state: String,
    /// Since when it has been unsettled (`None`: settled).
    unsettled_since: Option<Instant>,
}

/// The groups of this process's consumers and how long each has been unsettled.
#[derive(Debug, Default)]
pub struct GroupWatch {
    members: Mutex<BTreeMap<String, Member>>,
    /// How long a group may stay unsettled before liveness fails, in ms (0: never).
    timeout_ms: AtomicU64,
}

impl GroupWatch {
    /// Sets how long a group may stay unsettled before [`Self::liveness`] fails (zero: never).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Why the process should be restarted, if it should: a group unsettled for the timeout
    /// while the broker has answered all along (`broker_ok_since`: since when its check
    /// passes; `None`: it fails now).
    pub fn liveness(&self, broker_ok_since: Option<Instant>, now: Instant) -> Result<(), String> {
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let Some(ok_since) = broker_ok_since else {
            return Ok(());
        };
        if timeout.is_zero() || now.saturating_duration_since(ok_since) < timeout {
            return Ok(());
        }
        match self.stuck(now, timeout).as_slice() {
            [] => Ok(()),
            stuck => Err(stuck
                .iter()
                .map(|(group, state, age)| {
                    format!("consumer group {group} unsettled ({state}) for {} s", age.as_secs())
                })
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// Records group `group`'s state from a statistics report (`None`: the report had no
    /// group section yet, which counts as unsettled). Returns how long it has been unsettled.
    pub fn observe(&self, group: &str, cgrp: Option<&ConsumerGroup>, now: Instant) -> Duration {
        let (state, settled) = match cgrp {
            Some(g) => (format!("{}/{}", g.state, g.join_state), g.state == "up" && g.join_state == "steady"),
            None => ("no group state".to_owned(), false),
        };
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let m = members.entry(group.to_owned()).or_insert(Member { state: String::new(), unsettled_since: Some(now) });
        m.state = state;
        m.unsettled_since = match (settled, m.unsettled_since) {
            (true, _) => None,
            (false, Some(since)) => Some(since),
            (false, None) => Some(now),
        };
        m.unsettled_since.map(|since| now.saturating_duration_since(since)).unwrap_or_default()
    }

    /// Groups unsettled for `timeout` or longer at `now`, each with its state and how long.
    pub fn stuck(&self, now: Instant, timeout: Duration) -> Vec<(String, String, Duration)> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .filter_map(|(group, m)| {
                let age = now.saturating_duration_since(m.unsettled_since?);
                (age >= timeout).then(|| (group.clone(), m.state.clone(), age))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgrp(state: &str, join_state: &str) -> ConsumerGroup {
        ConsumerGroup { state: state.into(), join_state: join_state.into(), ..Default::default() }
    }

    #[test]
    fn a_group_is_stuck_once_unsettled_for_the_timeout() {
        let w = GroupWatch::default();
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        // Joining at start: unsettled, not yet stuck.
        assert_eq!(w.observe("p.routing", Some(&cgrp("up", "wait-join")), t0), Duration::ZERO);
        w.observe("p.sessions", None, t0);
        assert!(w.stuck(t0 + Duration::from_secs(59), minute).is_empty());
        // Sessions settles; routing keeps waiting to join.
        w.observe("p.sessions", Some(&cgrp("up", "steady")), t0 + Duration::from_secs(10));
        let since = w.observe("p.routing", Some(&cgrp("up", "wait-sync")), t0 + Duration::from_secs(70));
        assert_eq!(since, Duration::from_secs(70), "counted from the first unsettled report");
        let stuck = w.stuck(t0 + Duration::from_secs(70), minute);
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert_eq!((stuck[0].0.as_str(), stuck[0].1.as_str()), ("p.routing", "up/wait-sync"));
        // Settling clears it; a later unsettled spell counts from its own start.
        w.observe("p.routing", Some(&cgrp("up", "steady")), t0 + Duration::from_secs(80));
        assert!(w.stuck(t0 + Duration::from_secs(80), minute).is_empty());
        w.observe("p.routing", Some(&cgrp("wait-coord", "init")), t0 + Duration::from_secs(90));
        assert!(w.stuck(t0 + Duration::from_secs(140), minute).is_empty());
        assert_eq!(w.stuck(t0 + Duration::from_secs(150), minute).len(), 1);
        // Liveness: off by default, on with a timeout, never while the broker is away nor
        // within a timeout of its return.
        let at = t0 + Duration::from_secs(150);
        assert_eq!(w.liveness(Some(t0), at), Ok(()));
        w.set_timeout(minute);
        let failed = w.liveness(Some(t0), at).expect_err("stuck");
        assert!(failed.contains("p.routing") && failed.contains("wait-coord/init"), "{failed}");
        assert_eq!(w.liveness(None, at), Ok(()), "the broker is away");
        assert_eq!(w.liveness(Some(t0 + Duration::from_secs(100)), at), Ok(()), "the broker is back since 50 s only");
    }
}
