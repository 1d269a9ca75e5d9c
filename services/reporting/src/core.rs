//! The aggregation core: pure, no I/O.
//!
//! Contact events fold into **legs**: one leg per time a contact enters a queue (created,
//! transferred, overflowed), and one per warm transfer, where the consulted agent takes the
//! contact over without it waiting anywhere (a handed-over leg: handling only, no queue
//! side). A consult leg (agents calling each other) is a leg of its own contact that counts
//! only as the agents' busy time. A leg records when it entered, when and how it left the queue
//! (answered, abandoned, overflowed, timed out, transferred while waiting), and for an
//! answered leg the handling: hold time, end of talk, end of after-contact work.
//!
//! Figures come from legs, with one definition of each metric (`docs/metrics.md`):
//! * queue figures (offered, answered, abandoned, service level, ASA, abandon rate) belong
//!   to the interval in which the leg **entered** the queue, so a contact answered after
//!   the interval boundary still counts where it was offered;
//! * handle figures (handled, AHT, talk, hold, after-contact work) belong to the interval
//!   in which the handling **ended** (after-contact work done, or transferred away).
//!
//! A figure whose denominator is zero is absent, not zero.

use centralita_platform::queue::{AbandonRateDefinition, ServiceLevelDefinition};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The channel a contact came on, as reporting keeps it. Its text form ([`Channel::as_str`])
/// is what the `legs.channel` column stores and what rows grouped by channel show, so it
/// never changes once written; the protobuf enum's numbers stay at the adapter
/// (`store::fact`). A channel this build does not know is `Unspecified`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    #[default]
    Unspecified,
    Voice,
    Chat,
    Sms,
    Email,
    Social,
    Task,
}

impl Channel {
    pub const ALL: [Channel; 7] =
        [Self::Unspecified, Self::Voice, Self::Chat, Self::Sms, Self::Email, Self::Social, Self::Task];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Voice => "voice",
            Self::Chat => "chat",
            Self::Sms => "sms",
            Self::Email => "email",
            Self::Social => "social",
            Self::Task => "task",
        }
    }

    /// The channel named `s` ([`Channel::as_str`]'s inverse).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How a leg left its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Waiting = 0,
    Answered = 1,
    Abandoned = 2,
    Overflowed = 3,
    TimedOut = 4,
    /// Moved to another queue or agent before anyone answered.
    TransferredWaiting = 5,
}

impl Outcome {
    pub fn from_i16(v: i16) -> Option<Self> {
        Some(match v {
            0 => Self::Waiting,
            1 => Self::Answered,
            2 => Self::Abandoned,
            3 => Self::Overflowed,
            4 => Self::TimedOut,
            5 => Self::TransferredWaiting,
            _ => return None,
        })
    }
}

/// One contact's stay in one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub tenant: String,
    pub contact: String,
    /// 0 for the first queue the contact entered, then 1, 2, ...
    pub seq: i32,
    pub queue: String,
    pub channel: Channel,
    pub enqueued_at: Millis,
    pub outcome: Outcome,
    /// When it left the queue (any outcome but `Waiting`).
    pub left_at: Option<Millis>,
    pub agent: String,
    pub held_since: Option<Millis>,
    pub hold_ms: i64,
    /// End of talk (the conversation ended, or the agent transferred it away).
    pub ended_at: Option<Millis>,
    /// End of handling: after-contact work done, or transferred away.
    pub handled_at: Option<Millis>,
    pub transferred: bool,
    pub offers: i32,
    pub declines: i32,
    pub disposition: String,
    pub role: Role,
}

/// What a leg counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A customer's stay in a queue and its handling: queue, handling and agent figures.
    Customer = 0,
    /// Opened by a warm transfer: answered by the consulted agent the moment it took the
    /// contact over. It never waited in a queue: handling and agent figures only.
    HandedOver = 1,
    /// A consult leg: agents talking to each other, not a customer. It counts only as the
    /// agents' busy time.
    Consult = 2,
}

impl Role {
    pub fn from_i16(v: i16) -> Option<Self> {
        Some(match v {
            0 => Self::Customer,
            1 => Self::HandedOver,
            2 => Self::Consult,
            _ => return None,
        })
    }

