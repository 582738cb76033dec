//! Document 1 (Yazawa & Horiguchi): process migration is dominated by moving the address space, so
//! its cost is the memory-transfer time of the transport. This crate holds the transfer scenario
//! (written against the runtime interface, so it runs on either backend; the Figure 3 sweep that
//! runs it is the `migration-bandwidth` experiment in `gridbed-experiments`); the migration
//! mechanism itself: the [`Migratable`] trait a process implements, the per-host [`daemon`] that
//! moves it (stop-and-copy, exactly once; protocol messages in [`wire`]) and the three strategies
//! ([`strategies`] over a page-writing [`paged`] process); and the load-driven side: per-host load
//! monitors ([`load`]), the migration policy ([`controller`]) and its daemon
//! ([`controller_daemon`]), costed through [`cost::MigrationCost`].

pub mod bsp;
pub mod controller;
pub mod controller_daemon;
pub mod cost;
pub mod daemon;
pub mod load;
pub mod migratable;
pub mod paged;
pub mod sharing;
pub mod strategies;
pub mod wire;

pub use migratable::Migratable;

use std::time::Duration;

use gridbed_runtime::{Addr, ClusterRef, HostId};

/// Port the destination's restart code listens on for the memory image.
pub const IMAGE_PORT: u16 = 40;

/// Block sizes of Figure 3: 1 KiB to 64 MiB, doubling.
pub fn block_sizes() -> Vec<usize> {
    (10..=26).map(|p| 1usize << p).collect()
}

/// Moves one block of `bytes` from host 0 to host 1 (as `LAPI_Put` of a segment would) and returns
/// the time from the start of the send until the destination holds every byte.
pub async fn move_block(cluster: &ClusterRef, bytes: usize) -> Duration {
    let hosts = cluster.hosts();
    let (src, dst) = (hosts[0].clone(), hosts[1].clone());
    let mut inbox = dst.bind(IMAGE_PORT).expect("image port free");
    let t0 = cluster.now();
    src.send(
        IMAGE_PORT,
        Addr::new(HostId(1), IMAGE_PORT),
        vec![0u8; bytes],
    )
    .await
    .expect("hosts 0 and 1 reach each other");
    let m = inbox.recv().await.expect("destination alive");
    debug_assert_eq!(m.payload.len(), bytes);
    cluster.event(&format!("block {bytes} moved"));
    cluster.now() - t0
}
