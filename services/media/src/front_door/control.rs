//! In-call control of one call, beside its task in the front door: hold and resume (from
//! sessions' contact, from the agent's phone, from the caller's trunk), DTMF digits (RFC 4733
//! from the relay, SIP INFO from either leg) and the call's leg events ([`crate::legs`]).
//!
//! - **Hold from the contact** (the desktop's or the API's HoldContact): media follows the
//!   contact's `on_hold`: the caller hears the music on hold, the agent silence, nothing
//!   passes between them and nothing is recorded (the relay's hold); ResumeContact bridges
//!   them again.
//! - **Hold from the agent's phone**: its re-INVITE with `a=sendonly`/`a=inactive` (or
//!   `c=0.0.0.0`) is answered `recvonly`/`inactive` (RFC 3264 §8.4), the call is held at once
//!   and sessions told (HoldContact for that agent, with media's token naming it, as for the
//!   accept); its `sendrecv` again resumes it (ResumeContact) — only a hold the phone started
//!   is resumed by the phone.
//! - **Hold from the caller's trunk**: its re-INVITE is answered the same way and the leg's
//!   stream follows it (media stops sending if the answer says so; what the trunk sends is
//!   relayed to the agent); the contact does not change.
//! - **DTMF**: the relay's RFC 4733 digits and each leg's SIP INFO (`application/dtmf-relay`,
//!   `application/dtmf`; answered `200`, an unreadable body `400`, another type `415`) become
//!   leg events. Digits are never logged.
//! - A **REFER** from the agent's phone is a cold transfer (RFC 3515): its `Refer-To` names
//!   one of the tenant's numbers (its queue) or an agent ([`in_call::refer_target`]);
//!   media asks sessions for the transfer for that agent (TransferContact with its token):
//!   done, `202` and a NOTIFY `200`; refused by sessions `403`; a target that is none of
//!   the tenant's `404`, an unreadable `Refer-To` `400`. The contact then goes back to its
//!   queue: the front door hangs the phone up and the caller waits with the music for the
//!   next agent ([`Control::transferred`]). A REFER from the trunk is refused `403`.

use crate::admission::Admitted;
use crate::in_call;
use crate::legs::{CallEvents, DtmfSource, EndCause, HoldOrigin, Leg as LegKind};
use crate::rtp::relay::{CallMedia, Side};
use crate::rtp::{sdp, Codec};
use crate::sessions::Sessions;
use crate::sip::{InDialog, InDialogKind};

/// The agent's leg, as control knows it.
#[derive(Debug)]
struct AgentSide {
    agent: String,
    call_id: String,
    /// Media's side of the leg's stream (its address and SDP session).
    local: sdp::Local,
}

/// One call's in-call control state.
#[derive(Debug)]
pub(super) struct Control {
    legs: CallEvents,
    caller_call_id: String,
    caller_local: sdp::Local,
    codec: Codec,
    /// The caller's trunk holds the call (its re-INVITE): the contact does not change.
    caller_held: bool,
    /// The call is on hold: the caller hears music, the agent silence.
    held: bool,
    /// The hold was started by the agent's phone (a re-INVITE): its `sendrecv` resumes it.
    phone_held: bool,
    agent: Option<AgentSide>,
}

impl Control {
    pub(super) fn new(legs: CallEvents, caller_call_id: String, caller_local: sdp::Local, codec: Codec) -> Self {
        Self {
            legs,
            caller_call_id,
            caller_local,
            codec,
            caller_held: false,
            held: false,
            phone_held: false,
            agent: None,
        }
    }

    pub(super) fn caller_created(&mut self) {
        self.legs.created(LegKind::Caller, &self.caller_call_id, "");
    }

    pub(super) fn caller_answered(&mut self) {
        self.legs.answered(LegKind::Caller, &self.caller_call_id, "");
    }

    /// The call is over with `cause` (the front door's words): the caller's leg ends, and
    /// the agent's if it is still there (hung up by media).
    pub(super) fn call_ended(&mut self, cause: &str) {
        let caller_cause = caller_end_cause(cause);
        // The agent's leg ends by media's hand unless it ended itself (already reported).
        let agent_cause = match caller_cause {
            EndCause::RtpTimeout => EndCause::RtpTimeout,
            _ => EndCause::MediaBye,
        };
        self.agent_ended(agent_cause, 0, cause);
        self.legs.ended(LegKind::Caller, &self.caller_call_id, "", caller_cause, 0, cause);
    }

