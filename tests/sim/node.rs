//! A simulated node: a `Replica`, its simulated disk, and the model key-value state it applies
//! decided values to. The node carries out each `Ready` in the contract's order (persist, send,
//! sync later, apply, answer reads) and reports what it applied and which reads it answered.
//!
//! The disk: records handed out by `Ready::persist` are appended but only become durable when a
//! sync fires, a random number of ticks later; then the replica hears `durable(index)`. A crash
//! truncates the disk to its durable prefix; a disk loss empties it.

use super::kv::ModelKv;
use super::network::Network;
use super::rng::SimRng;
use bytes::Bytes;
use consens::paxos::types::{NodeId, Outcome, Slot, Value};
use consens::paxos::{Config, ReadId, Record, Recovered, Replica, Role};
use std::collections::BTreeMap;

/// What a node did that the rest of the simulation must know about.
pub enum NodeEvent {
    /// The node applied `value` at `slot`; `outcome` is `None` for a no-op or for a command
    /// id already applied (at most once).
    Applied {
        slot: Slot,
        value: Value,
        outcome: Option<Outcome>,
    },
    /// The read `id` was answered with the key's entry at that moment.
    ReadDone {
        id: ReadId,
        entry: Option<(Bytes, u64)>,
    },
}

/// Records and how many of them are durable.
#[derive(Default)]
pub struct Disk {
    /// Every record written, oldest first (across incarnations).
    pub records: Vec<Record>,
    /// `records[..durable]` survive a crash.
    pub durable: usize,
    /// `records.len()` when the current incarnation started: persist index 1 is `records[base]`.
    base: usize,
    /// When the next sync completes.
    sync_at: Option<u64>,
}

/// One member of the simulated cluster.
pub struct SimNode {
    pub id: NodeId,
    members: u16,
    /// `None` while crashed.
    pub replica: Option<Replica>,
    pub disk: Disk,
    pub kv: ModelKv,
    /// The slots applied by this incarnation, with the command each held (for the prefix check).
    pub applied: Vec<(Slot, Value)>,
    /// Reads in flight at this node: id -> key.
    reads: BTreeMap<ReadId, Bytes>,
    /// Lost its disk and has not yet made a `Joined` record durable again.
    pub amnesiac: bool,
}

impl SimNode {
    /// A node that has never run (empty disk), down until `start`.
    pub fn new(id: NodeId, members: u16) -> SimNode {
        SimNode {
            id,
            members,
            replica: None,
            disk: Disk::default(),
            kv: ModelKv::default(),
            applied: Vec::new(),
            reads: BTreeMap::new(),
            amnesiac: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// True while the node runs without the durable state it once had (it may not vote yet).
    pub fn is_stateless(&self) -> bool {
        self.amnesiac
    }

    pub fn role(&self) -> Option<Role> {
        self.replica.as_ref().map(|r| r.status().role)
    }

    /// Starts (or restarts) the node from its durable records.
    pub fn start(&mut self, config: Config, seed: u64) {
        assert_eq!(config.members, self.members, "config for another cluster");
        let mut recovered = Recovered::empty();
        for record in &self.disk.records[..self.disk.durable] {
            recovered.apply(record);
        }
        self.disk.records.truncate(self.disk.durable);
        self.disk.base = self.disk.records.len();
        self.disk.sync_at = None;
        self.replica = Some(Replica::new(config, recovered, seed));
        self.kv = ModelKv::default();
        self.applied.clear();
        self.reads.clear();
    }

    /// Crashes the node: unsynced records are lost; with `lose_disk`, all of them.
    pub fn crash(&mut self, lose_disk: bool) {
        self.replica = None;
        self.disk.records.truncate(self.disk.durable);
        self.disk.sync_at = None;
        if lose_disk {
            self.disk.records.clear();
            self.disk.durable = 0;
            self.amnesiac = true;
        }
        self.reads.clear();
    }

    /// Asks for a linearizable read of `key`.
    pub fn read(&mut self, id: ReadId, key: Bytes) {
        if let Some(replica) = self.replica.as_mut() {
            self.reads.insert(id, key);
            replica.read(id);
        }
    }

    /// Completes the pending sync if it is due; returns whether it did.
    pub fn sync_if_due(&mut self, now: u64) -> bool {
        let Some(replica) = self.replica.as_mut() else {
            return false;
        };
        match self.disk.sync_at {
            Some(at) if at <= now => {}
            _ => return false,
        }
        self.disk.sync_at = None;
        self.disk.durable = self.disk.records.len();
        replica.durable((self.disk.durable - self.disk.base) as u64);
        if self.amnesiac && self.disk.records.contains(&Record::Joined) {
            self.amnesiac = false;
        }
        true
    }

    /// Carries out every `Ready` until the replica is quiet. `sync_ticks_max` bounds how long a
    /// write waits for its sync.
    pub fn drain(
        &mut self,
        rng: &mut SimRng,
        now: u64,
        network: &mut Network,
        sync_ticks_max: u64,
        events: &mut Vec<NodeEvent>,
    ) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        loop {
            let ready = replica.take_ready();
            if ready.is_empty() {
                break;
            }
            // 1. Persist (written, not yet durable).
            let expected = self.disk.records.len() - self.disk.base + ready.persist.len();
            assert_eq!(
                expected as u64, ready.persist_upto,
                "persist_upto disagrees with the records handed out"
            );
            self.disk.records.extend(ready.persist);
            // 2. Send.
            for (to, message) in ready.messages {
                network.send(rng, now, self.id, to, message);
            }
            // 3. Sync later.
            if self.disk.records.len() > self.disk.durable && self.disk.sync_at.is_none() {
                self.disk.sync_at = Some(now + rng.below(sync_ticks_max + 1));
            }
            // 4. Apply.
            for (slot, value) in ready.apply {
                let outcome = match &value {
                    Value::Command(command) => self.kv.apply(slot, command.id, &command.op),
                    Value::Noop => None,
                };
                self.applied.push((slot, value.clone()));
                events.push(NodeEvent::Applied {
                    slot,
                    value,
                    outcome,
                });
            }
            // 5. Reads.
            for id in ready.reads_ready {
                if let Some(key) = self.reads.remove(&id) {
                    let entry = self.kv.get(&key).map(|e| (e.value.clone(), e.revision));
                    events.push(NodeEvent::ReadDone { id, entry });
                }
            }
            // 6. Snapshots: the simulation never compacts, so no peer ever needs one.
        }
    }
}
