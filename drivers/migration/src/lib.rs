//! Process migration on real OS processes: the real-mode block harness of migration-bandwidth
//! ([`blocks`]). It moves bytes between this process and a sink child over loopback sockets, so
//! it lives outside the model crate, which knows only the runtime interface.

pub mod blocks;
