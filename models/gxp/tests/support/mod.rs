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

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts sshd on 127.0.0.1 with fresh host and user keys; `hosts` become ssh aliases of
/// 127.0.0.1, each with its own GXP_NAME and GXP_HOME (passed by SetEnv/AcceptEnv).
pub fn start_sshd(hosts: &[&str]) -> Sshd {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install openssh-server (the README's test command does) — these tests need a real sshd"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for k in ["host_key", "user_key"] {
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(k)),
        );
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
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sshd");
    let mut s = Sshd { dir, port, child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!("sshd exited at start: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "sshd did not listen on port {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// Runs `gxp -c LINE...` with `env`, killing it after `limit`.
pub fn gxp(lines: &[String], env: &[(&str, String)], limit: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gxp"));
    for l in lines {
        cmd.arg("-c").arg(l);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gxp");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "gxp hung for {limit:?}; stdout so far:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
