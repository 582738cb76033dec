//! The slides' evaluation workload: a parallel ray tracer whose image tiles are virtual IDs.

pub mod scene;
pub mod tiles;
