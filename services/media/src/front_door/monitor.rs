//! A supervisor on a call, following the contact's `monitor` (sessions' MonitorContact and
//! StopMonitoring):
//!
//! - monitoring starts: the supervisor's phone is rung (its fixed phone in
//!   `spec.voice.phones` under the supervisor's id, else the phone it registered), offering
//!   the customer's codec; a supervisor without a phone, or whose phone refuses, is stopped
//!   in sessions (StopMonitoring for it, with media's channel token);
//! - it answers: the agent's RTP leg leaves the two-party relay for a [`Conference`] mixer,
//!   the customer joins it through the loopback link ([`FrontDoor::link_customer`]), and the
//!   supervisor's leg joins heard by no one (LISTEN), by the agent only (WHISPER) or by both
//!   (BARGE); the supervisor always hears both parties;
//! - the mode changes: only who hears the supervisor changes;
//! - it stops (or the supervisor's phone hangs up, which stops it in sessions): the
//!   supervisor's phone gets a BYE, the agent is bridged with the customer again in the
//!   non-decoding relay;
//! - a consult, a transfer or the call's end take the supervisor off too (one mixer per
//!   call: a consult's own; monitoring during a consult is not built).

use super::consult::CONSULTING as AGENT;
use super::{AgentHappened, AgentLeg, FrontDoor};
use crate::admission::Admitted;
use crate::offers::Monitoring;
use crate::rtp::mixer::{Audience, Conference, ConferenceEvent, PartId};
use crate::rtp::relay::{CallMedia, Leg};
use crate::rtp::{sdp, Codec};

pub(super) const SUPERVISOR: PartId = 3;

/// Who hears a supervisor in `mode`.
pub(super) fn audience(mode: Monitoring) -> Audience {
    match mode {
        Monitoring::Listen => Audience::Nobody,
        Monitoring::Whisper => Audience::Only(vec![AGENT]),
        Monitoring::Barge => Audience::Everyone,
    }
}

#[derive(Debug)]
struct Supervisor {
    id: String,
    mode: Monitoring,
    /// The supervisor's phone: ringing ([`AgentLeg::Ringing`] with no offer), then
    /// connected.
    phone: AgentLeg,
    /// Once the phone answered: the call's mixer.
    mixer: Option<Conference>,
    /// The agent's RTP leg is in the mixer (else the agent has no phone leg).
    agent_in: bool,
}

/// A call's supervisor, if any.
#[derive(Debug, Default)]
pub(super) struct Supervision {
    current: Option<Supervisor>,
}

/// What the supervisor's phone or the mixer did.
pub(super) enum Happened {
    Phone(Box<AgentHappened>),
    Mixer(Option<ConferenceEvent>),
}

impl Supervision {
    /// The next thing to happen on the supervisor's side; never without one.
    pub(super) async fn next(&mut self) -> Happened {
        match self.current.as_mut() {
            Some(s) => {
                let mixer = async {
                    match s.mixer.as_mut() {
                        Some(m) => m.event().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    h = s.phone.next() => Happened::Phone(Box::new(h)),
                    e = mixer => Happened::Mixer(e),
                }
            }
            None => std::future::pending().await,
        }
    }

    /// The call is over: the supervisor's phone is hung up.
    pub(super) async fn end(&mut self) {
        if let Some(mut s) = self.current.take() {
            s.phone.drop_leg().await;
        }
    }
}

impl FrontDoor {
    /// The contact says who monitors the call (`monitor`), with a consult in progress or
    /// not: the supervisor's side follows.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn follow_monitor(
        &self,
        admitted: &Admitted,
        contact: &str,
        supervision: &mut Supervision,
        media: &CallMedia,
        codec: Codec,
        monitor: Option<(String, Monitoring)>,
        consulting: bool,
    ) {
        let wanted = monitor.filter(|_| !consulting);
        match (supervision.current.as_mut(), wanted) {
            (Some(s), Some((id, mode))) if s.id == id => {
                if s.mode != mode {
                    s.mode = mode;
                    if let Some(m) = &s.mixer {
                        m.set_audience(SUPERVISOR, audience(mode)).await;
                    }
                    tracing::info!(supervisor = %id, ?mode, "monitoring: the mode changed");
                }
            }
            (Some(_), wanted) => {
                self.stop_supervision(supervision, media).await;
                if let Some((id, mode)) = wanted {
                    supervision.current = self.dial_supervisor(admitted, contact, &id, mode, codec).await;
                }
            }
            (None, Some((id, mode))) => {
                supervision.current = self.dial_supervisor(admitted, contact, &id, mode, codec).await;
            }
            (None, None) => {}
        }
    }

    /// Takes the supervisor off the call: its phone hung up, the agent bridged with the
    /// customer again.
    pub(super) async fn stop_supervision(&self, supervision: &mut Supervision, media: &CallMedia) {
        let Some(mut s) = supervision.current.take() else { return };
        s.phone.drop_leg().await;
        if let Some(mixer) = s.mixer.take() {
            let agent = if s.agent_in { mixer.leave(AGENT).await } else { None };
            // The customer's link leaves the relay.
            drop(media.detach().await);
            drop(mixer);
            if let Some(agent) = agent {
                media.bridge(*agent).await;
            }
        }
        tracing::info!(supervisor = %s.id, "monitoring over: the agent and the customer bridged again");
    }

