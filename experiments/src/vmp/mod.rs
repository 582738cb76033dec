//! The Virtual Multiprocessor (document 2): `vmp-getpid`, the trap-and-emulate cost of a system call.

pub mod getpid;
