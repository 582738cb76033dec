//! The multiprocessor VMP as a [`LitmusMachine`]: each litmus thread on its own virtual processor,
//! each processor on its own simulated host, run with the bare runner (`smp::bare`).
//!
//! The seed picks the simulated run (network delays, every host's random stream) and an
//! adversarial schedule drawn from it: the longest quantum (1 to 256 instructions; each quantum's
//! length is then random up to it), the largest extra delay before every publish and apply, and
//! the largest start skew between processors, and the largest pause after each quantum
//! (preemption). Short quanta and long delays keep writes buffered
//! across the other processors' reads; long quanta let a whole thread run in one epoch.

use anyhow::{ensure, Result};
use gridbed_runtime::HostId;
use gridbed_sim::{Platform, SimConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Assembled, LitmusMachine, Outcome};
use crate::smp::bare::{self, BareProgram};
use crate::smp::{SmpOptions, Variant};

/// Longest quanta the schedule draws from, in guest instructions.
const QUANTA: [u64; 5] = [1, 4, 16, 64, 256];
/// Largest extra delays before each publish and apply, in seconds: from well below a gige-tcp
/// round trip to above the modelled cost of a write fault plus twin and diff of one page
/// (~2 ms: 2 x 1024 PEEKDATA, `smp/cost.rs`), so a delay can outlast another processor's epoch.
const JITTERS_S: [f64; 4] = [1e-6, 50e-6, 1e-3, 4e-3];
/// Largest start skews, in seconds: up to a few publishes' worth of modelled monitor time, so a
/// late processor can start after another's writes are ordered and applied.
const SKEWS_S: [f64; 4] = [0.0, 100e-6, 2e-3, 8e-3];
/// Largest pauses after each quantum (preemption of the monitor process), in seconds.
const PREEMPTS_S: [f64; 3] = [0.0, 50e-6, 2e-3];

/// Runs litmus code on the multiprocessor VMP over simulated `gige-tcp` hosts.
#[derive(Copy, Clone, Debug)]
pub struct SmpMachine {
    pub variant: Variant,
}

impl SmpMachine {
    pub fn new(variant: Variant) -> Self {
        SmpMachine { variant }
    }

    /// The options for `n` processors under `seed`'s adversarial schedule.
    pub fn options(&self, n: usize, seed: u64) -> SmpOptions {
        // A stream of its own, so the schedule does not correlate with the hosts' streams.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c69_746d_7573);
        let mut o = bare::litmus_options((0..n as u32).map(HostId).collect(), self.variant);
        o.quantum = QUANTA[rng.gen_range(0..QUANTA.len())];
        o.jitter_s = JITTERS_S[rng.gen_range(0..JITTERS_S.len())];
        o.start_skew_s = SKEWS_S[rng.gen_range(0..SKEWS_S.len())];
        o.preempt_s = PREEMPTS_S[rng.gen_range(0..PREEMPTS_S.len())];
        o
    }
}

impl LitmusMachine for SmpMachine {
    fn run(&mut self, asm: &Assembled, seed: u64) -> Result<Outcome> {
        let n = asm.cpus.len();
        let programs: Vec<BareProgram> = asm
            .cpus
            .iter()
            .map(|c| BareProgram {
                addr: c.entry,
                code: c.bytes.clone(),
            })
            .collect();
        let init: Vec<(u32, Vec<u8>)> = asm
            .init_words
            .iter()
            .map(|&(a, v)| (a, v.to_le_bytes().to_vec()))
            .collect();
        let opts = self.options(n, seed);
        let cfg = SimConfig::new(Platform::lans(1, n, "gige-tcp")?, seed);
        let out = gridbed_sim::run(cfg, move |c| {
            Box::pin(async move { bare::run(c, programs, init, opts).await })
        })
        .value?;
        // One global order (I1): when the machine stops every copy of memory is the same.
        for (base, size) in asm.regions() {
            ensure!(
                out.copies_agree(base, size as usize),
                "{} seed {seed}: processors' copies of {base:#x}+{size:#x} differ",
                asm.name
            );
        }
        // Every change to memory came from a store the monitor recorded.
        for c in &out.cpus {
            ensure!(
                c.counts.unseen_bytes == 0,
                "{} seed {seed}: processor {} changed {} bytes without a recorded store",
                asm.name,
                c.cpu,
                c.counts.unseen_bytes
            );
        }
        asm.outcome(|a| Ok(out.read_u32(a)))
    }
}
