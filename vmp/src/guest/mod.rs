//! The paravirtual guest: a small IA-32 kernel and its user programs, assembled from Rust with
//! iced-x86's `CodeAssembler`, plus a loader for static ELF32 i386 executables.
pub mod elf;
pub mod image;
pub mod kernel;
pub mod programs;
pub mod smp_kernel;

pub use image::{build_image, UserProgram};
