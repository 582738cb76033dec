//! A sequentially consistent multiprocessor made of one unicorn processor: the processors'
//! register contexts take turns on it, one instruction at a time, under a seeded schedule.
//!
//! It executes the assembled machine code itself, so agreement with the oracle checks the
//! assembler and the outcome extraction; being sequentially consistent, it can produce only a
//! subset of the TSO outcomes.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use unicorn_engine::{Arch, Mode, Prot, RegisterX86, Unicorn};

use super::{Assembled, LitmusMachine, Outcome};

const CONTEXT: [RegisterX86; 9] = [
    RegisterX86::EAX,
    RegisterX86::EBX,
    RegisterX86::ECX,
    RegisterX86::EDX,
    RegisterX86::ESI,
    RegisterX86::EDI,
    RegisterX86::ESP,
    RegisterX86::EFLAGS,
    RegisterX86::EIP,
];
const EIP: usize = 8;
/// Far more steps than any accepted program needs: a processor that never reaches `hlt` is a bug.
const MAX_STEPS: usize = 100_000;

/// The order in which processors take turns.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Each processor runs to its `hlt`, in this order.
    Sequential(Vec<usize>),
    /// Before each instruction a processor is picked uniformly among those not done.
    Random(u64),
}

struct Run<'a> {
    uc: Unicorn<'a, ()>,
    ctx: Vec<[u64; 9]>,
    current: Option<usize>,
}

impl Run<'_> {
    fn new(asm: &Assembled) -> Result<Self> {
        let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32)
            .map_err(|e| anyhow::anyhow!("unicorn: {e:?}"))?;
        for (base, size) in asm.regions() {
            uc.mem_map(base as u64, size as u64, Prot::ALL)
                .map_err(|e| anyhow::anyhow!("mapping {base:#x}+{size:#x}: {e:?}"))?;
        }
        for c in &asm.cpus {
            uc.mem_write(c.entry as u64, &c.bytes)
                .map_err(|e| anyhow::anyhow!("loading code: {e:?}"))?;
        }
        for &(addr, v) in &asm.init_words {
            uc.mem_write(addr as u64, &v.to_le_bytes())
                .map_err(|e| anyhow::anyhow!("initial memory: {e:?}"))?;
        }
        let ctx = asm
            .cpus
            .iter()
            .map(|c| {
                let mut r = [0u64; 9];
                r[7] = 0x2; // EFLAGS reserved bit
                r[EIP] = c.entry as u64;
                r
            })
            .collect();
        Ok(Run {
            uc,
            ctx,
            current: None,
        })
    }

    fn switch_to(&mut self, cpu: usize) -> Result<()> {
        if self.current == Some(cpu) {
            return Ok(());
        }
        if let Some(prev) = self.current {
            for (k, r) in CONTEXT.iter().enumerate() {
                self.ctx[prev][k] = self.uc.reg_read(*r).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
        }
        for (k, r) in CONTEXT.iter().enumerate() {
            self.uc
                .reg_write(*r, self.ctx[cpu][k])
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        self.current = Some(cpu);
        Ok(())
    }

    /// Runs one instruction of `cpu`; returns whether it is now at its `hlt`.
    fn step(&mut self, asm: &Assembled, cpu: usize) -> Result<bool> {
        self.switch_to(cpu)?;
        let hlt = asm.cpus[cpu].hlt_at as u64;
        let eip = self
            .uc
            .reg_read(RegisterX86::EIP)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if eip != hlt {
            self.uc
                .emu_start(eip, hlt, 0, 1)
                .map_err(|e| anyhow::anyhow!("P{cpu} at {eip:#x}: {e:?}"))?;
        }
        let eip = self
            .uc
            .reg_read(RegisterX86::EIP)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(eip == hlt)
    }

    fn outcome(&self, asm: &Assembled) -> Result<Outcome> {
        asm.outcome(|addr| {
            let mut w = [0u8; 4];
            self.uc
                .mem_read(addr as u64, &mut w)
                .map_err(|e| anyhow::anyhow!("reading {addr:#x}: {e:?}"))?;
            Ok(u32::from_le_bytes(w))
        })
    }
}

/// Runs `asm` under `schedule` and returns its outcome.
pub fn run(asm: &Assembled, schedule: &Schedule) -> Result<Outcome> {
    let mut r = Run::new(asm).with_context(|| format!("setting up {}", asm.name))?;
    let n = asm.cpus.len();
    let mut done = vec![false; n];
    let mut steps = 0;
    let mut tick = |r: &mut Run, cpu: usize, done: &mut [bool]| -> Result<()> {
        steps += 1;
        if steps > MAX_STEPS {
            bail!(
                "{}: P{cpu} did not reach hlt within {MAX_STEPS} steps",
                asm.name
            );
        }
        done[cpu] = r.step(asm, cpu)?;
        Ok(())
    };
    match schedule {
        Schedule::Sequential(order) => {
            for &cpu in order {
                anyhow::ensure!(cpu < n, "schedule names processor {cpu} of {n}");
                while !done[cpu] {
                    tick(&mut r, cpu, &mut done)?;
                }
            }
            anyhow::ensure!(
                done.iter().all(|d| *d),
                "the schedule leaves a processor unrun"
            );
        }
        Schedule::Random(seed) => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            loop {
                let live: Vec<usize> = (0..n).filter(|&c| !done[c]).collect();
                if live.is_empty() {
                    break;
                }
                let cpu = live[rng.gen_range(0..live.len())];
                tick(&mut r, cpu, &mut done)?;
            }
        }
    }
    r.outcome(asm)
}

/// Every order of `n` processors, for [`Schedule::Sequential`].
pub fn all_orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for rest in all_orders(n - 1) {
        for pos in 0..=rest.len() {
            let mut o = rest.clone();
            o.insert(pos, n - 1);
            out.push(o);
        }
    }
    out
}

/// [`LitmusMachine`] over unicorn with a random instruction-level interleaving per seed.
#[derive(Default)]
pub struct InterleaveMachine;

impl LitmusMachine for InterleaveMachine {
    fn run(&mut self, asm: &Assembled, seed: u64) -> Result<Outcome> {
        run(asm, &Schedule::Random(seed))
    }
}
