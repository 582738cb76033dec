//! How much of this computer's CPU other programs took during a real-mode run (Linux `/proc`).
//!
//! The real mode shares a small, busy computer with other work (compilers, other tests). Its ideal
//! — min(present machines, cores) × one machine's speed — assumes the cores are ours; this module
//! measures how many were left: busy CPU time of the whole computer (`/proc/stat`, hypervisor steal
//! included) minus the CPU time of this process and its waited-for children (`/proc/self/stat`).
//! Both count in USER_HZ ticks, 100 per second on Linux (the `/proc` ABI), so a 0.5 s render is
//! measured to about ±2 %.

use std::time::Instant;

/// `/proc` time unit (USER_HZ): fixed at 100 per second for user space on Linux.
const TICKS_PER_S: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    at: Instant,
    /// Non-idle ticks of every CPU of the computer.
    busy: u64,
    /// Ticks of this process and of its children that have been waited for.
    own: u64,
    /// Of `own`, the children's part.
    children: u64,
}

impl CpuSample {
    /// `None` where `/proc` is not readable (not Linux).
    pub fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
        let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
        let (this, children) = own_ticks()?;
        Some(CpuSample {
            at: Instant::now(),
            busy,
            own: this + children,
            children,
        })
    }

    /// Seconds of CPU this process (and its waited-for children) used since `earlier`.
    pub fn own_s_since(&self, earlier: &CpuSample) -> f64 {
        self.own.saturating_sub(earlier.own) as f64 / TICKS_PER_S
    }

    /// Seconds of CPU of the children waited for since `earlier` (the machine processes).
    pub fn children_s_since(&self, earlier: &CpuSample) -> f64 {
        self.children.saturating_sub(earlier.children) as f64 / TICKS_PER_S
    }

    /// Cores, on average, that other programs kept busy since `earlier`.
    pub fn others_cores_since(&self, earlier: &CpuSample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        let busy = self.busy.saturating_sub(earlier.busy) as f64 / TICKS_PER_S;
        ((busy - self.own_s_since(earlier)) / wall.max(1e-9)).max(0.0)
    }
}

/// (utime + stime, cutime + cstime) of this process (fields 14-17 of `/proc/self/stat`).
fn own_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): fields 14-17 are at indices 11-14.
    let field = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((field(11)? + field(12)?, field(13)? + field(14)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spinning makes this process's counted CPU time grow (bounded wait, no timing assertion:
    /// a crowded computer only makes it take longer).
    #[test]
    fn own_cpu_time_grows_with_work() {
        let Some(a) = CpuSample::now() else {
            return; // not Linux
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let b = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            let b = CpuSample::now().expect("readable again");
            if b.own_s_since(&a) >= 0.05 || Instant::now() > deadline {
                break b;
            }
        };
        assert!(b.own_s_since(&a) >= 0.05, "CPU time did not grow");
        let others = b.others_cores_since(&a);
        assert!(others.is_finite() && others >= 0.0);
    }
}
