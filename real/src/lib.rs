//! gridbed-real: the runtime interface on genuine tokio and TCP.
//!
//! [`run_local`] starts n hosts in this process, each with its own loopback listener: every
//! message really crosses the kernel's TCP stack.

pub mod frame;
mod host;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridbed_runtime::{BoxFuture, Cluster, ClusterRef, HostId, HostRef};

pub use host::RealHost;

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
    fn restart(&self, _host: HostId) {
        // A stopped host keeps its listener address; new binds and sends work again.
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

/// Runs `scenario` over `n_hosts` real hosts on loopback TCP, with a deadline so a broken scenario
/// cannot hang the caller.
pub fn run_local<T, F>(n_hosts: usize, deadline: Duration, scenario: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(ClusterRef) -> BoxFuture<'static, T> + Send + 'static,
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
        let addrs = Arc::new(
            listeners
                .iter()
                .map(|l| l.local_addr())
                .collect::<Result<Vec<_>, _>>()?,
        );
        let epoch = Instant::now();
        let handle = tokio::runtime::Handle::current();
        let hosts: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                RealHost::start(HostId(i as u32), l, addrs.clone(), epoch, handle.clone())
            })
            .collect();
        let cluster = Arc::new(RealCluster {
            hosts: hosts.clone(),
            epoch,
        });
        let out = tokio::time::timeout(deadline, scenario(cluster)).await;
        for h in &hosts {
            h.stop();
        }
        out.map_err(|_| anyhow::anyhow!("real-mode scenario did not finish within {deadline:?}"))
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}
