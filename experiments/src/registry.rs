//! The experiments the runner knows: name, one-sentence description, what it reproduces, and the
//! function that runs it in each mode.

use gridbed_runtime::outcome::{ExperimentOutput, Mode};

pub struct Experiment {
    pub name: &'static str,
    pub about: &'static str,
    pub reproduces: &'static str,
    /// Modes the experiment supports.
    pub modes: &'static [Mode],
    pub run: fn(Mode, u64) -> anyhow::Result<ExperimentOutput>,
}

pub fn all() -> Vec<Experiment> {
    vec![Experiment {
        name: "migration-bandwidth",
        about: "Time to move a memory block between two hosts vs block size, for LAPI and TCP over the SP Switch and TCP over 100Base-TX.",
        reproduces: "document 1, Figure 3 (443 / 148 / 89.7 Mbit/s; 40 MB by LAPI in 0.722 s)",
        modes: &[Mode::Sim, Mode::Real],
        run: crate::migration_bandwidth::run,
    }]
}

pub fn find(name: &str) -> anyhow::Result<Experiment> {
    let list = all();
    let names: Vec<_> = list.iter().map(|e| e.name).collect::<Vec<_>>();
    let joined = names.join(", ");
    list.into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| anyhow::anyhow!("unknown experiment '{name}' (known: {joined}; see `experiment list`)"))
}
