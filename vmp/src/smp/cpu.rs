//! One virtual processor of the multiprocessor, as a task on its host: its own `Machine` and copy
//! of guest memory; the guest runs in quanta; at every synchronisation point and at the end of
//! each quantum the processor publishes its writes (twin/diff) to the sequencer and applies every
//! other processor's writes in the global order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{select, Either};
use gridbed_runtime::{Addr, Host, Mailbox};

use super::cost::{self, CoherenceCounts};
use super::diff::{self, PageDiff, PAGE_BYTES};
use super::proto::{LockOp, Msg, CPU_PORT, SEQ_PORT};
use super::{SmpError, SmpOptions, Variant};
use crate::machine::syncpt::{SyncKind, SyncPoint};
use crate::machine::{Exit, Machine};

/// Twins, filled by the write-fault callback (which runs inside the engine).
#[derive(Default)]
pub(super) struct TwinStore {
    pub map: BTreeMap<u32, Box<[u8]>>,
    pub made: u64,
}

/// What a processor hands back when the machine stops.
pub struct CpuReport {
    pub cpu: usize,
    pub machine: Machine,
    pub status: u32,
    pub counts: CoherenceCounts,
    /// Modelled seconds: guest instructions (the VM process) and monitor (traps + coherence).
    pub vm_s: f64,
    pub monitor_s: f64,
    /// This processor wrote the power port (its `status` is the machine's exit status).
    pub powered_off: bool,
    /// Host seconds spent halted waiting for an interrupt.
    pub idle_s: f64,
    pub ipis_received: u64,
}

/// A global entry received ahead of its turn: origin, its publish number, diffs, IPIs.
type FutureEntry = (u16, u64, Vec<PageDiff>, Vec<(u16, u8)>);

pub(super) struct Cpu {
    idx: u16,
    ncpus: usize,
    host: Arc<dyn Host>,
    mb: Box<dyn Mailbox>,
    seq: Addr,
    opts: SmpOptions,
    m: Machine,
    twins: Arc<Mutex<TwinStore>>,
    /// `optimised`: pages kept write-enabled across publishes (re-twinned at each publish).
    hot: BTreeSet<u32>,
    n: u64,
    applied: u64,
    future: BTreeMap<u64, FutureEntry>,
    /// Our publish waiting for its place in the order: its bytes win over earlier entries.
    inflight: Option<(u64, BTreeMap<u32, PageDiff>)>,
    console_sent: usize,
    counts: CoherenceCounts,
    charged_s: f64,
    stopped: Option<Option<String>>,
    /// We hold the global lock (between a locked instruction's Acquire and Release).
    holding: bool,
    idle_s: f64,
}

impl Cpu {
    pub(super) fn new(
        idx: usize,
        host: Arc<dyn Host>,
        mb: Box<dyn Mailbox>,
        mut m: Machine,
        opts: SmpOptions,
    ) -> Result<Self, SmpError> {
        let twins: Arc<Mutex<TwinStore>> = Arc::default();
        let t = twins.clone();
        m.enable_sync_points()?;
        m.start_tracking(Some(Box::new(move |page, bytes| {
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            t.made += 1;
            t.map.insert(page, bytes.into());
        })))?;
        m.track_written_bytes()?;
        m.enable_ipis(idx as u8, opts.cpu_hosts.len().min(255) as u8);
        Ok(Cpu {
            idx: idx as u16,
            ncpus: opts.cpu_hosts.len(),
            seq: Addr::new(opts.device_host, SEQ_PORT),
            host,
            mb,
            opts,
            m,
            twins,
            hot: BTreeSet::new(),
            n: 0,
            applied: 0,
            future: BTreeMap::new(),
            inflight: None,
            console_sent: 0,
            counts: CoherenceCounts::default(),
            charged_s: 0.0,
            stopped: None,
            holding: false,
            idle_s: 0.0,
        })
    }

    fn err(&self, what: String) -> SmpError {
        SmpError::Processor {
            cpu: self.idx as usize,
            host: self.host.id(),
            what,
        }
    }

    async fn send(&mut self, msg: &Msg) {
        let frame = msg.encode();
        self.counts.messages_sent += 1;
        self.counts.bytes_sent += frame.len() as u64;
        // A lost message is recovered by retransmission (ours, or the sequencer's).
        let _ = self.host.send(CPU_PORT, self.seq, frame).await;
    }

    /// Modelled seconds so far: (VM process, monitor).
    fn modelled(&self) -> (f64, f64) {
        let p = &self.opts.preset;
        let mon = self.m.monitor();
        let vm = p.cpu.seconds(p.cpu.cycles(mon.retired));
        let mut counts = self.counts.clone();
        counts.write_faults = self.m.write_faults();
        counts.twins = self.twins.lock().map(|t| t.made).unwrap_or(0);
        let coherence = cost::breakdown(&p.trap, &counts).total();
        (vm, p.trap.monitor_seconds(&mon.stats) + coherence)
    }

