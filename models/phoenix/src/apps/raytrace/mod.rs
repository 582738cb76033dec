//! The slides' evaluation workload: a parallel ray tracer whose image tiles are virtual IDs.
//!
//! - [`scene`], [`tiles`]: the renderer, tiles as Phoenix application data, assembly, PNG.
//! - [`machine`]: one machine's program (render, steal when idle, hand over on leave), shared by the
//!   simulated, in-process and one-process-per-machine runs.
//! - [`events`]: the `phoenix-raytracer` process's commands and events (the process and the
//!   driver that runs a whole experiment as OS processes are in `gridbed-phoenix-driver`).
//! - [`inproc`]: every machine a task of one scenario over `ClusterRef` (simulator or
//!   `gridbed_real::run_local`); [`params`]: what one run is given; [`record`]: what it returns.

pub mod events;
pub mod inproc;
pub mod machine;
pub mod params;
pub mod record;
pub mod scene;
pub mod tiles;
