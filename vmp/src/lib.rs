//! The Virtual Multiprocessor: an IA-32 virtual processor whose guest
//! kernel runs deprivileged while a monitor traps and emulates its sensitive instructions, after
//! document 2 of the seeds (VMP slides, "trap and emulate" with ptrace).
pub mod band;
pub mod checkpoint;
pub mod devices;
pub mod error;
pub mod ffi;
pub mod guest;
pub mod host;
pub mod layout;
pub mod litmus;
pub mod machine;
pub mod run;
pub mod smp;
pub mod time;
pub mod vcpu;

pub use error::VmpError;
pub use machine::{Config, Exit, GuestImage, Machine};
