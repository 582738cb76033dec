//! The coherence protocol's messages and their wire format: one version byte, then postcard.
//! Frames are length-checked before decoding and every field is validated after; a peer that
//! sends anything else is disconnected by the receiver.

use serde::{Deserialize, Serialize};

use super::diff::PageDiff;

/// 2: publishes and applies carry inter-processor interrupts.
pub const VERSION: u8 = 2;
/// Most IPIs one publish may carry (a guest sends one per `out`, and every `out` publishes).
pub const MAX_IPIS: usize = 1024;
/// Largest frame accepted: every page of a 256 MiB guest could not fit anyway; 64 MiB bounds
/// what one malformed peer can make a host hold.
pub const MAX_FRAME: usize = 64 << 20;
/// Ports: the sequencer on the device host, one processor port per host.
pub const SEQ_PORT: u16 = 7400;
pub const CPU_PORT: u16 = 7401;

/// What a publish does with the global lock (locked read-modify-writes).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    None,
    /// Publish, then hold the lock (the locked instruction runs after the grant).
    Acquire,
    /// Publish the locked instruction's result and release.
    Release,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Processor -> sequencer: this processor's writes since its last publish, to be placed in
    /// the global order. `n` counts the processor's publishes from 1 (duplicates are ignored).
    Publish {
        cpu: u16,
        n: u64,
        lock: LockOp,
        console: Vec<u8>,
        diffs: Vec<PageDiff>,
        /// Inter-processor interrupts sent after these writes: (destination, vector).
        ipis: Vec<(u16, u8)>,
    },
    /// Processor -> sequencer: every global entry up to `upto` is applied here.
    Ack { cpu: u16, upto: u64 },
    /// Processor -> sequencer: this processor stopped (powered off or halted for good).
    Done { cpu: u16, status: u32 },
    /// Sequencer -> processor: global entry `g` (the origin's own entry carries no diffs).
    Apply {
        g: u64,
        origin: u16,
        origin_n: u64,
        diffs: Vec<PageDiff>,
        /// The entry's IPIs; each processor raises those addressed to it as it applies `g`.
        ipis: Vec<(u16, u8)>,
    },
    /// Sequencer -> processor: the machine stops (all processors done, or one failed).
    Stop { error: Option<String> },
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes and validates a frame from `ncpus` processors' protocol.
    pub fn decode(frame: &[u8], ncpus: usize) -> Result<Msg, String> {
        if frame.len() > MAX_FRAME {
            return Err(format!(
                "frame of {} bytes exceeds {MAX_FRAME}",
                frame.len()
            ));
        }
        match frame.first() {
            Some(&VERSION) => {}
            Some(v) => return Err(format!("protocol version {v}, expected {VERSION}")),
            None => return Err("empty frame".into()),
        }
        let m: Msg = postcard::from_bytes(&frame[1..]).map_err(|e| format!("bad frame: {e}"))?;
        let cpu_ok = |c: u16| (c as usize) < ncpus;
        let ipis_ok = |ipis: &[(u16, u8)]| {
            ipis.len() <= MAX_IPIS && ipis.iter().all(|(d, v)| cpu_ok(*d) && *v >= 32)
        };
        let ok = match &m {
            Msg::Publish {
                cpu,
                n,
                diffs,
                ipis,
                ..
            } => cpu_ok(*cpu) && *n > 0 && diffs.iter().all(PageDiff::is_valid) && ipis_ok(ipis),
            Msg::Ack { cpu, .. } | Msg::Done { cpu, .. } => cpu_ok(*cpu),
            Msg::Apply {
                g,
                origin,
                diffs,
                ipis,
                ..
            } => *g > 0 && cpu_ok(*origin) && diffs.iter().all(PageDiff::is_valid) && ipis_ok(ipis),
            Msg::Stop { .. } => true,
        };
        if !ok {
            return Err("frame fails validation".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::RAM_BASE;
    use crate::smp::diff::Run;

    #[test]
    fn round_trip_and_rejections() {
        let m = Msg::Publish {
            cpu: 1,
            n: 3,
            lock: LockOp::Acquire,
            console: b"hi".to_vec(),
            diffs: vec![PageDiff {
                page: RAM_BASE,
                runs: vec![Run {
                    off: 4,
                    bytes: vec![1, 2],
                }],
            }],
            ipis: vec![(0, 0x30)],
        };
        let f = m.encode();
        assert_eq!(Msg::decode(&f, 2).unwrap(), m);
        assert!(Msg::decode(&f, 1).is_err(), "cpu index out of range");
        assert!(Msg::decode(&[], 2).is_err());
        assert!(Msg::decode(&[9, 0], 2).is_err(), "wrong version");
        assert!(Msg::decode(&f[..f.len() - 1], 2).is_err(), "truncated");
        let bad = Msg::Apply {
            g: 1,
            origin: 0,
            origin_n: 1,
            diffs: vec![PageDiff {
                page: RAM_BASE + 3,
                runs: vec![],
            }],
            ipis: vec![],
        };
        assert!(Msg::decode(&bad.encode(), 2).is_err(), "unaligned page");
        let ipi_to = |d: u16, v: u8| Msg::Apply {
            g: 1,
            origin: 0,
            origin_n: 1,
            diffs: vec![],
            ipis: vec![(d, v)],
        };
        assert!(Msg::decode(&ipi_to(1, 0x30).encode(), 2).is_ok());
        assert!(
            Msg::decode(&ipi_to(2, 0x30).encode(), 2).is_err(),
            "no processor 2"
        );
        assert!(
            Msg::decode(&ipi_to(1, 14).encode(), 2).is_err(),
            "exception vector"
        );
        // A length prefix claiming a huge vector fails on the short input, without allocating it.
        let mut huge = vec![VERSION, 0, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        huge.extend([0u8; 8]);
        assert!(Msg::decode(&huge, 2).is_err());
    }
}