    /// Counts in the queue figures (offered, answered, service level, ...).
    pub fn queue_side(self) -> bool {
        self == Self::Customer
    }

    /// Counts in the handling figures (handled, AHT, ...).
    pub fn handling_side(self) -> bool {
        self != Self::Consult
    }
}

impl Leg {
    pub fn open(tenant: &str, contact: &str, seq: i32, queue: &str, channel: Channel, at: Millis) -> Self {
        Self {
            tenant: tenant.into(),
            contact: contact.into(),
            seq,
            queue: queue.into(),
            channel,
            enqueued_at: at,
            outcome: Outcome::Waiting,
            left_at: None,
            agent: String::new(),
            held_since: None,
            hold_ms: 0,
            ended_at: None,
            handled_at: None,
            transferred: false,
            offers: 0,
            declines: 0,
            disposition: String::new(),
            role: Role::Customer,
        }
    }

    /// Time from entering the queue to answer (or abandon, or any other exit).
    pub fn wait_ms(&self) -> Option<i64> {
        self.left_at.map(|l| l - self.enqueued_at)
    }

    pub fn answered_at(&self) -> Option<Millis> {
        (self.outcome == Outcome::Answered).then_some(self.left_at).flatten()
    }

    fn close_hold(&mut self, at: Millis) {
        if let Some(since) = self.held_since.take() {
            self.hold_ms += (at - since).max(0);
        }
    }

    /// The agent passes the contact on at `at`: talk and handling end, with no after-contact
    /// work.
    fn hand_off(&mut self, at: Millis) {
        self.close_hold(at);
        self.ended_at.get_or_insert(at);
        self.handled_at.get_or_insert(at);
        self.transferred = true;
    }

    fn leave(&mut self, outcome: Outcome, at: Millis) {
        if self.outcome == Outcome::Waiting {
            self.outcome = outcome;
            self.left_at = Some(at);
        }
    }
}

/// A contact event, reduced to what reporting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactFact {
    pub tenant: String,
    pub contact: String,
    pub kind: Kind,
    /// The contact's queue after the transition.
    pub queue: String,
    pub channel: Channel,
    pub agent: String,
    pub disposition: String,
    /// When the contact first entered a queue (for the first leg).
    pub enqueued_at: Option<Millis>,
    /// The contact is a consult leg.
    pub consult: bool,
    pub at: Millis,
}

/// The transitions reporting distinguishes (`centralita.sessions.v1.ContactEvent.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Queued,
    Offered,
    Accepted,
    Rejected,
    NotAnswered,
    Held,
    Resumed,
    Transferred,
    /// A warm transfer completed: the consulted agent (the fact's agent) holds the contact.
    HandedOver,
    /// A consult leg closed by the consulting agent (transfer, conference over, cancel).
    ConsultClosed,
    Ended,
    WrappedUp,
    Abandoned,
    Overflowed,
    TimedOut,
}

