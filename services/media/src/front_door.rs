//! The SIP front door: takes the requests of the SIP stack, admits or refuses each INVITE
//! ([`crate::admission`]), creates the admitted call's contact in sessions, answers it and
//! plays the queue's treatment (the music on hold); when routing offers the contact to an
//! agent with a phone (`spec.voice.phones`), rings that phone and bridges the two legs
//! through the relay ([`crate::rtp::relay`]) once it answers.
//!
//! A call, from the caller's side:
//! - refused: a final failure (404, 403, 486, 503, 400) at once, nothing created;
//! - an offer media cannot carry (no PCMU/PCMA, SRTP only, no SDP): `488`, nothing created;
//! - admitted: `100 Trying`, the contact is created (queued), `200 OK` with media's SDP
//!   answer, and music on hold on RTP;
//! - BYE while queued: the contact is ended (sessions marks it abandoned); a CANCEL that
//!   crosses the answer gets `487` and ends it the same way;
//! - no RTP from a party for `CENTRALITA_RTP_TIMEOUT_SECS`: BYE, contact ended;
//! - shutdown: new INVITEs get `503`; calls still up when the drain window closes get a
//!   BYE and their contacts are ended, so none stays queued behind a stopped replica.
//!
//! And from the agent's side, following the contact's events ([`crate::offers`]):
//! - offered to an agent with a phone (fixed, or else registered): INVITE to the phone
//!   offering the caller's codec (media does not transcode) from an RTP port of the agent's
//!   leg; in a tenant whose phones register, an agent with no phone registered gets the
//!   offer rejected at once (the next agent gets the call);
//! - the phone answers: the offer is accepted in sessions for that agent, then the legs are
//!   bridged (the caller's stream continues from the treatment to the agent's voice); an
//!   accept sessions refuses (the offer expired meanwhile) hangs the phone up;
//! - the phone refuses (486, 603, any failure): the offer is rejected for that agent and the
//!   contact goes to the next one;
//! - the offer is void in sessions (not answered in time, the contact queued again or over):
//!   the ringing phone gets CANCEL at once; so does it when the caller hangs up meanwhile;
//! - either side's BYE once bridged: the other side gets a BYE and the contact is ended.
//!
//! Hold, DTMF, a REFER from the phone (cold transfer) and the leg events are [`control`]'s;
//! a call transferred away from its bridged agent hangs the phone up and waits with the
//! music for the next. Not built: an accept from the agent's desktop making the phone
//! auto-answer.

mod consult;
mod control;
mod monitor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{TenantId, VoiceRecording};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admission::{admit, Admitted, Refusal};
use crate::calls::Carried;
use crate::flood::FloodLimit;
use crate::legs::{CallEvents, EndCause, LegEvents};
use crate::metrics::Metrics;
use crate::offers::{ContactUpdate, Offers};
use crate::recorder::{self, Recorder};
use crate::registrar::Registrar;
use crate::rtp::relay::{CallMedia, Leg, MediaEvent};
use crate::rtp::sdp::{self, SdpError};
use crate::rtp::{Codec, MediaPlane};
use crate::sessions::Sessions;
use crate::sip::{Answered, Dialer, Hangup, Incoming, Kind, Outcome, Requests, Ringing, ServerCall, Stopper};
use crate::trunk_auth::Outcome as TrunkCheck;

/// Calls this replica holds, by tenant (the concurrent-contact quota counts them) and in
/// all (the drain waits for them).
#[derive(Debug)]
struct Calls {
    by_tenant: Mutex<HashMap<TenantId, u32>>,
    total: watch::Sender<usize>,
}

/// One call held: counted while it lives.
#[derive(Debug)]
struct Held {
    calls: Arc<Calls>,
    tenant: TenantId,
    metrics: Arc<Metrics>,
}

impl Calls {
    fn of(&self, tenant: &TenantId) -> u32 {
        self.by_tenant.lock().unwrap_or_else(|p| p.into_inner()).get(tenant).copied().unwrap_or(0)
    }

    fn hold(self: &Arc<Self>, tenant: &TenantId, metrics: &Arc<Metrics>) -> Held {
        *self.by_tenant.lock().unwrap_or_else(|p| p.into_inner()).entry(tenant.clone()).or_default() += 1;
        self.total.send_modify(|n| *n += 1);
        metrics.set_waiting(*self.total.borrow());
        Held { calls: self.clone(), tenant: tenant.clone(), metrics: metrics.clone() }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut by_tenant = self.calls.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                by_tenant.remove(&self.tenant);
            }
        }
        self.calls.total.send_modify(|n| *n -= 1);
        self.metrics.set_waiting(*self.calls.total.borrow());
    }
}

