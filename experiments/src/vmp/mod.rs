//! The Virtual Multiprocessor (document 2): `vmp-getpid`, the trap-and-emulate cost of a system
//! call, and `vmp-fib`, fibonacci programs in parallel on the multiprocessor VMP across hosts.

pub mod fib;
pub mod getpid;
