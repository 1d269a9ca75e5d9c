//! The contact state machine, as a pure table: which action is legal in which state and
//! where it leads. Every command and input of the core goes through [`next`] first.
//!
//! ```text
//! queued ──offer──▶ offered ──accept──▶ connected ──end──▶ after-contact work ──wrap-up──▶ closed
//!   ▲ │  ◀─reject/no answer─┘  │            │ hold/resume (stays connected)
//!   │ ├─end──▶ abandoned ◀─end──┘            └─transfer──▶ queued (another queue or agent)
//!   │ ├─time out──▶ timed out
//!   └─┴─overflow (to another queue)
//! ```
//!
//! Warm transfer and conference: a connected contact stays connected while its agent
//! consults (on hold), conferences, hands it over or ends the consult; the consult leg is a
//! contact of its own on the same table, closed directly by its consulting agent.

use super::model::ContactState;
use super::refusal::Refusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Offer,
    Accept,
    Reject,
    NoAnswer,
    Hold,
    Resume,
    /// PCI: the holder pauses the call's recording, or resumes it.
    PauseRecording,
    ResumeRecording,
    Transfer,
    End,
    WrapUp,
    Overflow,
    TimeOut,
    /// The customer's contact: its agent opens a consult leg.
    Consult,
    /// The customer's contact: the consulted agent joins.
    Conference,
    /// The customer's contact: the consulted agent takes it over (warm transfer).
    HandOver,
    /// The customer's contact: its consult leg is gone.
    ConsultEnded,
    /// A consult leg: closed by the consulting agent (transfer done, or cancelled).
    CloseLeg,
    /// A supervisor starts, changes or stops monitoring the call.
    Monitor,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::Offer,
        Action::Accept,
        Action::Reject,
        Action::NoAnswer,
        Action::Hold,
        Action::Resume,
        Action::PauseRecording,
        Action::ResumeRecording,
        Action::Transfer,
        Action::End,
        Action::WrapUp,
        Action::Overflow,
        Action::TimeOut,
        Action::Consult,
        Action::Conference,
        Action::HandOver,
        Action::ConsultEnded,
        Action::CloseLeg,
        Action::Monitor,
    ];

    /// How refusals name the action ("cannot accept a contact that …").
    pub fn verb(self) -> &'static str {
        match self {
            Action::Offer => "offer",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::NoAnswer => "time out the offer of",
            Action::Hold => "hold",
            Action::Resume => "resume",
            Action::PauseRecording => "pause the recording of",
            Action::ResumeRecording => "resume the recording of",
            Action::Transfer => "transfer",
            Action::End => "end",
            Action::WrapUp => "wrap up",
            Action::Overflow => "overflow",
            Action::TimeOut => "time out",
            Action::Consult => "consult on",
            Action::Conference => "conference on",
            Action::HandOver => "hand over",
            Action::ConsultEnded => "end the consult of",
            Action::CloseLeg => "close the consult leg of",
            Action::Monitor => "monitor",
        }
    }
}

/// The state `action` leads to from `from`, or why it is not allowed.
pub fn next(from: ContactState, action: Action) -> Result<ContactState, Refusal> {
    use Action as A;
    use ContactState as S;
    let to = match (from, action) {
        (S::Queued, A::Offer) => S::Offered,
        (S::Queued, A::Overflow) => S::Queued,
        (S::Queued, A::TimeOut) => S::TimedOut,
        (S::Queued | S::Offered, A::End) => S::Abandoned,
        (S::Offered, A::Accept) => S::Connected,
        (S::Offered, A::Reject | A::NoAnswer) => S::Queued,
        (S::Connected, A::Hold | A::Resume | A::PauseRecording | A::ResumeRecording | A::Monitor) => S::Connected,
        (S::Connected, A::Transfer) => S::Queued,
        (S::Connected, A::End) => S::AfterContactWork,
        (S::AfterContactWork, A::WrapUp) => S::Closed,
        (S::Connected, A::Consult | A::Conference | A::HandOver) => S::Connected,
        (S::Connected | S::AfterContactWork, A::ConsultEnded) => from,
        (S::Queued | S::Offered | S::Connected, A::CloseLeg) => S::Closed,
        _ => return Err(Refusal::IllegalMove { action, state: from }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_accept_nothing() {
        for s in ContactState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for a in Action::ALL {
                assert!(next(s, a).is_err(), "{s:?} {a:?}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_its_branches() {
        use Action as A;
        use ContactState as S;
        let mut s = S::Queued;
        for (a, to) in [
            (A::Offer, S::Offered),
            (A::Reject, S::Queued),
            (A::Offer, S::Offered),
            (A::Accept, S::Connected),
            (A::Hold, S::Connected),
            (A::Transfer, S::Queued),
            (A::Offer, S::Offered),
            (A::Accept, S::Connected),
            (A::End, S::AfterContactWork),
            (A::WrapUp, S::Closed),
        ] {
            s = next(s, a).expect("legal");
            assert_eq!(s, to);
        }
        assert_eq!(next(S::Offered, A::End).ok(), Some(S::Abandoned));
        assert_eq!(next(S::Queued, A::TimeOut).ok(), Some(S::TimedOut));
    }

    #[test]
    fn illegal_moves_say_why() {
        let e = next(ContactState::Queued, Action::Accept).expect_err("illegal");
        assert_eq!(e.to_string(), "cannot accept a contact that is queued");
        let legal = ContactState::ALL
            .iter()
            .flat_map(|s| Action::ALL.iter().map(move |a| (*s, *a)))
            .filter(|(s, a)| next(*s, *a).is_ok());
        assert_eq!(legal.count(), 24);
        let e = next(ContactState::AfterContactWork, Action::HandOver).expect_err("illegal");
        assert_eq!(e.to_string(), "cannot hand over a contact that is in after-contact work");
    }
}
