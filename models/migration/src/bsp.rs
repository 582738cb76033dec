//! A bulk-synchronous parallel job whose processes can be migrated (document 1, Figure 1): P
//! ranks, each iteration a compute phase (`Host::compute`, so other users' load on a host slows
//! its rank) then a barrier through a master. A rank obeys migration orders between compute
//! slices (its "instruction boundary"): it stops, ships its image to the destination's restart
//! daemon, which rebuilds the rank there after a restart delay.
//!
//! The image carries the rank's real state (iteration, cycles left in the phase) in a small header,
//! padded to the configured image size: the transfer costs what the whole address space would.
//! This stand-in is what the capture/restore mechanism replaces.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridbed_runtime::{secs, Addr, HostId, HostRef, Mailbox};

use crate::controller_daemon::{decode_order, encode_finished, Progress};

/// Port of the barrier master.
pub const BARRIER_PORT: u16 = 43;
/// Port of each host's restart daemon (receives images).
pub const RESTART_PORT: u16 = 44;
/// Rank r listens on `RANK_PORT_BASE + r` (barrier releases and migration orders).
pub const RANK_PORT_BASE: u16 = 1000;

const ARRIVE: u8 = b'A';
const RELEASE: u8 = b'R';
const IMAGE: u8 = b'I';
const IMAGE_VERSION: u8 = 1;
const IMAGE_HEADER: usize = 2 + 4 + 4 + 8 + 8 + 8;

/// The job's shape.
#[derive(Clone, Debug)]
pub struct BspJob {
    pub ranks: u32,
    pub iterations: u32,
    /// CPU cycles of one rank's compute phase.
    pub compute_cycles: u64,
    /// Cycles between two checks for a migration order.
    pub slice_cycles: u64,
    pub image_bytes: u64,
    /// Time the destination needs after the last image byte before the rank runs again.
    pub restart_s: f64,
    pub master: HostId,
    /// Where the controller is, if the ranks are managed.
    pub controller: Option<Addr>,
}

/// One migration as the ranks saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MigrationRecord {
    pub rank: u32,
    pub from: HostId,
    pub to: HostId,
    /// When the rank stopped on `from` and when it resumed on `to`.
    pub stopped: Duration,
    pub resumed: Duration,
}

/// Instrumentation shared by the ranks: where migrations happened (an observer's log, not state
/// the ranks read).
pub type MigrationLog = Arc<Mutex<Vec<MigrationRecord>>>;

#[derive(Clone, Copy, Debug, PartialEq)]
struct RankState {
    rank: u32,
    iter: u32,
    remaining_cycles: u64,
    started: Duration,
    stopped: Duration,
}

impl RankState {
    fn image(&self, from: HostId, bytes: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity((bytes as usize).max(IMAGE_HEADER));
        b.push(IMAGE);
        b.push(IMAGE_VERSION);
        b.extend_from_slice(&self.rank.to_le_bytes());
        b.extend_from_slice(&self.iter.to_le_bytes());
        b.extend_from_slice(&self.remaining_cycles.to_le_bytes());
        b.extend_from_slice(&(self.started.as_nanos() as u64).to_le_bytes());
        b.extend_from_slice(&(self.stopped.as_nanos() as u64).to_le_bytes());
        // The source host rides in the padding's first bytes (the log needs it).
        b.extend_from_slice(&from.0.to_le_bytes());
        b.resize((bytes as usize).max(b.len()), 0);
        b
    }

