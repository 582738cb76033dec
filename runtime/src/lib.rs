//! The runtime interface every gridbed system is written against.
//!
//! A system (process migration, Phoenix, GXP, a VMP processor) sees only [`Host`]: the handle of the
//! machine its task runs on. Two backends implement it: `gridbed-sim` (deterministic, on madsim, with
//! link/CPU cost models and faults) and `gridbed-real` (genuine tokio over TCP). System code never
//! names a backend; scenarios pick one in `experiments`.
//!
//! Everything returns boxed futures so that `Arc<dyn Host>` is object-safe: a system is compiled once,
//! not once per backend, and the allocation per call is negligible next to a simulated or real send.
//!
//! Semantics both backends guarantee:
//! - Messages between two ports are delivered reliably and in send order, unless a fault (host crash,
//!   partition, configured loss) drops them; a dropped message is never delivered later.
//! - `now()` is the backend's clock since the run started: virtual time in sim, monotonic wall time in
//!   real mode. `sleep` and `compute` advance it.
//! - `rng_u64()` is deterministic in sim (a function of the run seed and the host), OS-seeded in real.
//!
//! A scenario is a function of a [`Cluster`]; a [`Runner`] (the simulator's, configured with a
//! platform and seed; the real backend's, with local hosts) runs it, so the same scenario runs on
//! either without naming a backend.

pub mod rng;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future: the return type of every asynchronous runtime call.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Index of a host in the platform (simulated) or in the cluster host list (real).
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct HostId(pub u32);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// A message endpoint: a port on a host.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Addr {
    pub host: HostId,
    pub port: u16,
}

impl Addr {
    pub fn new(host: HostId, port: u16) -> Self {
        Addr { host, port }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: Addr,
    pub payload: Vec<u8>,
}

/// Errors a runtime call can return.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NetError {
    #[error("port {0} is already bound on this host")]
    PortInUse(u16),
    #[error("no route to {0}")]
    Unreachable(Addr),
    #[error("host {0} is down")]
    HostDown(HostId),
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("endpoint closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(String),
}

/// A bound port from which messages are received.
pub trait Mailbox: Send {
    /// The address other hosts send to.
    fn addr(&self) -> Addr;
    /// Waits for the next message (FIFO per sender). Returns `Closed` if the host is shutting down.
    fn recv(&mut self) -> BoxFuture<'_, Result<Message, NetError>>;
    /// Returns a message if one is already queued.
    fn try_recv(&mut self) -> Option<Message>;
}

/// The handle of the host a task runs on. Cheap to clone (`Arc`).
pub trait Host: Send + Sync {
    /// This host's identity.
    fn id(&self) -> HostId;
    /// Human-readable name (platform name in sim, host name in real mode).
    fn name(&self) -> String;
    /// All hosts of the run, this one included, in id order.
    fn hosts(&self) -> Vec<HostId>;
    /// Whether a message from this host can reach `other` directly (NAT/firewall rules).
    fn can_reach(&self, other: HostId) -> bool;

    /// Time since the run started.
    fn now(&self) -> Duration;
    /// Waits for `d` of this backend's time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    /// A random number: deterministic per (seed, host, call order) in sim.
    fn rng_u64(&self) -> u64;

    /// Runs `cycles` CPU cycles of work on this host. In sim the host's processor-sharing run queue
    /// decides how long that takes (external load slows it); in real mode the caller has already done
    /// the work and this returns at once, or yields to other tasks if this one has run long.
    fn compute(&self, cycles: u64) -> BoxFuture<'static, ()>;
    /// This host's nominal CPU speed in cycles per second.
    fn cpu_hz(&self) -> f64;

    /// Spawns a task on this host. The task dies with the host.
    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>);

    /// Binds `port` on this host.
    fn bind(&self, port: u16) -> Result<Box<dyn Mailbox>, NetError>;
    /// Sends a message from `from_port` on this host to `to`. Resolves when the sender may reuse its
    /// buffer (the bytes have left the sending host), not when the receiver has them.
    fn send(
        &self,
        from_port: u16,
        to: Addr,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), NetError>>;

    /// Drops the transport connection(s) between this host and `peer`, because `peer` sent something
    /// this host refuses (a malformed frame): what `peer` sent that has not been read off the
    /// connection yet is discarded, as a TCP close discards unread bytes. Messages already received
    /// stay. A later send in either direction opens a new connection.
    fn disconnect(&self, peer: HostId);

    /// Records an experiment-level event in the run's trace (sim); logs it at debug level (real).
    fn event(&self, what: &str);
}

/// Shared host handle.
pub type HostRef = Arc<dyn Host>;

/// A whole set of hosts, as a scenario driver sees it: where to start tasks and which faults to
/// inject. Sim implements every fault; real mode implements crash/restart by stopping a host's tasks
/// and ports.
pub trait Cluster: Send + Sync {
    /// Every host, in id order.
    fn hosts(&self) -> Vec<HostRef>;
    /// The driver's clock (same clock as the hosts').
    fn now(&self) -> Duration;
    /// Waits on the driver's clock.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    /// Crashes `host`: its tasks stop, its ports close, messages to it are dropped until restart.
    fn crash(&self, host: HostId);
    /// Brings a crashed host back with no tasks and no bound ports.
    fn restart(&self, host: HostId);
    /// Sets how many CPU-bound jobs of other users share `host`'s processor. Returns false where the
    /// backend cannot control it (real mode: the machine's real load applies).
    fn set_background_load(&self, host: HostId, jobs: u32) -> bool;
    /// Records an experiment-level event in the trace.
    fn event(&self, what: &str);
}

/// Shared cluster handle.
pub type ClusterRef = Arc<dyn Cluster>;

/// A scenario: what the driver does with the cluster, written once against the interface.
pub type Scenario<T> = Box<dyn FnOnce(ClusterRef) -> BoxFuture<'static, T> + Send>;

/// What a [`Runner`] returns besides the scenario's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run<T> {
    pub value: T,
    /// The backend's clock when the scenario returned (virtual time in sim, wall time in real).
    pub elapsed: Duration,
    /// Digest of the run's event trace where the backend records one (sim: the same seed gives
    /// the same digest); `None` where a run cannot be reproduced (real).
    pub trace_digest: Option<String>,
}

/// A run that could not complete (setup failed, deadline passed, scenario panicked).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{backend}: {what}")]
pub struct RunError {
    pub backend: String,
    pub what: String,
}

/// Runs scenarios on one backend: `gridbed_sim::SimRunner` (platform + seed, deterministic) or
/// `gridbed_real::LocalRunner` (real hosts of this machine over loopback TCP).
pub trait Runner {
    /// Which backend, for reports ("sim", "real").
    fn backend(&self) -> &'static str;
    /// How many hosts the scenario's cluster has.
    fn hosts(&self) -> usize;
    /// Runs `scenario` to completion on a fresh cluster.
    fn run<T: Send + 'static>(&self, scenario: Scenario<T>) -> Result<Run<T>, RunError>;
}

/// Converts seconds (f64) to a `Duration`, saturating at zero for negative or NaN input.
pub fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s)
    } else {
        Duration::ZERO
    }
}
