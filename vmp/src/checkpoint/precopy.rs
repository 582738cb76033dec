//! Pre-copy migration of a running guest between two OS processes over one TCP connection
//! (Clark et al., NSDI 2005): the source sends all of guest RAM while the guest keeps running,
//! then, round after round, the pages the guest dirtied meanwhile (`Machine::take_dirty`), until
//! few remain, the rounds stop shrinking, or a round limit; then it freezes the guest and sends
//! the last dirty pages with the CPU and device state. The exactly-once handshake is the one of
//! `tcp.rs`: the destination answers `A` only after every checksum verified and the machine is
//! assembled, runs it only on `C`; without `C` the guest stays with the source.
//!
//! The monitor is single-threaded, so "keeps running" means taking turns: after each batch of
//! pages sent ([`BATCH_PAGES`], 512 KiB) the guest runs `slice` instructions. The guest is never
//! stopped for longer than one batch write until the freeze; downtime is freeze → commit.
//!
//! # Wire form (version 1)
//! Same record framing and crc as the image format (`kind u8 | len u32 | payload | crc32`):
//! ```text
//! header    = "GRIDBPRE" | version u32 = 1 | flags u32 (bit 0: pages may be lz4)
//! SHELL     (kind 6, first): postcard MachineState at the start; the destination builds the
//!           empty machine from its configuration, CPU model and memory layout
//! round r   = ROUND (kind 4: r u32 | n u32) | n × PAGE | ROUND_END (kind 5: r u32 | n u32 |
//!           crc32 of every stream byte before ROUND_END)
//! PAGE      (kind 2): addr u32 | enc u8 (0 raw, 1 lz4, 2 zero: no data) | data; addresses
//!           strictly ascending within a round; a later round overwrites an earlier one
//! STATE     (kind 1, after the last round): as in an image; `pages` = PAGE records of the stream;
//!           configuration, CPU, layout and engine must equal SHELL's
//! END       (kind 3): rounds u32 | crc32 of every stream byte before END
//! ```
//! The last round is the one sent frozen. Rounds are numbered from 0 without gaps, at most
//! [`MAX_ROUNDS`]; a round holds at most all RAM pages; distinct pages are counted against the
//! destination's room. Every length is bounded before allocating; pages are read in place into
//! the machine being built, which is dropped on any error.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::read::{page_record, Checked};
use super::write::{batch_scratch, encode_state, header, write_pages, Summing};
use super::{
    ImageError, ImageSummary, RestoreLimits, StateRecord, FLAG_LZ4, KIND_END, KIND_PAGE,
    KIND_ROUND, KIND_ROUND_END, KIND_SHELL, KIND_STATE,
};
use crate::layout::{PAGE, RAM_BASE};
use crate::machine::snapshot::{Restorer, RAM_PAGES};
use crate::machine::{Exit, Machine};

pub const MAGIC: &[u8; 8] = b"GRIDBPRE";
pub const VERSION: u32 = 1;
/// Bound on rounds in a stream (the live rounds plus the frozen one).
pub const MAX_ROUNDS: u32 = 64;
/// Pages sent between two guest slices during the live rounds (512 KiB).
pub const BATCH_PAGES: usize = 128;

const ACK: u8 = b'A';
const NACK: u8 = b'N';
const COMMIT: u8 = b'C';

/// The pre-copy policy (Clark et al.'s stopping rules).
#[derive(Copy, Clone, Debug)]
pub struct PrecopyOptions {
    pub compress: bool,
    /// Freeze once a round leaves at most this many dirty pages.
    pub stop_pages: usize,
    /// Freeze after this many live rounds at the latest (< MAX_ROUNDS).
    pub max_rounds: u32,
    /// Guest instructions run after each batch of pages sent.
    pub slice: u64,
}

