//! Where a waiting contact stands in its queue and how long it can expect to wait — what
//! media announces to a queued caller (`GetQueuePosition`).
//!
//! - **Position**: 1 + the contacts of the same queue waiting ahead of it in routing's order
//!   (the score — priority plus aging — now, then the earlier arrival, then the smaller id;
//!   `routing/src/core/README.md`). Skills are not weighed: a contact ahead that needs a
//!   skill nobody has still counts, as a caller ahead of you on the phone would.
//! - **Expected wait**: `position × mean handle time ÷ agents available` — every agent busy,
//!   each freeing at the queue's mean pace (the usual approximation of the field; Little's
//!   law with all servers occupied). Unknown without an agent or a handled contact.
//! - **Handle time** of a closing contact: connected to closed (hold and after-contact
//!   work included), for a customer's contact an agent took; the queue keeps its last
//!   [`HANDLE_SAMPLES`].

use centralita_platform::queue::QueueConfig;

use super::contact::routing_view;
use super::model::{Contact, ContactState, Millis};

/// How many of a queue's last handled contacts its mean handle time is taken over.
pub const HANDLE_SAMPLES: usize = 20;

const MS_PER_MINUTE: i128 = 60_000;

/// The position of `me` among `waiting` (the tenant's open contacts, in any order; `me`
/// among them or not) in its queue `q`: 1 is next; 0 when `me` is not waiting.
pub fn position(me: &Contact, waiting: &[Contact], q: &QueueConfig, now: Millis) -> u32 {
    if !is_waiting(me) {
        return 0;
    }
    let key = |c: &Contact| {
        let v = routing_view(c, q, now);
        let score = i128::from(v.priority) * MS_PER_MINUTE
            + i128::from(v.aging_per_minute) * i128::from((now - v.enqueued_at).max(0));
        (std::cmp::Reverse(score), v.enqueued_at, c.id.0.clone())
    };
    let mine = key(me);
    let ahead = waiting
        .iter()
        .filter(|c| c.id != me.id && c.queue == me.queue && is_waiting(c))
        .filter(|c| key(c) < mine)
        .count();
    u32::try_from(ahead + 1).unwrap_or(u32::MAX)
}

/// A customer's contact waiting to be offered.
pub fn is_waiting(c: &Contact) -> bool {
    c.state == ContactState::Queued && c.consult_of.is_none()
}

/// The mean of `handled` (milliseconds), 0 when empty.
pub fn mean_handle(handled: &[Millis]) -> Millis {
    match handled.len() {
        0 => 0,
        n => handled.iter().sum::<Millis>() / n as Millis,
    }
}

/// The wait to expect at `position` with `agents` available and `mean_handle`; `None` when
/// unknown (not waiting, no agent, no handle time).
pub fn expected_wait(position: u32, agents: u32, mean_handle: Millis) -> Option<Millis> {
    if position == 0 || agents == 0 || mean_handle <= 0 {
        return None;
    }
    Some(Millis::from(position) * mean_handle / Millis::from(agents))
}

/// How long closing contact `c` was handled and when it closed (Unix ms), when an agent
/// handled it: a customer's contact that was connected.
pub fn handled(c: &Contact) -> Option<(Millis, Millis)> {
    if c.consult_of.is_some() {
        return None;
    }
    let (connected, closed) = (c.connected_at?, c.closed_at.or(c.ended_at)?);
    (closed >= connected).then_some((closed - connected, closed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Channel, ContactId, CustomerTier};
    use centralita_platform::tenant::TenantId;

    fn queued(id: &str, queue: &str, at: Millis) -> Contact {
        Contact::queued(
            TenantId::parse("acme").unwrap(),
            ContactId(id.into()),
            Channel::Voice,
            queue.into(),
            "default".into(),
            at,
        )
    }

    fn config(aging: u32, vip_boost: u32) -> QueueConfig {
        QueueConfig { aging_per_minute: aging, vip_boost, ..crate::core::tests::queue("sales") }
    }

    #[test]
    fn the_position_follows_routings_order_within_the_queue() {
        let q = config(0, 0);
        let first = queued("c1", "sales", 1_000);
        let second = queued("c2", "sales", 2_000);
        let other_queue = queued("c0", "billing", 500);
        let mut offered = queued("c-1", "sales", 100);
        offered.state = ContactState::Offered;
        let all = vec![second.clone(), other_queue, offered, first.clone()];
        assert_eq!(position(&first, &all, &q, 10_000), 1);
        assert_eq!(position(&second, &all, &q, 10_000), 2);
        // A VIP arriving later goes ahead of both, as routing offers it first.
        let mut vip = queued("c3", "sales", 5_000);
        vip.tier = CustomerTier::Vip;
        let all = [all, vec![vip.clone()]].concat();
        let q = config(0, 10);
        assert_eq!(position(&vip, &all, &q, 10_000), 1);
        assert_eq!(position(&second, &all, &q, 10_000), 3);
        // Not waiting: no position.
        let mut connected = first;
        connected.state = ContactState::Connected;
        assert_eq!(position(&connected, &all, &q, 10_000), 0);
    }

    #[test]
    fn aging_lets_an_old_contact_pass_a_newer_higher_priority_one() {
        // 1 point per minute: the contact waiting 10 minutes outranks one of priority 5
        // that just arrived.
        let q = config(1, 0);
        let old = queued("a", "sales", 0);
        let mut urgent = queued("b", "sales", 600_000);
        urgent.priority = 5;
        let all = vec![old.clone(), urgent.clone()];
        assert_eq!(position(&old, &all, &q, 600_000), 1);
        assert_eq!(position(&urgent, &all, &q, 600_000), 2);
        // At 3 minutes the newer one was still ahead.
        let mut early = urgent;
        early.enqueued_at = Some(180_000);
        assert_eq!(position(&early, &[old, early.clone()], &q, 180_000), 1);
    }

    #[test]
    fn the_expected_wait_scales_with_position_and_agents() {
        assert_eq!(mean_handle(&[]), 0);
        assert_eq!(mean_handle(&[60_000, 120_000]), 90_000);
        assert_eq!(expected_wait(3, 2, 90_000), Some(135_000));
        assert_eq!(expected_wait(1, 1, 90_000), Some(90_000));
        assert_eq!(expected_wait(0, 1, 90_000), None);
        assert_eq!(expected_wait(2, 0, 90_000), None);
        assert_eq!(expected_wait(2, 1, 0), None);
    }

    #[test]
    fn only_a_customers_connected_contact_has_a_handle_time() {
        let mut c = queued("c1", "sales", 0);
        c.state = ContactState::Closed;
        assert_eq!(handled(&c), None, "never connected (abandoned)");
        c.connected_at = Some(10_000);
        c.closed_at = Some(70_000);
        assert_eq!(handled(&c), Some((60_000, 70_000)));
        c.consult_of = Some(ContactId("c0".into()));
        assert_eq!(handled(&c), None, "a consult leg");
    }
}
