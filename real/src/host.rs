//! A real host: a TCP listener, one reliable [`Link`] per peer it sends to, and bounded per-port
//! queues fed by one authenticated reader per peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridbed_runtime::{Addr, BoxFuture, Host, HostId, Mailbox, NetError};
use parking_lot::Mutex;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::handshake::ClusterSecret;
use crate::inbound::{accept_loop, InboundCtx};
use crate::limits::Limits;
use crate::link::{Link, LinkCtx};
use crate::ports::Ports;
use crate::stats::{LinkStats, Stats};

/// Who a host is and what it may spend.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub id: HostId,
    /// The address to dial for every host of the cluster, in id order.
    pub addrs: Arc<Vec<SocketAddr>>,
    pub secret: ClusterSecret,
    pub limits: Limits,
}

/// The state of one incarnation (start to crash) of the host.
struct Incarnation {
    links: BTreeMap<u32, Arc<Link>>,
    link_ctx: Arc<LinkCtx>,
    inbound: Arc<InboundCtx>,
}

pub struct RealHost {
    pub id: HostId,
    pub addrs: Arc<Vec<SocketAddr>>,
    pub epoch: Instant,
    pub rt: tokio::runtime::Handle,
    cfg: HostConfig,
    listen_addr: SocketAddr,
    ports: Arc<Ports>,
    stats: Arc<Stats>,
    live: Mutex<Incarnation>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl RealHost {
    /// Starts accepting peers on `listener`, with the default [`Limits`].
    pub fn start(
        id: HostId,
        listener: TcpListener,
        addrs: Arc<Vec<SocketAddr>>,
        epoch: Instant,
        rt: tokio::runtime::Handle,
        secret: ClusterSecret,
    ) -> Arc<RealHost> {
        let cfg = HostConfig {
            id,
            addrs,
            secret,
            limits: Limits::default(),
        };
        RealHost::start_with(cfg, listener, epoch, rt)
    }

    /// Starts accepting peers on `listener`.
    pub fn start_with(
        cfg: HostConfig,
        listener: TcpListener,
        epoch: Instant,
        rt: tokio::runtime::Handle,
    ) -> Arc<RealHost> {
        let listen_addr = listener
            .local_addr()
            .unwrap_or_else(|_| cfg.addrs[cfg.id.0 as usize]);
        let stats = Arc::new(Stats::default());
        let ports = Ports::new(cfg.limits.clone());
        let live = Mutex::new(incarnation(&cfg, &stats, &ports));
        let host = Arc::new(RealHost {
            id: cfg.id,
            addrs: cfg.addrs.clone(),
            epoch,
            rt,
            cfg,
            listen_addr,
            ports,
            stats,
            live,
            tasks: Mutex::default(),
        });
        host.listen(listener);
        host
    }

    fn listen(&self, listener: TcpListener) {
        let inbound = self.live.lock().inbound.clone();
        let accept = self.rt.spawn(accept_loop(listener, inbound));
        self.tasks.lock().push(accept.abort_handle());
    }

    /// Stops every task of this host, closes its ports and connections and forgets its link state
    /// (a crash in real mode). Messages it had accepted but not delivered are lost with it.
    pub fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        let old = {
            let mut live = self.live.lock();
            std::mem::replace(&mut *live, incarnation(&self.cfg, &self.stats, &self.ports))
        };
        old.inbound.stop();
        self.ports.clear();
    }