/// Applies `fact` to the contact's latest leg (`None` before its first). Returns the legs
/// to store: the latest one changed and, when the contact entered a new queue, the new
/// one after it. A fact that does not fit (an event of a contact whose start was never
/// seen) changes nothing.
pub fn apply(last: Option<Leg>, fact: &ContactFact) -> Vec<Leg> {
    let at = fact.at;
    let Some(mut leg) = last else {
        // The first leg opens with the contact's first event; any kind will do, so an event
        // stream picked up mid-way still counts what it can.
        let opened = Leg::open(
            &fact.tenant,
            &fact.contact,
            0,
            &fact.queue,
            fact.channel,
            fact.enqueued_at.unwrap_or(at).min(at),
        );
        let opened = Leg { role: if fact.consult { Role::Consult } else { Role::Customer }, ..opened };
        return match fact.kind {
            Kind::Queued => vec![opened],
            _ => apply(Some(opened), fact),
        };
    };
    let mut next = None;
    match fact.kind {
        Kind::Queued => {}
        Kind::Offered => leg.offers += 1,
        Kind::Rejected | Kind::NotAnswered => leg.declines += 1,
        Kind::Accepted => {
            leg.leave(Outcome::Answered, at);
            if !fact.agent.is_empty() {
                leg.agent.clone_from(&fact.agent);
            }
        }
        Kind::Held => {
            if leg.held_since.is_none() {
                leg.held_since = Some(at);
            }
        }
        Kind::Resumed => leg.close_hold(at),
        Kind::Ended => {
            leg.close_hold(at);
            leg.ended_at.get_or_insert(at);
        }
        Kind::WrappedUp => {
            leg.close_hold(at);
            leg.ended_at.get_or_insert(at);
            leg.handled_at.get_or_insert(at);
            leg.disposition.clone_from(&fact.disposition);
        }
        Kind::Abandoned => leg.leave(Outcome::Abandoned, at),
        Kind::TimedOut => leg.leave(Outcome::TimedOut, at),
        Kind::Overflowed => {
            leg.leave(Outcome::Overflowed, at);
            next = Some(Leg::open(&fact.tenant, &fact.contact, leg.seq + 1, &fact.queue, fact.channel, at));
        }
        Kind::Transferred => {
            if leg.outcome == Outcome::Answered {
                leg.hand_off(at);
            } else {
                leg.leave(Outcome::TransferredWaiting, at);
            }
            next = Some(Leg::open(&fact.tenant, &fact.contact, leg.seq + 1, &fact.queue, fact.channel, at));
        }
        Kind::ConsultClosed => {
            if leg.outcome == Outcome::Answered {
                leg.close_hold(at);
                leg.ended_at.get_or_insert(at);
                leg.handled_at.get_or_insert(at);
            } else {
                leg.leave(Outcome::Abandoned, at);
            }
        }
        Kind::HandedOver => {
            // The consulting agent's handling ends here; the consulted agent's starts on a
            // leg of its own, answered at once. (A stream picked up mid-way may not have
            // seen the answer.)
            if leg.outcome == Outcome::Answered {
                leg.hand_off(at);
            } else {
                leg.leave(Outcome::TransferredWaiting, at);
            }
            let mut taken = Leg::open(&fact.tenant, &fact.contact, leg.seq + 1, &fact.queue, fact.channel, at);
            taken.leave(Outcome::Answered, at);
            taken.agent.clone_from(&fact.agent);
            taken.role = Role::HandedOver;
            next = Some(taken);
        }
    }
    // A consult leg moved on (overflowed, transferred) is still agents talking.
    let next = next.map(|n| if leg.role == Role::Consult { Leg { role: Role::Consult, ..n } } else { n });
    let mut out = vec![leg];
    out.extend(next);
    out
}

/// Per-queue settings the figures depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueRules {
    pub threshold_ms: i64,
    pub short_abandon_ms: i64,
}

impl Default for QueueRules {
    fn default() -> Self {
        Self { threshold_ms: 20_000, short_abandon_ms: 5_000 }
    }
}

/// Additive counts of a set of legs: sums over intervals, queues and channels stay exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub offered: u64,
    pub answered: u64,
    pub answered_within: u64,
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub abandoned_within: u64,
    /// Left the queue (any way) within the threshold.
    pub left_within: u64,
    pub overflowed: u64,
    pub timed_out: u64,
    pub transferred_waiting: u64,
    /// Still in the queue.
    pub waiting: u64,
    pub answered_wait_ms: i64,
    pub handled: u64,
    pub handle_ms: i64,
    pub talk_ms: i64,
    pub hold_ms: i64,
    pub acw_ms: i64,
    pub transferred: u64,
}

impl Counts {
    /// Adds the queue side of `leg` (call for the interval it entered the queue). Only a
    /// customer's leg has one.
    pub fn add_queue(&mut self, leg: &Leg, rules: QueueRules) {
        if !leg.role.queue_side() {
            return;
        }
        self.offered += 1;
        let wait = leg.wait_ms();
        let within = wait.is_some_and(|w| w <= rules.threshold_ms);
        if within {
            self.left_within += 1;
        }
        match leg.outcome {
            Outcome::Waiting => self.waiting += 1,
            Outcome::Answered => {
                self.answered += 1;
                self.answered_wait_ms += wait.unwrap_or(0);
                if within {
                    self.answered_within += 1;
                }
            }
            Outcome::Abandoned => {
                self.abandoned += 1;
                if wait.is_some_and(|w| w <= rules.short_abandon_ms) {
                    self.short_abandoned += 1;
                }
                if within {
                    self.abandoned_within += 1;
                }
            }
            Outcome::Overflowed => self.overflowed += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::TransferredWaiting => self.transferred_waiting += 1,
        }
    }

