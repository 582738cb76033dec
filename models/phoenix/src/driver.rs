//! The protocol core driven over a `gridbed_runtime::Host`: the same code runs in the simulator
//! and over real TCP.
//!
//! Protocol frames are processed whenever the application is inside a Phoenix call (`recv`, `poll`,
//! `assume`, `leave`, ...). An application that computes for long stretches calls `poll` between
//! work items, as the ray tracer does after each tile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use gridbed_runtime::{Addr, HostId, HostRef, Mailbox, Message, NetError};

use crate::protocol::data::IdData;
use crate::protocol::ids::{Id, IdRange};
use crate::protocol::node::{Config, Node, Phase, PhoenixError, Start};
use crate::protocol::relay::next_hop;
use crate::wire::{self, Delivery};

/// The port every Phoenix node listens on.
pub const PORT: u16 = 7400;

/// Errors of the asynchronous API.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Phoenix(#[from] PhoenixError),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// One machine's Phoenix endpoint.
pub struct Phoenix<D: IdData> {
    host: HostRef,
    mailbox: Box<dyn Mailbox>,
    node: Node<D>,
    gateways: Arc<BTreeMap<HostId, HostId>>,
    /// Frames passed on for other hosts (gateway duty).
    pub relayed: u64,
    /// Sends the backend refused (unreachable or down hosts).
    pub send_failures: u64,
    observer: Option<Observer<D>>,
}

/// Called after every change of the node's state, before anything is sent (instrumentation).
pub type Observer<D> = Box<dyn FnMut(&Node<D>) + Send>;

impl<D: IdData> Phoenix<D> {
    /// Binds the Phoenix port and starts the node (an initial member, or a joiner that has sent its
    /// request: use [`Phoenix::wait_joined`]).
    pub async fn start(
        host: HostRef,
        cfg: Config,
        data: D,
        start: Start,
        gateways: Arc<BTreeMap<HostId, HostId>>,
    ) -> Result<Self, RunError> {
        let mailbox = host.bind(PORT)?;
        let seed = host.rng_u64();
        let node = Node::new(host.id(), cfg, data, start, seed);
        let mut p = Phoenix {
            host,
            mailbox,
            node,
            gateways,
            relayed: 0,
            send_failures: 0,
            observer: None,
        };
        // Arms the join timer of a joiner (a no-op for an initial member).
        let now = p.host.now();
        p.node.tick(now);
        p.flush().await;
        Ok(p)
    }

    pub fn node(&self) -> &Node<D> {
        &self.node
    }
    pub fn node_mut(&mut self) -> &mut Node<D> {
        &mut self.node
    }
    pub fn host(&self) -> &HostRef {
        &self.host
    }

    /// Installs an observer, called at once and after every state change.
    pub fn set_observer(&mut self, mut f: Observer<D>) {
        f(&self.node);
        self.observer = Some(f);
    }

    /// Sends every queued frame to its next hop, in order.
    async fn flush(&mut self) {
        if let Some(f) = self.observer.as_mut() {
            f(&self.node);
        }
        for f in self.node.take_outgoing() {
            let bytes = wire::encode(&f);
            self.forward(f.dst, bytes).await;
        }
    }

    async fn forward(&mut self, dst: HostId, bytes: Vec<u8>) {
        let host = self.host.clone();
        let hop = next_hop(host.id(), dst, &self.gateways, |h| host.can_reach(h));
        if let Err(e) = host.send(PORT, Addr::new(hop, PORT), bytes).await {
            self.send_failures += 1;
            tracing::warn!(me = %host.id(), %dst, %hop, error = %e, "send failed");
        }
    }

    /// Handles one network message: relays it, or feeds it to the node. A malformed frame is dropped
    /// with a log line and the connection to the peer that sent it is closed: nothing more of that
    /// byte stream is trusted (the peer's next send opens a fresh connection).
    async fn on_message(&mut self, m: Message) {
        match wire::decode(&m.payload) {
            Ok(frame) if frame.dst != self.host.id() => {
                self.relayed += 1;
                self.forward(frame.dst, m.payload).await;
            }
            Ok(frame) => {
                self.node.handle(frame);
                self.flush().await;
            }
            Err(e) => {
                tracing::warn!(me = %self.host.id(), from = %m.from, error = %e, "malformed frame dropped, closing the connection");
                let _ = self.node.handle_bytes(&m.payload);
                self.host.disconnect(m.from.host);
            }
        }
    }

