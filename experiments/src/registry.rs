//! The experiments the runner knows: name, one-sentence description, what it reproduces, and the
//! function that runs it in each mode.

use crate::outcome::{ExperimentOutput, Mode};

use crate::params::{ParamRecord, ParamsDef};
use crate::params_def;

#[derive(Clone)]
pub struct Experiment {
    pub name: &'static str,
    pub about: &'static str,
    pub reproduces: &'static str,
    /// Modes the experiment supports.
    pub modes: &'static [Mode],
    pub run: fn(Mode, u64) -> anyhow::Result<ExperimentOutput>,
    /// A reduced-size simulated run of the same scenario, for the test suite's determinism check
    /// (None = the full run is already quick).
    pub quick: Option<fn(u64) -> anyhow::Result<ExperimentOutput>>,
    /// The parameters a researcher can set (None: the experiment has none yet).
    pub params: Option<ParamsDef>,
}

impl Experiment {
    /// Runs in `mode` with the parameter values `values` (from [`ParamsDef::apply`] or a run
    /// file); `None` = the experiment's defaults. Returns the output and what result.json records.
    pub fn run_values(
        &self,
        mode: Mode,
        seed: u64,
        values: Option<&serde_json::Value>,
    ) -> anyhow::Result<(ExperimentOutput, Vec<ParamRecord>)> {
        match (&self.params, values) {
            (Some(def), values) => {
                let defaults;
                let v = match values {
                    Some(v) => v,
                    None => {
                        defaults = (def.defaults)(mode);
                        &defaults
                    }
                };
                Ok(((def.run)(mode, seed, v)?, def.records(mode, v)))
            }
            (None, None) => Ok(((self.run)(mode, seed)?, Vec::new())),
            (None, Some(_)) => anyhow::bail!("experiment '{}' has no parameters", self.name),
        }
    }
}

fn sim_only(mode: Mode, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(mode == Mode::Sim, "experiment '{name}' has no {mode} mode");
    Ok(())
}

