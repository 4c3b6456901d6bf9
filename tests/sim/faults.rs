//! The fault schedule of the chaos phases: changing network conditions, partitions (an isolated
//! leader, a minority/majority split), crashes of one node, of the leader, or of all nodes at
//! once, disk loss on at most a minority of nodes at a time, and operators asking any node to
//! move leadership to any member (up or down, caught up or not), and operators changing the
//! membership (add, promote, remove: together, replacing members). It only decides; the
//! simulation (`mod.rs`) carries the faults out.

use super::network::Conditions;
use super::rng::SimRng;

/// Network conditions change this often during chaos.
pub const CONDITIONS_TICKS: u64 = 150;
/// Chance, at each change of conditions, that one node's clock runs slow, in thousandths.
pub const CLOCK_SKEW_PER_MILLE: u64 = 500;
/// A slow clock ticks with this chance per simulated tick, in thousandths (at least).
pub const SLOW_TICK_PER_MILLE_MIN: u64 = 50;

/// Chance per tick that a partition starts (when none is in force), in thousandths.
pub const PARTITION_PER_MILLE: u64 = 6;
/// A partition lasts between these many ticks.
pub const PARTITION_TICKS_MIN: u64 = 30;
pub const PARTITION_TICKS_MAX: u64 = 400;
pub const PARTITION_TICKS_SHORT_MAX: u64 = 100;
/// Chance per tick of a crash, in thousandths.
pub const CRASH_PER_MILLE: u64 = 6;
/// A crashed node stays down between these many ticks.
pub const DOWN_TICKS_MIN: u64 = 1;
pub const DOWN_TICKS_MAX: u64 = 250;
/// Chance that a single-node crash also loses the disk (when a minority allows it), in thousandths.
pub const DISK_LOSS_PER_MILLE: u64 = 300;
/// Chance per tick that a leadership transfer is asked for, in thousandths.
pub const TRANSFER_PER_MILLE: u64 = 4;
/// Chance per tick that an operator asks for a membership change, in thousandths.
pub const MEMBER_CHANGE_PER_MILLE: u64 = 5;

/// A fault to carry out now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Conditions(Conditions),
    /// Node `node`'s clock ticks with chance `per_mille` per tick (every other clock: always).
    /// The core may rely on no clock for safety, so a slow one only tests that.
    ClockSkew {
        node: usize,
        per_mille: u64,
    },
    /// Every clock ticks at the same rate.
    ClocksAligned,
    /// Cut the current leader (or a random node if none leads) off from the rest.
    IsolateLeader {
        until: u64,
    },
    /// Split into a minority and a majority, chosen at random.
    Split {
        until: u64,
    },
    HealPartition,
    CrashOne {
        lose_disk: bool,
        until: u64,
    },
    CrashLeader {
        until: u64,
    },
    CrashAll {
        until: u64,
    },
    /// Node `via` is asked to move leadership to node `to`.
    TransferLeader {
        via: usize,
        to: usize,
    },
    /// An operator asks for a membership change; `pick` chooses which, and of which node.
    ChangeMembers {
        pick: u64,
    },
}

/// The schedule's state.
pub struct Schedule {
    next_conditions: u64,
    partition_until: Option<u64>,
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule {
            next_conditions: 0,
            partition_until: None,
        }
    }

    /// The faults to carry out at tick `now` of a chaos phase.
    pub fn chaos_tick(&mut self, rng: &mut SimRng, now: u64, members: usize) -> Vec<Fault> {
        let mut faults = Vec::new();
        if now >= self.next_conditions {
            self.next_conditions = now + CONDITIONS_TICKS;
            let hostile = rng.chance(700);
            faults.push(Fault::Conditions(if hostile {
                Conditions {
                    loss_per_mille: rng.below(300),
                    dup_per_mille: rng.below(150),
                    delay_ticks_max: rng.between(1, 20),
                    straggler_per_mille: rng.below(60),
                }
            } else {
                Conditions::perfect()
            }));
            faults.push(if rng.chance(CLOCK_SKEW_PER_MILLE) {
                Fault::ClockSkew {
                    node: rng.index(members),
                    per_mille: rng.between(SLOW_TICK_PER_MILLE_MIN, 700),
                }
            } else {
                Fault::ClocksAligned
            });
        }
        match self.partition_until {
            Some(until) if now >= until => {
                self.partition_until = None;
                faults.push(Fault::HealPartition);
            }
            Some(_) => {}
            None if rng.chance(PARTITION_PER_MILLE) => {
                // Half the partitions are short: they heal while an isolated leader may still
                // believe it leads, which is when stale ballots meet new ones.
                let longest = if rng.chance(500) {
                    PARTITION_TICKS_SHORT_MAX
                } else {
                    PARTITION_TICKS_MAX
                };
                let until = now + rng.between(PARTITION_TICKS_MIN, longest);
                self.partition_until = Some(until);
                faults.push(if rng.chance(500) {
                    Fault::IsolateLeader { until }
                } else {
                    Fault::Split { until }
                });
            }
            None => {}
        }
        if rng.chance(CRASH_PER_MILLE) {
            let until = now + rng.between(DOWN_TICKS_MIN, DOWN_TICKS_MAX);
            faults.push(match rng.below(10) {
                0..=5 => Fault::CrashOne {
                    lose_disk: rng.chance(DISK_LOSS_PER_MILLE),
                    until,
                },
                6..=8 => Fault::CrashLeader { until },
                _ => Fault::CrashAll { until },
            });
        }
        if rng.chance(TRANSFER_PER_MILLE) {
            faults.push(Fault::TransferLeader {
                via: rng.index(members),
                to: rng.index(members),
            });
        }
        if rng.chance(MEMBER_CHANGE_PER_MILLE) {
            faults.push(Fault::ChangeMembers {
                pick: rng.next_u64(),
            });
        }
        faults
    }

    /// The faults heal: forget any partition in force.
    pub fn heal(&mut self) {
        self.partition_until = None;
    }
}