#[derive(Debug)]
pub struct FrontDoor {
    registry: TenantRegistry,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    calls: Arc<Calls>,
    /// Cancelled when the drain window closes: calls still waiting end.
    drain_over: CancellationToken,
    media: MediaPlane,
    offers: Offers,
    dialer: Dialer,
    recorder: Arc<Recorder>,
    /// The registrar of agents' phones (without Redis: none, REGISTER gets `405`).
    registrar: Option<Arc<Registrar>>,
    /// Where the calls' leg events go ([`crate::legs`]; none: nowhere).
    legs: Option<LegEvents>,
    /// The calls this process carries, written down in Redis so that a crash leaves none
    /// open ([`crate::calls`]; without Redis: none).
    carried: Option<Arc<Carried<Sessions>>>,
    /// INVITEs per source address ([`crate::flood`]).
    flood: Mutex<FloodLimit>,
}

impl FrontDoor {
    pub fn new(
        registry: TenantRegistry,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        media: MediaPlane,
        offers: Offers,
        dialer: Dialer,
        recorder: Arc<Recorder>,
    ) -> Self {
        let calls = Arc::new(Calls { by_tenant: Mutex::default(), total: watch::channel(0).0 });
        Self {
            registry,
            sessions,
            metrics,
            calls,
            drain_over: CancellationToken::new(),
            media,
            offers,
            dialer,
            recorder,
            registrar: None,
            legs: None,
            carried: None,
            flood: Mutex::new(FloodLimit::default()),
        }
    }

    /// Answers REGISTERs with `registrar`, and rings agents' registered phones.
    pub fn with_registrar(mut self, registrar: Option<Arc<Registrar>>) -> Self {
        self.registrar = registrar;
        self
    }

    /// Limits INVITEs per source with `flood`.
    pub fn with_flood_limit(mut self, flood: FloodLimit) -> Self {
        self.flood = Mutex::new(flood);
        self
    }

    /// Writes the calls down in `carried` while they last.
    pub fn with_calls(mut self, carried: Option<Arc<Carried<Sessions>>>) -> Self {
        self.carried = carried;
        self
    }

    /// Publishes the calls' leg events through `legs`.
    pub fn with_legs(mut self, legs: LegEvents) -> Self {
        self.legs = Some(legs);
        self
    }

    /// Serves `requests` until `shutdown`, then drains: INVITEs get `503` while the calls
    /// in progress get up to `drain` to end, then those left are ended, and the stack stops.
    pub async fn serve(self, mut requests: Requests, stopper: Stopper, shutdown: Shutdown, drain: Duration) {
        let this = Arc::new(self);
        loop {
            tokio::select! {
                r = requests.next() => match r {
                    Some(r) => this.handle(r, false).await,
                    None => return,
                },
                _ = shutdown.wait() => break,
            }
        }
        let calls = *this.calls.total.borrow();
        tracing::info!(calls, ?drain, "SIP draining: new INVITEs get 503");
        let mut total = this.calls.total.subscribe();
        let window = tokio::time::sleep(drain);
        tokio::pin!(window);
        loop {
            tokio::select! {
                r = requests.next() => match r {
                    Some(r) => this.handle(r, true).await,
                    None => break,
                },
                _ = all_ended(&mut total) => break,
                _ = &mut window => {
                    let calls = *this.calls.total.borrow();
                    tracing::warn!(calls, "SIP drain window over: ending the calls left");
                    break;
                }
            }
        }
        this.drain_over.cancel();
        // The calls left end themselves (503, contact ended); wait a little for them.
        let _ = tokio::time::timeout(Duration::from_secs(3), all_ended(&mut total)).await;
        // Their recordings send their ends (a recording cut here is kept as interrupted).
        let _ = tokio::time::timeout(Duration::from_secs(3), this.recorder.all_finished()).await;
        stopper.stop();
        tracing::info!("SIP stopped");
    }