    /// Rings supervisor `id`'s phone; `None` (and monitoring stopped in sessions) when it
    /// has none.
    async fn dial_supervisor(
        &self,
        admitted: &Admitted,
        contact: &str,
        id: &str,
        mode: Monitoring,
        codec: Codec,
    ) -> Option<Supervisor> {
        let tenant = self.registry.get(&admitted.tenant.id);
        let fixed = tenant.as_ref().and_then(|t| t.voice.phone_of(id).map(str::to_owned));
        let uri = match (fixed, &self.registrar) {
            (Some(uri), _) => Some(uri),
            (None, Some(registrar)) => registrar.contact_of(&admitted.tenant.id, id).await.ok().flatten(),
            (None, None) => None,
        };
        let Some(uri) = uri else {
            tracing::info!(supervisor = id, "monitoring: the supervisor has no phone; stopped");
            self.stop_in_sessions(admitted, contact, id).await;
            return None;
        };
        let socket = self.media.ports.bind().await.ok()?;
        let addr = socket.local_addr().ok()?;
        let local = sdp::Local { addr, session_id: u64::from(uuid::Uuid::now_v7().as_fields().0), version: 1 };
        let caller = admitted.caller.as_deref().unwrap_or("");
        match self.dialer.invite(&uri, caller, sdp::offer(codec, &local), false) {
            Ok(ring) => {
                tracing::info!(supervisor = id, %uri, ?mode, "monitoring: ringing the supervisor's phone");
                let phone = AgentLeg::Ringing {
                    ring,
                    agent: id.to_owned(),
                    offer: String::new(),
                    socket,
                    local,
                    cancelled: false,
                    accepted: false,
                };
                Some(Supervisor { id: id.to_owned(), mode, phone, mixer: None, agent_in: false })
            }
            Err(e) => {
                tracing::warn!(error = %e, supervisor = id, "monitoring: could not ring the supervisor's phone");
                self.stop_in_sessions(admitted, contact, id).await;
                None
            }
        }
    }

    async fn stop_in_sessions(&self, admitted: &Admitted, contact: &str, supervisor: &str) {
        if let Err(e) = self.sessions.stop_monitoring(&admitted.tenant.id, contact, supervisor).await {
            tracing::info!(error = %e, supervisor, "monitoring could not be stopped in sessions");
        }
    }

    /// The supervisor's phone or the mixer did something.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn supervision_happened(
        &self,
        admitted: &Admitted,
        contact: &str,
        supervision: &mut Supervision,
        media: &CallMedia,
        codec: Codec,
        happened: Happened,
    ) {
        let Some(s) = supervision.current.as_mut() else { return };
        let phone = match happened {
            Happened::Mixer(Some(ConferenceEvent::Silent { id })) => {
                tracing::info!(participant = id, "monitoring: a participant sends no audio");
                return;
            }
            Happened::Mixer(None) => return,
            Happened::Phone(h) => *h,
        };
        match phone {
            AgentHappened::Answered { dialog, sdp: answer } => {
                let AgentLeg::Ringing { socket, cancelled, .. } = std::mem::replace(&mut s.phone, AgentLeg::None)
                else {
                    dialog.hang_up().await;
                    return;
                };
                let negotiated = match sdp::parse(&answer).and_then(|d| sdp::accept_answer(&d, codec)) {
                    Ok(n) if !cancelled => n,
                    _ => {
                        dialog.hang_up().await;
                        let id = s.id.clone();
                        supervision.current = None;
                        self.stop_in_sessions(admitted, contact, &id).await;
                        return;
                    }
                };
                let mixer = Conference::start(self.media.call.timeout);
                let agent_in = match media.detach().await {
                    Some(a) => mixer.join(AGENT, a, Audience::Everyone).await.is_ok(),
                    None => false,
                };
                let linked = self.link_customer(&mixer, media, codec).await;
                let joined = mixer.join(SUPERVISOR, Box::new(Leg::new(socket, negotiated)), audience(s.mode)).await;
                tracing::info!(supervisor = %s.id, mode = ?s.mode, agent_in, linked, joined = joined.is_ok(), "monitoring: the supervisor is on the call");
                s.phone = AgentLeg::Connected { dialog };
                s.mixer = Some(mixer);
                s.agent_in = agent_in;
            }
            AgentHappened::Refused(why, ..) => {
                tracing::info!(supervisor = %s.id, why, "monitoring: the supervisor's phone did not answer");
                let id = s.id.clone();
                supervision.current = None;
                self.stop_in_sessions(admitted, contact, &id).await;
            }
            AgentHappened::Early(_) => {}
            AgentHappened::Request(r) => {
                tracing::info!(kind = ?r.kind(), "monitoring: a request from the supervisor's phone refused");
                r.reply(488, "Not Acceptable Here").await;
            }
            AgentHappened::HungUp => {
                let id = s.id.clone();
                s.phone = AgentLeg::None;
                self.stop_supervision(supervision, media).await;
                self.stop_in_sessions(admitted, contact, &id).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_hears_the_supervisor_in_each_mode() {
        assert_eq!(audience(Monitoring::Listen), Audience::Nobody);
        assert_eq!(audience(Monitoring::Whisper), Audience::Only(vec![AGENT]));
        assert_eq!(audience(Monitoring::Barge), Audience::Everyone);
        assert_ne!(AGENT, super::super::consult::CUSTOMER);
    }
}
