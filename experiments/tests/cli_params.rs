//! `experiment describe`, `run --set` and `run --platform` as a user meets them: a bad setting or
//! platform file is one line and exit status 2; the values used are recorded and replayed.

use std::process::Command;

fn experiment() -> Command {
    Command::new(env!("CARGO_BIN_EXE_experiment"))
}

/// `experiment replay FILE` succeeds and prints `identical`.
fn assert_replays_identically(file: &std::path::Path) {
    let replay = experiment().arg("replay").arg(file).output().unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(String::from_utf8_lossy(&replay.stdout).starts_with("identical"));
}

fn refused(args: &[&str], expect: &str) {
    let out = experiment().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}:\n{err}");
    assert!(err.contains(expect), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn describe_lists_name_default_unit_and_source() {
    let out = experiment()
        .args(["describe", "migration-bandwidth"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("socket_buffer_bytes = 16384 [bytes] (AIX 4.3 default"),
        "{text}"
    );
    let out = experiment()
        .args(["describe", "vmp-getpid"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no settable parameters"));
    let out = experiment().args(["describe", "nope"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn bad_settings_and_platform_files_are_refused_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    refused(
        &[
            "run",
            "migration-bandwidth",
            "--out",
            out,
            "--set",
            "window=1",
        ],
        "unknown parameter 'window'",
    );
    refused(
        &[
            "run",
            "migration-bandwidth",
            "--out",
            out,
            "--set",
            "socket_buffer_bytes=big",
        ],
        "socket_buffer_bytes",
    );
    refused(
        &["run", "vmp-getpid", "--out", out, "--set", "calls=5"],
        "has no settable parameters",
    );
    refused(
        &["run", "all", "--out", out, "--set", "sizes=[10]"],
        "not to 'all'",
    );
    refused(
        &[
            "run",
            "gxp-scale",
            "--out",
            out,
            "--platform",
            "/nonexistent/p.toml",
        ],
        "cannot read /nonexistent/p.toml",
    );
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "cpu_hz = 0.0\n[[lans]]\nname = \"a\"\nhosts = 2\npreset = \"gige-tcp\"\n",
    )
    .unwrap();
    refused(
        &[
            "run",
            "gxp-scale",
            "--out",
            out,
            "--platform",
            bad.to_str().unwrap(),
        ],
        "cpu_hz must be a number from",
    );
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/platforms/sp2-tcp.toml");
    refused(
        &[
            "run",
            "migration-bandwidth",
            "--out",
            out,
            "--platform",
            good,
        ],
        "takes no platform file",
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "nothing ran"
    );
}

#[test]
fn the_values_used_are_recorded_and_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let status = experiment()
        .args(["run", "migration-bandwidth", "--seed", "4", "--out"])
        .arg(tmp.path())
        .args([
            "--set",
            "socket_buffer_bytes=65536",
            "--set",
            "largest_block_log2=20",
        ])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let dir = tmp.path().join("migration-bandwidth");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    let params = result["params"].as_array().unwrap();
    assert_eq!(params[0]["name"], "socket_buffer_bytes");
    assert_eq!(params[0]["value"], 65536);
    assert_eq!(params[0]["default"], 16384);
    assert_eq!(params[0]["unit"], "bytes");
    assert!(params[0]["source"].as_str().unwrap().contains("AIX"));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["params"], result["params"]);
    assert_replays_identically(&dir.join("run.json"));
    // The same run file with the default socket buffer diverges: the replay does use the values.
    let mut edited = run.clone();
    edited["params"][0]["value"] = 16384.into();
    let file = tmp.path().join("edited.json");
    std::fs::write(&file, edited.to_string()).unwrap();
    let replay = experiment().arg("replay").arg(&file).output().unwrap();
    assert!(!replay.status.success());
    assert!(String::from_utf8_lossy(&replay.stderr).contains("diverged"));
}

/// `--platform FILE` records the file's text: the replay runs the same platform after the file
/// is gone.
#[test]
fn a_platform_file_is_recorded_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mine.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/platforms/gxp-3lans-nat.toml"),
        &file,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = experiment()
        .args(["run", "gxp-scale", "--seed", "2", "--out"])
        .arg(&out)
        .arg("--platform")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let dir = out.join("gxp-scale");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    let p = |name: &str| {
        result["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(p("platform"), text.trim());
    assert_eq!(p("platform_file"), file.display().to_string());
    assert_replays_identically(&dir.join("run.json"));
}
