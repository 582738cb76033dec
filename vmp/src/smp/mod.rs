//! The Virtual Multiprocessor across hosts: N virtual processors, one per host, each with its own
//! `Machine` and copy of guest memory, kept consistent under the IA-32 memory model (x86-TSO) by
//! twin/diff and a sequencer on the device host.
//!
//! Protocol (see ARCHITECTURE.md, "Protocols", for the invariants):
//! - every RAM page is write-protected (`machine::wtrack`); the first write to a page traps and
//!   the processor keeps a *twin*; writes then run at full speed — they are this processor's
//!   store buffer;
//! - at every synchronisation point found by decoding guest code (`machine::syncpt`: `mfence`,
//!   locked instructions, serialising instructions, interrupt delivery, `iret`) and at the end of
//!   each quantum (so writes become visible without fences), the processor *publishes*: it diffs
//!   every written page with its twin and sends the diffs to the sequencer, then waits until its
//!   publish has a place in the global order and everything before it is applied locally;
//! - the sequencer numbers publishes (one global order) and sends each to every processor; all
//!   apply in that order, so a write becomes visible everywhere in the same order (write
//!   atomicity); a remote diff never overwrites bytes this processor wrote and has not yet
//!   published or whose publish is ordered later (`diff::apply`);
//! - a locked instruction publishes with `Acquire` first (the sequencer then orders nothing else
//!   until `Release`), runs once everything before is applied, and publishes its result with
//!   `Release`: atomic across hosts;
//! - an inter-processor interrupt (the guest's `out` to `layout::PORT_IPI`) travels in the
//!   sender's publish and is raised on its target when the target applies that entry, after the
//!   entry's writes; a processor halted with interrupts enabled waits in host time for one (or
//!   its next tick), see [`os`] for the SMP guest kernel that uses them;
//! - every message is acknowledged or answered and retransmitted after a timeout, duplicates are
//!   recognised by sequence numbers; a processor silent for `dead_after_s` stops the machine with
//!   an error naming it.

pub mod bare;
pub mod cost;
mod cpu;
pub mod diff;
pub mod os;
pub mod proto;
mod sequencer;

use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use gridbed_runtime::{ClusterRef, HostId};
use serde::{Deserialize, Serialize};

pub use cpu::CpuReport;
pub use sequencer::SeqReport;

use crate::error::VmpError;
use crate::machine::{Config, GuestImage, Machine};
use crate::time::Preset;

/// Which consistency protocol runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The slides' prototype: at every synchronisation point every written page is diffed and
    /// sent to every host, and every page is write-protected again.
    Naive,
    /// Synchronisation points with nothing written and nothing printed cost no round trip (a TSO
    /// fence with an empty store buffer has no effect); pages written in consecutive epochs stay
    /// write-enabled and are re-twinned at each publish instead of faulting again.
    Optimised,
}

/// How the multiprocessor runs.
#[derive(Clone, Debug)]
pub struct SmpOptions {
    pub variant: Variant,
    /// Host of each virtual processor, in processor order.
    pub cpu_hosts: Vec<HostId>,
    /// Host of the devices (console) and the sequencer.
    pub device_host: HostId,
    /// Guest instructions per quantum: the bound on how long a write stays unpublished.
    pub quantum: u64,
    pub preset: Preset,
    /// Instruction budget per processor.
    pub budget: u64,
    /// Retransmission timeout.
    pub rto_s: f64,
    /// A peer silent this long is taken as crashed.
    pub dead_after_s: f64,
    /// Adversarial schedule (litmus runs): random quanta in 1..=quantum and random extra delays
    /// up to this long before publishing and applying, from each host's seeded stream. 0: off.
    pub jitter_s: f64,
    /// Adversarial start (litmus runs): each processor waits a random time up to this long,
    /// from its host's seeded stream, before its first instruction. 0: off.
    pub start_skew_s: f64,
    /// Adversarial preemption (litmus runs): after every quantum the processor pauses a random
    /// time up to this long (the host descheduling the monitor), so a remote write can become
    /// visible between two of its loads. 0: off.
    pub preempt_s: f64,
    /// A processor halted with interrupts enabled and no timer (only an IPI can wake it) while
    /// no entry of the global order arrives for this long stops the machine with an error
    /// naming it: a lost wake-up in the guest.
    pub max_idle_s: f64,
    /// Fault injection (tests): inter-processor interrupts are dropped instead of sent.
    pub drop_ipis: bool,
}

impl SmpOptions {
    pub fn new(variant: Variant, cpu_hosts: Vec<HostId>, preset: Preset) -> Self {
        SmpOptions {
            variant,
            device_host: cpu_hosts.first().copied().unwrap_or(HostId(0)),
            cpu_hosts,
            // 100k instructions: ~40 us of a 2.4 GHz guest, far below a scheduling tick (10 ms),
            // so a flag spin sees a remote write within one quantum plus a round trip.
            quantum: 100_000,
            preset,
            budget: 2_000_000_000,
            rto_s: 0.02,
            dead_after_s: 1.0,
            jitter_s: 0.0,
            start_skew_s: 0.0,
            preempt_s: 0.0,
            // Far beyond any wake-up latency of the protocol (round trips of micro- to
            // milliseconds), short enough that a test of a lost wake-up ends quickly.
            max_idle_s: 5.0,
            drop_ipis: false,
        }
    }

    pub(crate) fn rto(&self) -> Duration {
        gridbed_runtime::secs(self.rto_s)
    }

