//! Agents' event streams. A change for an agent is published on a Redis channel by the
//! replica that made it ([`encode_notice`]); every replica forwards what it hears to the
//! streams open on it ([`fan_out`], [`Notices`]). An open stream is also the agent's
//! presence ([`Presence`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::error::Error;
use centralita_platform::shutdown::Shutdown;
use centralita_proto::sessions::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tonic::Status;

use crate::core::{AgentId, Timer};
use crate::engine::Engine;

/// The agent streams open on this replica, one channel per agent: a notice wakes only the
/// streams of the agent it is for (one channel for all woke every stream for every notice,
/// which made each contact cost O(signed-in agents) in clones and wake-ups).
#[derive(Clone, Default)]
pub struct Notices {
    agents: Arc<Mutex<HashMap<String, broadcast::Sender<pb::AgentStreamEvent>>>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").field("agents", &self.len()).finish()
    }
}

/// Notices an agent stream may fall behind by before it is told to reconnect.
const NOTICE_BACKLOG: usize = 256;

impl Notices {
    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<pb::AgentStreamEvent>>> {
        // The map holds no invariant a panicking holder could break.
        self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Receives every later notice for `agent`.
    pub fn subscribe(&self, agent: &str) -> broadcast::Receiver<pb::AgentStreamEvent> {
        self.agents().entry(agent.to_owned()).or_insert_with(|| broadcast::channel(NOTICE_BACKLOG).0).subscribe()
    }

    /// Hands `event` to the agent's open streams on this replica, if any.
    pub fn send(&self, agent: &str, event: pb::AgentStreamEvent) {
        let mut agents = self.agents();
        if let Some(tx) = agents.get(agent) {
            if tx.send(event).is_err() {
                // Every stream of the agent has ended.
                agents.remove(agent);
            }
        }
    }

    /// Agents with a channel (streams open, or ended since their last notice).
    pub fn len(&self) -> usize {
        self.agents().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A notice on the Redis channel: the agent id, a newline, the encoded stream event.
pub fn encode_notice(agent: &AgentId, event: pb::agent_stream_event::Event) -> Vec<u8> {
    let message = pb::AgentStreamEvent { event: Some(event), send_time: None };
    let mut payload = agent.0.as_bytes().to_vec();
    payload.push(b'\n');
    payload.extend(prost::Message::encode_to_vec(&message));
    payload
}

fn decode_notice(payload: &[u8]) -> Option<(String, pb::AgentStreamEvent)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let agent = std::str::from_utf8(&payload[..split]).ok()?.to_owned();
    let event = <pb::AgentStreamEvent as prost::Message>::decode(&payload[split + 1..]).ok()?;
    Some((agent, event))
}

/// Forwards agent notices published on Redis (by any replica) to this replica's open
/// streams, resubscribing when the subscription breaks.
pub async fn fan_out(engine: Engine, shutdown: Shutdown) {
    loop {
        match engine.store.notices().await {
            Ok(mut notices) => loop {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    n = notices.next() => match n {
                        Some(payload) => match decode_notice(&payload) {
                            Some((agent, event)) => engine.notices.send(&agent, event),
                            None => tracing::warn!("malformed agent notice dropped"),
                        },
                        None => {
                            tracing::warn!("agent notification subscription ended; resubscribing");
                            break;
                        }
                    },
                }
            },
            Err(e) => tracing::warn!(error = %e, "agent notification subscription failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// An open event stream is the agent's presence: while it is open the agent's presence
/// timer is pushed `presence_grace` ahead every third of that; once the stream closes (the
/// client went away, or HTTP/2 keepalive found the connection dead) the timer runs out and
/// the agent is made away as disconnected (`crate::timers`).
#[derive(Debug)]
pub struct Presence {
    engine: Engine,
    member: String,
}

impl Presence {
    pub async fn start(engine: &Engine, agent: &AgentId) -> Result<Option<Self>, Error> {
        if engine.presence_grace.is_zero() {
            return Ok(None);
        }
        let p = Presence { engine: engine.clone(), member: Timer::Presence { agent: agent.clone() }.member() };
        p.refresh().await?;
        Ok(Some(p))
    }

    fn every(&self) -> Duration {
        self.engine.presence_grace / 3
    }

    async fn refresh(&self) -> Result<(), Error> {
        let due = self.engine.clock.now() + self.engine.presence_grace.as_millis() as i64;
        self.engine.store.schedule(&self.member, due).await
    }
}

pub type AgentStream = Pin<Box<dyn Stream<Item = Result<pb::AgentStreamEvent, Status>> + Send>>;

/// Counts the stream as open while it lives.
struct Open(Arc<crate::metrics::Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.stream_closed();
    }
}

/// The initial events a stream sent, each of which stands for one live notice: the stream
/// subscribes before it reads the current state (so nothing falls in between), so a change
/// made in between is in both. The notice it stands for is dropped — an offer is shown once
/// (the same contact and offer id, whatever else changed since), any other event when equal.
#[derive(Debug, Default)]
struct AlreadySent(Vec<pb::AgentStreamEvent>);

impl AlreadySent {
    /// Whether `notice` repeats an initial event (which then stands for nothing more).
    fn repeats(&mut self, notice: &pb::AgentStreamEvent) -> bool {
        use pb::agent_stream_event::Event::Offer;
        let same = |sent: &pb::AgentStreamEvent| match (&sent.event, &notice.event) {
            (Some(Offer(a)), Some(Offer(b))) => a.name == b.name && a.offer_id == b.offer_id,
            _ => sent == notice,
        };
        match self.0.iter().position(same) {
            Some(i) => {
                self.0.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// The initial events, then every notice of the agent but those the initial events already
/// told ([`AlreadySent`]); a lagging subscriber is told to reconnect, which replays the
/// current state. Keeps the agent's presence fresh.
pub fn agent_stream(
    engine: &Engine,
    initial: Vec<pb::AgentStreamEvent>,
    mut notices: broadcast::Receiver<pb::AgentStreamEvent>,
    presence: Option<Presence>,
) -> AgentStream {
    use tokio::sync::broadcast::error::RecvError;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    engine.metrics.stream_opened();
    let open = Open(engine.metrics.clone());
    let clock = engine.clock.clone();
    // Every event leaves stamped with the server's clock (`send_time`), for offer countdowns.
    let stamped = move |mut e: pb::AgentStreamEvent| {
        e.send_time = Some(centralita_routing_contract::wire::millis_to_pb(clock.now()));
        e
    };
    tokio::spawn(async move {
        let _open = open;
        let mut sent = AlreadySent(initial.clone());
        for e in initial {
            if tx.send(Ok(stamped(e))).await.is_err() {
                return;
            }
        }
        let every = presence.as_ref().map_or(Duration::from_secs(3600), Presence::every);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Ok(e) if sent.repeats(&e) => {}
                    Ok(e) => {
                        if tx.send(Ok(stamped(e))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(Status::aborted("the stream fell behind; reconnect to resume"))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = refresh.tick() => {
                    if let Some(p) = &presence {
                        if let Err(e) = p.refresh().await {
                            // A missed refresh is retried at the next tick, well within the grace.
                            tracing::warn!(error = %e, "agent presence not refreshed");
                        }
                    }
                }
                // The client is gone: stop refreshing, so the presence timer runs out.
                _ = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralita_proto::sessions::v1::agent_stream_event::Event as Notify;

    fn notice(agent: &str) -> pb::AgentStreamEvent {
        pb::AgentStreamEvent {
            event: Some(Notify::Agent(pb::Agent { name: format!("agents/{agent}"), ..Default::default() })),
            send_time: None,
        }
    }

    #[test]
    fn a_notice_reaches_only_its_agents_streams() {
        let notices = Notices::default();
        let mut a1 = notices.subscribe("a");
        let mut a2 = notices.subscribe("a");
        let mut b = notices.subscribe("b");
        notices.send("a", notice("a"));
        notices.send("nobody", notice("nobody"));
        assert_eq!(a1.try_recv().unwrap(), notice("a"));
        assert_eq!(a2.try_recv().unwrap(), notice("a"));
        assert!(b.try_recv().is_err(), "b's stream must not see a's notice");
        assert_eq!(notices.len(), 2, "no channel is made for an agent without a stream");
        // Once every stream of an agent has ended, its next notice drops the channel.
        drop((a1, a2));
        notices.send("a", notice("a"));
        assert_eq!(notices.len(), 1);
        notices.send("b", notice("b"));
        assert_eq!(b.try_recv().unwrap(), notice("b"));
    }

    fn offer(name: &str, offer_id: &str, state: i32) -> pb::AgentStreamEvent {
        let c = pb::Contact { name: name.into(), offer_id: offer_id.into(), state, ..Default::default() };
        pb::AgentStreamEvent { event: Some(Notify::Offer(c)), send_time: None }
    }

    /// An offer made between the stream's subscribing and its reading the state is in both:
    /// the client sees it once. Each initial event stands for one notice only, and a new
    /// offer of the same contact (a new offer id) or a changed record goes through.
    #[test]
    fn a_notice_the_initial_state_already_told_is_not_repeated() {
        let mut sent = AlreadySent(vec![notice("a"), offer("c1", "o1", 2)]);
        assert!(sent.repeats(&offer("c1", "o1", 2)));
        assert!(!sent.repeats(&offer("c1", "o1", 2)), "one notice per initial event");
        assert!(!sent.repeats(&offer("c1", "o2", 2)), "a new offer of the same contact");
        let changed = pb::AgentStreamEvent {
            event: Some(Notify::Agent(pb::Agent {
                name: "agents/a".into(),
                contacts: vec!["c1".into()],
                ..Default::default()
            })),
            send_time: None,
        };
        assert!(!sent.repeats(&changed), "a changed agent record");
        assert!(sent.repeats(&notice("a")));
        assert!(!sent.repeats(&notice("a")));
        // An offer told with a later state of the same offer is still the same offer.
        let mut sent = AlreadySent(vec![offer("c2", "o3", 2)]);
        assert!(sent.repeats(&offer("c2", "o3", 1)));
    }

    #[test]
    fn notices_read_back_and_garbage_is_refused() {
        let event = notice("a1").event.unwrap();
        let payload = encode_notice(&AgentId("a1".into()), event.clone());
        assert_eq!(
            decode_notice(&payload),
            Some(("a1".to_owned(), pb::AgentStreamEvent { event: Some(event), send_time: None }))
        );
        assert_eq!(decode_notice(b"no newline"), None);
        assert_eq!(decode_notice(b"a1\n\xff\xff\xff"), None);
    }
}