    /// Media sent an INVITE to `agent`'s phone (Call-ID `call_id`) from `local`.
    pub(super) fn agent_created(&mut self, agent: &str, call_id: String, local: sdp::Local) {
        self.legs.created(LegKind::Agent, &call_id, agent);
        self.agent = Some(AgentSide { agent: agent.to_owned(), call_id, local });
    }

    pub(super) fn agent_ringing(&mut self, sip_status: u16) {
        if let Some(a) = &self.agent {
            self.legs.ringing(&a.call_id, &a.agent, sip_status);
        }
    }

    /// The phone answered and the legs are bridged.
    pub(super) fn agent_answered(&mut self) {
        if let Some(a) = &self.agent {
            self.legs.answered(LegKind::Agent, &a.call_id, &a.agent);
        }
    }

    /// The agent's leg is over (once; nothing without one).
    pub(super) fn agent_ended(&mut self, cause: EndCause, sip_status: u16, detail: &str) {
        if let Some(a) = self.agent.take() {
            self.legs.ended(LegKind::Agent, &a.call_id, &a.agent, cause, sip_status, detail);
        }
        // A hold is the agent's: it does not outlive the agent's leg.
        self.phone_held = false;
    }

    /// The contact's PCI pause: digits are withheld from the events while paused.
    pub(super) fn recording_paused(&mut self, paused: bool) {
        self.legs.set_recording_paused(paused);
    }

    /// A digit pressed on `side`'s leg (never logged: it can be a card number or a PIN).
    pub(super) fn digit(&mut self, side: Side, digit: char, source: DtmfSource) {
        tracing::debug!(?side, ?source, "DTMF digit received");
        match side {
            Side::Caller => self.legs.digit(LegKind::Caller, &self.caller_call_id, "", digit, source),
            Side::Agent => {
                if let Some(a) = &self.agent {
                    self.legs.digit(LegKind::Agent, &a.call_id, &a.agent, digit, source);
                }
            }
        }
    }

    /// The contact's `on_hold` in sessions (HoldContact / ResumeContact, from the desktop,
    /// the API, or the phone's re-INVITE coming back): the relay follows it.
    pub(super) async fn contact_hold(&mut self, media: &CallMedia, on_hold: bool) {
        if on_hold == self.held {
            return;
        }
        self.held = on_hold;
        self.phone_held = false;
        tracing::info!(on_hold, "the contact's hold: the call follows it");
        media.hold(on_hold).await;
        if let Some(a) = &self.agent {
            self.legs.hold(LegKind::Agent, &a.call_id, &a.agent, on_hold, HoldOrigin::Contact);
        }
    }

    /// A request inside the caller's dialog.
    pub(super) async fn caller_request(&mut self, media: &CallMedia, r: InDialog) {
        match r.kind() {
            InDialogKind::Reinvite | InDialogKind::Update => {
                let Some(reoffer) = reinvite(r, self.codec, &mut self.caller_local).await else { return };
                media.renegotiate(Side::Caller, reoffer.negotiated).await;
                if reoffer.holds != self.caller_held {
                    self.caller_held = reoffer.holds;
                    tracing::info!(on_hold = reoffer.holds, "the caller's side holds the call (re-INVITE)");
                    self.legs.hold(LegKind::Caller, &self.caller_call_id, "", reoffer.holds, HoldOrigin::Sip);
                }
            }
            InDialogKind::Info => self.info(r, Side::Caller).await,
            // A trunk does not transfer the platform's call.
            InDialogKind::Refer => r.reply(403, "Forbidden").await,
        }
    }

    /// The call was transferred away from its connected agent (the contact is queued or
    /// offered again): the agent's leg is over and a hold is too (the next agent is not
    /// bridged into silence).
    pub(super) async fn transferred(&mut self, media: &CallMedia) {
        self.agent_ended(EndCause::MediaBye, 0, "transferred");
        if self.held {
            self.held = false;
            media.hold(false).await;
        }
    }

