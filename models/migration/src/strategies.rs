//! Three ways to move a running process's memory from host 0 to host 1, over the runtime's
//! messages (so over any transport preset), measured the same way:
//! - stop-and-copy (the paper): freeze, send every page and the processor state, resume;
//! - pre-copy (Clark et al., NSDI 2005): send every page while the process runs, then resend the
//!   pages it dirtied meanwhile, round after round, until few remain; then freeze, send those and
//!   the state, resume;
//! - post-copy (CRIU lazy pages): freeze, send only the state, resume at once; the destination
//!   fetches a page when the process first touches it while the source pushes the rest in the
//!   background. Until the last page arrives the process needs *both* hosts: if the source
//!   becomes unreachable, the destination stops with an error instead of running on with holes.
//!
//! The process runs on its host's CPU while pages move; contention between the two is not
//! modelled (the NIC moves the bytes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use gridbed_runtime::{secs, Addr, ClusterRef, Host, HostId, HostRef, Mailbox};

use crate::paged::{PagedProcess, PAGE};

/// Port both ends of a strategy run use.
pub const STRATEGY_PORT: u16 = 45;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    StopAndCopy,
    PreCopy,
    PostCopy,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::StopAndCopy, Strategy::PreCopy, Strategy::PostCopy];
    pub fn name(self) -> &'static str {
        match self {
            Strategy::StopAndCopy => "stopcopy",
            Strategy::PreCopy => "precopy",
            Strategy::PostCopy => "postcopy",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StrategyConfig {
    pub strategy: Strategy,
    /// Bytes of pages per message (a put or a stream write of this size).
    pub batch_bytes: usize,
    /// Size of the processor/device state record (sent last, or first for post-copy).
    pub state_bytes: usize,
    /// The process runs in ticks of this many seconds.
    pub tick_s: f64,
    /// Seconds the process runs at the source before the migration starts.
    pub start_after_s: f64,
    /// Pre-copy stops iterating at this many dirty pages...
    pub precopy_stop_pages: usize,
    /// ...or after this many rounds, or when a round did not shrink the dirty set.
    pub precopy_max_rounds: u32,
    /// Post-copy: how long the destination waits for a faulted page before failing.
    pub fetch_timeout: Duration,
}

/// One migration, measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StrategyReport {
    /// From the start of the migration until the destination holds every page and runs.
    pub total_s: f64,
    /// Time the process was frozen (neither host running it).
    pub downtime_s: f64,
    /// Bytes the source sent (pages, state, replies).
    pub bytes: u64,
    pub pages_sent: u64,
    /// Pages sent more than once (pre-copy's resends; post-copy's pushes of already-fetched
    /// pages).
    pub pages_resent: u64,
    pub rounds: u32,
    /// Post-copy: writes that waited for a page.
    pub demand_faults: u64,
    /// Digest of the process at its end, at the destination.
    pub final_digest: u64,
}

const T_PAGES: u8 = 1;
const T_STATE: u8 = 2;
const T_FETCH: u8 = 3;
const T_DONE: u8 = 4;

fn pages_msg(p: &PagedProcess, idx: &[u32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + idx.len() * (4 + PAGE));
    v.push(T_PAGES);
    for &i in idx {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(p.page(i as usize));
    }
    v
}

/// The pages of a `T_PAGES` message, checked.
fn parse_pages(b: &[u8]) -> Option<Vec<(usize, &[u8])>> {
    let body = b.get(1..)?;
    if body.len() % (4 + PAGE) != 0 {
        return None;
    }
    Some(
        body.chunks_exact(4 + PAGE)
            .map(|c| {
                let i = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
                (i, &c[4..])
            })
            .collect(),
    )
}

/// What the two sides share for measurement only.
#[derive(Default)]
struct Shared {
    resumed_at: Option<Duration>,
    complete_at: Option<Duration>,
    demand_faults: u64,
    result: Option<anyhow::Result<u64>>,
    source: Option<anyhow::Result<SourceStats>>,
}

type SharedRef = Arc<Mutex<Shared>>;

fn with<T>(s: &SharedRef, f: impl FnOnce(&mut Shared) -> T) -> T {
    f(&mut s.lock().unwrap_or_else(|e| e.into_inner()))
}

