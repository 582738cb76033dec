//! The `experiment` runner: the registry of experiments, rendering, the report and replay.

pub mod migration_bandwidth;
pub mod registry;
pub mod render;
pub mod replay;
pub mod report;
pub mod vmp;