    async fn handle(self: &Arc<Self>, request: Incoming, draining: bool) {
        match request.kind() {
            // Trunks ping with OPTIONS; answering keeps them sending calls here.
            Kind::Options if draining => request.reply(503, "Service Unavailable - Draining").await,
            Kind::Options => request.reply(200, "OK").await,
            Kind::Register => match &self.registrar {
                // Its own task: the answer waits on Redis and the HA1 file.
                Some(registrar) => {
                    let registrar = registrar.clone();
                    tokio::spawn(async move { registrar.handle(request).await });
                }
                None => request.reply(405, "Method Not Allowed").await,
            },
            Kind::Other => request.reply(405, "Method Not Allowed").await,
            Kind::Invite => {
                let source = request.source();
                // A source over its INVITE rate is refused before anything else is done.
                let now = std::time::Instant::now();
                if source.is_some_and(|s| !self.flood.lock().unwrap_or_else(|p| p.into_inner()).admit(s.ip(), now)) {
                    self.metrics.invite("refused_flood");
                    let (call, _) = request.into_call();
                    return call.finish(503, "Service Unavailable - Too Many Calls From Source").await;
                }
                let (call, what) = match request.into_call() {
                    (call, Ok(what)) => (call, what),
                    (call, Err(why)) => {
                        tracing::info!(?source, why, "malformed INVITE");
                        self.metrics.invite("malformed");
                        return call.finish(400, "Bad Request").await;
                    }
                };
                let tenants = self.registry.list();
                let mut admitted =
                    if draining { Err(Refusal::Draining) } else { admit(&what, &tenants, |t| self.calls.of(t), None) };
                // A trunk with credentials: the INVITE proves them or is challenged (407).
                if let Err(Refusal::Unauthenticated { tenant, trunks }) = &admitted {
                    let auth = crate::trunk_auth::TrunkAuth::new(self.registrar.clone());
                    match auth.check(tenant, trunks, what.credentials.as_ref()).await {
                        TrunkCheck::Authenticated(trunk) => {
                            admitted = admit(&what, &tenants, |t| self.calls.of(t), Some(&trunk));
                        }
                        TrunkCheck::Challenge(value) => {
                            self.metrics.invite("challenged");
                            return call.challenge(value).await;
                        }
                        TrunkCheck::Forbidden => {
                            tracing::info!(source = %what.source, %tenant, "INVITE with wrong trunk credentials refused");
                            self.metrics.invite("refused_trunk");
                            return call.finish(403, "Forbidden - Trunk Credentials").await;
                        }
                        TrunkCheck::BadRequest => {
                            self.metrics.invite("malformed");
                            return call.finish(400, "Bad Request - Proxy-Authorization").await;
                        }
                        TrunkCheck::Unavailable => {
                            self.metrics.invite("failed");
                            return call.finish(503, "Service Unavailable").await;
                        }
                    }
                }
                match admitted {
                    Err(refusal) => {
                        let (code, reason) = refusal.status();
                        let outcome = match &refusal {
                            Refusal::UnknownNumber => "refused_unknown_number",
                            Refusal::NotATrunk { .. } | Refusal::Unauthenticated { .. } => "refused_trunk",
                            Refusal::TenantSuspended { .. } | Refusal::OverQuota { .. } => "refused_tenant",
                            Refusal::Draining => "refused_draining",
                        };
                        tracing::info!(source = %what.source, ?refusal, code, "INVITE refused");
                        self.metrics.invite(outcome);
                        call.finish(code, reason).await;
                    }
                    Ok(admitted) => {
                        // Counted now, before the next INVITE is looked at, so the quota
                        // holds however fast calls arrive.
                        let held = self.calls.hold(&admitted.tenant.id, &self.metrics);
                        let span = tracing::info_span!("call", tenant = %admitted.tenant.id, contact = tracing::field::Empty, call_id = %call.call_id());
                        tokio::spawn(self.clone().run_call(call, admitted, held).instrument(span));
                    }
                }
            }
        }
    }

