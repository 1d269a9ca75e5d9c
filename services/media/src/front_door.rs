//! The SIP front door: takes the requests of the SIP stack, admits or refuses each INVITE
//! ([`crate::admission`]), creates the admitted call's contact in sessions, answers it and
//! plays the queue's treatment (the music on hold) until the caller hangs up. Ringing an
//! agent's phone and bridging the call to it is not built yet (the relay is: see
//! [`crate::rtp::relay`]).
//!
//! A call, from the caller's side:
//! - refused: a final failure (404, 403, 486, 503, 400) at once, nothing created;
//! - an offer media cannot carry (no PCMU/PCMA, SRTP only, no SDP): `488`, nothing created;
//! - admitted: `100 Trying`, the contact is created (queued), `200 OK` with media's SDP
//!   answer, and music on hold on RTP;
//! - BYE while queued: the contact is ended (sessions marks it abandoned); a CANCEL that
//!   crosses the answer gets `487` and ends it the same way;
//! - no RTP from the caller for `CENTRALITA_RTP_TIMEOUT_SECS`: BYE, contact ended;
//! - shutdown: new INVITEs get `503`; calls still up when the drain window closes get a
//!   BYE and their contacts are ended, so none stays queued behind a stopped replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admission::{admit, Admitted, Refusal};
use crate::metrics::Metrics;
use crate::rtp::relay::{CallMedia, Leg, MediaEvent};
use crate::rtp::sdp::{self, SdpError};
use crate::rtp::{Codec, MediaPlane};
use crate::sessions::Sessions;
use crate::sip::{Hangup, Incoming, Kind, Requests, ServerCall, Stopper};

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
}

impl FrontDoor {
    pub fn new(registry: TenantRegistry, sessions: Arc<Sessions>, metrics: Arc<Metrics>, media: MediaPlane) -> Self {
        let calls = Arc::new(Calls { by_tenant: Mutex::default(), total: watch::channel(0).0 });
        Self { registry, sessions, metrics, calls, drain_over: CancellationToken::new(), media }
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
        stopper.stop();
        tracing::info!("SIP stopped");
    }

    async fn handle(self: &Arc<Self>, request: Incoming, draining: bool) {
        match request.kind() {
            // Trunks ping with OPTIONS; answering keeps them sending calls here.
            Kind::Options if draining => request.reply(503, "Service Unavailable - Draining").await,
            Kind::Options => request.reply(200, "OK").await,
            Kind::Other => request.reply(405, "Method Not Allowed").await,
            Kind::Invite => {
                let source = request.source();
                let (call, what) = match request.into_call() {
                    (call, Ok(what)) => (call, what),
                    (call, Err(why)) => {
                        tracing::info!(?source, why, "malformed INVITE");
                        self.metrics.invite("malformed");
                        return call.finish(400, "Bad Request").await;
                    }
                };
                let admitted = if draining {
                    Err(Refusal::Draining)
                } else {
                    admit(&what, &self.registry.list(), |t| self.calls.of(t))
                };
                match admitted {
                    Err(refusal) => {
                        let (code, reason) = refusal.status();
                        let outcome = match &refusal {
                            Refusal::UnknownNumber => "refused_unknown_number",
                            Refusal::NotATrunk { .. } => "refused_trunk",
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
        self.metrics.invite("created");

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
        let mut media = match CallMedia::start(Leg::new(socket, negotiated), self.media.call.clone()) {
            Ok(media) => media,
            Err(e) => {
                tracing::warn!(error = %e, "could not start the call's media");
                call.finish(500, "Server Internal Error").await;
                return self.end(&admitted, &contact, "failed").await;
            }
        };
        let mut answered = match call.answer(answer) {
            Ok(answered) => answered,
            Err(e) => {
                tracing::warn!(error = %e, "could not answer the call");
                return self.end(&admitted, &contact, "failed").await;
            }
        };
        tracing::info!(queue = %admitted.queue, rtp = %local.addr, codec = ?negotiated.codec, "call answered, waiting in its queue with treatment");
        let cause = loop {
            tokio::select! {
                h = answered.ended() => break match h {
                    Hangup::Bye => "caller hung up",
                    Hangup::Cancelled => {
                        self.metrics.invite("cancelled");
                        "cancelled"
                    }
                    Hangup::NoAck => "no ACK to the answer",
                    Hangup::Ended => "dialog ended",
                },
                event = media.event() => match event {
                    Some(MediaEvent::Digit { side, digit }) => {
                        tracing::info!(?side, %digit, "DTMF digit");
                    }
                    Some(MediaEvent::Timeout { side }) => {
                        tracing::info!(?side, "no RTP for too long: ending the call");
                        answered.hang_up().await;
                        break "RTP timeout";
                    }
                    None => {
                        answered.hang_up().await;
                        break "media ended";
                    }
                },
                _ = self.drain_over.cancelled() => {
                    answered.hang_up().await;
                    break "drained";
                }
            }
        };
        drop(media);
        self.end(&admitted, &contact, cause).await;
    }

    async fn end(&self, admitted: &Admitted, contact: &str, cause: &str) {
        match self.sessions.end_contact(&admitted.tenant.id, contact).await {
            Ok(()) => tracing::info!(cause, "call ended, contact ended"),
            Err(e) => tracing::warn!(error = %e, cause, "call ended, but its contact could not be ended"),
        }
    }
}

/// Resolves once no call is held.
async fn all_ended(total: &mut watch::Receiver<usize>) {
    let _ = total.wait_for(|n| *n == 0).await;
}
