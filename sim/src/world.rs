//! The shared state of one simulated run and the `Host` / `Cluster` implementations over it.
//! madsim runs every task on one thread, so the single mutex is never contended; it exists because
//! the runtime traits require `Send + Sync`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gridbed_runtime::{
    Addr, BoxFuture, Cluster, Host, HostId, HostRef, Mailbox, Message, NetError,
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clock;
use crate::cpu::Cpu;
use crate::network::{Network, Pop, SendOutcome};
use crate::platform::{HostSpec, Platform};
use crate::trace::Trace;

pub struct HostState {
    pub alive: bool,
    /// Incremented at each crash, so handles from before a crash see `Closed`.
    pub generation: u64,
    pub cpu: Cpu,
    pub rng: ChaCha8Rng,
}

pub struct State {
    pub hosts: Vec<HostState>,
    pub net: Network,
    pub trace: Trace,
    pub record: bool,
    pub loss_rate: f64,
    pub loss_rng: ChaCha8Rng,
}

impl State {
    pub fn event(&mut self, what: std::fmt::Arguments<'_>) {
        if self.record {
            self.trace.record(clock::now(), what);
        }
    }
}

pub struct World {
    pub platform: Platform,
    pub specs: Vec<HostSpec>,
    pub names: Vec<String>,
    pub nodes: Vec<madsim::runtime::NodeHandle>,
    pub madsim: madsim::runtime::Handle,
    pub state: Mutex<State>,
}

/// Seeds a per-purpose RNG from the run seed (SplitMix-style mixing keeps streams independent).
pub fn derive_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    use gridbed_runtime::rng::{mix64, GOLDEN_GAMMA};
    ChaCha8Rng::seed_from_u64(mix64(seed ^ stream.wrapping_mul(GOLDEN_GAMMA)))
}

impl World {
    pub fn crash(&self, h: HostId) {
        let mut st = self.state.lock();
        let now = clock::now();
        let hs = &mut st.hosts[h.0 as usize];
        if !hs.alive {
            return;
        }
        hs.alive = false;
        hs.generation += 1;
        hs.cpu.clear(now);
        st.net.reset_host(h);
        st.event(format_args!("fault crash {h}"));
        drop(st);
        self.madsim.kill(self.nodes[h.0 as usize].id());
    }

    pub fn restart(&self, h: HostId) {
        let mut st = self.state.lock();
        if st.hosts[h.0 as usize].alive {
            return;
        }
        st.hosts[h.0 as usize].alive = true;
        st.event(format_args!("fault restart {h}"));
        drop(st);
        self.madsim.restart(self.nodes[h.0 as usize].id());
    }

    pub fn partition(&self, a: usize, b: usize, cut: bool) {
        let mut st = self.state.lock();
        let key = (a.min(b), a.max(b));
        if cut {
            st.net.partitions.insert(key);
        } else {
            st.net.partitions.remove(&key);
        }
        st.event(format_args!(
            "fault {} lan{} lan{}",
            if cut { "partition" } else { "heal" },
            key.0,
            key.1
        ));
    }

    pub fn set_background_load(&self, h: HostId, jobs: u32) {
        let mut st = self.state.lock();
        let now = clock::now();
        st.hosts[h.0 as usize].cpu.set_background(now, jobs);
        st.event(format_args!("load {h} {jobs}"));
    }
}

/// A simulated host handle.
pub struct SimHost {
    pub world: Arc<World>,
    pub id: HostId,
}

impl Host for SimHost {
    fn id(&self) -> HostId {
        self.id
    }

    fn name(&self) -> String {
        self.world.names[self.id.0 as usize].clone()
    }

    fn hosts(&self) -> Vec<HostId> {
        (0..self.world.specs.len() as u32).map(HostId).collect()
    }

    fn can_reach(&self, other: HostId) -> bool {
        (other.0 as usize) < self.world.specs.len()
            && self
                .world
                .platform
                .reachable(&self.world.specs, self.id, other)
    }

    fn now(&self) -> Duration {
        clock::now()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(clock::sleep(d))
    }

    fn rng_u64(&self) -> u64 {
        self.world.state.lock().hosts[self.id.0 as usize].rng.gen()
    }

