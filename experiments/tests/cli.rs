//! The `experiment` command as a user meets it: bad input gives one line and a non-zero exit;
//! runs write results; replay confirms a run and detects a divergence.

use std::process::Command;

fn experiment() -> Command {
    Command::new(env!("CARGO_BIN_EXE_experiment"))
}

fn one_line_failure(args: &[&str], expect: &str) {
    let out = experiment().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: expected one line, got:\n{err}"
    );
    assert!(err.contains(expect), "{args:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    one_line_failure(&["run", "no-such-experiment"], "unknown experiment");
    one_line_failure(&["run", "all", "--seed", "minus-one"], "--seed");
    one_line_failure(
        &["run", "vmp-getpid", "--repeat", "3"],
        "--repeat applies to real mode only",
    );
    one_line_failure(
        &["run", "vmp-getpid", "--mode", "real", "--repeat", "0"],
        "at least 1",
    );
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("out");
    one_line_failure(
        &[
            "run",
            "migration-bandwidth",
            "--out",
            under_file.to_str().unwrap(),
        ],
        "cannot be created",
    );
    one_line_failure(
        &["replay", tmp.path().join("missing.json").to_str().unwrap()],
        "cannot read run file",
    );
    let corrupt = tmp.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"format\": 1, \"experiment\": ").unwrap();
    one_line_failure(
        &["replay", corrupt.to_str().unwrap()],
        "not a gridbed run file",
    );
}

#[test]
fn run_writes_results_and_replay_confirms_then_detects_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = experiment()
        .args(["run", "migration-bandwidth", "--seed", "9", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join("migration-bandwidth");
    for f in [
        "result.json",
        "run.json",
        "transfer-time.svg",
        "transfer-time.png",
        "bandwidth.png",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    assert!(tmp.path().join("index.html").is_file() && tmp.path().join("README.md").is_file());
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    for key in [
        "experiment",
        "mode",
        "seed",
        "trace_digest",
        "metrics",
        "paper",
    ] {
        assert!(result.get(key).is_some(), "result.json lacks {key}");
    }
    let runfile = dir.join("run.json");
    let ok = experiment().arg("replay").arg(&runfile).output().unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("identical"));

    // Inject a divergence: change one recorded event; replay must name that event.
    let mut run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&runfile).unwrap()).unwrap();
    let events = run["trace"]["events"].as_array_mut().unwrap();
    assert!(events.len() > 10);
    events[7] = serde_json::Value::String("0 tampered".into());
    std::fs::write(&runfile, serde_json::to_string(&run).unwrap()).unwrap();
    let bad = experiment().arg("replay").arg(&runfile).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("diverged at event #7"), "{err}");
}

#[test]
fn json_output_is_the_result_files_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let out = experiment()
        .args(["run", "migration-bandwidth", "--json", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let runs = v.as_array().expect("an array of results");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["experiment"], "migration-bandwidth");
    assert_eq!(runs[0]["units"]["lapi_mbit_s"], "Mbit/s");
    // Progress and the human summary went to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[1/1] migration-bandwidth (sim)"), "{err}");
}