struct Source {
    host: HostRef,
    to: Addr,
    bytes: u64,
    sent: Vec<bool>,
    pages_sent: u64,
    resent: u64,
}

impl Source {
    async fn send(&mut self, payload: Vec<u8>) -> anyhow::Result<()> {
        self.bytes += payload.len() as u64;
        self.host
            .send(STRATEGY_PORT, self.to, payload)
            .await
            .map_err(|e| anyhow!("send: {e}"))
    }

    async fn send_pages(&mut self, p: &PagedProcess, idx: &[u32]) -> anyhow::Result<()> {
        for &i in idx {
            let seen = std::mem::replace(&mut self.sent[i as usize], true);
            self.resent += seen as u64;
            self.pages_sent += 1;
        }
        self.send(pages_msg(p, idx)).await
    }
}

/// Runs `p` on `host` for `dt` seconds: charges the CPU, performs the writes.
async fn run_for(host: &dyn Host, p: &mut PagedProcess, dt: f64) -> Result<(), usize> {
    host.compute((dt * host.cpu_hz()) as u64).await;
    p.run(dt)
}

/// Moves `p` from host 0 to host 1 of `cluster` with `cfg.strategy` and runs it to its end
/// there. Hosts 0 and 1 must be free on `STRATEGY_PORT`.
pub async fn migrate(
    cluster: &ClusterRef,
    p: PagedProcess,
    cfg: &StrategyConfig,
) -> anyhow::Result<StrategyReport> {
    let hosts = cluster.hosts();
    let (src, dst) = (hosts[0].clone(), hosts[1].clone());
    let inbox = src.bind(STRATEGY_PORT).map_err(|e| anyhow!("bind: {e}"))?;
    let dst_inbox = dst.bind(STRATEGY_PORT).map_err(|e| anyhow!("bind: {e}"))?;
    let shared: SharedRef = Arc::default();
    let copy = p.empty_copy();
    {
        let (shared, cfg, host) = (shared.clone(), cfg.clone(), dst.clone());
        dst.spawn(
            "strategy-dst",
            Box::pin(async move {
                let r = destination(&*host, dst_inbox, copy, &cfg, &shared).await;
                with(&shared, |s| s.result = Some(r));
            }),
        );
    }
    {
        let (shared, cfg, host) = (shared.clone(), cfg.clone(), src.clone());
        src.spawn(
            "strategy-src",
            Box::pin(async move {
                let r = source(&host, inbox, p, &cfg, &shared).await;
                with(&shared, |s| s.source = Some(r));
            }),
        );
    }
    // The driver only waits: both ends run on their hosts and die with them.
    let deadline = cluster.now() + Duration::from_secs(600);
    loop {
        let (dst_done, src_done) = with(&shared, |x| (x.result.is_some(), x.source.is_some()));
        let dst_failed = with(&shared, |x| matches!(x.result, Some(Err(_))));
        if (dst_done && src_done) || dst_failed {
            break;
        }
        let resumed = with(&shared, |x| x.resumed_at.is_some());
        let failed = with(&shared, |x| matches!(x.source, Some(Err(_))));
        if failed && !resumed {
            if let Some(Err(e)) = with(&shared, |x| x.source.take()) {
                return Err(e);
            }
        }
        if dst_done && cluster.now() >= deadline {
            break;
        }
        if cluster.now() >= deadline {
            bail!("migration did not finish within 600 s of simulated time");
        }
        cluster.sleep(Duration::from_millis(5)).await;
    }
    let digest = with(&shared, |x| x.result.take()).unwrap_or_else(|| Err(anyhow!("no result")))?;
    let src_side = with(&shared, |x| x.source.take());
    let (resumed, complete, faults) =
        with(&shared, |x| (x.resumed_at, x.complete_at, x.demand_faults));
    let resumed = resumed.ok_or_else(|| anyhow!("destination never resumed"))?;
    let complete = complete.unwrap_or(resumed).max(resumed);
    let st = match src_side {
        Some(Ok(st)) => st,
        _ => SourceStats::default(),
    };
    Ok(StrategyReport {
        total_s: (complete - st.t0).as_secs_f64(),
        downtime_s: (resumed - st.frozen_at).as_secs_f64(),
        bytes: st.bytes,
        pages_sent: st.pages_sent,
        pages_resent: st.resent,
        rounds: st.rounds,
        demand_faults: faults,
        final_digest: digest,
    })
}

