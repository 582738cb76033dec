//! What the migration mechanism needs of a process: run it a bounded amount, and capture and
//! restore its whole state as a byte stream at an instruction boundary. The VMP guest
//! (`gridbed_vmp::Machine`) implements it; the mechanism never sees its insides.

use std::io::{Read, Write};

/// A process that can be stopped at an instruction boundary, captured and restored elsewhere.
pub trait Migratable: Sized {
    /// Runs at least `instructions` more instructions (stopping at the next boundary after), or
    /// until the process ends; `Some(status)` once it has ended.
    fn run_for(&mut self, instructions: u64) -> anyhow::Result<Option<u32>>;

    /// Instructions retired so far (where a capture taken now would resume).
    fn position(&self) -> u64;

    /// Modelled processor cycles consumed so far; the mechanism charges their growth to the
    /// host it runs on (host cycles = guest cycles).
    fn cycles(&self) -> u64;

    /// Writes the whole state as a self-checking image to `w`; returns the bytes written. The
    /// process itself is unchanged and may go on running.
    fn capture(&self, w: &mut dyn Write) -> anyhow::Result<u64>;

    /// Reads an image written by [`Migratable::capture`] and rebuilds the process from it. An
    /// incomplete or corrupted image is an error and yields nothing.
    fn restore(r: &mut dyn Read) -> anyhow::Result<Self>;
}
