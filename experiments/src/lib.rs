//! The `experiment` runner: the registry of experiments, rendering, the report and replay.

pub mod browser;
pub mod catalogue;
pub mod cluster;
pub mod gxp;
pub mod migration;
pub mod outcome;
pub mod page;
pub mod params;
pub mod phoenix;
pub mod provenance;
pub mod registry;
pub mod render;
pub mod replay;
pub mod report;
pub mod runner;
pub mod sweep;
pub mod vmp;