    async fn run_call(self: Arc<Self>, mut call: ServerCall, admitted: Admitted, _held: Held) {
        // The offer first: a call media cannot carry is refused before anything is created.
        let offer = if !call.offer_is_sdp() || call.offer().is_empty() {
            // A late offer (an INVITE without SDP) would need the offer in our 200 and the
            // answer in the ACK: not supported.
            Err(SdpError::NoAudio)
        } else {
            sdp::parse(call.offer())
        };
        let negotiated = offer.and_then(|o| sdp::negotiate(&o, &[Codec::Pcmu, Codec::Pcma]).map(|n| (o, n)));
        let (offer, negotiated) = match negotiated {
            Ok(pair) => pair,
            Err(e) => {
                let (code, reason) = e.sip_status();
                tracing::info!(error = %e, code, "INVITE refused: its media");
                self.metrics.invite("refused_media");
                return call.finish(code, reason).await;
            }
        };
        let socket = match self.media.ports.bind().await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "INVITE refused: no RTP port");
                self.metrics.invite("failed");
                return call.finish(503, "Service Unavailable - No Media Port").await;
            }
        };
        if let Err(e) = call.trying().await {
            tracing::info!(error = %e, "could not send 100 Trying");
        }
        let request_id = uuid::Uuid::now_v7().simple().to_string();
        let contact = match self.sessions.create_voice_contact(&admitted, &request_id).await {
            Ok(name) => name,
            Err(e) => {
                let (code, reason, outcome) = e.sip_status();
                tracing::warn!(error = %e, code, "no contact for the call");
                self.metrics.invite(outcome);
                return call.finish(code, reason).await;
            }
        };
        tracing::Span::current().record("contact", contact.as_str());
        if let Some(carried) = &self.carried {
            carried.carry(&admitted.tenant.id, &contact, &call.call_id()).await;
        }
        self.metrics.invite("created");
        // Subscribed before the caller is answered; an offer made before this (routing can
        // be that fast) was kept for the call and comes first (`offers`).
        let mut updates = self.offers.subscribe(&contact);

        // Answered at once: the caller hears the queue's treatment until an agent takes
        // the call.
        let local = match socket.local_addr() {
            Ok(addr) => sdp::Local { addr, session_id: u64::from(uuid::Uuid::now_v7().as_fields().0), version: 1 },
            Err(e) => {
                tracing::warn!(error = %e, "RTP socket without an address");
                call.finish(500, "Server Internal Error").await;
                return self.end(&admitted, &contact, "failed").await;
            }
        };
        let answer = sdp::answer(&offer, &negotiated, &local);
        // In-call control and the call's leg events (`control`).
        let events = match &self.legs {
            Some(legs) => legs.call(&admitted.tenant.id, &contact),
            None => CallEvents::nowhere(&admitted.tenant.id, &contact),
        };
        let mut control = control::Control::new(events, call.call_id(), local, negotiated.codec);
        control.caller_created();
        // The tenant's policy decides for this call (`recording.voice`, its sample and its
        // queues): recorded from the bridge on, on demand from the agent's start, or not.
        let recording = match recorder::Call::of(&admitted.tenant.id, &contact, &admitted.queue, negotiated.codec) {
            Ok(call) => {
                let how = self
                    .registry
                    .get(&admitted.tenant.id)
                    .map_or(VoiceRecording::Never, |t| t.recording.voice_call(&call.contact_id, &admitted.queue));
                Some((call, how))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the call cannot be recorded");
                None
            }
        };
        let mut settings = self.media.call.clone();
        let mut bridged_signal = None;
        // The PCI pause switch of the call's recording, which follows the contact's
        // `recording_paused` (the agent's PauseRecording in sessions).
        let mut pause_switch = None;
        // A call recorded on demand: started when the contact's recording is resumed (the
        // agent's ResumeRecording) while the agent is on the call.
        let mut on_demand = None;
        match recording {
            Some((call, VoiceRecording::Always)) => {
                let fork = self.recorder.start(call);
                settings.fork = Some(fork.packets);
                bridged_signal = Some(fork.bridged);
                pause_switch = Some(fork.paused);
            }
            Some((call, VoiceRecording::OnDemand)) => on_demand = Some(call),
            _ => {}
        }
        // The contact's recording is wanted (not paused) and who holds the call, as last
        // read from sessions.
        let mut recording_wanted: Option<String> = None;
        let mut media = match CallMedia::start(Leg::new(socket, negotiated), settings) {
            Ok(media) => media,
            Err(e) => {
                tracing::warn!(error = %e, "could not start the call's media");
                call.finish(500, "Server Internal Error").await;
                control.call_ended("failed");
                return self.end(&admitted, &contact, "failed").await;
            }
        };
        let mut answered = match call.answer(answer) {
            Ok(answered) => answered,
            Err(e) => {
                tracing::warn!(error = %e, "could not answer the call");
                control.call_ended("failed");
                return self.end(&admitted, &contact, "failed").await;
            }
        };
        tracing::info!(queue = %admitted.queue, rtp = %local.addr, codec = ?negotiated.codec, "call answered, waiting in its queue with treatment");
        control.caller_answered();
        // Queue announcements while the caller waits ([`crate::announce`]).
        let announcing = self.announcer(&admitted, &contact, &media);
        let mut agent = AgentLeg::None;
        // A consult, warm transfer or conference on the call ([`consult`]).
        let mut consults = consult::Consults::default();
        // A supervisor listening, whispering or barging in ([`monitor`]).
        let mut supervision = monitor::Supervision::default();
        let cause = loop {
            tokio::select! {
                h = answered.next() => {
                    let h = match h {
                        crate::sip::DialogEvent::Ended(h) => h,
                        crate::sip::DialogEvent::Request(r) => {
                            control.caller_request(&media, *r).await;
                            continue;
                        }
                    };
                    let cause = match h {
                        Hangup::Bye => "caller hung up",
                        Hangup::Cancelled => {
                            self.metrics.invite("cancelled");
                            "cancelled"
                        }
                        Hangup::NoAck => "no ACK to the answer",
                        Hangup::Ended => "dialog ended",
                    };
                    // No zombie leg: a ringing phone is cancelled, a connected one hung up.
                    agent.drop_leg().await;
                    break cause;
                }
                event = media.event() => match event {
                    // Digits can be a card number or a PIN (PCI DSS): never logged, at any level.
                    Some(MediaEvent::Digit { side, digit }) => {
                        control.digit(side, digit, crate::legs::DtmfSource::Rfc4733);
                    }
                    Some(MediaEvent::Timeout { side }) => {
                        tracing::info!(?side, "no RTP for too long: ending the call");
                        answered.hang_up().await;
                        agent.drop_leg().await;
                        break "RTP timeout";
                    }
                    None => {
                        answered.hang_up().await;
                        agent.drop_leg().await;
                        break "media ended";
                    }
                },
                update = updates.updates.recv() => match update {
                    // Transferred away from the connected agent (a cold transfer: from the
                    // desktop, or the phone's REFER): the phone is hung up and the caller
                    // waits with the music; an offer to the next agent rings its phone.
                    Some(next @ (ContactUpdate::Offered { .. } | ContactUpdate::Queued))
                        if matches!(agent, AgentLeg::Connected { .. }) && !consults.active() =>
                    {
                        tracing::info!("the call was transferred: hanging up the agent's phone");
                        control.transferred(&media).await;
                        media.unbridge().await;
                        agent.drop_leg().await;
                        if let ContactUpdate::Offered { agent: id, offer } = next {
                            agent = self.ring(&admitted, &contact, &id, &offer, negotiated.codec, false).await;
                            if let AgentLeg::Ringing { ring, agent: id, local, .. } = &agent {
                                control.agent_created(id, ring.call_id(), *local);
                            }
                        }
                    }
                    Some(ContactUpdate::Offered { agent: id, offer }) if matches!(agent, AgentLeg::None) => {
                        agent = self.ring(&admitted, &contact, &id, &offer, negotiated.codec, false).await;
                        if let AgentLeg::Ringing { ring, agent: id, local, .. } = &agent {
                            control.agent_created(id, ring.call_id(), *local);
                        }
                    }
                    Some(ContactUpdate::Offered { offer, .. }) if agent.offer() == Some(offer.as_str()) => {}
                    Some(ContactUpdate::Connected { agent: holder, recording_paused, on_hold, consult_leg, conferenced, monitor, .. }) => {
                        // Accepted on the desktop while the phone rings: the ring is
                        // cancelled and the phone rung again to answer by itself.
                        if let AgentLeg::Ringing { agent: id, offer, cancelled: false, accepted: false, .. } = &agent {
                            if *id == holder {
                                let (id, offer) = (id.clone(), offer.clone());
                                tracing::info!(agent = %id, "accepted on the desktop: ringing the phone again to answer by itself");
                                agent.drop_leg().await;
                                control.agent_ended(EndCause::Cancelled, 487, "accepted on the desktop: rung again to answer by itself");
                                agent = self.ring(&admitted, &contact, &id, &offer, negotiated.codec, true).await;
                                if let AgentLeg::Ringing { ring, agent: id, local, .. } = &agent {
                                    control.agent_created(id, ring.call_id(), *local);
                                }
                            }
                        }
                        // The supervisor first: a consult takes it off (one mixer per call).
                        self.follow_monitor(&admitted, &contact, &mut supervision, &media, negotiated.codec, monitor, consult_leg.is_some()).await;
                        self.follow_consult(&mut consults, &mut agent, &media, negotiated.codec, &holder, consult_leg.as_deref(), &conferenced).await;
                        // A consult holds the customer too; the consult's own media does that.
                        control.recording_paused(recording_paused);
                        recording_wanted = (!recording_paused).then(|| holder.clone());
                        self.start_on_demand(&mut on_demand, &agent, recording_wanted.as_deref(), &media, &mut pause_switch).await;
                        control.contact_hold(&media, on_hold && consult_leg.is_none()).await;
                        if let Some(switch) = &pause_switch {
                            if switch.send_replace(recording_paused) != recording_paused {
                                tracing::info!(paused = recording_paused, "recording pause switched (PCI)");
                            }
                        }
                    }
                    Some(ContactUpdate::Other) => {}
                    Some(ContactUpdate::Leg { leg, update }) => {
                        self.follow_leg(&admitted, &mut consults, &media, negotiated.codec, &leg, *update).await;
                    }
                    Some(ContactUpdate::Offered { .. }) | Some(ContactUpdate::Queued) => {
                        // A supervisor leaves a call that leaves its agent.
                        self.stop_supervision(&mut supervision, &media).await;
                        // The offer the phone rings for is void (not answered in time,
                        // taken elsewhere): the ringing leg is cancelled at once.
                        if let AgentLeg::Ringing { ring, cancelled, agent: id, .. } = &mut agent {
                            if !*cancelled {
                                tracing::info!(agent = %id, "offer void: cancelling the agent's phone");
                                ring.cancel().await;
                                *cancelled = true;
                            }
                        }
                    }
                    Some(ContactUpdate::Over) => {
                        answered.hang_up().await;
                        agent.drop_leg().await;
                        break "contact over in sessions";
                    }
                    None => {}
                },
                happened = agent.next() => match happened {
                    AgentHappened::Answered { dialog, sdp } => {
                        let answering = match &agent {
                            AgentLeg::Ringing { agent: id, .. } => Some(id.clone()),
                            _ => None,
                        };
                        agent = self.agent_answered(&admitted, &contact, agent, dialog, &sdp, negotiated.codec, &media).await;
                        match &agent {
                            AgentLeg::Connected { .. } => control.agent_answered(),
                            _ => control.agent_ended(EndCause::Failed, 0, "the answer could not be used"),
                        }
                        self.start_on_demand(&mut on_demand, &agent, recording_wanted.as_deref(), &media, &mut pause_switch).await;
                        if let (AgentLeg::Connected { .. }, Some(id)) = (&agent, answering) {
                            if let Some(signal) = bridged_signal.take() {
                                let _ = signal.send(id);
                            }
                        }
                    }
                    AgentHappened::Refused(why, code) => {
                        let cancelled = matches!(&agent, AgentLeg::Ringing { cancelled: true, .. });
                        control.agent_ended(if cancelled { EndCause::Cancelled } else { EndCause::Refused }, code, &why);
                        if let AgentLeg::Ringing { agent: id, offer, cancelled, .. } = &agent {
                            tracing::info!(agent = %id, why, "the agent's phone did not take the call");
                            if !*cancelled {
                                if let Err(e) = self.sessions.reject_contact(&admitted.tenant.id, &contact, id, offer).await {
                                    tracing::info!(error = %e, "could not reject the offer");
                                }
                            }
                        }
                        agent = AgentLeg::None;
                    }
                    AgentHappened::Early(code) => control.agent_ringing(code),
                    AgentHappened::Request(r) => {
                        let refer = control.agent_request(&self.sessions, &admitted, &contact, &media, *r).await;
                        // A REFER media accepted: its NOTIFY (RFC 3515).
                        if let (Some(code), AgentLeg::Connected { dialog }) = (refer, &agent) {
                            dialog.notify_refer(code);
                        }
                    }
                    AgentHappened::HungUp if consults.active() => {
                        control.agent_ended(EndCause::PeerBye, 0, "agent hung up");
                        agent = AgentLeg::None;
                        if !self.consulting_agent_left(&admitted, &contact, &mut consults).await {
                            tracing::info!("the consulting agent hung up");
                            answered.hang_up().await;
                            break "agent hung up";
                        }
                    }
                    AgentHappened::HungUp => {
                        tracing::info!("the agent hung up");
                        control.agent_ended(EndCause::PeerBye, 0, "agent hung up");
                        answered.hang_up().await;
                        break "agent hung up";
                    }
                },
                happened = consults.next() => {
                    self.consult_happened(&admitted, &mut consults, negotiated.codec, happened).await;
                }
                happened = supervision.next() => {
                    self.supervision_happened(&admitted, &contact, &mut supervision, &media, negotiated.codec, happened).await;
                }
                _ = self.drain_over.cancelled() => {
                    answered.hang_up().await;
                    agent.drop_leg().await;
                    break "drained";
                }
            }
        };
        if let Some(task) = announcing {
            task.abort();
        }
        control.call_ended(cause);
        consults.end().await;
        supervision.end().await;
        drop(media);
        drop(updates);
        self.end(&admitted, &contact, cause).await;
    }

    /// Starts the recording of a call recorded on demand once it is wanted (`holder`: the
    /// agent who resumed it) and the agent's phone is on the call: from that moment on.
    async fn start_on_demand(
        &self,
        on_demand: &mut Option<recorder::Call>,
        agent: &AgentLeg,
        holder: Option<&str>,
        media: &CallMedia,
        pause_switch: &mut Option<tokio::sync::watch::Sender<bool>>,
    ) {
        let (Some(holder), AgentLeg::Connected { .. }) = (holder, agent) else { return };
        let Some(call) = on_demand.take() else { return };
        let fork = self.recorder.start(call);
        if media.fork(fork.packets).await {
            tracing::info!(agent = holder, "recording started on demand");
            let _ = fork.bridged.send(holder.to_owned());
            *pause_switch = Some(fork.paused);
        }
    }

    /// The task announcing to the waiting caller of `contact`, when media has prompts and
    /// the tenant wants announcements.
    fn announcer(&self, admitted: &Admitted, contact: &str, media: &CallMedia) -> Option<tokio::task::JoinHandle<()>> {
        let prompts = self.media.prompts.clone()?;
        self.registry.get(&admitted.tenant.id)?.voice.announcements.as_ref()?;
        Some(tokio::spawn(
            crate::announce::run(crate::announce::Call {
                registry: self.registry.clone(),
                sessions: self.sessions.clone(),
                prompts,
                tenant: admitted.tenant.id.clone(),
                contact: contact.to_owned(),
                announcer: media.announcer(),
            })
            .in_current_span(),
        ))
    }

    /// Rings `agent`'s phone for `offer`: an INVITE offering the caller's codec, from an RTP
    /// port of its own, to the agent's fixed phone (`spec.voice.phones`) or else to the
    /// phone it registered. In a tenant with a registrar, an agent with neither cannot take
    /// the call: the offer is rejected at once (the contact goes to the next agent, as for
    /// a phone that cannot be reached). In a tenant without one, an agent with no phone is
    /// left to answer from its desktop (or to let the offer expire).
    /// `accepted`: the offer is already accepted (on the desktop): the phone is asked to
    /// answer by itself, and its answer accepts nothing more.
    async fn ring(
        &self,
        admitted: &Admitted,
        contact: &str,
        agent: &str,
        offer: &str,
        codec: Codec,
        accepted: bool,
    ) -> AgentLeg {
        let tenant = self.registry.get(&admitted.tenant.id);
        let fixed = tenant.as_ref().and_then(|t| t.voice.phone_of(agent).map(str::to_owned));
        let registers = tenant.as_ref().is_some_and(|t| t.voice.registrar.is_some());
        let uri = match (fixed, &self.registrar) {
            (Some(uri), _) => uri,
            (None, Some(registrar)) if registers => match registrar.contact_of(&admitted.tenant.id, agent).await {
                Ok(Some(uri)) => uri,
                found => {
                    match found {
                        Err(e) => tracing::warn!(error = %e, agent, "registrations out of reach: rejecting the offer"),
                        _ => tracing::info!(agent, "the agent has no registered phone: rejecting the offer"),
                    }
                    self.reject(admitted, contact, agent, offer).await;
                    return AgentLeg::None;
                }
            },
            (None, None) if registers => {
                tracing::warn!(agent, "no registrar (CENTRALITA_REDIS_URL unset): rejecting the offer");
                self.reject(admitted, contact, agent, offer).await;
                return AgentLeg::None;
            }
            (None, _) => {
                tracing::info!(agent, "offered to an agent with no phone: not ringing");
                return AgentLeg::None;
            }
        };
        let socket = match self.media.ports.bind().await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, agent, "no RTP port for the agent's leg");
                return AgentLeg::None;
            }
        };
        let Ok(addr) = socket.local_addr() else { return AgentLeg::None };
        let local = sdp::Local { addr, session_id: u64::from(uuid::Uuid::now_v7().as_fields().0), version: 1 };
        let caller = admitted.caller.as_deref().unwrap_or("");
        match self.dialer.invite(&uri, caller, sdp::offer(codec, &local), accepted) {
            Ok(ring) => {
                tracing::info!(agent, %uri, rtp = %addr, auto_answer = accepted, "ringing the agent's phone");
                AgentLeg::Ringing {
                    ring,
                    agent: agent.to_owned(),
                    offer: offer.to_owned(),
                    socket,
                    local,
                    cancelled: false,
                    accepted,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, agent, %uri, "could not ring the agent's phone");
                AgentLeg::None
            }
        }
    }

    async fn reject(&self, admitted: &Admitted, contact: &str, agent: &str, offer: &str) {
        if let Err(e) = self.sessions.reject_contact(&admitted.tenant.id, contact, agent, offer).await {
            tracing::info!(error = %e, agent, "could not reject the offer");
        }
    }

    /// The agent's phone answered: the offer is accepted in sessions for the agent, then
    /// the legs are bridged. An answer that cannot be used (no codec kept, the offer gone)
    /// is hung up.
    #[allow(clippy::too_many_arguments)]
    async fn agent_answered(
        &self,
        admitted: &Admitted,
        contact: &str,
        leg: AgentLeg,
        dialog: Answered,
        sdp_answer: &[u8],
        codec: Codec,
        media: &CallMedia,
    ) -> AgentLeg {
        let Some((agent, dialog, rtp)) = self.take_answer(admitted, contact, leg, dialog, sdp_answer, codec).await
        else {
            return AgentLeg::None;
        };
        if !media.bridge(rtp).await {
            dialog.hang_up().await;
            return AgentLeg::None;
        }
        tracing::info!(%agent, "the agent answered: call bridged");
        AgentLeg::Connected { dialog }
    }

    /// A phone ringing for an offer of `contact` answered: its answer is read and the offer
    /// accepted in sessions for its agent. Gives the agent, the dialog and the phone's RTP
    /// leg, or `None` when the answer cannot be used (no codec kept, the offer gone, the
    /// ring cancelled meanwhile): the phone is then hung up.
    async fn take_answer(
        &self,
        admitted: &Admitted,
        contact: &str,
        leg: AgentLeg,
        dialog: Answered,
        sdp_answer: &[u8],
        codec: Codec,
    ) -> Option<(String, Answered, Leg)> {
        let AgentLeg::Ringing { agent, offer, socket, cancelled, accepted, .. } = leg else {
            dialog.hang_up().await;
            return None;
        };
        if cancelled {
            dialog.hang_up().await;
            return None;
        }
        let negotiated = match sdp::parse(sdp_answer).and_then(|d| sdp::accept_answer(&d, codec)) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(error = %e, %agent, "the phone's answer is unusable: hanging up, rejecting the offer");
                dialog.hang_up().await;
                let _ = self.sessions.reject_contact(&admitted.tenant.id, contact, &agent, &offer).await;
                return None;
            }
        };
        // Accepted on the desktop already: the phone only picks the call up.
        if accepted {
            return Some((agent, dialog, Leg::new(socket, negotiated)));
        }
        if let Err(e) = self.sessions.accept_contact(&admitted.tenant.id, contact, &agent, &offer).await {
            tracing::info!(error = %e, %agent, "the offer could not be accepted: hanging up the phone");
            dialog.hang_up().await;
            return None;
        }
        Some((agent, dialog, Leg::new(socket, negotiated)))
    }

    async fn end(&self, admitted: &Admitted, contact: &str, cause: &str) {
        let ended = self.sessions.end_contact(&admitted.tenant.id, contact, cause).await;
        match &ended {
            Ok(()) => tracing::info!(cause, "call ended, contact ended"),
            Err(e) => tracing::warn!(error = %e, cause, "call ended, but its contact could not be ended"),
        }
        if let Some(carried) = &self.carried {
            carried.ended(&admitted.tenant.id, contact, &ended).await;
        }
    }
}

