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
    let out = tmp.path().join("sw");
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