impl Default for PrecopyOptions {
    fn default() -> Self {
        // 256 pages = 1 MiB left to send frozen (a few ms on loopback); 30 rounds as in Xen's
        // pre-copy limit; 20 000 instructions between 512 KiB batches keep the guest running
        // about as long as a batch takes to write on this machine's loopback.
        PrecopyOptions {
            compress: false,
            stop_pages: 256,
            max_rounds: 30,
            slice: 20_000,
        }
    }
}

/// What a pre-copy migration did, as the source saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrecopyReport {
    /// Pages sent per round; the last is the frozen round.
    pub round_pages: Vec<u32>,
    /// PAGE records for pages already sent in an earlier round.
    pub pages_resent: u64,
    pub bytes: u64,
    /// Guest instructions retired on the source during the live rounds.
    pub live_instructions: u64,
    /// Start → freeze, freeze → commit sent (the destination runs one loopback trip later).
    pub live_s: f64,
    pub downtime_s: f64,
}

impl PrecopyReport {
    pub fn pages_sent(&self) -> u64 {
        self.round_pages.iter().map(|n| *n as u64).sum()
    }
}

/// How a pre-copy migration ended at the source.
#[derive(Debug)]
pub enum SourceEnd {
    /// The destination has the guest; the source must not run it again.
    Migrated,
    /// The destination refused it or the link failed: the guest stays here, unharmed.
    Kept(String),
    /// The guest powered off during the live rounds (status): it ended here; nothing migrated.
    PoweredOff(u32),
}

fn io_kept(e: &ImageError) -> SourceEnd {
    SourceEnd::Kept(e.to_string())
}

/// Source side. `m` runs on between batches; on `Migrated` the caller must drop it.
#[allow(clippy::disallowed_methods)] // wall time of a real-mode migration, reported only
pub fn send_guest(
    stream: TcpStream,
    m: &mut Machine,
    opts: PrecopyOptions,
) -> Result<(SourceEnd, PrecopyReport), ImageError> {
    let t0 = Instant::now();
    let retired0 = m.monitor().retired;
    let mut rep = PrecopyReport::default();
    m.start_tracking(None)?;
    let out = BufWriter::with_capacity(64 << 10, stream.try_clone()?);
    let mut s = Summing::new(out);
    let mut ever = vec![false; RAM_PAGES as usize];
    let end = live_rounds(&mut s, m, opts, &mut rep, &mut ever);
    let end = match end {
        Ok(None) => None,
        Ok(Some(e)) => Some(e),
        Err(ImageError::Io(e)) => Some(io_kept(&ImageError::Io(e))),
        Err(e) => return Err(e),
    };
    rep.live_instructions = m.monitor().retired - retired0;
    if let Some(e) = end {
        m.stop_tracking()?;
        return Ok((e, rep));
    }
    // Frozen from here: the guest does not run until the destination has it or we keep it.
    let frozen = Instant::now();
    rep.live_s = (frozen - t0).as_secs_f64();
    let sent = frozen_round(&mut s, m, opts, &mut rep, &mut ever);
    let verdict = sent.map(|()| {
        let mut st = stream;
        let mut v = [0u8; 1];
        if st.read_exact(&mut v).is_err() || v[0] != ACK {
            return SourceEnd::Kept("the destination did not acknowledge".into());
        }
        // From here the decision is Commit: the guest is the destination's.
        let _ = st.write_all(&[COMMIT]);
        SourceEnd::Migrated
    });
    rep.downtime_s = frozen.elapsed().as_secs_f64();
    rep.bytes = s.bytes;
    let end = match verdict {
        Ok(e) => e,
        Err(ImageError::Io(e)) => io_kept(&ImageError::Io(e)),
        Err(e) => return Err(e),
    };
    if !matches!(end, SourceEnd::Migrated) {
        m.stop_tracking()?;
    }
    Ok((end, rep))
}

