//! The tree, free of I/O: [`node`] (one daemon's routing of orders down and events up),
//! [`daemon`] (the daemon loop over a driver's effects), [`explore`] (login rounds over the login
//! rules, fan-out limits), [`proto`] (framed messages over a login channel's stdin/stdout).

pub mod daemon;
pub mod explore;
pub mod node;
pub mod proto;
