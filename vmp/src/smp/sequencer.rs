//! The sequencer, on the device host: it gives every publish its place in one global order and
//! sends it to every processor, which all apply entries in that order (write atomicity); it holds
//! the global lock of locked read-modify-writes; it owns the console; it retransmits entries a
//! processor has not acknowledged; it stops the machine when every processor is done, or with an
//! error naming a processor that stopped answering.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use gridbed_runtime::{Addr, Host, Mailbox};

use super::diff::PageDiff;
use super::proto::{LockOp, Msg, CPU_PORT, SEQ_PORT};
use super::SmpOptions;

/// What the sequencer saw, for the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqReport {
    /// The machine's console, in global order.
    pub console: Vec<u8>,
    /// Global entries (publishes placed in the order).
    pub entries: u64,
    /// Apply messages sent, retransmissions included, and their bytes.
    pub applies_sent: u64,
    pub apply_bytes: u64,
    pub retransmits: u64,
    /// Frames rejected as malformed (their sender was disconnected).
    pub rejected: u64,
    /// Exit status of each processor.
    pub status: Vec<Option<u32>>,
    pub error: Option<String>,
}

struct Entry {
    origin: u16,
    origin_n: u64,
    diffs: Arc<Vec<PageDiff>>,
    ipis: Vec<(u16, u8)>,
}

struct Pending {
    cpu: u16,
    n: u64,
    lock: LockOp,
    console: Vec<u8>,
    diffs: Vec<PageDiff>,
    ipis: Vec<(u16, u8)>,
}

struct Seq {
    host: Arc<dyn Host>,
    cpus: Vec<Addr>,
    next_g: u64,
    log: BTreeMap<u64, Entry>,
    acked: Vec<u64>,
    last_n: Vec<u64>,
    lock: Option<u16>,
    deferred: VecDeque<Pending>,
    last_heard: Vec<Duration>,
    report: SeqReport,
}

impl Seq {
    fn index_of(&self, from: Addr) -> Option<usize> {
        self.cpus.iter().position(|a| *a == from)
    }

    async fn send_entry(&mut self, to: usize, g: u64) {
        let Some(e) = self.log.get(&g) else { return };
        let diffs = if e.origin as usize == to {
            Vec::new()
        } else {
            e.diffs.as_ref().clone()
        };
        let frame = Msg::Apply {
            g,
            origin: e.origin,
            origin_n: e.origin_n,
            diffs,
            ipis: e.ipis.clone(),
        }
        .encode();
        self.report.applies_sent += 1;
        self.report.apply_bytes += frame.len() as u64;
        // A failed send is a lost message: the entry stays unacknowledged and is sent again.
        let _ = self.host.send(SEQ_PORT, self.cpus[to], frame).await;
    }

    async fn on_publish(&mut self, p: Pending) {
        let c = p.cpu as usize;
        if p.n <= self.last_n[c] || self.deferred.iter().any(|d| d.cpu == p.cpu && d.n == p.n) {
            return; // a retransmission of something already ordered or queued
        }
        if self.lock.is_some_and(|h| h != p.cpu) {
            // Nothing enters the order while another processor's locked instruction runs.
            self.deferred.push_back(p);
            return;
        }
        self.sequence(p).await;
        while self.lock.is_none() {
            let Some(next) = self.deferred.pop_front() else {
                break;
            };
            self.sequence(next).await;
        }
    }

    async fn sequence(&mut self, p: Pending) {
        let g = self.next_g;
        self.next_g += 1;
        self.last_n[p.cpu as usize] = p.n;
        self.report.console.extend_from_slice(&p.console);
        self.report.entries += 1;
        match p.lock {
            LockOp::Acquire => self.lock = Some(p.cpu),
            LockOp::Release if self.lock == Some(p.cpu) => self.lock = None,
            _ => {}
        }
        self.log.insert(
            g,
            Entry {
                origin: p.cpu,
                origin_n: p.n,
                diffs: Arc::new(p.diffs),
                ipis: p.ipis,
            },
        );
        for to in 0..self.cpus.len() {
            self.send_entry(to, g).await;
        }
    }

    fn on_ack(&mut self, cpu: usize, upto: u64) {
        self.acked[cpu] = self.acked[cpu].max(upto.min(self.next_g - 1));
        let floor = self.acked.iter().copied().min().unwrap_or(0);
        self.log = self.log.split_off(&(floor + 1));
    }