    fn compute(&self, cycles: u64) -> BoxFuture<'static, ()> {
        Box::pin(Compute {
            world: self.world.clone(),
            host: self.id,
            cycles: cycles as f64,
            job: None,
            sleep: None,
        })
    }

    fn cpu_hz(&self) -> f64 {
        self.world.specs[self.id.0 as usize].cpu_hz
    }

    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) {
        let node = &self.world.nodes[self.id.0 as usize];
        if let Some(n) = self.world.madsim.get_node(node.id()) {
            self.world
                .state
                .lock()
                .event(format_args!("spawn {} {name}", self.id));
            drop(n.spawn(task));
        }
    }

    fn bind(&self, port: u16) -> Result<Box<dyn Mailbox>, NetError> {
        let mut st = self.world.state.lock();
        let generation = st.hosts[self.id.0 as usize].generation;
        let p = st.net.ports[self.id.0 as usize].entry(port).or_default();
        if p.bound {
            return Err(NetError::PortInUse(port));
        }
        p.bound = true;
        Ok(Box::new(SimMailbox {
            world: self.world.clone(),
            addr: Addr::new(self.id, port),
            generation,
            sleep: None,
        }))
    }

    fn send(
        &self,
        from_port: u16,
        to: Addr,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), NetError>> {
        let from = Addr::new(self.id, from_port);
        let result = self.start_send(from, to, payload);
        Box::pin(async move {
            let free = result?;
            clock::sleep_until(free).await;
            Ok(())
        })
    }

    fn disconnect(&self, peer: HostId) {
        let now = clock::now();
        let mut st = self.world.state.lock();
        let n = st.net.discard_in_flight(self.id, peer, now);
        st.event(format_args!("disconnect {}<-{peer} discarded={n}", self.id));
    }

    fn event(&self, what: &str) {
        self.world
            .state
            .lock()
            .event(format_args!("event {} {what}", self.id));
    }
}

impl SimHost {
    fn start_send(&self, from: Addr, to: Addr, payload: Vec<u8>) -> Result<Duration, NetError> {
        let w = &self.world;
        if (to.host.0 as usize) >= w.specs.len()
            || !w.platform.reachable(&w.specs, from.host, to.host)
        {
            return Err(NetError::Unreachable(to));
        }
        let now = clock::now();
        let mut st = w.state.lock();
        let st = &mut *st;
        let dst_alive = st.hosts[to.host.0 as usize].alive;
        let lost = st.loss_rate > 0.0 && st.loss_rng.gen::<f64>() < st.loss_rate;
        let len = payload.len();
        match st
            .net
            .send(&w.specs, now, from, to, payload, dst_alive, lost)
        {
            SendOutcome::Queued {
                sender_free,
                arrival,
            } => {
                st.event(format_args!(
                    "send {from}->{to} len={len} arr={}",
                    arrival.as_nanos()
                ));
                Ok(sender_free)
            }
            SendOutcome::Dropped { sender_free, why } => {
                st.event(format_args!("drop {from}->{to} len={len} {why}"));
                Ok(sender_free)
            }
        }
    }
}

struct SimMailbox {
    world: Arc<World>,
    addr: Addr,
    generation: u64,
    sleep: Option<(Duration, Pin<Box<madsim::time::Sleep>>)>,
}

impl SimMailbox {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, NetError>> {
        loop {
            let now = clock::now();
            let mut guard = self.world.state.lock();
            let st = &mut *guard;
            if st.hosts[self.addr.host.0 as usize].generation != self.generation {
                return Poll::Ready(Err(NetError::Closed));
            }
            match st.net.pop(
                &self.world.specs,
                self.addr.host,
                self.addr.port,
                now,
                cx.waker(),
            ) {
                Pop::Msg(m) => {
                    st.event(format_args!(
                        "recv {}->{} len={}",
                        m.from,
                        self.addr,
                        m.payload.len()
                    ));
                    return Poll::Ready(Ok(m));
                }
                Pop::Dropped(from) => {
                    st.event(format_args!(
                        "drop {from}->{} partition-in-flight",
                        self.addr
                    ));
                    continue;
                }
                Pop::Wait(None) => return Poll::Pending,
                Pop::Wait(Some(t)) => {
                    drop(guard);
                    if self.sleep.as_ref().is_none_or(|(d, _)| *d != t) {
                        let handle = madsim::time::TimeHandle::current();
                        let mut s = Box::pin(handle.sleep(Duration::ZERO));
                        s.as_mut().reset(handle.now_instant() + (t - now));
                        self.sleep = Some((t, s));
                    }
                    let (_, s) = self.sleep.as_mut().expect("just set");
                    if s.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.sleep = None;
                }
            }
        }
    }
}

