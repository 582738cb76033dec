//! gridbed-real: the runtime interface on genuine tokio and TCP.
//!
//! [`run_local`] starts n hosts in this process, each with its own loopback listener: every
//! message really crosses the kernel's TCP stack.
//!
//! Transport guarantees (see ARCHITECTURE.md for the threat model):
//! - Every connection is authenticated both ways with the cluster secret ([`handshake`]); the
//!   peer id is pinned per connection and frames claiming another source are refused.
//! - Each host pair has a reliable link (sequence numbers, acks, retransmission): while both
//!   hosts live, every message `send` accepted is delivered exactly once and in order, across connection resets. The one exception
//!   is `disconnect`: what the misbehaving peer had sent and this host had not delivered when it
//!   disconnected (up to the peer's next handshake) is discarded, as the runtime interface says.
//! - Memory is bounded ([`Limits`]): full queues push back on the sender.

pub mod frame;
pub mod handshake;
mod host;
mod inbound;
mod limits;
mod link;
mod ports;
pub mod proxy;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridbed_runtime::{BoxFuture, Cluster, ClusterRef, HostId, HostRef};

pub use handshake::{ClusterSecret, SECRET_ENV};
pub use host::{HostConfig, RealHost};
pub use limits::Limits;
pub use stats::LinkStats;

struct RealCluster {
    hosts: Vec<Arc<RealHost>>,
    epoch: Instant,
}

impl Cluster for RealCluster {
    fn hosts(&self) -> Vec<HostRef> {
        self.hosts.iter().map(|h| h.clone() as HostRef).collect()
    }
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
    fn crash(&self, host: HostId) {
        if let Some(h) = self.hosts.get(host.0 as usize) {
            h.stop();
        }
    }
    fn restart(&self, host: HostId) {
        if let Some(h) = self.hosts.get(host.0 as usize) {
            h.restart();
        }
    }
    fn set_background_load(&self, _host: HostId, _jobs: u32) -> bool {
        false
    }
    fn event(&self, what: &str) {
        tracing::debug!("driver: {what}");
    }
}

/// Worker threads of the tokio runtime [`run_local`] runs its hosts on: at most this many hosts
/// compute at the same instant (two = the cores of the CI machine).
pub const WORKER_THREADS: usize = 2;

/// Maps a host's listening address to the address its peers dial (a test proxy in between).
pub type Route = Arc<dyn Fn(usize, SocketAddr) -> SocketAddr + Send + Sync>;

/// How [`run_local_with`] builds its cluster.
#[derive(Clone, Default)]
pub struct LocalOptions {
    pub limits: Limits,
    /// Where peers dial each host; `None`: straight to its listener.
    pub route: Option<Route>,
    /// The cluster secret; `None`: a fresh random one (it never leaves the process).
    pub secret: Option<ClusterSecret>,
}

/// The real backend as a [`gridbed_runtime::Runner`]: `hosts` real hosts of this process on
/// loopback TCP (authenticated, reliable links), a fresh cluster secret per run unless given,
/// and a deadline.
#[derive(Clone)]
pub struct LocalRunner {
    pub hosts: usize,
    pub deadline: Duration,
    pub opts: LocalOptions,
}

impl LocalRunner {
    pub fn new(hosts: usize, deadline: Duration) -> Self {
        LocalRunner {
            hosts,
            deadline,
            opts: LocalOptions::default(),
        }
    }
}

impl gridbed_runtime::Runner for LocalRunner {
    fn backend(&self) -> &'static str {
        "real"
    }

    fn hosts(&self) -> usize {
        self.hosts
    }

    fn run<T: Send + 'static>(
        &self,
        scenario: gridbed_runtime::Scenario<T>,
    ) -> Result<gridbed_runtime::Run<T>, gridbed_runtime::RunError> {
        #[allow(clippy::disallowed_methods)] // real mode: the elapsed wall time is the measurement
        let t0 = std::time::Instant::now();
        let value = run_local_with(self.hosts, self.deadline, self.opts.clone(), scenario)
            .map_err(|e| gridbed_runtime::RunError {
                backend: "real".into(),
                what: format!("{e:#}"),
            })?;
        Ok(gridbed_runtime::Run {
            value,
            elapsed: t0.elapsed(),
            trace_digest: None,
        })
    }
}

/// Runs `scenario` over `n_hosts` real hosts on loopback TCP, with a deadline so a broken scenario
/// cannot hang the caller.
pub fn run_local<T, F>(n_hosts: usize, deadline: Duration, scenario: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(ClusterRef) -> BoxFuture<'static, T> + Send + 'static,
{
    run_local_with(n_hosts, deadline, LocalOptions::default(), scenario)
}

/// [`run_local`] with explicit limits, secret and routing; also hands the scenario the hosts as
/// [`RealHost`]s (for their transport counters).
pub fn run_local_with<T, F>(
    n_hosts: usize,
    deadline: Duration,
    opts: LocalOptions,
    scenario: F,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(ClusterRef) -> BoxFuture<'static, T> + Send + 'static,
{
    run_local_real(n_hosts, deadline, opts, |c, _| scenario(c))
}

/// [`run_local_with`], also handing the scenario the hosts as [`RealHost`]s (for their counters).
pub fn run_local_real<T, F>(
    n_hosts: usize,
    deadline: Duration,
    opts: LocalOptions,
    scenario: F,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(ClusterRef, Vec<Arc<RealHost>>) -> BoxFuture<'static, T> + Send + 'static,
{
    anyhow::ensure!(n_hosts > 0, "a real cluster needs at least one host");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        let mut listeners = Vec::with_capacity(n_hosts);
        for _ in 0..n_hosts {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        }
        let mut addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(route) = &opts.route {
            addrs = addrs
                .iter()
                .enumerate()
                .map(|(i, &a)| route(i, a))
                .collect();
        }
        let addrs = Arc::new(addrs);
        let secret = opts.secret.clone().unwrap_or_else(ClusterSecret::random);
        let epoch = Instant::now();
        let handle = tokio::runtime::Handle::current();
        let hosts: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let cfg = HostConfig {
                    id: HostId(i as u32),
                    addrs: addrs.clone(),
                    secret: secret.clone(),
                    limits: opts.limits.clone(),
                };
                RealHost::start_with(cfg, l, epoch, handle.clone())
            })
            .collect();
        let cluster = Arc::new(RealCluster {
            hosts: hosts.clone(),
            epoch,
        });
        let out = tokio::time::timeout(deadline, scenario(cluster, hosts.clone())).await;
        for h in &hosts {
            h.stop();
        }
        out.map_err(|_| anyhow::anyhow!("real-mode scenario did not finish within {deadline:?}"))
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}
