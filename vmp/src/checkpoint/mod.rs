//! Checkpoint images of a running guest: a versioned, checksummed, streamed format.
//!
//! # Format (version 1)
//!
//! All integers little-endian. An image is a file header followed by records:
//!
//! ```text
//! header  = magic "GRIDBVMP" (8 bytes) | version u32 | flags u32 (bit 0: pages may be lz4)
//! record  = kind u8 | len u32 | payload (len bytes) | crc32 u32 (of kind, len and payload)
//! ```
//!
//! Records, in this order:
//! 1. `STATE` (kind 1), exactly one: postcard encoding of [`StateRecord`] — CPU, monitor and
//!    device state ([`crate::machine::snapshot::MachineState`]), the number of page records that
//!    follow and how much console output was already delivered. At most [`MAX_STATE_LEN`] bytes.
//! 2. `PAGE` (kind 2), one per guest RAM page that is not all zero, in strictly increasing
//!    address order: `addr u32 | encoding u8 (0 raw, 1 lz4 block) | data`. A raw page is 4096
//!    bytes; an lz4 page must decompress to exactly 4096. Zero pages are not sent: a restored
//!    machine's RAM starts zeroed.
//! 3. `END` (kind 3), exactly one, last: `pages u32 | image_crc u32`, where `image_crc` is the
//!    crc32 of every byte of the image before the END record.
//!
//! A reader checks each length against its bound before allocating, each record's crc, the
//! order, the page count against the STATE record and the destination's room, and the whole-image
//! crc; bytes after END are an error. The machine is assembled while reading and handed out only
//! after END verified, so a bad image never yields a half-restored machine.
//!
//! The STATE record's CPU context is the engine's own (see `machine::snapshot`), so an image
//! restores only under the same engine build; its tag is checked.

mod crc;
pub mod precopy;
mod read;
pub mod tcp;
mod write;

pub use read::{inspect, read_framed_image, read_image, RestoreLimits};
pub use write::{write_image, WriteOptions};

use serde::{Deserialize, Serialize};

use crate::machine::snapshot::MachineState;

pub const MAGIC: &[u8; 8] = b"GRIDBVMP";
pub const VERSION: u32 = 1;
pub const FLAG_LZ4: u32 = 1;

pub const KIND_STATE: u8 = 1;
pub const KIND_PAGE: u8 = 2;
pub const KIND_END: u8 = 3;
/// Pre-copy streams only (`precopy`): a round's opening and closing records and the machine's
/// shape sent before the first round.
pub const KIND_ROUND: u8 = 4;
pub const KIND_ROUND_END: u8 = 5;
pub const KIND_SHELL: u8 = 6;

/// Bound on the STATE record (CPU context, 64 KiB monitor page, console): generous for any
/// guest here, small enough that a corrupt length cannot make a reader allocate much.
pub const MAX_STATE_LEN: u32 = 64 << 20;
/// Bound on a PAGE record: header plus lz4's worst case for 4096 bytes.
pub const MAX_PAGE_RECORD: u32 = 5 + 4096 + 4096 / 255 + 16;

/// File name of the image inside an image directory.
pub const IMAGE_FILE: &str = "image.gbi";

/// The STATE record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    pub machine: MachineState,
    /// Number of PAGE records that follow.
    pub pages: u32,
    /// Console bytes the checkpointed run already delivered (a restored run prints the rest).
    pub console_delivered: u64,
}

/// What an image holds, for `vmp image` and reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSummary {
    pub version: u32,
    pub flags: u32,
    pub state: StateRecord,
    /// Page records by encoding.
    pub raw_pages: u32,
    pub lz4_pages: u32,
    /// Bytes of the whole image.
    pub bytes: u64,
}

/// Why an image was refused (one line each).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("image truncated ({0})")]
    Truncated(&'static str),
    #[error("not a gridbed vmp image (bad magic)")]
    BadMagic,
    #[error("image format version {found} is not supported (this build reads version {VERSION})")]
    Version { found: u32 },
    #[error("image corrupted: {0}")]
    Corrupt(String),
    #[error(
        "destination has no room: image needs {need} pages of guest RAM, destination offers {have}"
    )]
    NoRoom { need: u32, have: u32 },
    #[error("{0}")]
    Machine(#[from] crate::error::VmpError),
}

/// Image directories: `DIR/image.gbi`, written to a temporary name and renamed when complete,
/// so a failed write (no room on the disk, say) never leaves an image that looks whole.
pub mod dir {
    use std::fs::{self, File};
    use std::io::{BufReader, BufWriter, Write};
    use std::path::Path;

    use super::{ImageError, ImageSummary, RestoreLimits, WriteOptions, IMAGE_FILE};
    use crate::machine::Machine;

    pub fn save(
        m: &Machine,
        dir: &Path,
        console_delivered: u64,
        opts: WriteOptions,
    ) -> Result<u64, ImageError> {
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{IMAGE_FILE}.partial"));
        let res = (|| {
            let mut w = BufWriter::with_capacity(64 << 10, File::create(&tmp)?);
            let n = super::write_image(m, &mut w, console_delivered, opts)?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            fs::rename(&tmp, dir.join(IMAGE_FILE))?;
            Ok(n)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    fn open(dir: &Path) -> Result<BufReader<File>, ImageError> {
        let path = dir.join(IMAGE_FILE);
        let f = File::open(&path).map_err(|e| {
            ImageError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot open {}: {e}", path.display()),
            ))
        })?;
        Ok(BufReader::with_capacity(1 << 20, f))
    }

    pub fn load(dir: &Path, limits: RestoreLimits) -> Result<(Machine, ImageSummary), ImageError> {
        super::read_image(open(dir)?, limits)
    }

    pub fn inspect(dir: &Path) -> Result<ImageSummary, ImageError> {
        super::inspect(open(dir)?)
    }

    /// Flushes `w`, for callers that print around image operations.
    pub fn flush(w: &mut impl Write) {
        let _ = w.flush();
    }
}

/// The VMP guest as a migratable process: its image is this module's format.
impl gridbed_migration::Migratable for crate::machine::Machine {
    fn run_for(&mut self, instructions: u64) -> anyhow::Result<Option<u32>> {
        match self.run(Some(instructions.max(1)))? {
            crate::machine::Exit::PowerOff(code) => Ok(Some(code)),
            // Sync points stop only an SMP processor; for a lone process it is a slice boundary.
            crate::machine::Exit::SliceEnd | crate::machine::Exit::Sync(_) => Ok(None),
            crate::machine::Exit::Halted => {
                anyhow::bail!("guest halted with no interrupt that could wake it")
            }
        }
    }

    fn position(&self) -> u64 {
        self.monitor().retired
    }

    fn cycles(&self) -> u64 {
        self.monitor().cycles()
    }

    fn capture(&self, w: &mut dyn std::io::Write) -> anyhow::Result<u64> {
        Ok(write_image(self, w, 0, WriteOptions::default())?)
    }

    fn restore(r: &mut dyn std::io::Read) -> anyhow::Result<Self> {
        Ok(read_image(r, RestoreLimits::default())?.0)
    }
}