/// Resolves once no call is held.
async fn all_ended(total: &mut watch::Receiver<usize>) {
    let _ = total.wait_for(|n| *n == 0).await;
}

/// The agent's side of a call.
#[derive(Debug)]
enum AgentLeg {
    None,
    /// The agent's phone rings for `offer`; `socket` is the leg's RTP port.
    Ringing {
        ring: Ringing,
        agent: String,
        offer: String,
        socket: tokio::net::UdpSocket,
        /// Media's side of the leg's stream (its address and SDP session).
        local: sdp::Local,
        cancelled: bool,
        /// Rung with auto-answer because the offer was accepted on the desktop.
        accepted: bool,
    },
    /// Bridged with the caller.
    Connected {
        dialog: Answered,
    },
}

/// What happened on the agent's side.
enum AgentHappened {
    Answered {
        dialog: Answered,
        sdp: Vec<u8>,
    },
    /// The phone refused (its final status) or could not be reached (0).
    Refused(String, u16),
    /// A provisional answer (180, 183).
    Early(u16),
    /// A request inside the phone's dialog (re-INVITE, INFO, REFER).
    Request(Box<crate::sip::InDialog>),
    HungUp,
}

impl AgentLeg {
    fn offer(&self) -> Option<&str> {
        match self {
            AgentLeg::Ringing { offer, .. } => Some(offer),
            _ => None,
        }
    }