    async fn charge(&mut self) {
        let (vm, mon) = self.modelled();
        let busy = vm + mon;
        let cycles = ((busy - self.charged_s) * self.host.cpu_hz()).round();
        if cycles >= 1.0 {
            self.charged_s = busy;
            self.host.compute(cycles as u64).await;
        }
    }

    /// Adversarial schedule (litmus runs): a random extra delay from the host's seeded stream.
    async fn jitter(&mut self) {
        let up_to = self.opts.jitter_s;
        self.nap(up_to).await;
    }

    /// Sleeps a random time in `[0, up_to)` drawn from the host's seeded stream (none if 0).
    async fn nap(&mut self, up_to: f64) {
        if up_to > 0.0 {
            let f = (self.host.rng_u64() % 1024) as f64 / 1024.0;
            let nap = self.host.sleep(gridbed_runtime::secs(f * up_to));
            nap.await;
        }
    }

    /// Diffs every written page (the bytes stored since the last publish; its twin audits them);
    /// re-protects all but the `optimised` hot pages.
    fn collect(&mut self) -> Result<Vec<PageDiff>, SmpError> {
        let optimised = self.opts.variant == Variant::Optimised;
        let hot = self.hot.clone();
        let pages = self
            .m
            .take_dirty_keeping(|p| optimised && hot.contains(&p))?;
        let mut twins = self.twins.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut cur = vec![0u8; PAGE_BYTES];
        let mut next_hot = BTreeSet::new();
        let mut reprotected = 0;
        for p in pages {
            if !self.m.read_ram(p, &mut cur) {
                continue;
            }
            let keep = optimised && hot.contains(&p);
            let mut written = self.m.take_written(p);
            if let Some(t) = twins.map.get_mut(&p) {
                let (silent, unseen) = diff::audit(t, &cur, &written);
                self.counts.silent_bytes += silent;
                if unseen > 0 {
                    // A change without a recorded store: send it anyway, and count it (the
                    // suites require none).
                    self.counts.unseen_bytes += unseen;
                    for (o, (a, b)) in t.iter().zip(&cur).enumerate() {
                        if a != b {
                            written.mark(o, 1);
                        }
                    }
                }
                if keep {
                    t.copy_from_slice(&cur);
                }
            }
            let d = diff::make_written(p, &cur, &written);
            self.counts.pages_diffed += 1;
            if keep {
                // Written again this epoch: stays hot; unwritten: goes cold (re-protected next).
                if !d.runs.is_empty() {
                    next_hot.insert(p);
                }
            } else {
                twins.map.remove(&p);
                reprotected += 1;
                // Written in consecutive epochs: keep it writable from now on.
                if optimised && !d.runs.is_empty() {
                    next_hot.insert(p);
                }
            }
            if !d.runs.is_empty() {
                self.counts.diffs_sent += 1;
                self.counts.diff_bytes += d.wire_bytes() as u64;
                out.push(d);
            }
        }
        drop(twins);
        // Pages leaving the hot set are re-protected at the next publish (still dirty now).
        self.hot = next_hot;
        if reprotected > 0 {
            self.counts.reprotects += 1;
            self.counts.pages_reprotected += reprotected;
        }
        Ok(out)
    }

    fn has_local_work(&self) -> bool {
        !self.m.dirty_pages().is_empty()
            || self.m.console().len() > self.console_sent
            || self.m.has_outgoing_ipis()
    }

    /// Publishes our writes and waits until they have their place in the global order and
    /// everything before them is applied here.
    async fn publish(&mut self, lock: LockOp) -> Result<(), SmpError> {
        self.jitter().await;
        let diffs = self.collect()?;
        self.n += 1;
        self.counts.publishes += 1;
        if diffs.is_empty() {
            self.counts.empty_publishes += 1;
        }
        match lock {
            LockOp::Acquire => {
                self.counts.lock_acquires += 1;
                self.holding = true;
            }
            LockOp::Release => self.holding = false,
            LockOp::None => {}
        }
        let mut ipis = self.m.take_ipis();
        self.counts.ipis_sent += ipis.len() as u64;
        if self.opts.drop_ipis {
            ipis.clear();
        }
        let console = self.m.console()[self.console_sent..].to_vec();
        self.console_sent = self.m.console().len();
        self.inflight = Some((self.n, diffs.iter().map(|d| (d.page, d.clone())).collect()));
        let msg = Msg::Publish {
            cpu: self.idx,
            n: self.n,
            lock,
            console,
            diffs,
            ipis,
        };
        self.charge().await;
        self.send(&msg).await;
        let start = self.host.now();
        while self.inflight.is_some() {
            if let Some(e) = self.stopped.clone() {
                return Err(SmpError::Machine(
                    e.unwrap_or_else(|| "stopped while publishing".into()),
                ));
            }
            if !self.receive(self.opts.rto()).await? {
                if self.host.now() - start > 2 * self.opts.dead_after() {
                    return Err(self.err(format!(
                        "the sequencer on host {} stopped responding",
                        self.opts.device_host
                    )));
                }
                self.counts.retransmits += 1;
                self.send(&msg).await;
            }
        }
        self.charge().await;
        Ok(())
    }