/// The whole pre-copy stream of `m` into `w` with no handshake (for files and tests): the live
/// rounds (the guest runs between batches), the frozen round, STATE, END. `None` if the guest
/// powered off first (its status in the report's place: nothing complete was written).
pub fn write_stream<W: Write>(
    w: W,
    m: &mut Machine,
    opts: PrecopyOptions,
) -> Result<(Option<u32>, PrecopyReport), ImageError> {
    let mut rep = PrecopyReport::default();
    let mut ever = vec![false; RAM_PAGES as usize];
    m.start_tracking(None)?;
    let mut s = Summing::new(w);
    let end = live_rounds(&mut s, m, opts, &mut rep, &mut ever)?;
    if let Some(SourceEnd::PoweredOff(code)) = end {
        m.stop_tracking()?;
        return Ok((Some(code), rep));
    }
    frozen_round(&mut s, m, opts, &mut rep, &mut ever)?;
    m.stop_tracking()?;
    rep.bytes = s.bytes;
    Ok((None, rep))
}

/// Header, SHELL and the live rounds; `Some` if the migration ended (guest powered off) before
/// the freeze. Leaves the last dirty set for the frozen round in the tracker.
fn live_rounds<W: Write>(
    s: &mut Summing<W>,
    m: &mut Machine,
    opts: PrecopyOptions,
    rep: &mut PrecopyReport,
    ever: &mut [bool],
) -> Result<Option<SourceEnd>, ImageError> {
    let flags = if opts.compress { FLAG_LZ4 } else { 0 };
    s.put(&header(MAGIC, VERSION, flags))?;
    let shell = postcard::to_allocvec(&m.capture_state()?)
        .map_err(|e| ImageError::Corrupt(format!("cannot encode state: {e}")))?;
    s.record(KIND_SHELL, &[&shell])?;
    let mut packed = batch_scratch(opts.compress);
    // Round 0: every non-zero page (the destination starts zeroed); writes from now on are
    // tracked, so a page changed after it went out is in the next round.
    let mut set: Vec<u32> = m.nonzero_pages().map(|(a, _)| a).collect();
    let max_rounds = opts.max_rounds.min(MAX_ROUNDS - 1);
    let mut round = 0u32;
    loop {
        let n = set.len() as u32;
        s.record(KIND_ROUND, &[&round.to_le_bytes(), &n.to_le_bytes()])?;
        for chunk in set.chunks(BATCH_PAGES) {
            write_pages(s, m, chunk, opts.compress, round > 0, &mut packed)?;
            s.inner.flush()?;
            match m.run(Some(opts.slice.max(1)))? {
                Exit::SliceEnd | Exit::Sync(_) => {}
                Exit::PowerOff(code) => return Ok(Some(SourceEnd::PoweredOff(code))),
                Exit::Halted => {
                    return Err(ImageError::Machine(crate::error::VmpError::Engine(
                        "guest halted with no interrupt that could wake it".into(),
                    )))
                }
            }
        }
        let crc = s.crc;
        s.record(
            KIND_ROUND_END,
            &[&round.to_le_bytes(), &n.to_le_bytes(), &crc.to_le_bytes()],
        )?;
        note_sent(&set, ever, rep);
        round += 1;
        let dirty = m.dirty_pages();
        let shrinking = round == 1 || dirty.len() < set.len();
        if dirty.len() <= opts.stop_pages || round >= max_rounds || !shrinking {
            return Ok(None);
        }
        set = m.take_dirty()?;
    }
}

fn note_sent(set: &[u32], ever: &mut [bool], rep: &mut PrecopyReport) {
    for a in set {
        let i = ((a - RAM_BASE) / PAGE) as usize;
        if std::mem::replace(&mut ever[i], true) {
            rep.pages_resent += 1;
        }
    }
    rep.round_pages.push(set.len() as u32);
}

