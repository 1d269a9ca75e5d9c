//! Following a conversation: what one party sees change (new messages in sequence order,
//! the other party's typing and read marker), from a sequence on. Used by the agents' gRPC
//! stream and the customer's WebSocket alike.
//!
//! Every write wakes the followers of that conversation at once: on this replica directly
//! ([`Hub::touch`]), on every replica through PostgreSQL's LISTEN/NOTIFY
//! ([`super::listen`]). Followers also look every [`POLL`], which covers notifications lost
//! while a replica reconnects and typing markers that simply expire. Either way the
//! messages come from the store by sequence, so a follower misses and repeats nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::model::Message;
use super::store::{self, Party};

/// How often a follower looks without being woken.
pub const POLL: Duration = Duration::from_secs(2);
/// Messages read at once.
const BATCH: i64 = 200;

/// Wakes the followers of a conversation on this replica when it is written.
#[derive(Debug, Default)]
pub struct Hub {
    conversations: Mutex<HashMap<(TenantId, String), watch::Sender<u64>>>,
}

impl Hub {
    pub fn subscribe(&self, tenant: &TenantId, contact: &str) -> watch::Receiver<u64> {
        let mut map = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((tenant.clone(), contact.to_owned())).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Every follower looks again (after notifications may have been missed).
    pub fn touch_all(&self) {
        let mut map = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        for tx in map.values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The conversation was written: its followers look again.
    pub fn touch(&self, tenant: &TenantId, contact: &str) {
        let mut map = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), contact.to_owned());
        if let Some(tx) = map.get(&key) {
            if tx.receiver_count() == 0 {
                map.remove(&key);
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

/// What a follower sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Message(Box<Message>),
    /// The other party started or stopped typing.
    Typing(bool),
    /// The other party has read up to this sequence.
    Read(i64),
}

/// One party following one conversation.
#[derive(Debug)]
pub struct Follower {
    tenant: TenantId,
    contact: String,
    viewer: Party,
    after: i64,
    typing: bool,
    read: i64,
    wake: watch::Receiver<u64>,
}

impl Follower {
    /// Follows from the messages after `after`.
    pub fn new(hub: &Hub, tenant: TenantId, contact: String, viewer: Party, after: i64) -> Self {
        let wake = hub.subscribe(&tenant, &contact);
        Self { tenant, contact, viewer, after: after.max(0), typing: false, read: 0, wake }
    }

    /// The last sequence delivered.
    pub fn position(&self) -> i64 {
        self.after
    }

    /// What changed since the last call: at once if something did, otherwise after the next
    /// write or [`POLL`], possibly nothing (so the caller can check on its side too).
    /// `NotFound` when the conversation does not exist.
    pub async fn next(&mut self, pool: &Pool) -> Result<Vec<Update>, Error> {
        let mut waited = false;
        loop {
            // Mark what is seen now, before reading, so a write after the read wakes us.
            self.wake.borrow_and_update();
            let updates = self.read_changes(pool).await?;
            if !updates.is_empty() || waited {
                return Ok(updates);
            }
            tokio::select! {
                _ = self.wake.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            waited = true;
        }
    }

    async fn read_changes(&mut self, pool: &Pool) -> Result<Vec<Update>, Error> {
        let head = store::conversation(pool, &self.tenant, &self.contact)
            .await?
            .ok_or_else(|| Error::NotFound(format!("conversation of contact {}", self.contact)))?;
        let mut updates = Vec::new();
        if head.last_seq > self.after {
            for m in store::messages_after(pool, &self.tenant, &self.contact, self.after, BATCH).await? {
                self.after = m.sequence;
                updates.push(Update::Message(Box::new(m)));
            }
        }
        let (typing, read) = match self.viewer {
            Party::Agent => (head.customer_typing, head.customer_read_seq),
            Party::Customer => (head.agent_typing, head.agent_read_seq),
        };
        if typing != self.typing {
            self.typing = typing;
            updates.push(Update::Typing(typing));
        }
        if read > self.read {
            self.read = read;
            updates.push(Update::Read(read));
        }
        Ok(updates)
    }
}
