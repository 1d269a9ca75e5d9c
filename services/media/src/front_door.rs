//! The SIP front door: takes the requests of the SIP stack, admits or refuses each INVITE
//! ([`crate::admission`]), creates the admitted call's contact in sessions and keeps the
//! call ringing until the caller gives up. Answering (a 200 with SDP and the RTP relay to
//! an agent's phone) is not built yet: a call waits, ringing, until it is cancelled or the
//! replica shuts down.
//!
//! A call, from the caller's side:
//! - refused: a final failure (404, 403, 486, 503, 400) at once, nothing created;
//! - admitted: `100 Trying`, the contact is created (queued), `180 Ringing`;
//! - CANCEL: `200` to the CANCEL (the stack), `487` to the INVITE, the contact ended
//!   (sessions marks it abandoned);
//! - shutdown: new INVITEs get `503`; calls still waiting when the drain window closes get
//!   `503` and their contacts are ended, so none stays queued behind a stopped replica.

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
use crate::sessions::Sessions;
use crate::sip::{Incoming, Kind, Requests, ServerCall, Stopper, Waiting};

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
}

impl FrontDoor {
    pub fn new(registry: TenantRegistry, sessions: Arc<Sessions>, metrics: Arc<Metrics>) -> Self {
        let calls = Arc::new(Calls { by_tenant: Mutex::default(), total: watch::channel(0).0 });
        Self { registry, sessions, metrics, calls, drain_over: CancellationToken::new() }
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
        tracing::info!(queue = %admitted.queue, "call waiting in its queue");
        if let Err(e) = call.ringing().await {
            tracing::info!(error = %e, "could not send 180 Ringing");
        }
        let ended = tokio::select! {
            w = call.wait() => w,
            _ = self.drain_over.cancelled() => {
                call.finish(503, "Service Unavailable - Draining").await;
                self.end(&admitted, &contact, "drained").await;
                return;
            }
        };
        match ended {
            Waiting::Cancelled => {
                self.metrics.invite("cancelled");
                call.finish(487, "Request Terminated").await;
                self.end(&admitted, &contact, "cancelled").await;
            }
            Waiting::Gone => self.end(&admitted, &contact, "transaction ended").await,
        }
    }

    async fn end(&self, admitted: &Admitted, contact: &str, cause: &'static str) {
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
