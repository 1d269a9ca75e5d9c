//! A call's consult, warm transfer and conference, following sessions' contact operations
//! (`ConsultContact`, `CompleteConsult`) whichever side starts them. The customer's contact
//! says what the call's media should be; a consult leg's own events (a contact whose
//! `consult_of` is this call's, [`ContactUpdate::Leg`]) only ring and answer the consulted
//! agent's phone.
//!
//! - **consult** (the contact has a `consult_leg`): the consulting agent's RTP leg leaves the
//!   two-party relay (the customer hears music on hold there) for a [`Conference`] mixer;
//!   the leg's offer rings the consulted agent's phone like any offer (answering accepts the
//!   leg for that agent, a refusal rejects it), and once it answers the two agents talk
//!   through the mixer;
//! - **conference** (the consulted agent is among the contact's conferenced participants):
//!   the customer joins the mixer through a loopback link: the relay bridges the customer
//!   to one end of a pair of media's own RTP ports, the mixer takes the other end as the
//!   customer's participant, so the relay stays the one place the customer's packets are
//!   checked, timed out and forked to the recording (its agent channel then carries what the
//!   customer hears: both agents). Each of the three hears the other two;
//! - **transfer** (the consult is over and the contact's holder is the consulted agent): the
//!   consulted agent's leg leaves the mixer and is bridged with the customer in the relay
//!   (no decoding any more), the consulting agent's phone gets a BYE;
//! - **cancel**, or the consulted agent gone (the consult is over and the holder is still
//!   the consulting agent): the consulted agent's phone is hung up (cancelled while it
//!   rings), the consulting agent is bridged with the customer again;
//! - the consulted agent's phone hanging up ends the leg in sessions (the customer's contact
//!   then says the consult is over); the consulting agent's phone hanging up once the
//!   consulted agent is on (consult or conference) completes the consult as a transfer for
//!   it (the customer and the consulted agent stay, bridged); before that it ends the call
//!   as any agent's hang-up does;
//! - the customer hanging up ends it all (both phones get a BYE, the ringing one a CANCEL).

use std::collections::HashSet;

use centralita_proto::sessions::v1::complete_consult_request::Outcome as PbOutcome;

use super::{AgentHappened, AgentLeg, FrontDoor};
use crate::admission::Admitted;
use crate::offers::ContactUpdate;
use crate::rtp::mixer::{Audience, Conference, ConferenceEvent, PartId};
use crate::rtp::relay::{CallMedia, Leg};
use crate::rtp::sdp::{Direction, Negotiated};
use crate::rtp::Codec;

/// The participants of a call's mixer.
pub(super) const CUSTOMER: PartId = 0;
pub(super) const CONSULTING: PartId = 1;
pub(super) const CONSULTED: PartId = 2;

/// A consult in progress on a call.
#[derive(Debug)]
pub(super) struct Consult {
    /// The consult leg's contact name.
    leg: String,
    /// The consulted agent's phone (ringing for the leg's offer, then connected).
    phone: AgentLeg,
    /// The consulted agent, once its phone answered.
    consulted: Option<String>,
    mixer: Conference,
    /// The consulting agent's RTP leg is in the mixer.
    consulting_in: bool,
    /// The customer is in the mixer (a conference).
    customer_in: bool,
}

/// A call's consults: the one in progress, the legs already over (their late events are
/// ignored), and the contact's holder as last read.
#[derive(Debug, Default)]
pub(super) struct Consults {
    current: Option<Consult>,
    over: HashSet<String>,
    holder: Option<String>,
}

/// What a consult's phone or mixer did, for the call's loop.
pub(super) enum Happened {
    Phone(Box<AgentHappened>),
    Mixer(Option<ConferenceEvent>),
}

impl Consults {
    pub(super) fn active(&self) -> bool {
        self.current.is_some()
    }

    /// The next thing to happen to the consulted agent's phone or the mixer; never
    /// without a consult.
    pub(super) async fn next(&mut self) -> Happened {
        match self.current.as_mut() {
            Some(c) => tokio::select! {
                h = c.phone.next() => Happened::Phone(Box::new(h)),
                e = c.mixer.event() => Happened::Mixer(e),
            },
            None => std::future::pending().await,
        }
    }

    /// The call is over: the consulted agent's phone is hung up (cancelled while ringing);
    /// the mixer stops.
    pub(super) async fn end(&mut self) {
        if let Some(mut c) = self.current.take() {
            c.phone.drop_leg().await;
        }
    }
}

