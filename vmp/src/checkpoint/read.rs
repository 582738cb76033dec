//! Reading an image as a stream, checking everything before a machine is handed out.

use std::io::{ErrorKind, Read};

use super::crc::{combine, record_crcs};
use super::write::{ENC_LZ4, ENC_RAW, ENC_ZERO};
use super::{
    ImageError, ImageSummary, StateRecord, KIND_END, KIND_PAGE, KIND_ROUND, KIND_ROUND_END,
    KIND_SHELL, KIND_STATE, MAGIC, MAX_PAGE_RECORD, MAX_STATE_LEN, VERSION,
};
use crate::layout::{PAGE, RAM_BASE, RAM_TOP};
use crate::machine::snapshot::{Restorer, RAM_PAGES};
use crate::machine::Machine;

/// What the destination can hold.
#[derive(Copy, Clone, Debug)]
pub struct RestoreLimits {
    /// Guest RAM pages the destination can back.
    pub max_pages: u32,
}

impl Default for RestoreLimits {
    fn default() -> Self {
        RestoreLimits {
            max_pages: RAM_PAGES,
        }
    }
}

pub(super) struct Checked<R> {
    pub inner: R,
    /// crc32 of every byte read so far (combined per record, not recomputed: `crc.rs`).
    pub crc: u32,
    pub bytes: u64,
}

