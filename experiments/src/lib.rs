//! The `experiment` runner: the registry of experiments, rendering, the report and replay.

pub mod migration_bandwidth;
/// Migration experiments beyond Figure 3.
pub mod migration {
    pub mod strategies;
}
pub mod registry;
pub mod render;
pub mod replay;
pub mod report;
