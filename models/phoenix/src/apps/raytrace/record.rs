//! What one ray-tracing run produced, whichever way its machines ran (simulated tasks, tasks of one
//! real process, or OS processes): the raw measurements the experiment turns into metrics.

use std::collections::BTreeMap;

use super::events::Counters;
use crate::protocol::ids::Id;

/// Times are seconds from the start of the run (virtual in the simulator, wall clock otherwise).
#[derive(Debug, Default)]
pub struct RunRecord {
    /// Time of the last rendered tile.
    pub end: f64,
    /// (time, +1 or -1): a machine started, or was asked to leave.
    pub membership: Vec<(f64, f64)>,
    /// (time, ± clock rate in Hz) at the same changes (the simulator's capacity).
    pub capacity: Vec<(f64, f64)>,
    /// (time, cycles at `CYCLES_PER_TEST`, pixels) per rendered tile.
    pub progress: Vec<(f64, u64, u64)>,
    /// (what, seconds) per membership change, as the driver saw it: leave = request to departure
    /// (IDs and data handed off, every member acknowledged); join = start to owning its first IDs.
    pub rebalance: Vec<(String, f64)>,
    /// The same changes as the machines measured them themselves (OS processes only).
    pub rebalance_self: Vec<(String, f64)>,
    /// The final image's tiles, gathered from their owners.
    pub tiles: BTreeMap<Id, Vec<u8>>,
    /// Protocol counters summed over every machine.
    pub counters: Counters,
    /// (cycles at `CYCLES_PER_TEST`, CPU seconds) summed over the tiles whose render CPU time the
    /// machines measured (OS processes: a sample of the tiles); `None` where they do not.
    pub cpu_sample: Option<(u64, f64)>,
}
