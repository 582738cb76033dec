//! Real mode through a real OpenSSH server on a loopback port: multi-hop explore with
//! self-installation, `e` with GXP's environment, a network pipe copying a file to every host, a
//! task farm, and a failed login that is listed without blocking the rest.

mod support;

use std::time::Duration;

use support::{gxp, run_args, start_sshd};

#[test]
fn explore_install_e_pipe_and_farm_over_real_sshd() {
    let sshd = match start_sshd(&["h1", "h2", "h3"]) {
        Ok(s) => s,
        Err(why) => {
            println!("SKIP: no real sshd on this machine: {why}");
            return;
        }
    };
    let d = sshd.dir.path().display().to_string();
    let installed_on = |h: &str| -> Vec<String> {
        let bin = sshd.path(&format!("homes/{h}/bin"));
        std::fs::read_dir(&bin)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    std::fs::write(sshd.path("x.txt"), "payload line\n").unwrap();
    std::fs::write(
        sshd.path("tasks"),
        "echo t0 $GXP_HOSTNAME\n# comment\necho t1\nexit 3\n",
    )
    .unwrap();
    let lines: Vec<String> = vec![
        format!("method sshx ssh -F {}/ssh_config -T {{host}}", d),
        // h1 is reached from the login host; h2 and h3 only from h1 (a gateway): two hops.
        "use sshx root h1".into(),
        "use sshx h1 h[23]".into(),
        "use sshx root nosuchhost".into(),
        "explore h1 h2 h3 nosuchhost".into(),
        "stat".into(),
        "sel re h.".into(),
        "e echo idx=$GXP_EXEC_IDX of $GXP_NUM_EXECS on $GXP_HOSTNAME".into(),
        format!("cat {d}/x.txt {{{{ cat > $GXP_HOME/y.txt }}}}"),
        "eg cat $GXP_HOME/y.txt".into(),
        format!("farm {d}/tasks {d}/journal"),
    ];
    let out = gxp(
        &lines,
        &[("GXP_NAME", "root".into())],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("explore: nosuchhost:"),
        "failed login listed: {ctx}"
    );
    assert!(stdout.contains("reached 3 of 4 targets"), "{ctx}");
    assert!(
        stdout.contains("4 hosts, depth 2"),
        "two hops through h1: {ctx}"
    );
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert!(
            stdout.contains(&format!("{h}: idx={i} of 3 on {h}")),
            "{ctx}"
        );
        // Self-installation: each host got the program in its own per-user directory.
        let installed = installed_on(h);
        assert_eq!(
            installed.len(),
            1,
            "one installed program, no temp file left: {installed:?}"
        );
        assert_eq!(
            std::fs::read_to_string(sshd.path(&format!("homes/{h}/y.txt"))).unwrap(),
            "payload line\n"
        );
    }
    assert!(
        stdout.contains("---------------- h[1-3] (3)\npayload line\n"),
        "grouped output: {ctx}"
    );
    assert!(
        stdout.contains("farm: 3 tasks, 3 run now, 0 from journal"),
        "{ctx}"
    );
    assert!(
        stdout.contains("[exit 3]"),
        "task exit code collected: {ctx}"
    );
    let journal = std::fs::read_to_string(sshd.path("journal")).unwrap();
    assert_eq!(journal.lines().count(), 3);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed login and a failed task make the one-shot exit 1: {ctx}"
    );

    // Resume: the journal holds every task, so nothing runs again.
    let again = gxp(
        &[
            format!("method sshx ssh -F {}/ssh_config -T {{host}}", d),
            "use sshx root h1".into(),
            "explore h1".into(),
            format!("farm {d}/tasks {d}/journal"),
        ],
        &[("GXP_NAME", "root".into())],
        Duration::from_secs(60),
    );
    let s2 = String::from_utf8_lossy(&again.stdout);
    assert!(
        s2.contains("farm: 3 tasks, 0 run now, 3 from journal"),
        "{s2}"
    );
    assert_eq!(
        installed_on("h1").len(),
        1,
        "the same build found installed: not sent again"
    );

    // Another build (any change of bytes is another checksum) is installed beside the first one
    // and started, never written over it.
    let other = sshd.path("gxp-other-build");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_gxp")).unwrap();
    bytes.extend_from_slice(b"another build");
    std::fs::write(&other, bytes).unwrap();
    let args: Vec<String> = [
        "--program".to_string(),
        other.display().to_string(),
        "-c".into(),
        format!("method sshx ssh -F {}/ssh_config -T {{host}}", d),
        "-c".into(),
        "use sshx root h1".into(),
        "-c".into(),
        "explore h1".into(),
        "-c".into(),
        "e echo up on $GXP_HOSTNAME".into(),
    ]
    .to_vec();
    let (third, _) = run_args(
        &args,
        &[("GXP_NAME", "root".into())],
        Duration::from_secs(60),
        None,
    );
    let s3 = String::from_utf8_lossy(&third.stdout);
    assert!(s3.contains("h1: up on h1"), "{s3}");
    assert_eq!(installed_on("h1").len(), 2, "{s3}");
}