/// The frozen round (the pages dirtied since the last live round), STATE and END.
fn frozen_round<W: Write>(
    s: &mut Summing<W>,
    m: &mut Machine,
    opts: PrecopyOptions,
    rep: &mut PrecopyReport,
    ever: &mut [bool],
) -> Result<(), ImageError> {
    let set = m.take_dirty()?;
    let round = rep.round_pages.len() as u32;
    let n = set.len() as u32;
    let mut packed = batch_scratch(opts.compress);
    s.record(KIND_ROUND, &[&round.to_le_bytes(), &n.to_le_bytes()])?;
    write_pages(s, m, &set, opts.compress, true, &mut packed)?;
    let crc = s.crc;
    s.record(
        KIND_ROUND_END,
        &[&round.to_le_bytes(), &n.to_le_bytes(), &crc.to_le_bytes()],
    )?;
    note_sent(&set, ever, rep);
    let total = rep.pages_sent() as u32;
    let enc = encode_state(m, total, m.console().len() as u64)?;
    s.record(KIND_STATE, &[&enc])?;
    let rounds = round + 1;
    let crc = s.crc;
    s.record(KIND_END, &[&rounds.to_le_bytes(), &crc.to_le_bytes()])?;
    s.inner.flush()?;
    Ok(())
}

/// Destination side of a stream whose 8 magic bytes were already read: checks everything,
/// answers `A` or `N`, and hands the machine out only on the source's `C`.
pub fn receive_after_magic<R: Read>(
    r: R,
    mut s: TcpStream,
    limits: RestoreLimits,
) -> Result<(Machine, ImageSummary, u32), ImageError> {
    let (m, summary, rounds) = match read_stream(r, limits) {
        Ok(v) => v,
        Err(e) => {
            let _ = s.write_all(&[NACK]);
            return Err(e);
        }
    };
    s.write_all(&[ACK])?;
    let mut c = [0u8; 1];
    match s.read_exact(&mut c) {
        Ok(()) if c[0] == COMMIT => Ok((m, summary, rounds)),
        _ => Err(ImageError::Corrupt(
            "source did not commit the migration; the guest stays there".into(),
        )),
    }
}

/// Destination side on a fresh connection (either an image or a pre-copy stream, told apart by
/// the magic). Reads time out after `idle` without a byte.
pub fn receive_any(
    stream: TcpStream,
    limits: RestoreLimits,
    idle: Duration,
) -> Result<(Machine, ImageSummary, u32), ImageError> {
    stream.set_read_timeout(Some(idle))?;
    let mut r = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ImageError::Truncated("header"),
        _ => e.into(),
    })?;
    let rest = (&magic[..]).chain(r);
    if &magic == MAGIC {
        receive_after_magic(rest, stream, limits)
    } else {
        let (m, summary) = super::tcp::receive_framed(rest, stream, limits)?;
        Ok((m, summary, 1))
    }
}

