//! Writing an image as a stream: the STATE record, then one record per non-zero page read
//! straight out of guest RAM, then END. Only one page (and its compressed form) is buffered.

use std::io::Write;

use super::{
    ImageError, StateRecord, FLAG_LZ4, KIND_END, KIND_PAGE, KIND_STATE, MAGIC, MAX_STATE_LEN,
    VERSION,
};
use crate::layout::PAGE;
use crate::machine::Machine;

#[derive(Copy, Clone, Debug)]
pub struct WriteOptions {
    /// lz4-compress pages (each page is stored raw when compression does not shrink it).
    pub compress: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { compress: true }
    }
}

/// A writer that keeps the crc32 and length of everything written through it.
pub(super) struct Summing<W> {
    inner: W,
    pub crc: crc32fast::Hasher,
    pub bytes: u64,
}

impl<W: Write> Summing<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(b)?;
        self.crc.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn record(&mut self, kind: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let head = [&[kind][..], &(len as u32).to_le_bytes()].concat();
        let mut c = crc32fast::Hasher::new();
        c.update(&head);
        self.put(&head)?;
        for p in parts {
            c.update(p);
            self.put(p)?;
        }
        self.put(&c.finalize().to_le_bytes())
    }
}

/// Writes `m` (stopped at an instruction boundary) as an image to `w`; returns the bytes written.
pub fn write_image<W: Write>(
    m: &Machine,
    w: W,
    console_delivered: u64,
    opts: WriteOptions,
) -> Result<u64, ImageError> {
    let addrs: Vec<u32> = m.nonzero_pages().map(|(a, _)| a).collect();
    let pages = addrs.len() as u32;
    let state = StateRecord {
        machine: m.capture_state()?,
        pages,
        console_delivered,
    };
    let enc = postcard::to_allocvec(&state)
        .map_err(|e| ImageError::Corrupt(format!("cannot encode state: {e}")))?;
    if enc.len() > MAX_STATE_LEN as usize {
        return Err(ImageError::Corrupt(format!(
            "state record of {} bytes exceeds the format's {MAX_STATE_LEN}",
            enc.len()
        )));
    }
    let mut s = Summing {
        inner: w,
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    let flags = if opts.compress { FLAG_LZ4 } else { 0 };
    s.put(MAGIC)?;
    s.put(&VERSION.to_le_bytes())?;
    s.put(&flags.to_le_bytes())?;
    s.record(KIND_STATE, &[&enc])?;
    let mut written = 0u32;
    let mut packed = vec![0u8; lz4_flex::block::get_maximum_output_size(PAGE as usize)];
    for &at in &addrs {
        let page = m
            .page(at)
            .ok_or(ImageError::Corrupt(format!("page {at:#x}")))?;
        let addr = at.to_le_bytes();
        let n = if opts.compress {
            lz4_flex::block::compress_into(page, &mut packed).unwrap_or(usize::MAX)
        } else {
            usize::MAX
        };
        if n < page.len() {
            s.record(KIND_PAGE, &[&addr, &[1], &packed[..n]])?;
        } else {
            s.record(KIND_PAGE, &[&addr, &[0], page])?;
        }
        written += 1;
    }
    debug_assert_eq!(written, pages);
    let image_crc = s.crc.clone().finalize();
    s.record(
        KIND_END,
        &[&written.to_le_bytes(), &image_crc.to_le_bytes()],
    )?;
    s.inner.flush()?;
    Ok(s.bytes)
}
