//! The `experiment` runner: the registry of experiments, rendering, the report and replay.

pub mod gxp;
pub mod migration;
pub mod params;
pub mod phoenix;
pub mod registry;
pub mod render;
pub mod replay;
pub mod report;
pub mod vmp;