/// Reads and checks a whole pre-copy stream (magic included) and assembles the machine.
pub fn read_stream<R: Read>(
    r: R,
    limits: RestoreLimits,
) -> Result<(Machine, ImageSummary, u32), ImageError> {
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
    if head[0] != KIND_SHELL {
        return Err(ImageError::Corrupt(
            "pre-copy stream does not begin with the machine's shape".into(),
        ));
    }
    c.body(head, &mut buf)?;
    let shell: crate::machine::snapshot::MachineState = postcard::from_bytes(&buf)
        .map_err(|e| ImageError::Corrupt(format!("shell record does not decode: {e}")))?;
    // Built at the first round, whose size decides how its RAM is backed.
    let mut shell = Some(shell);
    let mut target: Option<Restorer> = None;
    let (mut raw, mut lz4, mut zero, mut distinct) = (0u32, 0u32, 0u32, 0u32);
    let mut ever = vec![false; RAM_PAGES as usize];
    let mut rounds = 0u32;
    let state: StateRecord = loop {
        let head = c.head()?;
        match head[0] {
            KIND_ROUND => {
                c.body(head, &mut buf)?;
                if buf.len() != 8 {
                    return Err(ImageError::Corrupt("short round record".into()));
                }
                let r = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let n = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                if r != rounds || r >= MAX_ROUNDS {
                    return Err(ImageError::Corrupt(format!(
                        "round {r} where round {rounds} was due (at most {MAX_ROUNDS})"
                    )));
                }
                if n > RAM_PAGES {
                    return Err(ImageError::Corrupt(format!("round of {n} pages")));
                }
                if let Some(sh) = shell.take() {
                    target = Some(Restorer::with_pages(sh, n)?);
                }
                let mut last = None::<u32>;
                for _ in 0..n {
                    let head = c.head()?;
                    if head[0] != KIND_PAGE {
                        return Err(ImageError::Corrupt(
                            "fewer pages in a round than announced".into(),
                        ));
                    }
                    let (addr, enc) = page_record(&mut c, head, target.as_mut(), &mut buf, true)?;
                    if last.is_some_and(|l| addr <= l) {
                        return Err(ImageError::Corrupt("pages out of order".into()));
                    }
                    last = Some(addr);
                    let i = ((addr - RAM_BASE) / PAGE) as usize;
                    if !std::mem::replace(&mut ever[i], true) {
                        distinct += 1;
                        if distinct > limits.max_pages {
                            return Err(ImageError::NoRoom {
                                need: distinct,
                                have: limits.max_pages,
                            });
                        }
                    }
                    match enc {
                        0 => raw += 1,
                        1 => lz4 += 1,
                        _ => zero += 1,
                    }
                }
                let before = c.crc;
                let head = c.head()?;
                if head[0] != KIND_ROUND_END {
                    return Err(ImageError::Corrupt(
                        "more pages in a round than announced".into(),
                    ));
                }
                c.body(head, &mut buf)?;
                let word = |k: usize| {
                    u32::from_le_bytes([buf[4 * k], buf[4 * k + 1], buf[4 * k + 2], buf[4 * k + 3]])
                };
                if buf.len() != 12 || word(0) != r || word(1) != n {
                    return Err(ImageError::Corrupt(
                        "round end does not match its round".into(),
                    ));
                }
                if word(2) != before {
                    return Err(ImageError::Corrupt(
                        "stream checksum mismatch at a round end".into(),
                    ));
                }
                rounds += 1;
            }
            KIND_STATE if rounds > 0 => {
                c.body(head, &mut buf)?;
                let state: StateRecord = postcard::from_bytes(&buf).map_err(|e| {
                    ImageError::Corrupt(format!("state record does not decode: {e}"))
                })?;
                break state;
            }
            k => {
                return Err(ImageError::Corrupt(format!(
                    "record kind {k} out of place in a pre-copy stream"
                )))
            }
        }
    };
    let total = raw + lz4 + zero;
    if state.pages != total {
        return Err(ImageError::Corrupt(format!(
            "{total} page records, state record says {}",
            state.pages
        )));
    }
    let mut target = target.ok_or(ImageError::Truncated("no round"))?;
    target.replace_state(state.machine.clone())?;
    let before = c.crc;
    let head = c.head()?;
    if head[0] != KIND_END {
        return Err(ImageError::Corrupt("no end record after the state".into()));
    }
    c.body(head, &mut buf)?;
    if buf.len() != 8 {
        return Err(ImageError::Corrupt("short end record".into()));
    }
    let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if n != rounds {
        return Err(ImageError::Corrupt(format!(
            "{rounds} rounds, end record says {n}"
        )));
    }
    if crc != before {
        return Err(ImageError::Corrupt("whole-stream checksum mismatch".into()));
    }
    let summary = ImageSummary {
        version,
        flags,
        state,
        raw_pages: raw,
        lz4_pages: lz4,
        bytes: c.bytes,
    };
    Ok((target.finish()?, summary, rounds))
}
