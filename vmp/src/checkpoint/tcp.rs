//! Real-mode migration of a guest between two OS processes over one TCP connection, with the
//! mechanism's exactly-once handshake: the source streams the image; the destination restores
//! it (all checksums verified) and answers `A` (or `N`); on `A` the source answers `C` and gives
//! the guest up, and only on `C` does the destination run it. A broken connection before `A`
//! leaves the guest with the source, which runs on.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

use super::{
    read_framed_image, write_image, ImageError, ImageSummary, RestoreLimits, WriteOptions,
};
use crate::machine::Machine;

const ACK: u8 = b'A';
const NACK: u8 = b'N';
const COMMIT: u8 = b'C';

/// Source side: true when the destination took the guest (the caller must stop running it).
pub fn send_guest(
    stream: TcpStream,
    m: &Machine,
    console_delivered: u64,
) -> Result<bool, ImageError> {
    send_guest_on(&mut &stream, m, console_delivered, WriteOptions::default())
}

/// [`send_guest`] over any duplex byte stream. The writer batches pages into vectored writes,
/// so only the small records go through a buffer.
pub fn send_guest_on<S: Read + Write>(
    s: &mut S,
    m: &Machine,
    console_delivered: u64,
    opts: WriteOptions,
) -> Result<bool, ImageError> {
    let mut w = BufWriter::with_capacity(64 << 10, &mut *s);
    write_image(m, &mut w, console_delivered, opts)?;
    w.flush()?;
    drop(w);
    let mut verdict = [0u8; 1];
    if s.read_exact(&mut verdict).is_err() || verdict[0] != ACK {
        return Ok(false);
    }
    // From here the decision is Commit: the guest is the destination's.
    let _ = s.write_all(&[COMMIT]);
    Ok(true)
}

/// Destination side: the restored guest once the source has committed; an error (and nothing
/// kept) otherwise.
pub fn receive_guest(stream: TcpStream) -> Result<(Machine, ImageSummary), ImageError> {
    let r = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    receive_framed(r, stream, RestoreLimits::default())
}

/// [`receive_guest`] with the image read from `r` (the connection, possibly past bytes already
/// peeked) and the verdicts written to `s`.
pub fn receive_framed<R: Read>(
    r: R,
    mut s: TcpStream,
    limits: RestoreLimits,
) -> Result<(Machine, ImageSummary), ImageError> {
    let (m, summary) = match read_framed_image(r, limits) {
        Ok(v) => v,
        Err(e) => {
            let _ = s.write_all(&[NACK]);
            return Err(e);
        }
    };
    s.write_all(&[ACK])?;
    let mut c = [0u8; 1];
    match s.read_exact(&mut c) {
        Ok(()) if c[0] == COMMIT => Ok((m, summary)),
        _ => Err(ImageError::Corrupt(
            "source did not commit the migration; the guest stays there".into(),
        )),
    }
}