impl FrontDoor {
    /// The customer's contact is connected to `holder`, with its consult leg and its
    /// conferenced agents as sessions says: the call's media follows.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn follow_consult(
        &self,
        consults: &mut Consults,
        agent: &mut AgentLeg,
        media: &CallMedia,
        codec: Codec,
        holder: &str,
        consult_leg: Option<&str>,
        conferenced: &[String],
    ) {
        consults.holder = Some(holder.to_owned()).filter(|h| !h.is_empty());
        match (consults.current.as_mut(), consult_leg) {
            (None, Some(leg)) if !consults.over.contains(leg) => {
                consults.current = Some(self.start_consult(leg, media).await);
            }
            (Some(c), Some(leg)) if c.leg == leg => {
                let joined = c.consulted.as_ref().is_some_and(|b| conferenced.contains(b));
                if joined && !c.customer_in {
                    self.conference(c, media, codec).await;
                }
            }
            (Some(_), _) => {
                let Some(c) = consults.current.take() else { return };
                consults.over.insert(c.leg.clone());
                let handed_over = c.consulted.as_deref().is_some_and(|b| b == holder);
                self.finish_consult(c, agent, media, handed_over).await;
            }
            (None, _) => {}
        }
    }

    /// The consulting agent's leg leaves the relay (the customer hears music on hold) for a
    /// mixer of its own.
    async fn start_consult(&self, leg: &str, media: &CallMedia) -> Consult {
        let mixer = Conference::start(self.media.call.timeout);
        let consulting_in = match media.detach().await {
            Some(a) => mixer.join(CONSULTING, a, Audience::Everyone).await.is_ok(),
            None => false,
        };
        tracing::info!(leg, consulting_in, "consult: the customer on hold, the consulting agent in a mixer");
        Consult {
            leg: leg.to_owned(),
            phone: AgentLeg::None,
            consulted: None,
            mixer,
            consulting_in,
            customer_in: false,
        }
    }

    /// The consulted agent joined (CONFERENCE): the customer joins the mixer through a
    /// loopback link bridged in the relay.
    async fn conference(&self, c: &mut Consult, media: &CallMedia, codec: Codec) {
        if self.link_customer(&c.mixer, media, codec).await {
            c.customer_in = true;
            tracing::info!(leg = %c.leg, "conference: the customer, the consulting and the consulted agent mixed");
        }
    }

    /// Joins the customer to `mixer` (as [`CUSTOMER`], heard by everyone) through a pair of
    /// media's own RTP ports on loopback: the relay bridges the customer to one end, the
    /// mixer takes the other. `false` if it could not (no ports, the call's media gone).
    pub(super) async fn link_customer(&self, mixer: &Conference, media: &CallMedia, codec: Codec) -> bool {
        let (relay_end, mixer_end) = match (self.media.ports.bind().await, self.media.ports.bind().await) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                tracing::warn!("no RTP ports for the customer's link to a mixer");
                return false;
            }
        };
        let (Ok(relay_addr), Ok(mixer_addr)) = (relay_end.local_addr(), mixer_end.local_addr()) else { return false };
        let link = |remote| Negotiated {
            codec,
            payload_type: codec.static_payload_type(),
            telephone_event: None,
            remote,
            direction: Direction::SendRecv,
        };
        let customer = Leg::new(mixer_end, link(relay_addr));
        if mixer.join(CUSTOMER, Box::new(customer), Audience::Everyone).await.is_err() {
            return false;
        }
        media.bridge(Leg::new(relay_end, link(mixer_addr))).await
    }

    /// The consult is over: the consulted agent takes the customer (`handed_over`), or the
    /// consulting agent gets the customer back.
    async fn finish_consult(&self, mut c: Consult, agent: &mut AgentLeg, media: &CallMedia, handed_over: bool) {
        if c.customer_in {
            // The link leaves the relay; the customer hears music on hold until bridged.
            drop(media.detach().await);
        }
        if handed_over {
            let b = c.mixer.leave(CONSULTED).await;
            agent.drop_leg().await;
            let bridged = match b {
                Some(b) => media.bridge(*b).await,
                None => false,
            };
            #[allow(clippy::match_bool)]
            match bridged {
                true => {
                    *agent = std::mem::replace(&mut c.phone, AgentLeg::None);
                    tracing::info!(leg = %c.leg, "warm transfer: the consulted agent bridged with the customer");
                }
                false => {
                    c.phone.drop_leg().await;
                    tracing::warn!(leg = %c.leg, "warm transfer: the consulted agent's leg is gone");
                }
            }
        } else {
            let a = if c.consulting_in { c.mixer.leave(CONSULTING).await } else { None };
            c.phone.drop_leg().await;
            if let Some(a) = a {
                media.bridge(*a).await;
            }
            tracing::info!(leg = %c.leg, "consult over: the consulting agent back with the customer");
        }
    }

    /// An update of consult leg `leg`: its offer rings the consulted agent's phone, a void
    /// offer cancels it.
    pub(super) async fn follow_leg(
        &self,
        admitted: &Admitted,
        consults: &mut Consults,
        media: &CallMedia,
        codec: Codec,
        leg: &str,
        update: ContactUpdate,
    ) {
        if consults.over.contains(leg) {
            return;
        }
        if consults.current.is_none() {
            // The leg's events may come before the customer's contact says it consults.
            consults.current = Some(self.start_consult(leg, media).await);
        }
        let Some(c) = consults.current.as_mut().filter(|c| c.leg == leg) else { return };
        match update {
            ContactUpdate::Offered { agent: b, offer } if matches!(c.phone, AgentLeg::None) => {
                c.phone = self.ring(admitted, leg, &b, &offer, codec, false).await;
            }
            ContactUpdate::Offered { offer, .. } if c.phone.offer() == Some(offer.as_str()) => {}
            ContactUpdate::Offered { .. } | ContactUpdate::Queued | ContactUpdate::Over => {
                // The offer is void; a connected phone stays until the customer's contact
                // says how the consult ended (a transfer closes the leg too).
                if let AgentLeg::Ringing { ring, cancelled, .. } = &mut c.phone {
                    if !*cancelled {
                        ring.cancel().await;
                        *cancelled = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// The consulted agent's phone or the mixer did something.
    pub(super) async fn consult_happened(
        &self,
        admitted: &Admitted,
        consults: &mut Consults,
        codec: Codec,
        happened: Happened,
    ) {
        let Some(c) = consults.current.as_mut() else { return };
        let happened = match happened {
            Happened::Phone(h) => Ok(*h),
            Happened::Mixer(e) => Err(e),
        };
        match happened {
            Err(Some(ConferenceEvent::Silent { id })) => {
                tracing::info!(participant = id, "consult: a participant sends no audio");
            }
            Err(None) => {}
            Ok(AgentHappened::Answered { dialog, sdp }) => {
                let leg = std::mem::replace(&mut c.phone, AgentLeg::None);
                if let Some((b, dialog, rtp)) = self.take_answer(admitted, &c.leg, leg, dialog, &sdp, codec).await {
                    match c.mixer.join(CONSULTED, Box::new(rtp), Audience::Everyone).await {
                        Ok(()) => {
                            tracing::info!(agent = %b, "consult: the consulted agent answered");
                            c.consulted = Some(b);
                            c.phone = AgentLeg::Connected { dialog };
                        }
                        Err(_) => dialog.hang_up().await,
                    }
                }
            }
            Ok(AgentHappened::Refused(why, ..)) => {
                if let AgentLeg::Ringing { agent: b, offer, cancelled, .. } = &c.phone {
                    tracing::info!(agent = %b, why, "consult: the consulted agent's phone did not take the call");
                    if !*cancelled {
                        self.reject(admitted, &c.leg, b, offer).await;
                    }
                }
                c.phone = AgentLeg::None;
            }
            Ok(AgentHappened::Early(_)) => {}
            Ok(AgentHappened::Request(r)) => {
                // The consulted phone's hold, DTMF or transfer are not followed while it
                // is on a consult: refused, the stream it has stays as it is.
                tracing::info!(kind = ?r.kind(), "consult: a request from the consulted phone refused");
                r.reply(488, "Not Acceptable Here").await;
            }
            Ok(AgentHappened::HungUp) => {
                tracing::info!(leg = %c.leg, "consult: the consulted agent hung up: its leg ends");
                c.phone = AgentLeg::None;
                drop(c.mixer.leave(CONSULTED).await);
                if let Err(e) = self.sessions.end_contact(&admitted.tenant.id, &c.leg, "consulted agent hung up").await
                {
                    tracing::warn!(error = %e, "the consult leg could not be ended");
                }
            }
        }
    }

    /// The consulting agent's phone hung up during a consult. With the consulted agent on,
    /// the consult completes as a transfer for it (`true`: the call goes on); else `false`.
    pub(super) async fn consulting_agent_left(
        &self,
        admitted: &Admitted,
        contact: &str,
        consults: &mut Consults,
    ) -> bool {
        let (Some(c), Some(holder)) = (consults.current.as_mut(), consults.holder.clone()) else { return false };
        if c.consulted.is_none() {
            return false;
        }
        if c.consulting_in {
            drop(c.mixer.leave(CONSULTING).await);
            c.consulting_in = false;
        }
        match self.sessions.complete_consult(&admitted.tenant.id, contact, &holder, PbOutcome::Transfer).await {
            Ok(()) => {
                tracing::info!(agent = %holder, "the consulting agent hung up: the consult completes as a transfer");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the consulting agent hung up and the transfer was refused");
                false
            }
        }
    }
}
