//! GXP: a parallel shell over a self-installing tree of hosts (document 2 of the seeds, "GXP").
//!
//! The tree logic is written once, free of I/O: [`tree`] (a daemon's routing, the daemon loop
//! over a driver's effects, login rounds, the wire protocol), [`front`] (the controller: explore,
//! `e`, network pipes, task farm), [`lang`] (the shell's commands, login rules, host ranges). Two drivers move
//! its bytes: [`sim`] here, over the `gridbed-runtime` traits (deterministic, thousands of hosts,
//! login cost model), and the `gridbed-gxp-driver` crate over OpenSSH and local processes, where a
//! child daemon talks only over the stdin/stdout of the login command that started it.

pub mod front;
pub mod lang;
pub mod sim;
pub mod tree;

/// Version string a daemon reports in its Hello.
pub const VERSION: &str = concat!("gxp-rs ", env!("CARGO_PKG_VERSION"));