    fn from_image(b: &[u8]) -> Option<(RankState, HostId)> {
        if b.len() < IMAGE_HEADER + 4 || b[0] != IMAGE || b[1] != IMAGE_VERSION {
            return None;
        }
        let u32_at = |i: usize| b[i..i + 4].try_into().ok().map(u32::from_le_bytes);
        let u64_at = |i: usize| b[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        Some((
            RankState {
                rank: u32_at(2)?,
                iter: u32_at(6)?,
                remaining_cycles: u64_at(10)?,
                started: Duration::from_nanos(u64_at(18)?),
                stopped: Duration::from_nanos(u64_at(26)?),
            },
            HostId(u32_at(IMAGE_HEADER)?),
        ))
    }
}

fn arrive(rank: u32, iter: u32) -> Vec<u8> {
    let mut b = vec![ARRIVE];
    b.extend_from_slice(&rank.to_le_bytes());
    b.extend_from_slice(&iter.to_le_bytes());
    b
}

fn release(iter: u32) -> Vec<u8> {
    let mut b = vec![RELEASE];
    b.extend_from_slice(&iter.to_le_bytes());
    b
}

fn u32_field(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

/// Starts rank `rank` on `host` (iteration 0).
pub fn start_rank(host: HostRef, job: Arc<BspJob>, rank: u32) {
    let st = RankState {
        rank,
        iter: 0,
        remaining_cycles: job.compute_cycles,
        started: host.now(),
        stopped: Duration::ZERO,
    };
    spawn_rank(host, job, st);
}

fn spawn_rank(host: HostRef, job: Arc<BspJob>, st: RankState) {
    let h = host.clone();
    host.spawn(
        &format!("rank{}", st.rank),
        Box::pin(async move { run_rank(h, job, st).await }),
    );
}

/// Starts `host`'s restart daemon: every image it receives becomes a running rank again.
pub fn start_restart_daemon(host: HostRef, job: Arc<BspJob>, log: MigrationLog) {
    let h = host.clone();
    host.spawn(
        "restart-daemon",
        Box::pin(async move {
            let Ok(mut inbox) = h.bind(RESTART_PORT) else {
                h.event("restart-daemon: port in use");
                return;
            };
            while let Ok(m) = inbox.recv().await {
                let Some((st, from)) = RankState::from_image(&m.payload) else {
                    h.event(&format!("restart-daemon: bad image from {}", m.from));
                    continue;
                };
                h.sleep(secs(job.restart_s)).await;
                log.lock().expect("migration log").push(MigrationRecord {
                    rank: st.rank,
                    from,
                    to: h.id(),
                    stopped: st.stopped,
                    resumed: h.now(),
                });
                h.event(&format!("rank{} resumed on {}", st.rank, h.id()));
                spawn_rank(h.clone(), job.clone(), st);
            }
        }),
    );
}

/// Sends the controller this rank's position and remaining work.
async fn report(host: &HostRef, job: &BspJob, st: &RankState) {
    let Some(ctl) = job.controller else { return };
    let left = u64::from(job.iterations.saturating_sub(st.iter + 1)) * job.compute_cycles
        + st.remaining_cycles;
    let p = Progress {
        process: st.rank,
        host: host.id(),
        control_port: RANK_PORT_BASE + st.rank as u16,
        image_bytes: job.image_bytes,
        remaining_s: Some(left as f64 / host.cpu_hz()),
        started: st.started,
    };
    // A lost report only delays a decision.
    let _ = host
        .send(RANK_PORT_BASE + st.rank as u16, ctl, p.encode())
        .await;
}

/// Ships the rank to `to`. The rank stops existing here once its image has left.
async fn migrate(host: &HostRef, job: &BspJob, mut st: RankState, to: HostId) -> bool {
    st.stopped = host.now();
    host.event(&format!("rank{} stops on {} for {to}", st.rank, host.id()));
    let image = st.image(host.id(), job.image_bytes);
    host.send(
        RANK_PORT_BASE + st.rank as u16,
        Addr::new(to, RESTART_PORT),
        image,
    )
    .await
    .is_ok()
}

/// An order for this rank in `msg`, if any (orders to move where it already is are ignored).
fn order_in(msg: &[u8], st: &RankState, here: HostId) -> Option<HostId> {
    decode_order(msg).and_then(|(p, to)| (p == st.rank && to != here).then_some(to))
}

async fn run_rank(host: HostRef, job: Arc<BspJob>, mut st: RankState) {
    let port = RANK_PORT_BASE + st.rank as u16;
    let Ok(mut inbox) = host.bind(port) else {
        host.event(&format!("rank{}: port {port} in use", st.rank));
        return;
    };
    let master = Addr::new(job.master, BARRIER_PORT);
    report(&host, &job, &st).await;
    let mut pending: Option<HostId> = None;
    while st.iter < job.iterations {
        while st.remaining_cycles > 0 || pending.is_some() {
            if let Some(to) = pending.take() {
                if migrate(&host, &job, st, to).await {
                    return;
                }
                host.event(&format!(
                    "rank{}: migration to {to} failed, staying",
                    st.rank
                ));
            }
            if st.remaining_cycles == 0 {
                break;
            }
            let c = job.slice_cycles.max(1).min(st.remaining_cycles);
            host.compute(c).await;
            st.remaining_cycles -= c;
            while let Some(m) = inbox.try_recv() {
                pending = order_in(&m.payload, &st, host.id()).or(pending);
            }
        }
        if host
            .send(port, master, arrive(st.rank, st.iter))
            .await
            .is_err()
        {
            host.event(&format!("rank{}: master unreachable", st.rank));
            return;
        }
        wait_release(&mut inbox, &st, host.id(), &mut pending).await;
        st.iter += 1;
        st.remaining_cycles = if st.iter < job.iterations {
            job.compute_cycles
        } else {
            0
        };
        if st.iter < job.iterations {
            report(&host, &job, &st).await;
        }
    }
    if let Some(ctl) = job.controller {
        let _ = host.send(port, ctl, encode_finished(st.rank)).await;
    }
}

async fn wait_release(
    inbox: &mut Box<dyn Mailbox>,
    st: &RankState,
    here: HostId,
    pending: &mut Option<HostId>,
) {
    while let Ok(m) = inbox.recv().await {
        if m.payload.first() == Some(&RELEASE) && u32_field(&m.payload, 1) == Some(st.iter) {
            return;
        }
        if let Some(to) = order_in(&m.payload, st, here) {
            *pending = Some(to);
        }
    }
}

/// The barrier master, run on `host`: returns when every rank has passed the last barrier, with
/// the time each iteration's barrier completed.
pub async fn run_master(
    host: HostRef,
    ranks: u32,
    iterations: u32,
) -> anyhow::Result<Vec<Duration>> {
    let mut inbox = host.bind(BARRIER_PORT)?;
    let mut ends = Vec::with_capacity(iterations as usize);
    for iter in 0..iterations {
        let mut arrived: BTreeMap<u32, Addr> = BTreeMap::new();
        while arrived.len() < ranks as usize {
            let m = inbox.recv().await?;
            if m.payload.first() != Some(&ARRIVE) || m.payload.len() != 9 {
                continue;
            }
            let (Some(rank), Some(it)) = (u32_field(&m.payload, 1), u32_field(&m.payload, 5))
            else {
                continue;
            };
            if it == iter && rank < ranks {
                arrived.insert(rank, m.from);
            }
        }
        ends.push(host.now());
        for addr in arrived.values() {
            host.send(BARRIER_PORT, *addr, release(iter)).await?;
        }
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_header_round_trips_and_short_images_are_refused() {
        let st = RankState {
            rank: 3,
            iter: 7,
            remaining_cycles: 12345,
            started: Duration::from_millis(5),
            stopped: Duration::from_millis(900),
        };
        let img = st.image(HostId(2), 1000);
        assert_eq!(img.len(), 1000);
        assert_eq!(RankState::from_image(&img), Some((st, HostId(2))));
        assert_eq!(RankState::from_image(&img[..20]), None);
    }
}
