//! Real mode of `phoenix-raytrace` as OS processes: one `phoenix-raytracer` process per machine
//! over loopback TCP; a machine leaves (its process hands off its tiles and exits) and one joins
//! (a new process). The image gathered from the processes' dumps must equal the sequential render.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gridbed_experiments::phoenix::{raytrace_with, Mode, RaytraceParams};

/// The tests that start machines run one at a time, so each can count its own children.
static MACHINES: Mutex<()> = Mutex::new(());

/// Running `phoenix-raytracer` children of this test process (Linux `/proc`).
fn running_children() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let ppid = rest.split_whitespace().nth(1);
            comm.contains("phoenix-raytrac") && ppid == Some(me.as_str())
        })
        .count()
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_phoenix-raytracer"))
}

fn small() -> RaytraceParams {
    RaytraceParams {
        width: 160,
        height: 120,
        tile: 16,
        initial: 3,
        leaving: 1,
        leave_at: 0.2,
        joining: 1,
        join_at: 0.4,
        machine_exe: Some(exe()),
        deadline: Duration::from_secs(50),
        ..RaytraceParams::default()
    }
}

/// Machines limited to a quarter of a core each (`--cpu-share`): the run cannot be faster than
/// the shares allow — two machines at 0.25 core need twice their render CPU time in wall time —
/// and the efficiency against that ideal stays at most 1. A machine ignoring its share would
/// finish in about a quarter of the time and score ~4.
#[test]
fn machines_limited_to_a_share_of_a_core_stay_within_it() {
    let _one = MACHINES.lock().unwrap_or_else(|p| p.into_inner());
    let p = RaytraceParams {
        width: 480,
        height: 360,
        initial: 2,
        leaving: 0,
        joining: 0,
        cpu_share: Some(0.25),
        ..small()
    };
    let out = raytrace_with(Mode::Real, 1, &p).expect("run");
    let m = &out.metrics;
    assert_eq!(m["image_bit_identical"], 1.0, "{:?}", out.notes);
    let e = m["efficiency_vs_ideal"];
    assert!(e > 0.3 && e <= 1.05, "{m:?}");
    // 2 machines x 0.25 core: the wall time is at least the render CPU / 0.5, less the credit a
    // machine may bank at its start (100 ms of wall time each).
    let floor = m["render_cpu_s"] / 0.5 - 0.2;
    assert!(m["run_s"] >= floor, "faster than the shares allow: {m:?}");
}

#[test]
fn processes_render_a_bit_identical_image_while_one_leaves_and_one_joins() {
    let _one = MACHINES.lock().unwrap_or_else(|p| p.into_inner());
    let t = Instant::now();
    let out = raytrace_with(Mode::Real, 1, &small()).expect("run");
    assert_eq!(running_children(), 0, "every machine process has exited");
    let m = &out.metrics;
    eprintln!("{m:#?}\n{:#?}", out.notes);
    assert_eq!(m["image_bit_identical"], 1.0, "{:?}", out.notes);
    assert_eq!(m["tiles"], 80.0);
    assert_eq!(
        m["pixels"],
        160.0 * 120.0,
        "every tile rendered exactly once"
    );
    assert_eq!(m["membership_changes"], 2.0, "one leave, one join");
    assert_eq!(m["duplicates"], 0.0);
    assert_eq!(m["hop_bound_violations"], 0.0);
    assert!(m["rebalance_s"] > 0.0 && m["rebalance_s"] < 10.0, "{m:?}");
    // The ideal uses the machines' speed measured in the run (their render CPU time): the cores
    // cannot have rendered for longer than they existed, so the efficiency is at most 1 — a CPU
    // clock that counted wall time or another thread's work would break this.
    assert!(m["render_cpu_s"] > 0.0, "{m:?}");
    let e = m["efficiency_vs_ideal"];
    assert!(e.is_finite() && e > 0.0 && e <= 1.02, "{m:?}");
    // Against speeds measured apart from the run: wall-clock noise, sanity bounds only.
    let r = m["efficiency_vs_reference"];
    assert!(r.is_finite() && r > 0.0 && r < 5.0, "{m:?}");
    assert!(out.notes.iter().any(|n| n.contains("OS process")));
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_missing_machine_program_is_a_one_line_error() {
    let p = RaytraceParams {
        machine_exe: Some("/nonexistent/phoenix-raytracer".into()),
        ..small()
    };
    let e = format!("{:#}", raytrace_with(Mode::Real, 1, &p).unwrap_err());
    assert!(e.contains("not found") && !e.contains('\n'), "{e}");
}

/// A run that cannot finish in time fails with one line and leaves no process behind.
#[test]
fn a_run_past_its_deadline_fails_and_kills_its_machines() {
    let _one = MACHINES.lock().unwrap_or_else(|p| p.into_inner());
    let p = RaytraceParams {
        deadline: Duration::from_millis(30),
        width: 640,
        height: 480,
        ..small()
    };
    let t = Instant::now();
    let e = format!("{:#}", raytrace_with(Mode::Real, 1, &p).unwrap_err());
    assert!(e.contains("timed out") && !e.contains('\n'), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(running_children(), 0, "no orphans: {e}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for args in [
        vec!["--host", "3", "--peers", "127.0.0.1:1", "--initial", "1"],
        vec!["--host", "0", "--peers", "127.0.0.1:1", "--initial", "1"],
        vec![
            "--host",
            "0",
            "--peers",
            "127.0.0.1:1",
            "--initial",
            "1",
            "--width",
            "0",
            "--height",
            "8",
            "--tile",
            "4",
        ],
        vec![
            "--host",
            "0",
            "--peers",
            "127.0.0.1:1",
            "--initial",
            "2",
            "--width",
            "8",
            "--height",
            "8",
            "--tile",
            "4",
        ],
        vec![
            "--host",
            "0",
            "--peers",
            "127.0.0.1:1",
            "--initial",
            "1",
            "--width",
            "8",
            "--height",
            "8",
            "--tile",
            "4",
            "--cpu-share",
            "1.5",
        ],
    ] {
        let out = Command::new(exe())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run phoenix-raytracer");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
}