#[derive(Clone, Debug, Default)]
struct SourceStats {
    t0: Duration,
    frozen_at: Duration,
    rounds: u32,
    bytes: u64,
    pages_sent: u64,
    resent: u64,
}

/// The source: runs the process until the migration starts, then moves it.
async fn source(
    src: &HostRef,
    mut inbox: Box<dyn Mailbox>,
    mut p: PagedProcess,
    cfg: &StrategyConfig,
    shared: &SharedRef,
) -> anyhow::Result<SourceStats> {
    let mut t = 0.0;
    while t < cfg.start_after_s && !p.finished() {
        let _ = run_for(&**src, &mut p, cfg.tick_s).await;
        t += cfg.tick_s;
    }
    let per_batch = (cfg.batch_bytes / PAGE).max(1);
    let all: Vec<u32> = (0..p.pages() as u32).collect();
    let mut s = Source {
        host: src.clone(),
        to: Addr::new(HostId(1), STRATEGY_PORT),
        bytes: 0,
        sent: vec![false; p.pages()],
        pages_sent: 0,
        resent: 0,
    };
    let t0 = src.now();
    let mut rounds = 0;
    let frozen_at;
    match cfg.strategy {
        Strategy::StopAndCopy => {
            frozen_at = src.now();
            for b in all.chunks(per_batch) {
                s.send_pages(&p, b).await?;
            }
            rounds = 1;
        }
        Strategy::PreCopy => {
            let mut batch = all;
            let mut last = usize::MAX;
            loop {
                rounds += 1;
                p.take_dirty();
                for b in batch.chunks(per_batch) {
                    let before = src.now();
                    s.send_pages(&p, b).await?;
                    // The process ran while the batch was on its way.
                    let _ = p.run((src.now() - before).as_secs_f64());
                }
                let dirty = p.take_dirty();
                let stop = dirty.len() <= cfg.precopy_stop_pages
                    || rounds >= cfg.precopy_max_rounds
                    || dirty.len() >= last;
                last = dirty.len();
                if stop {
                    frozen_at = src.now();
                    for b in dirty.chunks(per_batch) {
                        s.send_pages(&p, b).await?;
                    }
                    break;
                }
                batch = dirty;
            }
        }
        Strategy::PostCopy => {
            frozen_at = src.now();
        }
    }
    let mut state = vec![0u8; cfg.state_bytes.max(1)];
    state[0] = T_STATE;
    s.send(state).await?;
    // A failing source (its host went down) is reported through the destination, which is
    // where post-copy's dependency on both hosts shows.
    if cfg.strategy == Strategy::PostCopy {
        let _ = serve_post_copy(&mut s, &p, &mut inbox, per_batch, shared).await;
    }
    Ok(SourceStats {
        t0,
        frozen_at,
        rounds,
        bytes: s.bytes,
        pages_sent: s.pages_sent,
        resent: s.resent,
    })
}

/// Post-copy source: push every page in order, answering the destination's faults first, until
/// it says it holds them all.
async fn serve_post_copy(
    s: &mut Source,
    p: &PagedProcess,
    inbox: &mut Box<dyn Mailbox>,
    per_batch: usize,
    shared: &SharedRef,
) -> anyhow::Result<()> {
    let mut next = 0usize;
    loop {
        while let Some(m) = inbox.try_recv() {
            match m.payload.first() {
                Some(&T_FETCH) if m.payload.len() == 5 => {
                    let i = u32::from_le_bytes([
                        m.payload[1],
                        m.payload[2],
                        m.payload[3],
                        m.payload[4],
                    ]);
                    if (i as usize) < p.pages() {
                        s.send_pages(p, &[i]).await?;
                    }
                }
                Some(&T_DONE) => return Ok(()),
                _ => {}
            }
        }
        if with(shared, |x| x.result.is_some()) {
            return Ok(());
        }
        if next < p.pages() {
            let end = (next + per_batch).min(p.pages());
            let idx: Vec<u32> = (next as u32..end as u32)
                .filter(|&i| !s.sent[i as usize])
                .collect();
            next = end;
            if !idx.is_empty() {
                s.send_pages(p, &idx).await?;
            }
        } else {
            match inbox.recv().await {
                Ok(m) => {
                    if m.payload.first() == Some(&T_DONE) {
                        return Ok(());
                    }
                    if m.payload.first() == Some(&T_FETCH) && m.payload.len() == 5 {
                        let i = u32::from_le_bytes([
                            m.payload[1],
                            m.payload[2],
                            m.payload[3],
                            m.payload[4],
                        ]);
                        if (i as usize) < p.pages() {
                            s.send_pages(p, &[i]).await?;
                        }
                    }
                }
                Err(e) => bail!("source mailbox: {e}"),
            }
        }
    }
}

