//! A cluster made on this machine for tests: N hosts, host k with its own loopback address
//! (127.0.0.{k+2}), its own sshd listening on that address only (own host key, pid file, log) and
//! its own home (sshd's `SetEnv GXP_HOME=…/homes/hK GXP_NAME=hK`, so whoever logs in there
//! installs into and runs from that host's directory). Everything lives in one temporary
//! directory; dropping the cluster kills every process descended from its sshds, then the sshds.
//!
//! Also usable from other crates' tests (`experiments`): it is part of the library, not of one
//! test file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Why a test cluster did not start.
#[derive(Debug)]
pub enum StartError {
    /// OpenSSH's server is not installed: tests print a SKIP line.
    NoSshd(String),
    /// Anything else: a test failure.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NoSshd(s) | StartError::Failed(s) => f.write_str(s),
        }
    }
}

pub struct TestHost {
    /// The ssh alias (`h1`, `h2`, …) and GXP name.
    pub name: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// This host's GXP_HOME.
    pub home: PathBuf,
    child: Option<Child>,
    pid_file: PathBuf,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<TestHost>,
    /// The `silent` host: accepts TCP connections and never says a word (a hung machine).
    silent: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

/// A listener that accepts connections and holds them open without a byte, until `stop`.
fn silent_host(
    l: TcpListener,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        let _ = l.set_nonblocking(true);
        let mut held = Vec::new();
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) if held.len() < 64 => held.push(c),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (stop, t)
}

