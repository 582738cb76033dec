//! Real-cluster mode (`experiment run NAME --mode real --hosts FILE`): the hosts file
//! ([`hosts`]), the launcher that explores the hosts with GXP and runs one worker per role on them
//! ([`launch`]), the protocol between launcher and workers ([`proto`]), the worker side
//! ([`worker`]), and a cluster of loopback hosts with their own sshd for tests ([`testcluster`]).
//!
//! The program GXP installs on every host (checksum-verified by its bootstrap) is the launching
//! executable itself: it must answer `daemon --index N --sha SHA` ([`daemon_main`]) and
//! `__worker` ([`worker::serve`]).

pub mod auth;
pub mod hosts;
pub mod launch;
pub mod proto;
pub mod testcluster;
pub mod worker;

pub use gridbed_gxp_driver::daemon_main;

/// `daemon --index N --sha SHA` of the installed program: GXP's child daemon on its own
/// single-thread runtime, as the `gxp` binary runs it.
pub fn run_daemon(index: u32, sha: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon_main(index, sha))
}
pub use hosts::{HostLine, HostsFile};
pub use launch::{Cluster, ClusterError, LaunchOptions, RunSpec, WorkerOutcome};
