//! Which events a consumer has handled already: the [`Dedupe`] port and its in-process
//! implementation (the Redis one is [`crate::cache::RedisDedupe`]).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::event::Event;
use crate::error::Error;

/// Remembers which events a consumer (its `scope`, usually the group id) has handled.
/// `seen` is asked before handling and `mark` called after, so a crash between the two
/// replays the event: handlers must be idempotent as well.
pub trait Dedupe: Send + Sync + 'static {
    fn seen(&self, scope: &str, event: &Event) -> impl Future<Output = Result<bool, Error>> + Send;
    fn mark(&self, scope: &str, event: &Event) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Handled `(scope, event id)` pairs, and the order they came in (for eviction).
type Remembered = (HashSet<(String, Uuid)>, VecDeque<(String, Uuid)>);

/// In-process dedupe over the last `capacity` event ids: for consumers whose handler is
/// naturally idempotent and only needs to skip obvious replays within one process.
#[derive(Debug, Clone)]
pub struct MemoryDedupe {
    inner: Arc<Mutex<Remembered>>,
    capacity: usize,
}

impl MemoryDedupe {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Arc::default(), capacity: capacity.max(1) }
    }
}

impl Dedupe for MemoryDedupe {
    async fn seen(&self, scope: &str, event: &Event) -> Result<bool, Error> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.0.contains(&(scope.to_owned(), event.id)))
    }

    async fn mark(&self, scope: &str, event: &Event) -> Result<(), Error> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (scope.to_owned(), event.id);
        if g.0.insert(key.clone()) {
            g.1.push_back(key);
            while g.1.len() > self.capacity {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantId;
    use centralita_proto::tenancy::v1 as tpb;

    #[tokio::test]
    async fn memory_dedupe_is_bounded() {
        let d = MemoryDedupe::new(2);
        let t = tpb::Tenant::default();
        let id = TenantId::parse("acme").expect("id");
        let (a, b, c) = (Event::new(id.clone(), &t), Event::new(id.clone(), &t), Event::new(id, &t));
        for e in [&a, &b, &c] {
            d.mark("g", e).await.expect("mark");
        }
        assert!(!d.seen("g", &a).await.expect("seen"), "oldest evicted");
        assert!(d.seen("g", &c).await.expect("seen"));
        assert!(!d.seen("other", &c).await.expect("seen"), "scopes are separate");
    }
}