fn run_ok(cmd: &mut Command) -> Result<(), StartError> {
    let out = cmd
        .output()
        .map_err(|e| StartError::Failed(format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(StartError::Failed(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|_| "root".into())
        })
}

impl TestCluster {
    /// Starts `n` hosts (1 ≤ n ≤ 200). The client side is [`TestCluster::ssh_config`]: aliases
    /// `h1`…`hN`, plus `refuse` (h1's sshd with a key it does not accept: a login refused) and
    /// `silent` (127.0.0.250: accepts the connection, never answers: a hung host).
    pub fn start(n: usize) -> Result<TestCluster, StartError> {
        if !Path::new(SSHD).exists() {
            return Err(StartError::NoSshd(format!(
                "{SSHD} is missing: install openssh-server (scripts/setup.sh does)"
            )));
        }
        if !(1..=200).contains(&n) {
            return Err(StartError::Failed(format!("{n} hosts: 1..=200")));
        }
        reap_crashed_clusters();
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .map_err(|e| StartError::Failed(format!("tempdir: {e}")))?;
        let d = dir.path().to_path_buf();
        // Who owns this cluster: a later start removes it if this process died without its drop.
        std::fs::write(d.join("owner.pid"), std::process::id().to_string())
            .map_err(|e| StartError::Failed(format!("owner.pid: {e}")))?;
        for k in ["user_key", "stranger_key"] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(d.join(k)),
            )?;
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys"))
            .map_err(|e| StartError::Failed(format!("authorized_keys: {e}")))?;
        // sshd refuses to start without its privilege-separation directory when run as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut c = TestCluster {
            dir,
            hosts: Vec::new(),
            silent: None,
        };
        let user = user();
        let mut client = String::new();
        for k in 0..n {
            let name = format!("h{}", k + 1);
            let addr = Ipv4Addr::new(127, 0, 0, (k + 2) as u8);
            let hd = d.join("sshd").join(&name);
            let home = d.join("homes").join(&name);
            for p in [&hd, &home] {
                std::fs::create_dir_all(p)
                    .map_err(|e| StartError::Failed(format!("{}: {e}", p.display())))?;
            }
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(hd.join("host_key")),
            )?;
            let port = TcpListener::bind((addr, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| StartError::Failed(format!("no free port on {addr}: {e}")))?;
            let pid_file = hd.join("sshd.pid");
            let cfg = format!(
                "Port {port}\nListenAddress {addr}\nHostKey {h}/host_key\nPidFile {pid}\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nSetEnv GXP_NAME={name} GXP_HOME={home}\n\
                 MaxStartups 100\nLogLevel ERROR\n",
                h = hd.display(),
                pid = pid_file.display(),
                d = d.display(),
                home = home.display(),
            );
            std::fs::write(hd.join("sshd_config"), cfg)
                .map_err(|e| StartError::Failed(format!("sshd_config: {e}")))?;
            client.push_str(&format!(
                "Host {name}\n  HostName {addr}\n  Port {port}\n  User {user}\n  IdentityFile {d}/user_key\n",
                d = d.display()
            ));
            if k == 0 {
                client.push_str(&format!(
                    "Host refuse\n  HostName {addr}\n  Port {port}\n  User {user}\n  IdentityFile {d}/stranger_key\n",
                    d = d.display()
                ));
            }
            let log = hd.join("sshd.log");
            let child = Command::new(SSHD)
                .args(["-D", "-E"])
                .arg(&log)
                .arg("-f")
                .arg(hd.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| StartError::Failed(format!("cannot run {SSHD}: {e}")))?;
            c.hosts.push(TestHost {
                name,
                addr,
                port,
                home,
                child: Some(child),
                pid_file,
            });
        }
        let silent_addr = Ipv4Addr::new(127, 0, 0, 250);
        let sl = TcpListener::bind((silent_addr, 0))
            .map_err(|e| StartError::Failed(format!("silent host on {silent_addr}: {e}")))?;
        let silent_port = sl.local_addr().map(|a| a.port()).unwrap_or(0);
        c.silent = Some(silent_host(sl));
        client.push_str(&format!(
            "Host silent\n  HostName {silent_addr}\n  Port {silent_port}\n  User {user}\n  IdentityFile {d}/user_key\n",
            d = d.display()
        ));
        client.push_str(&format!(
            "Host *\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile {d}/known_hosts\n  \
             BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 10\n",
            d = d.display()
        ));
        std::fs::write(d.join("ssh_config"), client)
            .map_err(|e| StartError::Failed(format!("ssh_config: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        for h in &mut c.hosts {
            while TcpStream::connect((h.addr, h.port)).is_err() {
                let log = || {
                    std::fs::read_to_string(h.pid_file.with_file_name("sshd.log"))
                        .unwrap_or_default()
                };
                if let Some(Ok(Some(st))) = h.child.as_mut().map(|c| c.try_wait()) {
                    return Err(StartError::Failed(format!(
                        "sshd of {} exited at start ({st}): {}",
                        h.name,
                        log().trim()
                    )));
                }
                if Instant::now() > deadline {
                    return Err(StartError::Failed(format!(
                        "sshd of {} did not listen on {}:{} within 15 s: {}",
                        h.name,
                        h.addr,
                        h.port,
                        log().trim()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(c)
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// A hosts file for these hosts (`cores=1 addr=<its address>` each), `extra` lines appended.
    pub fn hosts_file_text(&self, extra: &str) -> String {
        let mut s = format!(
            "# test cluster: {} hosts on loopback addresses, one sshd each\nssh_config = {}\nconnect_timeout = 5\n",
            self.hosts.len(),
            self.ssh_config().display()
        );
        for h in &self.hosts {
            s.push_str(&format!("{} cores=1 addr={}\n", h.name, h.addr));
        }
        s.push_str(extra);
        s
    }

    /// Writes [`TestCluster::hosts_file_text`] to a file in the cluster's directory.
    pub fn write_hosts_file(&self, file: &str, extra: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, self.hosts_file_text(extra)).expect("write hosts file");
        p
    }

    fn sshd_pids(&self) -> Vec<u32> {
        self.hosts
            .iter()
            .filter_map(|h| h.child.as_ref().map(Child::id))
            .collect()
    }

    /// Every live process started through one of the hosts' sshds (logins, GXP daemons, workers),
    /// as (pid, command line): what a run must leave empty.
    /// Also any process running a program installed under the cluster's directory, so a worker
    /// whose daemon died (re-parented away from its sshd) is still found.
    pub fn processes(&self) -> Vec<(u32, String)> {
        let mut all: BTreeMap<u32, String> = descendants(&self.sshd_pids()).into_iter().collect();
        for (pid, cmd) in running_from(self.dir.path()) {
            all.entry(pid).or_insert(cmd);
        }
        all.into_iter().collect()
    }

    /// Waits up to `limit` for [`TestCluster::processes`] to be empty; returns what is left.
    pub fn wait_idle(&self, limit: Duration) -> Vec<(u32, String)> {
        let end = Instant::now() + limit;
        loop {
            let p = self.processes();
            if p.is_empty() || Instant::now() > end {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether host `name`'s sshd is still running.
    pub fn sshd_alive(&mut self, name: &str) -> bool {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .and_then(|h| h.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Whatever runs on the hosts first (so nothing is re-parented away from the tree), then
        // the servers.
        for (pid, _) in self.processes() {
            // SAFETY: kill(2) on a pid this cluster's sshd started; touches no memory.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        for h in &mut self.hosts {
            if let Some(mut c) = h.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some((stop, t)) = self.silent.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

const PREFIX: &str = "gridbed-testcluster-";

/// Live processes whose executable lies under `dir` (programs installed on the test hosts).
fn running_from(dir: &Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            if exe.starts_with(dir) {
                let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                out.push((
                    pid,
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string(),
                ));
            }
        }
    }
    out
}

/// Removes the clusters of test processes that died without dropping theirs (killed, aborted):
/// their sshds (from the pid files), everything below them, and their directories.
fn reap_crashed_clusters() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        // Alive owner (or a cluster still being made): not ours to touch.
        match owner {
            Some(pid) if !Path::new(&format!("/proc/{pid}")).exists() => {}
            _ => continue,
        }
        let mut sshds = Vec::new();
        if let Ok(hosts) = std::fs::read_dir(dir.join("sshd")) {
            for h in hosts.flatten() {
                if let Some(pid) = std::fs::read_to_string(h.path().join("sshd.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    // Only an sshd started with this directory's config.
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmd).contains(&*dir.to_string_lossy()) {
                        sshds.push(pid);
                    }
                }
            }
        }
        let mut doomed = descendants(&sshds);
        doomed.extend(running_from(&dir));
        for (pid, _) in doomed {
            // SAFETY: kill(2) on a process below a dead test's sshd.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        for pid in sshds {
            // SAFETY: as above, the dead test's own sshd.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Live processes below `roots` (not the roots), from /proc.
pub fn descendants(roots: &[u32]) -> Vec<(u32, String)> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut cmd: BTreeMap<u32, String> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces and parentheses: split after the last ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let state = f.next().unwrap_or("");
        if state == "Z" {
            continue; // a zombie runs nothing
        }
        let Some(ppid) = f.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        parent.insert(pid, ppid);
        let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmd.insert(
            pid,
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string(),
        );
    }
    let roots: BTreeSet<u32> = roots.iter().copied().collect();
    let mut out = Vec::new();
    for (&pid, _) in parent.iter() {
        let mut p = pid;
        let mut hops = 0;
        while let Some(&pp) = parent.get(&p) {
            if roots.contains(&pp) {
                out.push((pid, cmd.get(&pid).cloned().unwrap_or_default()));
                break;
            }
            p = pp;
            hops += 1;
            if pp <= 1 || hops > 64 {
                break;
            }
        }
    }
    out
}