    /// Resends what each processor has not acknowledged (a bounded window per tick).
    async fn retransmit(&mut self) {
        for to in 0..self.cpus.len() {
            let from = self.acked[to] + 1;
            let gs: Vec<u64> = self.log.range(from..).map(|(g, _)| *g).take(64).collect();
            for g in gs {
                self.report.retransmits += 1;
                self.send_entry(to, g).await;
            }
        }
    }

    fn all_done(&self) -> bool {
        self.report.status.iter().all(Option::is_some)
            && self.acked.iter().all(|a| *a + 1 == self.next_g)
    }

    async fn stop_all(&mut self, error: Option<String>) {
        let frame = Msg::Stop { error }.encode();
        for to in self.cpus.clone() {
            let _ = self.host.send(SEQ_PORT, to, frame.clone()).await;
        }
    }
}

/// Runs the sequencer for processors on `cpu_hosts` until the machine stops.
pub async fn run(host: Arc<dyn Host>, mut mb: Box<dyn Mailbox>, opts: SmpOptions) -> SeqReport {
    let cpus: Vec<Addr> = opts
        .cpu_hosts
        .iter()
        .map(|h| Addr::new(*h, CPU_PORT))
        .collect();
    let n = cpus.len();
    let now = host.now();
    let mut s = Seq {
        host: host.clone(),
        cpus,
        next_g: 1,
        log: BTreeMap::new(),
        acked: vec![0; n],
        last_n: vec![0; n],
        lock: None,
        deferred: VecDeque::new(),
        last_heard: vec![now; n],
        report: SeqReport {
            status: vec![None; n],
            ..SeqReport::default()
        },
    };
    let rto = opts.rto();
    let mut next_tick = host.now() + rto;
    loop {
        let wait = next_tick.saturating_sub(host.now());
        let got = match select(mb.recv(), host.sleep(wait)).await {
            Either::Left((r, _)) => r.ok(),
            Either::Right(_) => None,
        };
        if let Some(m) = got {
            let Some(c) = s.index_of(m.from) else {
                s.report.rejected += 1;
                host.disconnect(m.from.host);
                continue;
            };
            let msg = match Msg::decode(&m.payload, n) {
                Ok(msg) => msg,
                Err(why) => {
                    s.report.rejected += 1;
                    host.event(&format!(
                        "smp sequencer: rejected frame from cpu {c}: {why}"
                    ));
                    host.disconnect(m.from.host);
                    continue;
                }
            };
            s.last_heard[c] = host.now();
            match msg {
                Msg::Publish {
                    cpu,
                    n: pn,
                    lock,
                    console,
                    diffs,
                    ipis,
                } if cpu as usize == c => {
                    s.on_publish(Pending {
                        cpu,
                        n: pn,
                        lock,
                        console,
                        diffs,
                        ipis,
                    })
                    .await
                }
                Msg::Ack { cpu, upto } if cpu as usize == c => s.on_ack(c, upto),
                Msg::Done { cpu, status } if cpu as usize == c => s.report.status[c] = Some(status),
                _ => {
                    s.report.rejected += 1;
                    host.disconnect(m.from.host);
                }
            }
            if s.all_done() {
                s.stop_all(None).await;
                linger(&host, &mut mb, &s.cpus, &opts).await;
                return s.report;
            }
        }
        if host.now() >= next_tick {
            next_tick = host.now() + rto;
            let dead = (0..n).find(|c| host.now() - s.last_heard[*c] > opts.dead_after());
            if let Some(c) = dead {
                let err = format!(
                    "virtual processor {c} (host {}) stopped responding: the virtual machine stops",
                    opts.cpu_hosts[c]
                );
                host.event(&format!("smp: {err}"));
                s.stop_all(Some(err.clone())).await;
                s.report.error = Some(err);
                return s.report;
            }
            s.retransmit().await;
        }
    }
}

/// After stopping: answers any processor that missed its `Stop` (it resends `Done`) until the
/// network has been quiet for the failure timeout.
async fn linger(host: &Arc<dyn Host>, mb: &mut Box<dyn Mailbox>, cpus: &[Addr], opts: &SmpOptions) {
    let frame = Msg::Stop { error: None }.encode();
    loop {
        match select(mb.recv(), host.sleep(opts.dead_after())).await {
            Either::Left((Ok(m), _)) => {
                if cpus.contains(&m.from) {
                    let _ = host.send(SEQ_PORT, m.from, frame.clone()).await;
                }
            }
            _ => return,
        }
    }
}
