//! Processor sharing: a host with k runnable jobs (its tasks' `compute` calls plus other users'
//! background jobs) gives each 1/k of its cycles per second.

use std::collections::BTreeMap;
use std::task::Waker;
use std::time::Duration;

/// One host's run queue.
pub struct Cpu {
    pub hz: f64,
    pub background_jobs: u32,
    jobs: BTreeMap<u64, Job>,
    last_update: Duration,
    next_id: u64,
    /// Cycles delivered to gridbed jobs (work conservation check).
    pub delivered_cycles: f64,
}

struct Job {
    remaining: f64,
    waker: Option<Waker>,
}

impl Cpu {
    pub fn new(hz: f64, background_jobs: u32) -> Self {
        Cpu {
            hz,
            background_jobs,
            jobs: BTreeMap::new(),
            last_update: Duration::ZERO,
            next_id: 0,
            delivered_cycles: 0.0,
        }
    }

    fn share(&self) -> f64 {
        self.hz / (self.jobs.len() as f64 + f64::from(self.background_jobs))
    }

    /// Credits every job with the cycles it earned since the last update.
    pub fn advance(&mut self, now: Duration) {
        if now <= self.last_update || self.jobs.is_empty() {
            self.last_update = self.last_update.max(now);
            return;
        }
        let earned = (now - self.last_update).as_secs_f64() * self.share();
        for job in self.jobs.values_mut() {
            let used = earned.min(job.remaining);
            job.remaining -= used;
            self.delivered_cycles += used;
        }
        self.last_update = now;
    }

    /// Changes the background load (jobs of other users); running jobs are re-timed.
    pub fn set_background(&mut self, now: Duration, jobs: u32) {
        self.advance(now);
        self.background_jobs = jobs;
        self.wake_all();
    }

    pub fn add(&mut self, now: Duration, cycles: f64) -> u64 {
        self.advance(now);
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(
            id,
            Job {
                remaining: cycles,
                waker: None,
            },
        );
        id
    }

    /// Returns `Some(finish_time)` estimate if the job is still running, `None` when done (and
    /// removes it, waking the others: they now get a larger share).
    pub fn poll_job(&mut self, now: Duration, id: u64, waker: &Waker) -> Option<Duration> {
        self.advance(now);
        let job = self.jobs.get_mut(&id)?;
        // Sub-cycle remainders come from float rounding; treat them as done.
        if job.remaining <= 0.5 {
            self.jobs.remove(&id);
            self.wake_all();
            return None;
        }
        job.waker = Some(waker.clone());
        let remaining = job.remaining;
        Some(now + Duration::from_secs_f64(remaining / self.share()) + Duration::from_nanos(1))
    }

    /// Forgets a job whose future was dropped (task killed or cancelled).
    pub fn cancel(&mut self, now: Duration, id: u64) {
        self.advance(now);
        if self.jobs.remove(&id).is_some() {
            self.wake_all();
        }
    }

    pub fn clear(&mut self, now: Duration) {
        self.advance(now);
        self.jobs.clear();
    }

    fn wake_all(&mut self) {
        for job in self.jobs.values_mut() {
            if let Some(w) = job.waker.take() {
                w.wake();
            }
        }
    }
}