/// Stores the pages of one message; false if it was not a page message.
fn absorb(p: &mut PagedProcess, payload: &[u8]) -> bool {
    if payload.first() != Some(&T_PAGES) {
        return false;
    }
    if let Some(pages) = parse_pages(payload) {
        for (i, b) in pages {
            p.put_page(i, b);
        }
    }
    true
}

/// The destination: collects pages, resumes on the state record (post-copy: with holes,
/// fetching on fault), runs the process to its end; returns its digest.
async fn destination(
    host: &dyn Host,
    mut inbox: Box<dyn Mailbox>,
    mut p: PagedProcess,
    cfg: &StrategyConfig,
    shared: &SharedRef,
) -> anyhow::Result<u64> {
    let src = Addr::new(HostId(0), STRATEGY_PORT);
    loop {
        let m = inbox
            .recv()
            .await
            .map_err(|e| anyhow!("destination: {e}"))?;
        if m.payload.first() == Some(&T_STATE) {
            break;
        }
        absorb(&mut p, &m.payload);
    }
    with(shared, |s| s.resumed_at = Some(host.now()));
    if cfg.strategy != Strategy::PostCopy && !p.complete() {
        bail!("state arrived before every page");
    }
    let mut told_done = false;
    // Until the process ends and, for post-copy, until the last page is in (the source is
    // busy until then even if the process ended first).
    while !p.finished() || !told_done {
        if p.finished() {
            match inbox.try_recv() {
                Some(m) => {
                    absorb(&mut p, &m.payload);
                }
                None => host.sleep(secs(cfg.tick_s)).await,
            }
            if p.complete() {
                with(shared, |s| s.complete_at = Some(host.now()));
                let _ = host.send(STRATEGY_PORT, src, vec![T_DONE]).await;
                told_done = true;
            }
            continue;
        }
        while let Some(m) = inbox.try_recv() {
            absorb(&mut p, &m.payload);
        }
        if p.complete() && !told_done {
            with(shared, |s| s.complete_at = Some(host.now()));
            if cfg.strategy == Strategy::PostCopy {
                let _ = host.send(STRATEGY_PORT, src, vec![T_DONE]).await;
            }
            told_done = true;
        }
        host.compute((cfg.tick_s * host.cpu_hz()) as u64).await;
        let mut left = cfg.tick_s;
        while let Err(page) = p.run(left) {
            // A page fault: fetch the page from the source, absorbing pushed pages meanwhile.
            left = 0.0;
            with(shared, |s| s.demand_faults += 1);
            let mut fetch = vec![T_FETCH];
            fetch.extend_from_slice(&(page as u32).to_le_bytes());
            let _ = host.send(STRATEGY_PORT, src, fetch).await;
            let deadline = host.now() + cfg.fetch_timeout;
            while !p.has(page) {
                if host.now() >= deadline {
                    bail!(
                        "post-copy: page {page} never arrived from the source within {:?}; the process cannot go on (both hosts are needed until the last page)",
                        cfg.fetch_timeout
                    );
                }
                match inbox.try_recv() {
                    Some(m) => {
                        absorb(&mut p, &m.payload);
                    }
                    None => host.sleep(Duration::from_micros(20)).await,
                }
            }
        }
    }
    if !told_done {
        with(shared, |s| s.complete_at = Some(host.now()));
    }
    Ok(p.digest())
}
