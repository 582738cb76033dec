//! `vmp litmus FILE`: the oracle's verdict and a machine's outcome histogram for one test.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::interleave::InterleaveMachine;
use super::smp::SmpMachine;
use super::{assemble, parse, sc, tso, Layout, LitmusMachine, Outcome, DEFAULT_STATE_LIMIT};
use crate::smp::Variant;

/// Which machine produces the histogram.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MachineKind {
    /// Only the oracle: list every outcome x86-TSO allows.
    Oracle,
    /// Unicorn, processors interleaved at instruction granularity (sequentially consistent).
    Interleave,
    /// The multiprocessor VMP, `naive` protocol: one simulated host per processor, the seed
    /// drives delays, quanta and start skew.
    Smp,
    /// The multiprocessor VMP, `optimised` protocol.
    SmpOptimised,
}

fn machine(kind: MachineKind) -> Result<Box<dyn LitmusMachine>> {
    match kind {
        MachineKind::Interleave => Ok(Box::new(InterleaveMachine)),
        MachineKind::Smp => Ok(Box::new(SmpMachine::new(Variant::Naive))),
        MachineKind::SmpOptimised => Ok(Box::new(SmpMachine::new(Variant::Optimised))),
        MachineKind::Oracle => unreachable!("the oracle runs no code"),
    }
}

/// What one invocation found.
pub struct Report {
    pub text: String,
    /// Some machine outcome is not allowed by x86-TSO.
    pub forbidden_seen: bool,
}

/// Largest litmus file accepted: real tests are a few hundred bytes.
pub const MAX_SOURCE_BYTES: u64 = 1 << 20;

/// Reads a litmus file, refusing non-UTF-8 text and files over [`MAX_SOURCE_BYTES`].
pub fn read_source(path: &std::path::Path) -> Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        bail!("{}: larger than {MAX_SOURCE_BYTES} bytes", path.display());
    }
    String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))
}

/// Parses `src`, asks the oracle, and (unless `kind` is the oracle) runs `seeds` seeds.
pub fn run(src: &str, seeds: u64, kind: MachineKind) -> Result<Report> {
    if kind == MachineKind::Oracle {
        return run_on(src, seeds, None);
    }
    let mut m = machine(kind)?;
    run_on(src, seeds, Some((&format!("{kind:?}"), m.as_mut())))
}

/// [`run`] on any machine (named for the histogram's title), or the oracle alone (`None`).
pub fn run_on(
    src: &str,
    seeds: u64,
    machine: Option<(&str, &mut dyn LitmusMachine)>,
) -> Result<Report> {
    let t = parse(src)?;
    let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT)?;
    let sc_set = sc::outcomes(&t, DEFAULT_STATE_LIMIT)?;
    let mut text = String::new();
    writeln!(
        text,
        "Test {}: x86-TSO allows {} outcome(s), sequential consistency {}",
        t.name,
        allowed.len(),
        sc_set.len()
    )?;
    let mut forbidden_seen = false;
    if let Some((name, m)) = machine {
        let asm = assemble(&t, Layout::default())?;
        let mut hist: BTreeMap<Outcome, u64> = BTreeMap::new();
        for seed in 0..seeds {
            *hist.entry(m.run(&asm, seed)?).or_default() += 1;
        }
        writeln!(text, "Histogram ({seeds} runs on {name}):")?;
        for (o, n) in &hist {
            let tag = if !allowed.contains(o) {
                forbidden_seen = true;
                "  FORBIDDEN by x86-TSO"
            } else if !sc_set.contains(o) {
                "  (TSO only)"
            } else {
                ""
            };
            writeln!(text, "{n:>8} *> {o}{tag}")?;
        }
        if let Some(c) = &t.condition {
            let seen = hist.keys().cloned().collect();
            writeln!(
                text,
                "Observed: condition {} on this machine",
                if c.holds(&seen) {
                    "validated"
                } else {
                    "not validated"
                }
            )?;
        }
    } else {
        for o in &allowed {
            let tag = if sc_set.contains(o) {
                ""
            } else {
                "  (TSO only)"
            };
            writeln!(text, "  {o}{tag}")?;
        }
    }
    if let Some(c) = &t.condition {
        writeln!(
            text,
            "Oracle: {} is {} under x86-TSO ({})",
            super::print::condition(c),
            if c.holds(&allowed) {
                "validated"
            } else {
                "not validated"
            },
            if c.holds(&allowed) { "Ok" } else { "No" }
        )?;
    }
    Ok(Report {
        text,
        forbidden_seen,
    })
}