    /// Receives for at most `wait`; false if nothing came.
    async fn receive(&mut self, wait: Duration) -> Result<bool, SmpError> {
        let got = match select(self.mb.recv(), self.host.sleep(wait)).await {
            Either::Left((r, _)) => r.ok(),
            Either::Right(_) => None,
        };
        match got {
            Some(m) => {
                self.handle(m.from, &m.payload).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Handles what is already queued.
    async fn drain(&mut self) -> Result<(), SmpError> {
        while let Some(m) = self.mb.try_recv() {
            self.handle(m.from, &m.payload).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, from: Addr, frame: &[u8]) -> Result<(), SmpError> {
        if from != self.seq {
            self.host.disconnect(from.host);
            return Ok(());
        }
        let msg = match Msg::decode(frame, self.ncpus) {
            Ok(m) => m,
            Err(why) => {
                self.host
                    .event(&format!("smp cpu {}: rejected frame: {why}", self.idx));
                self.host.disconnect(from.host);
                return Ok(());
            }
        };
        match msg {
            Msg::Apply {
                g,
                origin,
                origin_n,
                diffs,
                ipis,
            } => {
                if g > self.applied {
                    self.future.insert(g, (origin, origin_n, diffs, ipis));
                }
                self.jitter().await;
                self.apply_ready()?;
                let upto = self.applied;
                self.send(&Msg::Ack {
                    cpu: self.idx,
                    upto,
                })
                .await;
            }
            Msg::Stop { error } => self.stopped = Some(error),
            _ => self.host.disconnect(from.host),
        }
        Ok(())
    }

    /// Applies global entries in order, as far as they are contiguous.
    fn apply_ready(&mut self) -> Result<(), SmpError> {
        while let Some((origin, origin_n, diffs, ipis)) = self.future.remove(&(self.applied + 1)) {
            self.applied += 1;
            if origin == self.idx {
                if self.inflight.as_ref().is_some_and(|(n, _)| *n == origin_n) {
                    self.inflight = None;
                }
                continue;
            }
            let mut cur = vec![0u8; PAGE_BYTES];
            let mut twins = self.twins.lock().unwrap_or_else(|e| e.into_inner());
            for d in &diffs {
                if !self.m.read_ram(d.page, &mut cur) {
                    continue;
                }
                let masked = self.inflight.as_ref().and_then(|(_, m)| m.get(&d.page));
                diff::apply(
                    &mut cur,
                    twins.map.get_mut(&d.page).map(|t| &mut t[..]),
                    self.m.written(d.page),
                    d,
                    masked,
                );
                self.m.write_ram(d.page, &cur)?;
                self.counts.diffs_applied += 1;
                self.counts.words_applied += d
                    .runs
                    .iter()
                    .map(|r| {
                        let s = r.off as u64;
                        (s + r.bytes.len() as u64).div_ceil(4) - s / 4
                    })
                    .sum::<u64>();
            }
            drop(twins);
            // After the entry's writes: the target sees what the sender wrote before the IPI.
            for (dest, vector) in ipis {
                if dest == self.idx {
                    self.m.raise_ipi(vector);
                }
            }
        }
        Ok(())
    }

    /// Halted with interrupts enabled: publishes what is buffered, then waits in host time
    /// until an IPI arrives (an applied entry raises it) or the next timer tick is due (`tick`
    /// guest cycles away), and moves the guest clock on by the time waited.
    async fn idle(&mut self, tick: Option<u64>) -> Result<(), SmpError> {
        if self.has_local_work() {
            self.publish(LockOp::None).await?;
        }
        let hz = self.opts.preset.cpu.hz;
        let start = self.host.now();
        let until = tick.map(|c| gridbed_runtime::secs(c as f64 / hz));
        let max_idle = gridbed_runtime::secs(self.opts.max_idle_s);
        let mut ticked = false;
        // The lost-wake-up clock restarts with every entry of the global order: a processor
        // may wait as long as others are working.
        let mut quiet_since = start;
        loop {
            if self.m.has_pending_ipi() || self.stopped.is_some() {
                break;
            }
            let waited = self.host.now() - start;
            let mut chunk = self.opts.rto();
            if let Some(u) = until {
                if waited >= u {
                    ticked = true;
                    break;
                }
                chunk = chunk.min(u - waited);
            } else if self.host.now() - quiet_since > max_idle {
                return Err(self.err(format!(
                    "halted with interrupts enabled and no timer, and the machine quiet for \
                     {:.1} s: nothing can wake it (a lost inter-processor interrupt)",
                    (self.host.now() - quiet_since).as_secs_f64()
                )));
            }
            if self.receive(chunk).await? {
                quiet_since = self.host.now();
            } else {
                // A heartbeat: an idle processor is not a crashed one.
                let upto = self.applied;
                self.send(&Msg::Ack {
                    cpu: self.idx,
                    upto,
                })
                .await;
            }
        }
        let waited = (self.host.now() - start).as_secs_f64();
        self.idle_s += waited;
        let mut cycles = (waited * hz).round() as u64;
        if ticked {
            cycles = cycles.max(tick.unwrap_or(0));
        }
        self.m.idle_for(cycles);
        Ok(())
    }

    /// Runs the processor until the machine stops.
    pub(super) async fn run(mut self) -> Result<CpuReport, SmpError> {
        let optimised = self.opts.variant == Variant::Optimised;
        let skew = self.opts.start_skew_s;
        self.nap(skew).await;
        let status = loop {
            self.drain().await?;
            if let Some(e) = self.stopped.take() {
                return Err(SmpError::Machine(
                    e.unwrap_or_else(|| "stopped before finishing".into()),
                ));
            }
            let q = if self.opts.jitter_s > 0.0 {
                1 + self.host.rng_u64() % self.opts.quantum.max(1)
            } else {
                self.opts.quantum.max(1)
            };
            let exit = self.m.run(Some(q))?;
            self.charge().await;
            let preempt = self.opts.preempt_s;
            self.nap(preempt).await;
            if self.holding
                && !matches!(
                    exit,
                    Exit::SliceEnd
                        | Exit::Sync(SyncPoint {
                            kind: SyncKind::Locked,
                            after: true,
                            ..
                        })
                )
            {
                // The locked instruction did not run (interrupted): let go of the lock; it
                // stops before the instruction again when it is retried.
                self.m.cancel_sync();
                self.publish(LockOp::Release).await?;
            }
            match exit {
                Exit::SliceEnd => {
                    // Holding the lock, the locked instruction is next: run on to it.
                    if !self.holding && self.has_local_work() {
                        self.publish(LockOp::None).await?;
                    }
                }
                Exit::Sync(p) => {
                    let needed = !optimised || self.has_local_work();
                    match (p.kind, p.after) {
                        (SyncKind::Locked, false) => self.publish(LockOp::Acquire).await?,
                        (SyncKind::Locked, true) => self.publish(LockOp::Release).await?,
                        _ if needed => self.publish(LockOp::None).await?,
                        _ => {}
                    }
                    if !p.after {
                        self.m.pass_sync(p.eip);
                    }
                }
                Exit::Halted => match self.m.idle_wait() {
                    Some(tick) => self.idle(tick).await?,
                    None => break (0, false),
                },
                Exit::PowerOff(code) => break (code, true),
            }
        };
        let (status, powered_off) = status;
        self.publish(LockOp::None).await?;
        let done = Msg::Done {
            cpu: self.idx,
            status,
        };
        self.send(&done).await;
        let mut quiet = self.host.now();
        loop {
            if let Some(e) = self.stopped.take() {
                if let Some(e) = e {
                    return Err(SmpError::Machine(e));
                }
                break;
            }
            if self.receive(self.opts.rto()).await? {
                quiet = self.host.now();
            } else {
                if self.host.now() - quiet > 2 * self.opts.dead_after() {
                    return Err(self.err(format!(
                        "the sequencer on host {} stopped responding",
                        self.opts.device_host
                    )));
                }
                self.send(&done).await;
            }
        }
        let (vm_s, monitor_s) = self.modelled();
        let mut counts = self.counts.clone();
        counts.write_faults = self.m.write_faults();
        counts.twins = self.twins.lock().map(|t| t.made).unwrap_or(0);
        let ipis_received = self.m.ipis_received();
        Ok(CpuReport {
            cpu: self.idx as usize,
            machine: self.m,
            status,
            counts,
            vm_s,
            monitor_s,
            powered_off,
            idle_s: self.idle_s,
            ipis_received,
        })
    }
}
