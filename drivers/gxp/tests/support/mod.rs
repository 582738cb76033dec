//! Test helpers: a real sshd on a loopback port with generated keys, and running `gxp` with a
//! deadline. Everything lives in a temp dir and is stopped on drop.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Sshd {
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Starts sshd on 127.0.0.1 with fresh host and user keys; `hosts` become ssh aliases of
/// 127.0.0.1, each with its own GXP_NAME and GXP_HOME (passed by SetEnv/AcceptEnv). Err (the
/// reason) only when OpenSSH is not installed or sshd cannot start on this machine.
pub fn start_sshd(hosts: &[&str]) -> Result<Sshd, String> {
    if !Path::new(SSHD).exists() {
        return Err(format!(
            "{SSHD} is missing: install openssh-server (scripts/setup.sh, part of the README's test command, does)"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for k in ["host_key", "user_key"] {
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(k)),
        )?;
    }
    std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
    // sshd refuses to start without its privilege-separation directory when run as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let cfg = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
         StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\nAcceptEnv GXP_*\nLogLevel ERROR\n",
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), cfg).expect("sshd_config");
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
                .trim()
                .to_string()
        });
    let mut client = format!(
        "Host {}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  \
         StrictHostKeyChecking no\n  UserKnownHostsFile {d}/known_hosts\n  BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 10\n",
        hosts.join(" "),
        d = d.display()
    );
    for h in hosts {
        client.push_str(&format!(
            "Host {h}\n  SetEnv GXP_NAME={h} GXP_HOME={}/homes/{h}\n",
            d.display()
        ));
    }
    std::fs::write(d.join("ssh_config"), client).expect("ssh_config");
    let log = d.join("sshd.log");
    let child = Command::new(SSHD)
        .args(["-D", "-E"])
        .arg(&log)
        .arg("-f")
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {SSHD}: {e}"))?;
    let mut s = Sshd { dir, port, child };
    let why = |what: String| {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{what}; sshd log: {}", l.trim())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = s.child.try_wait() {
            return Err(why(format!("sshd exited at start ({st})")));
        }
        if Instant::now() > deadline {
            return Err(why(format!(
                "sshd did not listen on port {port} within 10 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(s)
}

/// Runs `gxp -c LINE...` with `env`, killing it after `limit`.
pub fn gxp(lines: &[String], env: &[(&str, String)], limit: Duration) -> Output {
    run_gxp(lines, env, limit, None).0
}

/// Runs `gxp -c LINE...`; returns its output and the peak resident memory (VmHWM, KiB) last seen
/// in /proc while it ran. `kill_when` (polled every 20 ms) SIGKILLs the controller once it returns
/// true: an interruption. Outputs are drained by threads so a chatty run cannot block on its pipe.
pub fn run_gxp(
    lines: &[String],
    env: &[(&str, String)],
    limit: Duration,
    kill_when: Option<&dyn Fn() -> bool>,
) -> (Output, u64) {
    let args: Vec<String> = lines
        .iter()
        .flat_map(|l| ["-c".to_string(), l.clone()])
        .collect();
    run_args(&args, env, limit, kill_when)
}

/// Runs `gxp ARGS...` as [`run_gxp`] does.
pub fn run_args(
    args: &[String],
    env: &[(&str, String)],
    limit: Duration,
    kill_when: Option<&dyn Fn() -> bool>,
) -> (Output, u64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gxp"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gxp");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status_path = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + limit;
    let mut peak = 0u64;
    let mut hung = false;
    let status = loop {
        if let Some(kb) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        }) {
            peak = peak.max(kb);
        }
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if kill_when.is_some_and(|f| f()) {
            let _ = child.kill();
        }
        if Instant::now() > deadline {
            hung = true;
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(
        !hung,
        "gxp hung for {limit:?}; stdout so far:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, peak)
}
