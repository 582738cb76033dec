//! Reading an image as a stream, checking everything before a machine is handed out.

use std::io::{ErrorKind, Read};

use super::{
    ImageError, ImageSummary, StateRecord, KIND_END, KIND_PAGE, KIND_STATE, MAGIC, MAX_PAGE_RECORD,
    MAX_STATE_LEN, VERSION,
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

struct Checked<R> {
    inner: R,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<R: Read> Checked<R> {
    fn take(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ImageError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.crc.update(buf);
                self.bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(ImageError::Truncated(what)),
            Err(e) => Err(e.into()),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ImageError> {
        let mut b = [0u8; 4];
        self.take(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// One record into `payload`; returns its kind. The whole-image crc before the record is
    /// returned too (END checks it).
    fn record(&mut self, payload: &mut Vec<u8>) -> Result<(u8, u32), ImageError> {
        let before = self.crc.clone().finalize();
        let mut head = [0u8; 5];
        self.take(&mut head, "record header")?;
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let max = match kind {
            KIND_STATE => MAX_STATE_LEN,
            KIND_PAGE => MAX_PAGE_RECORD,
            KIND_END => 8,
            k => return Err(ImageError::Corrupt(format!("unknown record kind {k}"))),
        };
        if len > max {
            return Err(ImageError::Corrupt(format!(
                "record of kind {kind} claims {len} bytes (at most {max})"
            )));
        }
        payload.resize(len as usize, 0);
        self.take(payload, "record payload")?;
        let mut c = crc32fast::Hasher::new();
        c.update(&head);
        c.update(payload);
        let want = self.u32("record checksum")?;
        if c.finalize() != want {
            return Err(ImageError::Corrupt(format!(
                "checksum mismatch in a record of kind {kind}"
            )));
        }
        Ok((kind, before))
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

fn walk<R: Read>(
    r: R,
    limits: RestoreLimits,
    build: bool,
    whole_input: bool,
) -> Result<(ImageSummary, Option<Restorer>), ImageError> {
    let mut c = Checked {
        inner: r,
        crc: crc32fast::Hasher::new(),
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
    let (kind, _) = c.record(&mut buf)?;
    if kind != KIND_STATE {
        return Err(ImageError::Corrupt("first record is not the state".into()));
    }
    let state: StateRecord = postcard::from_bytes(&buf)
        .map_err(|e| ImageError::Corrupt(format!("state record does not decode: {e}")))?;
    if state.pages > limits.max_pages {
        return Err(ImageError::NoRoom {
            need: state.pages,
            have: limits.max_pages,
        });
    }
    let mut target = if build {
        Some(Restorer::new(state.machine.clone())?)
    } else {
        None
    };
    let (mut raw_pages, mut lz4_pages, mut last) = (0u32, 0u32, None::<u32>);
    let mut page = vec![0u8; PAGE as usize];
    loop {
        let (kind, crc_before) = c.record(&mut buf)?;
        match kind {
            KIND_PAGE => {
                if raw_pages + lz4_pages >= state.pages {
                    return Err(ImageError::Corrupt("more pages than announced".into()));
                }
                if buf.len() < 5 {
                    return Err(ImageError::Corrupt("short page record".into()));
                }
                let addr = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if !addr.is_multiple_of(PAGE) || !(RAM_BASE..RAM_TOP).contains(&addr) {
                    return Err(ImageError::Corrupt(format!("page address {addr:#x}")));
                }
                if last.is_some_and(|l| addr <= l) {
                    return Err(ImageError::Corrupt("pages out of order".into()));
                }
                last = Some(addr);
                let data = &buf[5..];
                match buf[4] {
                    0 if data.len() == PAGE as usize => {
                        if let Some(t) = target.as_mut() {
                            t.page(addr, data)?;
                        }
                        raw_pages += 1;
                        continue;
                    }
                    1 => {
                        let n = lz4_flex::block::decompress_into(data, &mut page)
                            .map_err(|e| ImageError::Corrupt(format!("lz4 page: {e}")))?;
                        if n != PAGE as usize {
                            return Err(ImageError::Corrupt("lz4 page of wrong size".into()));
                        }
                        lz4_pages += 1;
                    }
                    e => {
                        return Err(ImageError::Corrupt(format!(
                            "page encoding {e} with {} bytes",
                            data.len()
                        )))
                    }
                }
                if let Some(t) = target.as_mut() {
                    t.page(addr, &page)?;
                }
            }
            KIND_END => {
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
            _ => return Err(ImageError::Corrupt("second state record".into())),
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