pub fn all() -> Vec<Experiment> {
    vec![Experiment {
        name: "migration-bandwidth",
        about: "Time to move a memory block between two hosts vs block size, for LAPI and TCP over the SP Switch and TCP over 100Base-TX.",
        reproduces: "document 1, Figure 3 (443 / 148 / 89.7 Mbit/s; 40 MB by LAPI in 0.722 s)",
        modes: &[Mode::Sim, Mode::Real],
        run: crate::migration::bandwidth::run,
        quick: None,
        params: Some(params_def!(crate::migration::bandwidth)),
    },
    Experiment {
        name: "migration-contention",
        about: "A bulk-synchronous job of P ranks; another user's job arrives on one host; iteration time with no migration, with load-driven migration over LAPI, SP-TCP and 100Base-TX, and the ideal.",
        reproduces: "document 1, Figure 1 (the delayed process migrates to a lightly loaded node and the delay disappears); no numbers in the document",
        modes: &[Mode::Sim],
        run: |m, seed| {
            use crate::migration::contention::{run_with, Params};
            run_with(m, seed, &Params::default())
        },
        quick: Some(|seed| {
            use crate::migration::contention::{run_with, Params};
            let p = Params {
                iterations: 12,
                ranks: 3,
                ..Params::default()
            };
            run_with(Mode::Sim, seed, &p)
        }),
        params: Some(params_def!(crate::migration::contention)),
    },
    Experiment {
        name: "eager-1988",
        about: "Load sharing on N processor-sharing hosts: no sharing vs threshold placement vs placement plus age-based migration, over demand CV 1-16 and a Pareto arm, load 0.5-0.9, migration cost 0-1x the mean demand.",
        reproduces: "Eager, Lazowska & Zahorjan, SIGMETRICS 1988 (document 1's reference [1]): migration adds little beyond placement except under extreme conditions",
        modes: &[Mode::Sim],
        run: |m, seed| {
            use crate::migration::eager::{run_with, Params};
            run_with(m, seed, &Params::default())
        },
        quick: Some(crate::migration::eager::quick),
        params: Some(params_def!(crate::migration::eager)),
    },
    Experiment {
        name: "migration-strategies",
        about: "Stop-and-copy, pre-copy and post-copy migration of a page-dirtying process: downtime and total time vs image size and dirty rate, over sp2-lapi and a modern preset.",
        reproduces: "document 1's stop-and-copy mechanism, compared with pre-copy (Clark et al., NSDI 2005: 60-210 ms downtimes, a reference) and post-copy",
        modes: &[Mode::Sim],
        run: |m, seed| {
            crate::migration::strategies::run_with(
                m,
                seed,
                &crate::migration::strategies::Params::default(),
            )
        },
        quick: Some(crate::migration::strategies::quick),
        params: Some(params_def!(crate::migration::strategies)),
    },
    Experiment {
        name: "gxp-scale",
        about: "Time to explore (self-installing login tree) and to run `hostname` on 10 to 10,000 simulated hosts behind NAT gateways; GXP's tree vs a flat fan-out of 32.",
        reproduces: "document 2, GXP: a command on 300+ nodes in 5 LANs in about 0.6 s; targets e hostname on 1000 hosts <= 0.5 s, explore <= 15 s",
        modes: &[Mode::Sim],
        run: |m, seed| {
            sim_only(m, "gxp-scale")?;
            crate::gxp::scale(seed)
        },
        quick: Some(|seed| crate::gxp::scale_with(seed, &[10, 100])),
        params: Some(params_def!(crate::gxp::scale)),
    },
    Experiment {
        name: "gxp-farm",
        about: "Task farming over 350 and 1000 simulated hosts in 9 LANs with host crashes: dispatch throughput and makespan.",
        reproduces: "document 2, GXP task-list dispatch (GXP make reached 60 tasks/s); target >= 1000 tasks/s",
        modes: &[Mode::Sim],
        run: |m, seed| {
            sim_only(m, "gxp-farm")?;
            crate::gxp::farm(seed)
        },
        quick: Some(|seed| crate::gxp::farm_with(seed, 200, 200)),
        params: Some(params_def!(crate::gxp::farm)),
    },
    Experiment {
        name: "phoenix-raytrace",
        about: "A parallel ray tracer whose tiles are Phoenix virtual IDs; machines leave and join mid-render; throughput against the ideal (sum of present machines' speeds).",
        reproduces: "document 2, Phoenix ray-tracing evaluation (throughput follows machines as they leave and join); target efficiency_vs_ideal >= 0.95",
        modes: &[Mode::Sim, Mode::Real],
        run: crate::phoenix::raytrace,
        quick: Some(|seed| {
            let p = crate::phoenix::RaytraceParams {
                width: 160,
                height: 120,
                ..Default::default()
            };
            crate::phoenix::raytrace_with(Mode::Sim, seed, &p)
        }),
        params: Some(crate::phoenix::raytrace::params_def()),
    },
    Experiment {
        name: "phoenix-scale",
        about: "1000 simulated machines sharing 10^6 virtual IDs under churn: routing-table size, hops per message, messages per join/leave, time to settle.",
        reproduces: "document 2, Phoenix (scalability of the virtual-ID routing; no figure in the slides)",
        modes: &[Mode::Sim],
        run: |m, seed| {
            sim_only(m, "phoenix-scale")?;
            crate::phoenix::scale(seed)
        },
        quick: Some(|seed| {
            let p = crate::phoenix::ScaleParams {
                machines: 60,
                space: 100_000,
                initial: 20,
                churn: 5,
                ..Default::default()
            };
            crate::phoenix::scale_with(seed, &p)
        }),
        params: Some(params_def!(crate::phoenix::scale)),
    },
    Experiment {
        name: "phoenix-routes",
        about: "Routing tables built by the machines themselves over NAT/firewall-restricted links: 400 simulated machines in 3 LANs (two private), distance vector vs the offline computation; then a leave and a rejoin.",
        reproduces: "Kaneda, Taura, Yonezawa, CCGrid 2004 (follow-up Phoenix paper): table construction on 400 nodes in 3 LANs takes about twice the offline route calculation",
        modes: &[Mode::Sim],
        run: |m, seed| {
            sim_only(m, "phoenix-routes")?;
            crate::phoenix::routes(seed)
        },
        quick: Some(|seed| {
            let p = crate::phoenix::RoutesParams {
                lans: vec![12, 10, 10],
                ..Default::default()
            };
            crate::phoenix::routes_with(seed, &p)
        }),
        params: Some(params_def!(crate::phoenix::routes)),
    },
    Experiment {
        name: "vmp-getpid",
        about: "getpid() 1000 times in a paravirtual IA-32 guest under the trap-and-emulate monitor vs natively; modelled on a 2005 PC (sim) and measured on this machine (real).",
        reproduces: "document 2, VMP: 1000 getpid() in 0.54 s under the VM, about 500x a real machine",
        modes: &[Mode::Sim, Mode::Real],
        run: |m, _seed| crate::vmp::getpid::getpid(m),
        quick: None,
        params: None,
    },
    Experiment {
        name: "vmp-fib",
        about: "Fibonacci programs in parallel, one per virtual processor, on the multiprocessor VMP over simulated hosts (twin/diff, naive and optimised protocols); fib x N on 1-8 processors.",
        reproduces: "document 2, VMP: two Fibonacci programs on 2 CPUs in 0.63 s, about 2000x a real machine, VM process and monitor about half each",
        modes: &[Mode::Sim, Mode::Real],
        run: |m, seed| crate::vmp::fib::run_with(m, seed, &crate::vmp::fib::Params::default()),
        quick: Some(crate::vmp::fib::quick),
        params: Some(params_def!(crate::vmp::fib)),
    }]
}

pub fn find(name: &str) -> anyhow::Result<Experiment> {
    let list = all();
    let names: Vec<_> = list.iter().map(|e| e.name).collect::<Vec<_>>();
    let joined = names.join(", ");
    list.into_iter().find(|e| e.name == name).ok_or_else(|| {
        anyhow::anyhow!("unknown experiment '{name}' (known: {joined}; see `experiment list`)")
    })
}
