//! The simulator's one source of randomness: a seeded SplitMix64. Everything random in a run
//! (network, faults, clients, each replica's seed) is drawn from it in a fixed order, so a seed
//! replays the same run.

use consens::internals::paxos::rng::Rng;

/// The core's SplitMix64 (`consens::internals::paxos::rng`), with the draws the simulator needs on top.
#[derive(Clone, Debug)]
pub struct SimRng(Rng);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A value in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0.below(bound)
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A uniformly chosen index into a slice of `len` elements (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// FNV-1a over 64-bit words: the trace hash that proves a seed replays identically.
#[derive(Clone, Debug)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> TraceHash {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    pub fn add(&mut self, word: u64) {
        for byte in word.to_le_bytes() {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}