    /// Brings a stopped host back: listening again on the same address, as a new incarnation
    /// (peers see a new epoch and start their sequences afresh). The old listener closes when its
    /// aborted task is dropped, a moment later, so binding is retried briefly.
    pub fn restart(&self) {
        self.stop();
        let inbound = self.live.lock().inbound.clone();
        let addr = self.listen_addr;
        let task = self.rt.spawn(async move {
            let mut pause = Duration::from_millis(2);
            for attempt in 0.. {
                match rebind(addr) {
                    Ok(listener) => return accept_loop(listener, inbound).await,
                    Err(e) if attempt >= 100 => {
                        tracing::error!(
                            host = inbound.me,
                            "restart could not listen on {addr}: {e}"
                        );
                        return;
                    }
                    Err(_) => tokio::time::sleep(pause).await,
                }
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        });
        self.tasks.lock().push(task.abort_handle());
    }

    /// Transport counters since the host started.
    pub fn stats(&self) -> LinkStats {
        self.stats.snapshot()
    }

    /// Messages accepted for `peer` and not acknowledged yet.
    pub fn unacked(&self, peer: HostId) -> usize {
        self.live
            .lock()
            .links
            .get(&peer.0)
            .map_or(0, |l| l.unacked())
    }

    /// Messages parked for ports not bound yet.
    pub fn parked(&self) -> usize {
        self.ports.parked()
    }

    fn link(&self, to: HostId) -> Arc<Link> {
        let mut live = self.live.lock();
        if let Some(l) = live.links.get(&to.0) {
            return l.clone();
        }
        let link = Link::new(to, live.link_ctx.clone());
        let addr = self.addrs[to.0 as usize];
        let writer = self.rt.spawn(link.clone().drive(addr));
        self.tasks.lock().push(writer.abort_handle());
        live.links.insert(to.0, link.clone());
        link
    }
}

fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn incarnation(cfg: &HostConfig, stats: &Arc<Stats>, ports: &Arc<Ports>) -> Incarnation {
    // The epoch names this incarnation to peers: fresh randomness, so a restarted host is never
    // mistaken for its earlier self.
    let epoch = rand::rngs::OsRng.next_u64();
    Incarnation {
        links: BTreeMap::new(),
        link_ctx: Arc::new(LinkCtx {
            me: cfg.id.0,
            epoch,
            secret: cfg.secret.clone(),
            limits: cfg.limits.clone(),
            stats: stats.clone(),
        }),
        inbound: InboundCtx::new(
            cfg.id.0,
            cfg.addrs.len() as u32,
            epoch,
            cfg.secret.clone(),
            cfg.limits.clone(),
            stats.clone(),
            ports.clone(),
        ),
    }
}

impl Host for RealHost {
    fn id(&self) -> HostId {
        self.id
    }
    fn name(&self) -> String {
        format!("h{}@{}", self.id.0, self.addrs[self.id.0 as usize])
    }
    fn hosts(&self) -> Vec<HostId> {
        (0..self.addrs.len() as u32).map(HostId).collect()
    }
    fn can_reach(&self, other: HostId) -> bool {
        (other.0 as usize) < self.addrs.len()
    }
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
    fn rng_u64(&self) -> u64 {
        rand::random()
    }
    fn compute(&self, _cycles: u64) -> BoxFuture<'static, ()> {
        // Real work has already been done by the caller. Still a cooperative point, so a loop of
        // compute() calls cannot starve the other tasks, but it yields only once the task has used
        // its scheduling budget: a yield polls the sockets (an `epoll_wait`), which after every
        // small piece of work cost the ray tracer ~10 % of its CPU.
        Box::pin(tokio::task::consume_budget())
    }
    fn cpu_hz(&self) -> f64 {
        // Nominal: real-mode timing comes from the wall clock, not from this figure.
        1e9
    }
    fn spawn(&self, _name: &str, task: BoxFuture<'static, ()>) {
        let h = self.rt.spawn(task);
        self.tasks.lock().push(h.abort_handle());
    }
    fn bind(&self, port: u16) -> Result<Box<dyn Mailbox>, NetError> {
        self.ports.bind(self.id, port)
    }
    fn send(
        &self,
        from_port: u16,
        to: Addr,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), NetError>> {
        if !self.can_reach(to.host) {
            return Box::pin(async move { Err(NetError::Unreachable(to)) });
        }
        let link = self.link(to.host);
        Box::pin(async move { link.send(from_port, to.port, payload).await })
    }
    fn disconnect(&self, peer: HostId) {
        let live = self.live.lock();
        live.inbound.disconnect(peer.0);
        if let Some(l) = live.links.get(&peer.0) {
            l.kick();
        }
        tracing::warn!(host = self.id.0, peer = peer.0, "connection closed");
    }
    fn event(&self, what: &str) {
        tracing::debug!(host = self.id.0, "{what}");
    }
}
