//! An in-process [`Store`]: one [`KvState`] behind a mutex, no consensus.
//!
//! It assigns slots itself (every write is decided at once, in arrival order), so the servers can
//! be tested and benchmarked without a cluster. Switches make it fail on demand, to test how the
//! servers report [`StoreError`]s, and a write delay makes pipelining observable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::kv::KvState;
use crate::paxos::types::{Command, CommandId, Entry, NodeId, Op, Outcome, Value};
use crate::paxos::{MemberHistory, Membership, MEMBER_CHANGE_DELAY_SLOTS};
use crate::server::{Consistency, MemberStatus, NodeStatus, Store, StoreError};

/// The address a [`MemoryStore`] reports as its own.
const MEMORY_NODE_ADDR: &str = "memory";

/// A single-node store in memory. Clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// Shared by every clone (each connection and request holds one).
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The key-value state; slots are assigned under this lock, so they are dense and ordered.
    kv: OneNodeKv,
    /// The next command sequence number, so every write has a unique id like in a cluster.
    seq_next: AtomicU64,
    /// When set, writes and linearizable reads fail with this error (stale reads still work,
    /// like a node cut off from its quorum).
    failure: Mutex<Option<StoreError>>,
    /// What [`Store::healthy`] answers is the negation of this (default: healthy).
    unhealthy: AtomicBool,
    /// How long each write waits before it is applied (zero: none).
    write_delay: Mutex<Duration>,
    /// The consistency of the last read, so tests can check how a server mapped its request.
    last_read: Mutex<Option<Consistency>>,
}

/// The state of a one-member cluster (the store has no peers to change).
#[derive(Debug)]
struct OneNodeKv(Mutex<KvState>);

impl Default for OneNodeKv {
    fn default() -> OneNodeKv {
        let me = Membership::first_ids(1).expect("one voter is a membership");
        OneNodeKv(Mutex::new(KvState::new(MemberHistory::new(
            me,
            MEMBER_CHANGE_DELAY_SLOTS,
        ))))
    }
}

/// Locks ignoring poison: a panicking test thread must not cascade into every other request.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// An empty, healthy store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes writes and linearizable reads fail with `failure` (`None`: succeed again).
    pub fn set_failure(&self, failure: Option<StoreError>) {
        *lock(&self.inner.failure) = failure;
    }

    /// Sets what [`Store::healthy`] answers.
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.unhealthy.store(!healthy, Ordering::Relaxed);
    }

    /// Makes every write wait `delay` before it is applied.
    pub fn set_write_delay(&self, delay: Duration) {
        *lock(&self.inner.write_delay) = delay;
    }

    /// The consistency the last read asked for, if any read happened.
    pub fn last_read_consistency(&self) -> Option<Consistency> {
        *lock(&self.inner.last_read)
    }

    /// A copy of the current key-value state.
    pub fn snapshot(&self) -> KvState {
        lock(&self.inner.kv.0).clone()
    }

    fn failure(&self) -> Option<StoreError> {
        lock(&self.inner.failure).clone()
    }
}

impl Store for MemoryStore {
    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        let delay = *lock(&self.inner.write_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let id = CommandId::new(
            NodeId(0),
            0,
            self.inner.seq_next.fetch_add(1, Ordering::Relaxed),
        );
        let mut kv = lock(&self.inner.kv.0);
        let slot = kv.applied() + 1;
        match kv.apply(slot, &Value::Command(Command { id, op })) {
            Some((applied_id, outcome)) => {
                debug_assert_eq!(applied_id, id);
                Ok(outcome)
            }
            None => Err(StoreError::Unavailable("command id reused".into())),
        }
    }

    async fn read(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> Result<Option<Entry>, StoreError> {
        *lock(&self.inner.last_read) = Some(consistency);
        if consistency == Consistency::Linearizable {
            if let Some(failure) = self.failure() {
                return Err(failure);
            }
        }
        Ok(lock(&self.inner.kv.0).get(&key).cloned())
    }

    async fn transfer_leadership(&self, to: u16) -> Result<(), StoreError> {
        // The one member already leads; `check_transfer_target` refused any other id.
        debug_assert_eq!(to, 0);
        Ok(())
    }

    fn status(&self) -> NodeStatus {
        let (applied, digest) = {
            let mut kv = lock(&self.inner.kv.0);
            (kv.applied(), kv.digest())
        };
        NodeStatus {
            node: MEMORY_NODE_ADDR.into(),
            node_id: 0,
            role: "leader".into(),
            leader: Some(MEMORY_NODE_ADDR.into()),
            leader_id: Some(0),
            ballot: "1.0".into(),
            decided: applied,
            applied,
            digest: crate::node::status::digest_text(digest),
            members: vec![MemberStatus {
                id: 0,
                addr: MEMORY_NODE_ADDR.into(),
                role: super::MEMBER_ROLE_VOTER.to_string(),
                is_self: true,
                last_heard_ms_ago: Some(0),
                decided: Some(applied),
            }],
            datagrams: Default::default(),
            cluster_id: format!("{:016x}", 0),
            first_members: vec![super::MemberAddr {
                id: 0,
                addr: MEMORY_NODE_ADDR.into(),
            }],
        }
    }

    fn healthy(&self) -> bool {
        !self.inner.unhealthy.load(Ordering::Relaxed)
    }
}
