//! GXP: a parallel shell over a self-installing tree of hosts (document 2 of the seeds, "GXP").
//!
//! The tree logic is written once, free of I/O: [`node`] (a daemon's routing), [`daemon`] (the
//! daemon loop over a driver's effects), [`explore`] (login rounds), [`controller`] (the front
//! end: explore, `e`, network pipes, task farm). Two drivers move
//! its bytes: [`sim`] here, over the `gridbed-runtime` traits (deterministic, thousands of hosts,
//! login cost model), and the `gridbed-gxp-driver` crate over OpenSSH and local processes, where a
//! child daemon talks only over the stdin/stdout of the login command that started it.

pub mod controller;
pub mod daemon;
pub mod exec_loop;
pub mod explore;
pub mod farm;
pub mod help;
pub mod hostrange;
pub mod hosts;
pub mod node;
pub mod output;
pub mod pipe;
pub mod proto;
pub mod rules;
pub mod selection;
pub mod shell;
pub mod sim;

/// Version string a daemon reports in its Hello.
pub const VERSION: &str = concat!("gxp-rs ", env!("CARGO_PKG_VERSION"));
