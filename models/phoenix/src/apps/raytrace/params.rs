//! Parameters of one ray-tracing run, shared by the machines' drivers (simulated, in-process,
//! one OS process per machine) and the experiment that chooses them.

use std::path::PathBuf;
use std::time::Duration;

/// How real mode runs the machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RealRun {
    /// One `phoenix-raytracer` OS process per machine over loopback TCP (the real mode).
    #[default]
    Processes,
    /// Tasks of this process on `gridbed_real::run_local`'s runtime, over loopback TCP.
    InProcess,
}

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct RaytraceParams {
    pub width: u32,
    pub height: u32,
    /// Tile side in pixels: one virtual ID per tile.
    pub tile: u32,
    /// Machines rendering from the start (h0 is the membership coordinator and stays).
    pub initial: u32,
    /// Machines removed once `leave_at` of the tiles are done (the highest-numbered initial ones).
    pub leaving: u32,
    pub leave_at: f64,
    /// Machines added once `join_at` of the tiles are done.
    pub joining: u32,
    pub join_at: f64,
    /// Transport preset of the simulated LAN.
    pub transport: String,
    /// How long an idle machine waits for stolen work before asking another owner.
    pub steal_wait: Duration,
    /// Real mode: OS processes or tasks of this process.
    pub real_run: RealRun,
    /// Real mode with processes: the `phoenix-raytracer` program (default: `$GRIDBED_PHOENIX_RAYTRACER`,
    /// else next to the running executable).
    pub machine_exe: Option<PathBuf>,
    /// Real mode: the whole run must finish within this (wall clock); machines are killed after.
    pub deadline: Duration,
    /// Real mode: runs made; the one with the median efficiency is reported, with the spread.
    pub repeats: u32,
    /// Real mode with processes: the fraction of one core each machine may use (`None`: a whole
    /// core, i.e. the machines just share the computer's cores).
    pub cpu_share: Option<f64>,
}

impl Default for RaytraceParams {
    fn default() -> Self {
        RaytraceParams {
            // SVGA with 2×2 supersampling and 16-pixel tiles: 1900 IDs of ~1-5 ms of 1 GHz CPU each,
            // a run of about half a second of 8-9 machines.
            width: 800,
            height: 600,
            tile: 16,
            // The slides' plot shows machines removed, then added; 8 machines is a lab cluster.
            initial: 8,
            leaving: 3,
            leave_at: 0.25,
            joining: 4,
            join_at: 0.55,
            // Gigabit Ethernet LAN, as in the lab clusters of the time.
            transport: "gige-tcp".into(),
            // A safety net only: owners refuse at once when they have nothing to give; a request
            // reaches a busy owner after its current tile (~1-4 ms here).
            steal_wait: Duration::from_millis(5),
            real_run: RealRun::Processes,
            machine_exe: None,
            // Generous: the whole image takes seconds on this machine; a hang must not block the runner.
            deadline: Duration::from_secs(600),
            repeats: 1,
            cpu_share: None,
        }
    }
}
