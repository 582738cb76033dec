//! The slides' evaluation workload: a parallel ray tracer whose image tiles are virtual IDs.
//!
//! - [`scene`], [`tiles`]: the renderer, tiles as Phoenix application data, assembly, PNG.
//! - [`machine`]: one machine's program (render, steal when idle, hand over on leave), shared by the
//!   simulated, in-process and one-process-per-machine runs.
//! - [`events`], [`driver`]: the `phoenix-raytracer` process's commands and events, and the driver
//!   that runs a whole experiment as OS processes.

pub mod cpuload;
pub mod driver;
pub mod events;
pub mod inproc;
pub mod machine;
pub mod record;
pub mod scene;
pub mod tiles;
