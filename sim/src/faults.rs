//! Fault schedules: crashes, restarts, LAN partitions at given virtual times, and message loss.

use std::time::Duration;

use std::sync::Arc;

use gridbed_runtime::HostId;

use crate::world::World;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    Crash(HostId),
    Restart(HostId),
    Partition(usize, usize),
    Heal(usize, usize),
}

/// Faults of a run: a schedule and a message-loss probability.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub schedule: Vec<(Duration, Fault)>,
    /// Probability that any one message is lost (0 = reliable network).
    pub loss_rate: f64,
}

impl FaultPlan {
    /// `crashes` crash-then-restart pairs on random hosts (never host 0, the usual coordinator)
    /// within `horizon`, drawn from `seed`.
    pub fn random_crashes(seed: u64, hosts: usize, crashes: usize, horizon: Duration) -> FaultPlan {
        let mut rng = crate::world::derive_rng(seed, u64::MAX);
        let mut schedule = Vec::new();
        if hosts > 1 {
            for _ in 0..crashes {
                let h = HostId(rng.gen_range(1..hosts as u32));
                let at = horizon.mul_f64(rng.gen_range(0.0..0.8));
                let back = at + horizon.mul_f64(rng.gen_range(0.01..0.2));
                schedule.push((at, Fault::Crash(h)));
                schedule.push((back, Fault::Restart(h)));
            }
        }
        schedule.sort_by_key(|(t, _)| *t);
        FaultPlan {
            schedule,
            loss_rate: 0.0,
        }
    }
}

/// Starts the fault schedule as a driver task.
pub(crate) fn start(world: Arc<World>, plan: FaultPlan) {
    if plan.schedule.is_empty() {
        return;
    }
    drop(madsim::task::spawn(async move {
        for (at, fault) in plan.schedule {
            crate::clock::sleep_until(at).await;
            match fault {
                Fault::Crash(h) => world.crash(h),
                Fault::Restart(h) => world.restart(h),
                Fault::Partition(a, b) => world.partition(a, b, true),
                Fault::Heal(a, b) => world.partition(a, b, false),
            }
        }
    }));
}
