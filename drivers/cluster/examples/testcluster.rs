//! Starts the loopback test cluster and keeps it up until stdin closes (Enter or Ctrl-D):
//! `cargo run -p gridbed-cluster-driver --example testcluster [N]` prints a hosts file to use with
//! `experiment run … --mode real --hosts FILE`. Everything is stopped and removed on exit.

use std::io::BufRead;

use gridbed_cluster_driver::testcluster::TestCluster;

fn main() {
    let n = std::env::args()
        .nth(1)
        .map(|a| a.parse::<usize>())
        .unwrap_or(Ok(4));
    let Ok(n) = n else {
        eprintln!("usage: testcluster [HOSTS]");
        std::process::exit(2);
    };
    let c = match TestCluster::start(n) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let f = c.write_hosts_file("hosts", "");
    for h in &c.hosts {
        eprintln!(
            "{}: sshd on {}:{}, home {}",
            h.name,
            h.addr,
            h.port,
            h.home.display()
        );
    }
    println!("{}", f.display());
    eprintln!("hosts file above; press Enter (or close stdin) to stop the cluster");
    let _ = std::io::stdin().lock().lines().next();
    let left = c.processes();
    if !left.is_empty() {
        eprintln!("still running on the hosts (killed now): {left:?}");
    }
}
