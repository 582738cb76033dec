//! `experiment sweep`: seeds in their own processes, merged in seed order, resumed from the
//! journal, failing seeds listed with the command that reproduces them, bad input in one line.

use std::path::Path;
use std::process::{Command, Output};

use gridbed_experiments::registry;
use gridbed_experiments::sweep::record::run_one;
use gridbed_experiments::sweep::summary::Summary;

/// A quick simulated experiment (its reduced-size variant runs in well under a second).
const EXP: &str = "phoenix-scale";

fn experiment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_experiment"))
        .args(args)
        .output()
        .unwrap()
}

fn summary(dir: &Path) -> Summary {
    serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap()
}

fn journal_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn sweep_merges_in_seed_order_matches_single_runs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweeps").join("sw");
    let o = out.to_str().unwrap();
    let r = experiment(&[
        "sweep", EXP, "--seeds", "1..3", "--jobs", "2", "--quick", "--out", o,
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let s = summary(&out);
    assert_eq!((s.first_seed, s.last_seed, s.seeds), (1, 3, 3));
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(
        s.digests.iter().map(|d| d.seed).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // A seed's process gives exactly what the same seed gives in this process.
    let exp = registry::find(EXP).unwrap();
    let here = run_one(&exp, 2, None, true);
    assert!(here.error.is_none(), "{:?}", here.error);
    assert_eq!(s.digests[1].digest, here.digest);
    assert!(here.digest.is_some());
    for (k, d) in &s.metrics {
        assert!(d.min <= d.median && d.median <= d.max, "{k}: {d:?}");
        assert_eq!(d.n, 3, "{k}");
    }
    for (k, v) in &here.metrics {
        let d = &s.metrics[k];
        assert!(d.min <= *v && *v <= d.max, "{k}: {v} outside {d:?}");
    }
    assert!(stdout.contains("seeds/s"), "{stdout}");
    assert!(out.join("README.md").exists());
    assert_eq!(journal_lines(&out), 4, "header and three seeds");

    // Resume: only the two new seeds run.
    let r = experiment(&[
        "sweep", EXP, "--seeds", "1..5", "--jobs", "2", "--quick", "--out", o,
    ]);
    assert!(r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("resuming: 3 of 5 seeds"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(journal_lines(&out), 6, "two more seeds, none run twice");
    let s5 = summary(&out);
    assert_eq!(s5.seeds, 5);
    assert_eq!(s5.digests[..3], s.digests[..]);

    // A report directory shows the sweeps kept under its sweeps/, with a histogram that exists.
    gridbed_experiments::report::write_index(tmp.path()).unwrap();
    let index = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
    assert!(
        index.contains("Seed sweeps") && index.contains("sweeps/sw/README.md"),
        "{index}"
    );
    let img = index
        .split("<img src=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a histogram in the sweeps section");
    assert!(tmp.path().join(img).is_file(), "{img}");

    // The same journal under other parameters is another sweep.
    let r = experiment(&["sweep", EXP, "--seeds", "1..5", "--out", o]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("another sweep"));
}

#[test]
fn failing_seeds_are_listed_with_the_command_that_reproduces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = out.to_str().unwrap();
    // Every seed is killed at its deadline: each is a failure, and the sweep says so.
    let r = experiment(&[
        "sweep",
        EXP,
        "--seeds",
        "7..8",
        "--quick",
        "--timeout-s",
        "0.001",
        "--out",
        o,
    ]);
    assert_eq!(r.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("2 of 2 seeds failed"), "{stderr}");
    let s = summary(&out);
    assert_eq!(s.failed.len(), 2);
    for (f, seed) in s.failed.iter().zip([7, 8]) {
        assert_eq!(f.seed, seed);
        assert!(f.why.contains("timed out"), "{}", f.why);
        assert!(
            f.reproduce
                .starts_with(&format!("experiment sweep {EXP} --seeds {seed} --quick")),
            "{}",
            f.reproduce
        );
        assert!(stdout.contains(&f.reproduce), "{stdout}");
    }
    // With time enough the same seed passes (a new directory: the journal keeps what it
    // recorded).
    let out2 = tmp.path().join("sw2");
    let r = experiment(&[
        "sweep",
        EXP,
        "--seeds",
        "7",
        "--quick",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(r.status.success());
    assert!(summary(&out2).failed.is_empty());
}

#[test]
fn bad_sweep_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("x");
    let o = o.to_str().unwrap();
    for (args, expect) in [
        (
            vec!["sweep", EXP, "--seeds", "5..2", "--out", o],
            "above the last",
        ),
        (
            vec!["sweep", EXP, "--seeds", "x", "--out", o],
            "is not a seed",
        ),
        (
            vec!["sweep", EXP, "--seeds", "1..2", "--jobs", "0", "--out", o],
            "--jobs",
        ),
        (
            vec!["sweep", "no-such", "--seeds", "1", "--out", o],
            "unknown experiment",
        ),
        (
            vec![
                "sweep", EXP, "--seeds", "1", "--set", "nosuch=1", "--out", o,
            ],
            "nosuch",
        ),
        (
            vec!["sweep", EXP, "--seeds", "1", "--timeout-s", "0", "--out", o],
            "--timeout-s",
        ),
        (
            vec!["sweep", "all", "--seeds", "1", "--out", o],
            "one experiment",
        ),
    ] {
        let r = experiment(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    assert!(!Path::new(o).exists(), "nothing written for bad input");
}

/// Processes whose command line contains `needle`: (pid, parent pid, command line).
fn processes_with(needle: &str) -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1.to_string();
                after.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0);
        if cmd.contains(needle) {
            found.push((pid, ppid, cmd));
        }
    }
    found
}

/// Parent, grandparent, ... of `pid`.
fn ancestors(mut pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    while pid > 1 && v.len() < 64 {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        v.push(ppid);
        pid = ppid;
    }
    v
}

/// The `gxp` program the sweep's local hosts run: built beside `experiment` by the workspace's
/// test build.
fn gxp_built() -> bool {
    Path::new(env!("CARGO_BIN_EXE_experiment"))
        .with_file_name("gxp")
        .is_file()
}

#[test]
fn sweep_over_gxp_hosts_survives_a_host_killed_mid_seed_and_leaves_nothing_running() {
    if !gxp_built() {
        println!("SKIP: no gxp program beside experiment (cargo test --workspace builds it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = out.to_str().unwrap().to_string();
    // Full-size runs (400 machines): long enough to kill a host while one of its seeds runs.
    let child = Command::new(env!("CARGO_BIN_EXE_experiment"))
        .args([
            "sweep",
            EXP,
            "--seeds",
            "1..4",
            "--local-hosts",
            "2",
            "--set",
            "machines=400",
            "--out",
            &o,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let host2 = format!("{o}/gxp-hosts/sweep-host-2/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut killed = false;
    while !killed && std::time::Instant::now() < deadline {
        let daemons: Vec<u32> = processes_with(&host2).iter().map(|p| p.0).collect();
        let busy = processes_with("__sweep-one")
            .iter()
            .find_map(|(pid, _, _)| ancestors(*pid).into_iter().find(|a| daemons.contains(a)));
        if let Some(d) = busy {
            let _ = Command::new("kill").args(["-9", &d.to_string()]).status();
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let r = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(killed, "never saw host 2 running a seed: {stderr}");
    assert!(
        r.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(stderr.contains("ran again after a host loss"), "{stderr}");
    let s = summary(&out);
    assert_eq!(s.seeds, 4);
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    // The seeds give what they give anywhere.
    let exp = registry::find(EXP).unwrap();
    let values = exp
        .params
        .as_ref()
        .unwrap()
        .apply(
            gridbed_experiments::outcome::Mode::Sim,
            &["machines=400".to_string()],
        )
        .unwrap();
    assert_eq!(
        s.digests[0].digest,
        run_one(&exp, 1, Some(&values), false).digest
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let left = processes_with(&o);
    assert!(left.is_empty(), "left running: {left:?}");
}