    /// The next thing to happen on the agent's side; never, without one.
    async fn next(&mut self) -> AgentHappened {
        match self {
            AgentLeg::None => std::future::pending().await,
            AgentLeg::Ringing { ring, .. } => match ring.progress().await {
                crate::sip::Progress::Early(code) => AgentHappened::Early(code),
                crate::sip::Progress::Final(Outcome::Answered(dialog, sdp)) => AgentHappened::Answered { dialog, sdp },
                crate::sip::Progress::Final(Outcome::Refused(code)) => {
                    AgentHappened::Refused(format!("status {code}"), code)
                }
                crate::sip::Progress::Final(Outcome::Failed(why)) => AgentHappened::Refused(why, 0),
            },
            AgentLeg::Connected { dialog } => match dialog.next().await {
                crate::sip::DialogEvent::Request(r) => AgentHappened::Request(r),
                crate::sip::DialogEvent::Ended(_) => AgentHappened::HungUp,
            },
        }
    }

    /// Ends the agent's side: CANCEL while ringing, BYE once connected.
    async fn drop_leg(&mut self) {
        match std::mem::replace(self, AgentLeg::None) {
            AgentLeg::None => {}
            AgentLeg::Ringing { ring, cancelled, .. } => {
                if !cancelled {
                    ring.cancel().await;
                }
            }
            AgentLeg::Connected { dialog } => dialog.hang_up().await,
        }
    }
}