    /// A request inside the agent's phone's dialog. Returns the status to NOTIFY the phone
    /// of when it was a REFER media accepted (`202`).
    pub(super) async fn agent_request(
        &mut self,
        sessions: &Sessions,
        admitted: &Admitted,
        contact: &str,
        media: &CallMedia,
        r: InDialog,
    ) -> Option<u16> {
        let Some(a) = self.agent.as_mut() else {
            r.reply(481, "Call/Transaction Does Not Exist").await;
            return None;
        };
        match r.kind() {
            InDialogKind::Reinvite | InDialogKind::Update => {
                let reoffer = reinvite(r, self.codec, &mut a.local).await?;
                media.renegotiate(Side::Agent, reoffer.negotiated).await;
                let (agent, call_id) = (a.agent.clone(), a.call_id.clone());
                let change = if reoffer.holds && !self.held {
                    self.phone_held = true;
                    true
                } else if !reoffer.holds && self.phone_held {
                    self.phone_held = false;
                    false
                } else {
                    return None;
                };
                self.held = change;
                tracing::info!(on_hold = change, %agent, "the agent's phone holds the call (re-INVITE)");
                media.hold(change).await;
                self.legs.hold(LegKind::Agent, &call_id, &agent, change, HoldOrigin::Sip);
                if let Err(e) = sessions.hold_contact(&admitted.tenant.id, contact, &agent, change).await {
                    tracing::info!(error = %e, on_hold = change, "sessions did not take the phone's hold");
                }
                None
            }
            InDialogKind::Info => {
                self.info(r, Side::Agent).await;
                None
            }
            InDialogKind::Refer => {
                let agent = a.agent.clone();
                let target = match r.refer_to_user() {
                    Ok(user) => in_call::refer_target(&user, &admitted.tenant.voice),
                    Err(why) => {
                        tracing::info!(why, "a REFER from the phone refused");
                        r.reply(400, "Bad Request").await;
                        return None;
                    }
                };
                let target = match target {
                    Ok(target) => target,
                    Err(e) => {
                        tracing::info!(error = %e, "a REFER from the phone refused: its target");
                        r.reply(404, "Not Found").await;
                        return None;
                    }
                };
                match sessions.transfer_contact(&admitted.tenant.id, contact, &agent, &target).await {
                    Ok(()) => {
                        tracing::info!(%agent, ?target, "the agent's phone transferred the call (REFER)");
                        r.reply(202, "Accepted").await;
                        Some(200)
                    }
                    Err(e) => {
                        tracing::info!(error = %e, %agent, "sessions refused the phone's transfer");
                        r.reply(403, "Forbidden").await;
                        None
                    }
                }
            }
        }
    }

    async fn info(&mut self, r: InDialog, side: Side) {
        match in_call::info_digit(r.content_type().as_deref(), r.body()) {
            Ok(digit) => {
                r.reply(200, "OK").await;
                self.digit(side, digit, DtmfSource::SipInfo);
            }
            Err(e) => {
                let (code, reason) = e.sip_status();
                r.reply(code, reason).await;
            }
        }
    }
}

/// Answers a re-INVITE (or UPDATE) on a leg carrying `codec` whose media side is `local`:
/// the offer's answer, or media's offer when it had none (a re-INVITE asking for one; the
/// answer in its ACK is not read), or `200` without a body for an UPDATE without one (a
/// refresh). Returns the offer read, if any.
async fn reinvite(r: InDialog, codec: Codec, local: &mut sdp::Local) -> Option<in_call::Reoffer> {
    if r.body().is_empty() {
        if r.kind() == InDialogKind::Update {
            r.reply(200, "OK").await;
        } else {
            local.version += 1;
            r.answer_sdp(sdp::offer(codec, local)).await;
        }
        return None;
    }
    match in_call::reoffer(r.body(), codec) {
        Ok(reoffer) => {
            local.version += 1;
            r.answer_sdp(in_call::answer(&reoffer, local)).await;
            Some(reoffer)
        }
        Err(e) => {
            tracing::info!(error = %e, "a re-INVITE's offer refused");
            let (code, reason) = e.sip_status();
            r.reply(code, reason).await;
            None
        }
    }
}

/// The caller's leg's end cause for the front door's words for why the call ended.
fn caller_end_cause(cause: &str) -> EndCause {
    match cause {
        "caller hung up" => EndCause::PeerBye,
        "cancelled" => EndCause::Cancelled,
        "no ACK to the answer" => EndCause::NoAck,
        "RTP timeout" => EndCause::RtpTimeout,
        "failed" | "media ended" => EndCause::Failed,
        _ => EndCause::MediaBye,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_doors_causes_map_to_leg_end_causes() {
        assert_eq!(caller_end_cause("caller hung up"), EndCause::PeerBye);
        assert_eq!(caller_end_cause("cancelled"), EndCause::Cancelled);
        assert_eq!(caller_end_cause("no ACK to the answer"), EndCause::NoAck);
        assert_eq!(caller_end_cause("RTP timeout"), EndCause::RtpTimeout);
        assert_eq!(caller_end_cause("media ended"), EndCause::Failed);
        for by_media in ["agent hung up", "contact over in sessions", "drained", "dialog ended"] {
            assert_eq!(caller_end_cause(by_media), EndCause::MediaBye, "{by_media}");
        }
    }
}