    /// Processes every frame already queued, without waiting.
    pub async fn poll(&mut self) {
        while let Some(m) = self.mailbox.try_recv() {
            self.on_message(m).await;
        }
    }

    /// Waits for one frame (at most `timeout`) and processes it. Returns false on timeout.
    pub async fn step(&mut self, timeout: Duration) -> Result<bool, RunError> {
        let sleep = self.host.sleep(timeout);
        let m = match select(self.mailbox.recv(), sleep).await {
            Either::Left((m, _)) => Some(m?),
            Either::Right(_) => None,
        };
        let Some(m) = m else {
            self.tick().await;
            return Ok(false);
        };
        self.on_message(m).await;
        self.tick().await;
        Ok(true)
    }

    async fn step_forever(&mut self) -> Result<(), RunError> {
        let m = self.mailbox.recv().await?;
        self.on_message(m).await;
        Ok(())
    }

    /// For a joiner: processes frames until it has been handed its IDs, asking another contact
    /// whenever the join timer (`Config::join_timeout`) runs out without an admission.
    pub async fn wait_joined(&mut self) -> Result<(), RunError> {
        while self.node.phase() == Phase::Joining {
            let now = self.host.now();
            let wait = self
                .node
                .next_deadline()
                .map_or(self.node.config().join_timeout, |d| d.saturating_sub(now));
            self.step(wait.max(Duration::from_millis(1))).await?;
        }
        Ok(())
    }

    /// Runs the node's timers (a joiner's retry) after a step.
    async fn tick(&mut self) {
        if self.node.phase() == Phase::Joining {
            let now = self.host.now();
            self.node.tick(now);
            self.flush().await;
        }
    }

    /// ph_send.
    pub async fn send(&mut self, id: Id, payload: Vec<u8>) -> Result<(), RunError> {
        self.node.send(id, payload)?;
        self.flush().await;
        Ok(())
    }

    /// ph_recv: the next message to an ID this machine owns.
    pub async fn recv(&mut self) -> Result<Delivery, RunError> {
        loop {
            if let Some(d) = self.node.try_recv() {
                return Ok(d);
            }
            self.step_forever().await?;
        }
    }

    /// A delivered message if one is already here.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.node.try_recv()
    }

    /// ph_assume: returns once this machine owns all of `range` (with its data).
    pub async fn assume(&mut self, range: IdRange) -> Result<(), RunError> {
        self.node.assume(range)?;
        self.flush().await;
        while !(range.start..range.end).all(|id| self.node.owns(id)) {
            self.step_forever().await?;
        }
        Ok(())
    }

    /// ph_release: hands the owned part of `range` to the owners of neighbouring IDs.
    pub async fn release(&mut self, range: IdRange) -> Result<(), RunError> {
        self.node.release(range)?;
        self.flush().await;
        Ok(())
    }

    /// Hands the owned part of `range` to `to`.
    pub async fn release_to(&mut self, range: IdRange, to: HostId) -> Result<(), RunError> {
        self.node.release_to(range, to)?;
        self.flush().await;
        Ok(())
    }

    /// Leaves: hands every ID and its data to others and returns once nothing can reach this
    /// machine any more. Undelivered messages travel with their IDs.
    pub async fn leave(mut self) -> Result<Node<D>, RunError> {
        self.node.leave()?;
        self.flush().await;
        while self.node.phase() != Phase::Departed {
            self.step_forever().await?;
        }
        Ok(self.node)
    }

    /// Declares `host` crashed (a failure detector's verdict; see `crash.rs`). Recovery then runs
    /// as frames are served.
    pub async fn report_crash(&mut self, host: HostId) -> Result<(), RunError> {
        self.node.report_crash(host)?;
        self.flush().await;
        Ok(())
    }

    /// Keeps serving protocol frames (forwarding, hand-offs, membership) until `until` is reached.
    pub async fn serve_for(&mut self, d: Duration) -> Result<(), RunError> {
        let end = self.host.now() + d;
        while self.host.now() < end {
            let left = end.saturating_sub(self.host.now());
            self.step(left).await?;
        }
        Ok(())
    }
}

/// Lets other tasks run once (executor-agnostic: works on madsim and tokio).
pub fn yield_now() -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
}
