//! Experiments of the Virtual Multiprocessor across hosts.

pub mod fib;