    /// Adds the handling side of `leg` (call for the interval its handling ended in).
    pub fn add_handling(&mut self, leg: &Leg) {
        if !leg.role.handling_side() {
            return;
        }
        let (Some(answered), Some(done)) = (leg.answered_at(), leg.handled_at) else { return };
        let ended = leg.ended_at.unwrap_or(done).clamp(answered, done);
        let hold = leg.hold_ms.clamp(0, ended - answered);
        self.handled += 1;
        self.handle_ms += done - answered;
        self.hold_ms += hold;
        self.talk_ms += ended - answered - hold;
        self.acw_ms += done - ended;
        if leg.transferred {
            self.transferred += 1;
        }
    }

    pub fn merge(&mut self, o: &Counts) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.answered_within += o.answered_within;
        self.abandoned += o.abandoned;
        self.short_abandoned += o.short_abandoned;
        self.abandoned_within += o.abandoned_within;
        self.left_within += o.left_within;
        self.overflowed += o.overflowed;
        self.timed_out += o.timed_out;
        self.transferred_waiting += o.transferred_waiting;
        self.waiting += o.waiting;
        self.answered_wait_ms += o.answered_wait_ms;
        self.handled += o.handled;
        self.handle_ms += o.handle_ms;
        self.talk_ms += o.talk_ms;
        self.hold_ms += o.hold_ms;
        self.acw_ms += o.acw_ms;
        self.transferred += o.transferred;
    }

    /// Numerator and denominator of the service level under `definition`.
    pub fn service_level_parts(&self, definition: ServiceLevelDefinition) -> (u64, u64) {
        match definition {
            ServiceLevelDefinition::Default => {
                (self.answered_within, (self.answered + self.abandoned).saturating_sub(self.short_abandoned))
            }
            ServiceLevelDefinition::Answered => (self.answered_within, self.answered),
            ServiceLevelDefinition::AnsweredAndAbandoned => {
                (self.answered_within + self.abandoned_within, self.answered + self.abandoned)
            }
            ServiceLevelDefinition::LeftQueue => (self.left_within, self.offered),
        }
    }

    /// Service level in percent under `definition`.
    pub fn service_level(&self, definition: ServiceLevelDefinition) -> Option<f64> {
        let (num, den) = self.service_level_parts(definition);
        ratio(num as f64, den as f64)
    }

    /// Abandon rate in percent under `definition`.
    pub fn abandon_rate(&self, definition: AbandonRateDefinition) -> Option<f64> {
        match definition {
            AbandonRateDefinition::Default => ratio(self.abandoned as f64, self.offered as f64),
            AbandonRateDefinition::ExcludingShort => ratio(
                self.abandoned.saturating_sub(self.short_abandoned) as f64,
                self.offered.saturating_sub(self.short_abandoned) as f64,
            ),
        }
    }

    /// Average speed of answer, seconds.
    pub fn asa_seconds(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.answered_wait_ms as f64 / 1000.0 / self.answered as f64)
    }

    /// Average handle time (talk + hold + after-contact work), seconds.
    pub fn aht_seconds(&self) -> Option<f64> {
        (self.handled > 0).then(|| self.handle_ms as f64 / 1000.0 / self.handled as f64)
    }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| 100.0 * num / den)
}

/// Start of the 15-minute interval holding `at`.
pub fn interval_start(at: Millis) -> Millis {
    at.div_euclid(INTERVAL_MS) * INTERVAL_MS
}

pub const INTERVAL_MS: i64 = 15 * 60 * 1000;

pub mod agents;
pub mod rollup;

#[cfg(test)]
mod tests;