    pub(crate) fn dead_after(&self) -> Duration {
        gridbed_runtime::secs(self.dead_after_s)
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SmpError {
    #[error("virtual processor {cpu} (host {host}): {what}")]
    Processor {
        cpu: usize,
        host: HostId,
        what: String,
    },
    #[error("virtual machine: {0}")]
    Machine(String),
    #[error(transparent)]
    Vmp(#[from] VmpError),
}

/// One processor's start: entry point, initial stack, text ranges to scan.
#[derive(Clone, Debug)]
pub struct CpuStart {
    pub entry: u32,
    pub stack_top: u32,
    pub text: (u32, u32),
    /// Further code ranges this processor may run (user programs under a guest kernel).
    pub user_text: Vec<(u32, u32)>,
}

/// What the machine did.
pub struct VmOutcome {
    pub cpus: Vec<CpuReport>,
    pub sequencer: SeqReport,
    /// Backend time from start until the last processor finished.
    pub elapsed: Duration,
}

impl VmOutcome {
    /// Guest memory at `addr` as processor 0 sees it.
    pub fn read(&self, addr: u32, len: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.cpus
            .first()?
            .machine
            .read_ram(addr, &mut b)
            .then_some(b)
    }

    /// Whether every processor's copy of `addr..addr+len` is the same.
    pub fn copies_agree(&self, addr: u32, len: usize) -> bool {
        let copies: Vec<_> = self
            .cpus
            .iter()
            .map(|c| {
                let mut b = vec![0u8; len];
                c.machine.read_ram(addr, &mut b).then_some(b)
            })
            .collect();
        copies.windows(2).all(|w| w[0] == w[1])
    }
}

enum Report {
    Cpu(usize, Result<CpuReport, SmpError>),
    Seq(SeqReport),
}

/// Boots one processor per entry of `starts` on `opts.cpu_hosts` over the shared memory image
/// `segments`, runs all to `hlt`/power-off, and returns every processor's final state.
pub async fn run_vm(
    cluster: ClusterRef,
    segments: Vec<(u32, Vec<u8>)>,
    starts: Vec<CpuStart>,
    opts: SmpOptions,
) -> Result<VmOutcome, SmpError> {
    if starts.len() != opts.cpu_hosts.len() || starts.is_empty() {
        return Err(SmpError::Machine(format!(
            "{} processors but {} hosts",
            starts.len(),
            opts.cpu_hosts.len()
        )));
    }
    let hosts = cluster.hosts();
    let host = |h: HostId| {
        hosts
            .iter()
            .find(|x| x.id() == h)
            .cloned()
            .ok_or_else(|| SmpError::Machine(format!("no host {h}")))
    };
    let t0 = cluster.now();
    let (tx, mut rx) = mpsc::unbounded::<Report>();
    let dev = host(opts.device_host)?;
    let seq_mb = dev
        .bind(proto::SEQ_PORT)
        .map_err(|e| SmpError::Machine(format!("sequencer port: {e}")))?;
    {
        let (tx, o, d) = (tx.clone(), opts.clone(), dev.clone());
        dev.spawn(
            "smp-sequencer",
            Box::pin(async move {
                let r = sequencer::run(d, seq_mb, o).await;
                let _ = tx.unbounded_send(Report::Seq(r));
            }),
        );
    }
    for (i, s) in starts.iter().enumerate() {
        let h = host(opts.cpu_hosts[i])?;
        let mut user_text: Vec<(u32, u32)> = s.user_text.clone();
        for o in &starts {
            if o.text != s.text && !user_text.contains(&o.text) {
                user_text.push(o.text);
            }
        }
        let image = GuestImage {
            segments: segments.clone(),
            kernel_text: s.text,
            user_text,
            entry: s.entry,
        };
        let mut m = Machine::new(Config::Vmp, opts.preset.cpu, &image)?;
        m.set_budget(opts.budget);
        m.set_stack(s.stack_top)?;
        let mb = h
            .bind(proto::CPU_PORT)
            .map_err(|e| SmpError::Machine(format!("processor {i} port: {e}")))?;
        let cpu = cpu::Cpu::new(i, h.clone(), mb, m, opts.clone())?;
        let tx = tx.clone();
        h.spawn(
            &format!("smp-cpu{i}"),
            Box::pin(async move {
                let r = cpu.run().await;
                let _ = tx.unbounded_send(Report::Cpu(i, r));
            }),
        );
    }
    drop(tx);
    let mut cpus: Vec<Option<CpuReport>> = (0..starts.len()).map(|_| None).collect();
    let mut elapsed = Duration::ZERO;
    let mut seq = None;
    while let Some(r) = rx.next().await {
        match r {
            Report::Cpu(i, Ok(c)) => {
                cpus[i] = Some(c);
                elapsed = cluster.now() - t0;
            }
            Report::Cpu(_, Err(e)) => return Err(e),
            Report::Seq(s) => {
                if let Some(e) = &s.error {
                    return Err(SmpError::Machine(e.clone()));
                }
                seq = Some(s);
            }
        }
        if seq.is_some() && cpus.iter().all(Option::is_some) {
            break;
        }
    }
    let Some(sequencer) = seq else {
        return Err(SmpError::Machine(
            "the device host stopped before the machine finished".into(),
        ));
    };
    let cpus: Option<Vec<CpuReport>> = cpus.into_iter().collect();
    let cpus = cpus.ok_or_else(|| {
        SmpError::Machine("a processor's host stopped before the machine finished".into())
    })?;
    Ok(VmOutcome {
        cpus,
        sequencer,
        elapsed,
    })
}