impl<R: Read> Checked<R> {
    /// Reads exactly `buf.len()` bytes, not yet accounted in the image crc.
    pub(super) fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ImageError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(ImageError::Truncated(what)),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn take(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ImageError> {
        self.fill(buf, what)?;
        self.crc = combine(self.crc, crc32fast::hash(buf), buf.len() as u64);
        Ok(())
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, ImageError> {
        let mut b = [0u8; 4];
        self.take(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads the stored crc of a record whose other `len` bytes were `parts`, checks it, and
    /// accounts the record in the image crc.
    pub(super) fn close(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), ImageError> {
        let mut b = [0u8; 4];
        self.fill(&mut b, "record checksum")?;
        let (own, full) = record_crcs(parts);
        if own != u32::from_le_bytes(b) {
            return Err(ImageError::Corrupt(format!(
                "checksum mismatch in a record of kind {kind}"
            )));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.crc = combine(self.crc, full, len as u64 + 4);
        Ok(())
    }

    /// A record header: kind and length, the length checked against the kind's bound.
    pub(super) fn head(&mut self) -> Result<[u8; 5], ImageError> {
        let mut head = [0u8; 5];
        self.fill(&mut head, "record header")?;
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let max = match kind {
            KIND_STATE => MAX_STATE_LEN,
            KIND_PAGE => MAX_PAGE_RECORD,
            KIND_END => 8,
            KIND_ROUND => 8,
            KIND_ROUND_END => 12,
            KIND_SHELL => MAX_STATE_LEN,
            k => return Err(ImageError::Corrupt(format!("unknown record kind {k}"))),
        };
        if len > max {
            return Err(ImageError::Corrupt(format!(
                "record of kind {kind} claims {len} bytes (at most {max})"
            )));
        }
        Ok(head)
    }

    /// The payload of the record whose header is `head` into `payload`, crc checked.
    pub(super) fn body(&mut self, head: [u8; 5], payload: &mut Vec<u8>) -> Result<(), ImageError> {
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        payload.resize(len as usize, 0);
        self.fill(payload, "record payload")?;
        self.close(head[0], &[&head, payload])
    }
}

/// Checks the whole image on `r` without building a machine.
pub fn inspect<R: Read>(r: R) -> Result<ImageSummary, ImageError> {
    walk(r, RestoreLimits::default(), false, true).map(|(s, _)| s)
}

/// Reads and checks the image on `r` and restores the machine it holds.
pub fn read_image<R: Read>(
    r: R,
    limits: RestoreLimits,
) -> Result<(Machine, ImageSummary), ImageError> {
    let (summary, restorer) = walk(r, limits, true, true)?;
    let restorer = restorer.ok_or(ImageError::Truncated("no state record"))?;
    Ok((restorer.finish()?, summary))
}

/// Like [`read_image`] for an image framed inside a longer stream (a connection that goes on
/// after it): reading stops at the END record instead of insisting on end of input.
pub fn read_framed_image<R: Read>(
    r: R,
    limits: RestoreLimits,
) -> Result<(Machine, ImageSummary), ImageError> {
    let (summary, restorer) = walk(r, limits, true, false)?;
    let restorer = restorer.ok_or(ImageError::Truncated("no state record"))?;
    Ok((restorer.finish()?, summary))
}

/// Reads the rest of the PAGE record whose header is `head` into `target`'s RAM (or nowhere,
/// when only checking); returns its address and encoding. The address is checked before any
/// page byte is read, so a raw page goes straight into guest RAM; a crc mismatch after that is
/// an error, and the caller drops the whole half-built machine. `ENC_ZERO` only where
/// `allow_zero` (pre-copy streams).
pub(super) fn page_record<R: Read>(
    c: &mut Checked<R>,
    head: [u8; 5],
    target: Option<&mut Restorer>,
    buf: &mut Vec<u8>,
    allow_zero: bool,
) -> Result<(u32, u8), ImageError> {
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len < 5 {
        return Err(ImageError::Corrupt("short page record".into()));
    }
    let mut at = [0u8; 5];
    c.fill(&mut at, "record payload")?;
    let addr = u32::from_le_bytes([at[0], at[1], at[2], at[3]]);
    if !addr.is_multiple_of(PAGE) || !(RAM_BASE..RAM_TOP).contains(&addr) {
        return Err(ImageError::Corrupt(format!("page address {addr:#x}")));
    }
    let data_len = len as usize - 5;
    let mut scratch = [0u8; PAGE as usize];
    let dst = match target {
        Some(t) => t.page_mut(addr)?,
        None => &mut scratch[..],
    };
    match at[4] {
        ENC_RAW if data_len == PAGE as usize => {
            c.fill(dst, "record payload")?;
            c.close(KIND_PAGE, &[&head, &at, dst])?;
        }
        ENC_LZ4 => {
            buf.resize(data_len, 0);
            c.fill(buf, "record payload")?;
            c.close(KIND_PAGE, &[&head, &at, buf])?;
            let n = lz4_flex::block::decompress_into(buf, dst)
                .map_err(|e| ImageError::Corrupt(format!("lz4 page: {e}")))?;
            if n != PAGE as usize {
                return Err(ImageError::Corrupt("lz4 page of wrong size".into()));
            }
        }
        ENC_ZERO if allow_zero && data_len == 0 => {
            c.close(KIND_PAGE, &[&head, &at])?;
            dst.fill(0);
        }
        e => {
            return Err(ImageError::Corrupt(format!(
                "page encoding {e} with {data_len} bytes"
            )))
        }
    }
    Ok((addr, at[4]))
}

fn walk<R: Read>(
    r: R,
    limits: RestoreLimits,
    build: bool,
    whole_input: bool,
) -> Result<(ImageSummary, Option<Restorer>), ImageError> {
    let mut c = Checked {
        inner: r,
        crc: 0,
        bytes: 0,
    };
    let mut magic = [0u8; 8];
    c.take(&mut magic, "header")?;
    if &magic != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let version = c.u32("header")?;
    if version != VERSION {
        return Err(ImageError::Version { found: version });
    }
    let flags = c.u32("header")?;
    let mut buf = Vec::new();
    let head = c.head()?;
    if head[0] != KIND_STATE {
        return Err(ImageError::Corrupt("first record is not the state".into()));
    }
    c.body(head, &mut buf)?;
    let state: StateRecord = postcard::from_bytes(&buf)
        .map_err(|e| ImageError::Corrupt(format!("state record does not decode: {e}")))?;
    if state.pages > limits.max_pages {
        return Err(ImageError::NoRoom {
            need: state.pages,
            have: limits.max_pages,
        });
    }
    let mut target = if build {
        Some(Restorer::with_pages(state.machine.clone(), state.pages)?)
    } else {
        None
    };
    let (mut raw_pages, mut lz4_pages, mut last) = (0u32, 0u32, None::<u32>);
    loop {
        let crc_before = c.crc;
        let head = c.head()?;
        match head[0] {
            KIND_PAGE => {
                if raw_pages + lz4_pages >= state.pages {
                    return Err(ImageError::Corrupt("more pages than announced".into()));
                }
                let (addr, enc) = page_record(&mut c, head, target.as_mut(), &mut buf, false)?;
                if last.is_some_and(|l| addr <= l) {
                    return Err(ImageError::Corrupt("pages out of order".into()));
                }
                last = Some(addr);
                if enc == ENC_RAW {
                    raw_pages += 1;
                } else {
                    lz4_pages += 1;
                }
            }
            KIND_END => {
                c.body(head, &mut buf)?;
                if buf.len() != 8 {
                    return Err(ImageError::Corrupt("short end record".into()));
                }
                let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                if n != raw_pages + lz4_pages || n != state.pages {
                    return Err(ImageError::Corrupt(format!(
                        "{} page records, end record says {n}",
                        raw_pages + lz4_pages
                    )));
                }
                if crc != crc_before {
                    return Err(ImageError::Corrupt("whole-image checksum mismatch".into()));
                }
                break;
            }
            KIND_STATE => return Err(ImageError::Corrupt("second state record".into())),
            k => {
                return Err(ImageError::Corrupt(format!(
                    "record kind {k} does not belong in an image"
                )))
            }
        }
    }
    let mut extra = [0u8; 1];
    match whole_input.then(|| c.inner.read(&mut extra)) {
        None | Some(Ok(0)) => {}
        Some(Ok(_)) => return Err(ImageError::Corrupt("bytes after the end record".into())),
        Some(Err(e)) => return Err(e.into()),
    }
    let summary = ImageSummary {
        version,
        flags,
        state,
        raw_pages,
        lz4_pages,
        bytes: c.bytes,
    };
    Ok((summary, target))
}
