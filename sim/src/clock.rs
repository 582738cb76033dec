//! Virtual time with nanosecond precision on top of madsim.
//!
//! madsim's `sleep` never waits less than 1 ms (tokio compatibility). `Sleep::reset` sets an exact
//! deadline without that floor, so every gridbed wait goes through [`sleep_until`] below. madsim also
//! advances its clock by 50-100 ns for every task poll (deterministically, from the seed): the
//! simulator's own small per-step cost, visible in traces and negligible next to modelled costs.

use std::time::Duration;

/// Virtual time since the run started.
pub fn now() -> Duration {
    madsim::time::TimeHandle::current().elapsed()
}

/// Waits until virtual time `t` (returns at once if it has passed).
pub async fn sleep_until(t: Duration) {
    let handle = madsim::time::TimeHandle::current();
    let now = handle.elapsed();
    if t <= now {
        return;
    }
    let deadline = handle.now_instant() + (t - now);
    let mut sleep = Box::pin(handle.sleep(Duration::ZERO));
    sleep.as_mut().reset(deadline);
    sleep.await
}

/// Waits for `d` of virtual time.
pub async fn sleep(d: Duration) {
    sleep_until(now() + d).await
}
