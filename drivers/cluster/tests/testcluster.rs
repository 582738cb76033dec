//! The test cluster itself: four hosts, each its own loopback address, its own sshd listening
//! only there and its own home; logins land on the host they name; the refusing alias is
//! refused; nothing of the cluster runs after drop.

use std::process::Command;
use std::time::Duration;

use gridbed_cluster_driver::testcluster::{StartError, TestCluster};

/// Waits up to 5 s for a process of the cluster whose command line contains `what`.
fn appears(c: &TestCluster, what: &str) -> Vec<(u32, String)> {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = c.processes();
        if p.iter().any(|(_, cmd)| cmd.contains(what)) || std::time::Instant::now() > end {
            return p;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ssh(c: &TestCluster, host: &str, cmd: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(c.ssh_config())
        .args(["-T", "--", host, cmd])
        .output()
        .expect("run ssh")
}

#[test]
fn four_hosts_with_their_own_address_sshd_and_home() {
    let c = match TestCluster::start(4) {
        Ok(c) => c,
        Err(StartError::NoSshd(why)) => {
            println!("SKIP: no sshd on this machine: {why}");
            return;
        }
        Err(e) => panic!("test cluster: {e}"),
    };
    for (k, h) in c.hosts.iter().enumerate() {
        assert_eq!(h.addr.to_string(), format!("127.0.0.{}", k + 2));
        let out = ssh(
            &c,
            &h.name,
            "echo $GXP_NAME $GXP_HOME $SSH_CONNECTION; mkdir -p $GXP_HOME && touch $GXP_HOME/mark",
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}: {text} {}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let f: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(f[0], h.name, "{text}");
        assert_eq!(f[1], h.home.display().to_string(), "{text}");
        // SSH_CONNECTION = client ip, client port, server ip, server port: this host's own.
        assert_eq!(f[4], h.addr.to_string(), "{text}");
        assert_eq!(f[5], h.port.to_string(), "{text}");
        assert!(h.home.join("mark").exists());
        // sshd listens on its own address only: the same port on another host's address is not
        // this host.
        let other = c.hosts[(k + 1) % c.hosts.len()].addr;
        assert!(
            std::net::TcpStream::connect((other, h.port)).is_err()
                || c.hosts.iter().any(|o| o.addr == other && o.port == h.port),
            "{}'s port answers on {other}",
            h.name
        );
    }
    let refused = ssh(&c, "refuse", "true");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // A process left behind by a login, detached from it (re-parented away from sshd) but
    // running a program installed on the host, as GXP's daemons and workers are: found, and
    // killed by drop.
    let bg = ssh(
        &c,
        "h2",
        "cp /bin/sleep $GXP_HOME/sleeper && (setsid $GXP_HOME/sleeper 300 >/dev/null 2>&1 &) && echo started",
    );
    assert!(
        bg.status.success(),
        "{}",
        String::from_utf8_lossy(&bg.stderr)
    );
    assert!(
        appears(&c, "sleeper 300")
            .iter()
            .any(|(_, cmd)| cmd.contains("sleeper 300")),
        "{:?}",
        c.processes()
    );
    let dir = c.dir.path().to_path_buf();
    let sshd_ports: Vec<(std::net::Ipv4Addr, u16)> =
        c.hosts.iter().map(|h| (h.addr, h.port)).collect();
    let left = c.processes();
    drop(c);
    for (pid, cmd) in left {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "process {pid} ({cmd}) of the cluster still runs"
        );
    }
    for (a, p) in sshd_ports {
        assert!(
            std::net::TcpStream::connect((a, p)).is_err(),
            "sshd on {a}:{p} still listens"
        );
    }
    assert!(!dir.exists(), "temporary directory removed");
}

/// A cluster whose test died without its drop (here: forgotten, its owner a process that has
/// exited) is removed by the next start: its sshds stopped, what ran on them killed, its
/// directory gone.
#[test]
fn a_crashed_tests_cluster_is_reaped_by_the_next_start() {
    let c = match TestCluster::start(2) {
        Ok(c) => c,
        Err(StartError::NoSshd(why)) => {
            println!("SKIP: no sshd on this machine: {why}");
            return;
        }
        Err(e) => panic!("test cluster: {e}"),
    };
    let bg = ssh(
        &c,
        "h1",
        "cp /bin/sleep $GXP_HOME/sleeper && (setsid $GXP_HOME/sleeper 300 >/dev/null 2>&1 &) && echo started",
    );
    assert!(bg.status.success());
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    std::fs::write(c.dir.path().join("owner.pid"), dead.id().to_string()).unwrap();
    let dir = c.dir.path().to_path_buf();
    let ports: Vec<(std::net::Ipv4Addr, u16)> = c.hosts.iter().map(|h| (h.addr, h.port)).collect();
    let left = appears(&c, "sleeper 300");
    assert!(
        left.iter().any(|(_, cmd)| cmd.contains("sleeper 300")),
        "the sleeper runs: {left:?}"
    );
    std::mem::forget(c);
    let next = TestCluster::start(1).expect("second cluster");
    assert!(!dir.exists(), "the crashed cluster's directory is removed");
    for (a, p) in ports {
        assert!(
            std::net::TcpStream::connect((a, p)).is_err(),
            "the crashed cluster's sshd on {a}:{p} is stopped"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    for (pid, cmd) in left {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(
            !alive,
            "process {pid} ({cmd}) of the crashed cluster still runs"
        );
    }
    drop(next);
}