impl Mailbox for SimMailbox {
    fn addr(&self) -> Addr {
        self.addr
    }

    fn recv(&mut self) -> BoxFuture<'_, Result<Message, NetError>> {
        Box::pin(std::future::poll_fn(move |cx| self.poll_next(cx)))
    }

    fn try_recv(&mut self) -> Option<Message> {
        let waker = futures::task::noop_waker();
        let cx = Context::from_waker(&waker);
        let now = clock::now();
        let mut st = self.world.state.lock();
        let st = &mut *st;
        if st.hosts[self.addr.host.0 as usize].generation != self.generation {
            return None;
        }
        match st.net.pop(
            &self.world.specs,
            self.addr.host,
            self.addr.port,
            now,
            cx.waker(),
        ) {
            Pop::Msg(m) => {
                st.event(format_args!(
                    "recv {}->{} len={}",
                    m.from,
                    self.addr,
                    m.payload.len()
                ));
                Some(m)
            }
            _ => {
                // Do not leave the no-op waker in place of a real one.
                if let Some(p) = st.net.ports[self.addr.host.0 as usize].get_mut(&self.addr.port) {
                    p.waker = None;
                }
                None
            }
        }
    }
}

impl Drop for SimMailbox {
    fn drop(&mut self) {
        let mut st = self.world.state.lock();
        if st.hosts[self.addr.host.0 as usize].generation == self.generation {
            st.net.ports[self.addr.host.0 as usize].remove(&self.addr.port);
        }
    }
}

/// A `compute(cycles)` call: a job in the host's processor-sharing queue.
struct Compute {
    world: Arc<World>,
    host: HostId,
    cycles: f64,
    job: Option<(u64, u64)>,
    sleep: Option<Pin<Box<madsim::time::Sleep>>>,
}

impl Future for Compute {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            let now = clock::now();
            let mut st = this.world.state.lock();
            let hs = &mut st.hosts[this.host.0 as usize];
            let (id, generation) = match this.job {
                Some(j) => j,
                None => {
                    let j = (hs.cpu.add(now, this.cycles), hs.generation);
                    this.job = Some(j);
                    j
                }
            };
            if hs.generation != generation {
                return Poll::Ready(());
            }
            match hs.cpu.poll_job(now, id, cx.waker()) {
                None => {
                    this.job = None;
                    return Poll::Ready(());
                }
                Some(t) => {
                    drop(st);
                    let handle = madsim::time::TimeHandle::current();
                    let mut s = Box::pin(handle.sleep(Duration::ZERO));
                    s.as_mut().reset(handle.now_instant() + (t - now));
                    if s.as_mut().poll(cx).is_pending() {
                        this.sleep = Some(s);
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        if let Some((id, generation)) = self.job {
            let now = clock::now();
            let mut st = self.world.state.lock();
            let hs = &mut st.hosts[self.host.0 as usize];
            if hs.generation == generation {
                hs.cpu.cancel(now, id);
            }
        }
    }
}

/// The scenario driver's view.
pub struct SimCluster {
    pub world: Arc<World>,
}

impl Cluster for SimCluster {
    fn hosts(&self) -> Vec<HostRef> {
        (0..self.world.specs.len() as u32)
            .map(|i| {
                Arc::new(SimHost {
                    world: self.world.clone(),
                    id: HostId(i),
                }) as HostRef
            })
            .collect()
    }
    fn now(&self) -> Duration {
        clock::now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(clock::sleep(d))
    }
    fn crash(&self, host: HostId) {
        self.world.crash(host)
    }
    fn restart(&self, host: HostId) {
        self.world.restart(host)
    }
    fn set_background_load(&self, host: HostId, jobs: u32) -> bool {
        self.world.set_background_load(host, jobs);
        true
    }
    fn event(&self, what: &str) {
        self.world
            .state
            .lock()
            .event(format_args!("event driver {what}"));
    }
}
