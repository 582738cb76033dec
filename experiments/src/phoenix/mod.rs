//! The experiments, as functions the `experiment` runner calls.
//!
//! - [`raytrace()`]: `phoenix-raytrace`, the slides' evaluation (machines removed and added during a
//!   parallel ray tracing run; throughput against the ideal).
//! - [`scale()`]: `phoenix-scale`, many simulated machines, a large ID space, churn.

pub mod raytrace;
pub mod routes;
pub mod scale;
pub use routes::*;
mod series;

pub use crate::outcome::Mode;
pub use raytrace::{raytrace, raytrace_with, RaytraceParams, RealRun};
pub use scale::{scale, scale_with, ScaleParams};

/// Locks shared experiment state; a panicked task must not hide the rest of the results.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
