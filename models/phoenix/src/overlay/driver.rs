//! Drives a [`Router`] over a `gridbed_runtime::Host` (simulated or real), and the offline
//! baseline over the same host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use gridbed_runtime::{Addr, HostId, HostRef, Mailbox, NetError};

use super::check::Graph;
use super::router::{Route, Router, State};
use super::wire::{self, Body, Frame};

/// The overlay's port (the Phoenix core uses 7400).
pub const PORT: u16 = 7401;

/// CPU cycles per routing item processed: one advert or tomb examined or produced, or one arc
/// relaxed by the offline BFS. Estimate: an ordered-map lookup and update in a table of a few
/// hundred entries is ~200 ns, i.e. 200 cycles on the simulator's default 1 GHz host
/// (`gridbed_sim::Platform::cpu_hz`). The same constant prices both protocols.
pub const CYCLES_PER_ITEM: u64 = 200;

/// Counters shared with whoever watches the run (instrumentation only; the protocol never reads
/// them). A frame counts as sent before its send starts and as handled once its receiver has
/// processed it and sent what it caused, so `sent == handled` means nothing is in flight.
#[derive(Debug, Default)]
pub struct Probe {
    pub sent: AtomicU64,
    pub handled: AtomicU64,
    pub bytes: AtomicU64,
    pub bad_frames: AtomicU64,
}

/// Called after a batch of frames changed the table, before anything is sent.
pub type Observer = Box<dyn FnMut(&Router, Duration) + Send>;

/// One machine's overlay endpoint.
pub struct OverlayNode {
    host: HostRef,
    mailbox: Box<dyn Mailbox>,
    router: Router,
    probe: Arc<Probe>,
    observer: Option<Observer>,
    cycles_per_item: u64,
}

/// The machines `host` may try to connect to directly.
pub fn candidates(host: &HostRef) -> Vec<HostId> {
    let me = host.id();
    host.hosts()
        .into_iter()
        .filter(|h| *h != me && host.can_reach(*h))
        .collect()
}

impl OverlayNode {
    /// Binds the overlay port and says hello to every candidate neighbour.
    pub async fn start(
        host: HostRef,
        inc: u32,
        max_machines: u32,
        probe: Arc<Probe>,
        observer: Option<Observer>,
    ) -> Result<Self, NetError> {
        let mailbox = host.bind(PORT)?;
        let mut router = Router::new(host.id(), inc, max_machines);
        router.start(candidates(&host));
        let mut n = OverlayNode {
            host,
            mailbox,
            router,
            probe,
            observer,
            cycles_per_item: CYCLES_PER_ITEM,
        };
        n.flush(0).await;
        Ok(n)
    }

    pub fn router(&self) -> &Router {
        &self.router
    }
    /// Overrides [`CYCLES_PER_ITEM`] (for sensitivity runs).
    pub fn set_cycles_per_item(&mut self, c: u64) {
        self.cycles_per_item = c;
    }
    pub fn host(&self) -> &HostRef {
        &self.host
    }

    /// Sends what the router queued, charging the CPU for the adverts built first.
    async fn flush(&mut self, handled: u64) {
        let out = self.router.take_outgoing();
        let items: u64 = out
            .iter()
            .map(|(_, f)| match &f.body {
                Body::Update { adverts, gone } => (adverts.len() + gone.len()) as u64,
                _ => 0,
            })
            .sum();
        if items > 0 {
            self.host.compute(items * self.cycles_per_item).await;
        }
        for (to, f) in out {
            let bytes = wire::encode(&f);
            let len = bytes.len() as u64;
            self.probe.sent.fetch_add(1, Ordering::SeqCst);
            match self.host.send(PORT, Addr::new(to, PORT), bytes).await {
                Ok(()) => {
                    self.probe.bytes.fetch_add(len, Ordering::SeqCst);
                }
                Err(e) => {
                    self.probe.sent.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(me = %self.host.id(), %to, error = %e, "overlay send failed");
                }
            }
        }
        self.probe.handled.fetch_add(handled, Ordering::SeqCst);
    }

    /// Waits up to `timeout` for a frame, then handles it and every frame already queued as one
    /// batch (one CPU charge, one update per neighbour). Returns false on timeout.
    pub async fn step(&mut self, timeout: Duration) -> Result<bool, NetError> {
        let first = match select(self.mailbox.recv(), self.host.sleep(timeout)).await {
            Either::Left((m, _)) => m?,
            Either::Right(_) => return Ok(false),
        };
        let mut batch = vec![first];
        while let Some(m) = self.mailbox.try_recv() {
            batch.push(m);
        }
        let version = self.router.version();
        let mut work = 0;
        for m in &batch {
            let r = wire::decode(&m.payload)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    self.router
                        .handle(m.from.host, f)
                        .map_err(|e| e.to_string())
                });
            match r {
                Ok(w) => work += w,
                Err(e) => {
                    // The runtime interface has no connection to close: the frame is dropped.
                    self.probe.bad_frames.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(me = %self.host.id(), from = %m.from, error = %e, "overlay frame dropped");
                }
            }
        }
        self.host.compute(work * self.cycles_per_item).await;
        if self.router.version() != version {
            if let Some(f) = self.observer.as_mut() {
                f(&self.router, self.host.now());
            }
        }
        self.flush(batch.len() as u64).await;
        Ok(true)
    }

    /// Leaves: `Bye` to every neighbour, then serves frames until all acknowledged. Nothing is
    /// sent to this machine after that, so the port can be released.
    pub async fn leave(mut self) -> Result<Router, NetError> {
        self.router.leave();
        self.flush(0).await;
        while *self.router.state() != State::Departed {
            self.step(Duration::from_secs(3600)).await?;
        }
        Ok(self.router)
    }
}

/// The offline baseline for one machine, after Kaneda et al.: "connects nodes based on a fully
/// given configuration" and computes the routes. The machine knows the whole graph `config`,
/// says hello to each neighbour in it, waits for the hello of each, then runs one BFS (charged
/// at `cycles_per_item` ([`CYCLES_PER_ITEM`] by default) per machine and per arc). Returns its
/// table.
pub async fn run_offline(
    host: HostRef,
    config: Arc<Graph>,
    probe: Arc<Probe>,
    cycles_per_item: u64,
) -> Result<BTreeMap<HostId, Route>, NetError> {
    let me = host.id();
    let mut mailbox = host.bind(PORT)?;
    let neighbors: BTreeSet<HostId> = config.adj.get(&me).cloned().unwrap_or_default();
    let hello = wire::encode(&Frame {
        src: me,
        inc: 0,
        body: Body::Hello,
    });
    for n in &neighbors {
        probe.sent.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = host.send(PORT, Addr::new(*n, PORT), hello.clone()).await {
            probe.sent.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%me, to = %n, error = %e, "offline hello failed");
        } else {
            probe.bytes.fetch_add(hello.len() as u64, Ordering::SeqCst);
        }
    }
    let mut waiting = neighbors;
    while !waiting.is_empty() {
        let m = mailbox.recv().await?;
        match wire::decode(&m.payload) {
            Ok(f) if f.body == Body::Hello && f.src == m.from.host => {
                waiting.remove(&f.src);
            }
            _ => {
                probe.bad_frames.fetch_add(1, Ordering::SeqCst);
            }
        }
        probe.handled.fetch_add(1, Ordering::SeqCst);
    }
    let work = (config.adj.len() + config.arcs()) as u64;
    host.compute(work * cycles_per_item).await;
    Ok(config.table_of(me))
}
