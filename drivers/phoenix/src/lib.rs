//! Phoenix on OS processes: the `phoenix-node` binary (one machine per process over TCP; joining
//! and leaving are starting and stopping processes), the `phoenix-raytracer` binary (one
//! ray-tracing machine per process) and [`raytrace`], the driver that runs a whole ray-tracing
//! experiment as such processes. [`cpuload`] reads this process's CPU time for the measurements.
//!
//! The protocol and the machine program are in `gridbed-phoenix`, which knows only the runtime
//! interface; this crate adds what needs a real operating system.

pub mod cpuload;
pub mod raytrace;

/// Wall-clock seconds since the UNIX epoch: the timestamps of the processes' events, comparable
/// between processes of this machine.
pub fn unix_now() -> f64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
