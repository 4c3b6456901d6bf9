//! A fast hasher for command ids: the leader's duplicate filter and the node's table of writes
//! waiting for their outcome. `CommandId`s are (node, seq) pairs chosen by our own nodes, not
//! by clients, so a multiply-rotate hash is enough and spares SipHash's cost on every proposed
//! command; it is also deterministic, which the simulator likes.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing over the written words (the FxHash recipe).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }
}

/// Builds [`IdHasher`]s for `HashSet`/`HashMap`.
pub type IdHashBuilder = BuildHasherDefault<IdHasher>;
