//! gridbed-sim: the deterministic simulator backend of the runtime interface.
//!
//! A run is a pure function of (platform, faults, scenario, seed): madsim supplies the executor,
//! virtual time, nodes (killed and restarted on crash faults) and seeded task ordering; this crate
//! adds what madsim lacks — bandwidth and host-stack costs ([`transport`]), FIFO resource sharing
//! ([`network`]), processor-sharing CPUs ([`cpu`]), faults ([`faults`]) and the event trace.

pub mod clock;
pub mod cpu;
pub mod faults;
pub mod network;
pub mod platform;
pub mod presets;
pub mod trace;
pub mod transport;
mod world;

use std::sync::Arc;
use std::time::Duration;

use gridbed_runtime::{BoxFuture, ClusterRef, HostId};
use parking_lot::Mutex;
pub use trace::TraceRecord;

pub use faults::{Fault, FaultPlan};
pub use platform::{Backbone, Lan, Platform};
pub use transport::{Cost, Transport};
pub use world::{SimCluster, SimHost};

use world::{derive_rng, HostState, State, World};

/// Errors of the simulator's configuration.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown transport preset '{0}' (known: {1})")]
    UnknownPreset(String, String),
    #[error("invalid platform: {0}")]
    Platform(String),
}

/// Everything a simulated run depends on besides the scenario.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub platform: Platform,
    pub seed: u64,
    pub faults: FaultPlan,
    /// Record the event trace (digest and replay). Off only for throughput benchmarks.
    pub record_trace: bool,
}

impl SimConfig {
    pub fn new(platform: Platform, seed: u64) -> Self {
        SimConfig {
            platform,
            seed,
            faults: FaultPlan::default(),
            record_trace: true,
        }
    }

    pub fn with_faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct SimOutcome<T> {
    pub value: T,
    pub trace: TraceRecord,
    /// Virtual time when the scenario returned.
    pub end_time: Duration,
    /// Messages delivered to a receiver.
    pub delivered: u64,
}

/// The simulator as a [`gridbed_runtime::Runner`]: every run is a pure function of the
/// configuration (platform, seed, faults) and the scenario.
#[derive(Clone, Debug)]
pub struct SimRunner {
    pub cfg: SimConfig,
}

impl SimRunner {
    pub fn new(cfg: SimConfig) -> Self {
        SimRunner { cfg }
    }
}

impl gridbed_runtime::Runner for SimRunner {
    fn backend(&self) -> &'static str {
        "sim"
    }

    fn hosts(&self) -> usize {
        self.cfg.platform.host_specs().len()
    }

    fn run<T: Send + 'static>(
        &self,
        scenario: gridbed_runtime::Scenario<T>,
    ) -> Result<gridbed_runtime::Run<T>, gridbed_runtime::RunError> {
        let out = run(self.cfg.clone(), scenario);
        Ok(gridbed_runtime::Run {
            value: out.value,
            elapsed: out.end_time,
            trace_digest: Some(out.trace.digest),
        })
    }
}

/// Runs `scenario` to completion in virtual time on a fresh madsim runtime.
///
/// Panics if the scenario deadlocks (every task waits and no timer is pending): a scenario bug.
pub fn run<T, F>(cfg: SimConfig, scenario: F) -> SimOutcome<T>
where
    T: Send + 'static,
    F: FnOnce(ClusterRef) -> BoxFuture<'static, T> + Send + 'static,
{
    let rt = madsim::runtime::Runtime::with_seed_and_config(cfg.seed, madsim::Config::default());
    let handle = rt.handle().clone();
    let specs = cfg.platform.host_specs();
    let nodes: Vec<_> = (0..specs.len())
        .map(|i| handle.create_node().name(format!("h{i}")).build())
        .collect();
    let names = (0..specs.len())
        .map(|i| format!("{}-h{i}", cfg.platform.lans[specs[i].lan].name))
        .collect();
    let hosts = specs
        .iter()
        .enumerate()
        .map(|(i, s)| HostState {
            alive: true,
            generation: 0,
            cpu: cpu::Cpu::new(s.cpu_hz, s.background_jobs),
            rng: derive_rng(cfg.seed, 1 + i as u64),
        })
        .collect();
    let state = State {
        hosts,
        net: network::Network::new(&cfg.platform, specs.len()),
        trace: trace::Trace::default(),
        record: cfg.record_trace,
        loss_rate: cfg.faults.loss_rate,
        loss_rng: derive_rng(cfg.seed, 0),
    };
    let world = Arc::new(World {
        platform: cfg.platform,
        specs,
        names,
        nodes,
        madsim: handle,
        state: Mutex::new(state),
    });
    let cluster: ClusterRef = Arc::new(SimCluster {
        world: world.clone(),
    });
    let plan = cfg.faults.clone();
    let fault_world = world.clone();
    let value = rt.block_on(async move {
        faults::start(fault_world, plan);
        scenario(cluster).await
    });
    let end_time = clock_elapsed(&rt);
    let mut st = world.state.lock();
    let delivered = st.net.delivered;
    let trace = std::mem::take(&mut st.trace).into_record();
    SimOutcome {
        value,
        trace,
        end_time,
        delivered,
    }
}

fn clock_elapsed(rt: &madsim::runtime::Runtime) -> Duration {
    rt.block_on(async { clock::now() })
}

/// Convenience: the hosts of a platform as ids.
pub fn host_ids(platform: &Platform) -> Vec<HostId> {
    (0..platform.host_count() as u32).map(HostId).collect()
}
