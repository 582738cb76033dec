//! The wire format between Phoenix nodes: a 2-byte header (magic, version) and a postcard body.
//!
//! Frames come from the network and are untrusted: [`decode`] checks the size limit, the header and
//! that the body is consumed exactly, and returns an error (never panics) otherwise. Semantic checks
//! (IDs inside the space, ranges well-formed) are done by the node on receipt.

use gridbed_runtime::HostId;
use serde::{Deserialize, Serialize};

pub mod envelope;

use envelope::Envelope;
pub use envelope::WireError;

use crate::protocol::ids::{Epoch, Id, IdRange, Piece};
use crate::protocol::table::Entry;

/// First byte of every frame.
pub const MAGIC: u8 = 0xF5;
/// Bumped on any incompatible change of [`Frame`].
pub const VERSION: u8 = 3;
/// Largest accepted frame. A hand-off carries application data, so this is generous; 16 MiB is far
/// above the ray tracer's whole image (~200 KB) and bounds what a hostile peer can make us buffer.
pub const MAX_FRAME: usize = 16 << 20;

const ENVELOPE: Envelope = Envelope {
    magic: MAGIC,
    version: VERSION,
    max_frame: MAX_FRAME,
};

/// A frame between two hosts; relayed hop by hop when `dst` is not directly reachable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub src: HostId,
    pub dst: HostId,
    pub body: Body,
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Something addressed to a virtual ID, routed to its owner.
    Routed(Routed),
    /// Routing-table corrections.
    Facts(Vec<Entry>),
    /// Ownership of some IDs, with their data and undelivered messages.
    Handoff(Handoff),
    /// A machine asks the coordinator to join.
    JoinReq { joiner: HostId },
    /// The joiner has its IDs: the coordinator may serve the next membership change.
    JoinDone { joiner: HostId },
    /// A machine asks the coordinator for permission to leave.
    LeaveReq { leaver: HostId },
    /// Permission to leave; `members` is the coordinator's view (who must say farewell).
    LeaveGo { members: Vec<HostId> },
    /// A leaving machine's final routing facts (round n); every member merges them and replies.
    Departing { round: u32, table: Vec<Entry> },
    /// Sent by a member after merging `Departing` round n: nothing it sends later goes to the leaver.
    Farewell { round: u32 },
    /// The leaver is gone: the coordinator may serve the next membership change.
    LeaveComplete { leaver: HostId },
    /// The leaver's last frame to each member, behind every message it forwarded while draining.
    Gone,
    /// A failure detector (or the application) reports `host` crashed; sent to the coordinator,
    /// or, when `host` is the coordinator, to its successor (see `crash.rs`).
    Suspect { host: HostId },
    /// The coordinator's state, replicated to its deputy after every change (`take_over: false`),
    /// or handed to its successor when the coordinator leaves (`take_over: true`).
    CoordState {
        state: CoordSnapshot,
        take_over: bool,
    },
    /// The deputy stored a replica (whose change in progress was `busy`).
    CoordAck { busy: Option<Change> },
    /// The coordinator role moved to `coordinator` (generation `gen`); sent by the old coordinator
    /// to every member before its own leave starts, so it precedes its `Departing` on every link.
    NewCoordinator {
        gen: u32,
        coordinator: HostId,
        members: Vec<HostId>,
    },
    /// Crash recovery round `round` starts: stop moving IDs, drop frames from `crashed`, flush
    /// links to `members`. A crash during a recovery starts a new round that supersedes it.
    CrashBegin {
        /// Coordinator generation: a successor's rounds supersede its crashed predecessor's.
        gen: u32,
        round: u32,
        /// `None` when the round restarts only because a member left meanwhile.
        crashed: Option<HostId>,
        members: Vec<HostId>,
    },
    /// Behind every hand-off the sender made before recovery: the link from it is flushed.
    CrashFlush { round: u32 },
    /// A member's owned pieces once every link to it is flushed, and the highest epoch it knows.
    Census {
        round: u32,
        owned: Vec<Piece>,
        max_epoch: Epoch,
        /// Where the member is in its life: lets a successor coordinator rebuild joins and leaves.
        status: MemberStatus,
        /// Members this one knows of (a successor may not know every joiner).
        known: Vec<HostId>,
    },
    /// Recovery ends: the complete ownership map; `reclaimed` ranges (the crashed machines' IDs)
    /// go to the owners the map names for them, without their data.
    Reclaim {
        round: u32,
        map: Vec<Entry>,
        reclaimed: Vec<IdRange>,
    },
}

/// A message routed by virtual ID.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    pub id: Id,
    /// The machine that issued it.
    pub origin: HostId,
    /// Epoch of the fact the origin used on the first hop (for the hop bound).
    pub e0: Epoch,
    /// Epoch of the fact used for the current hop: the receiver was believed to own `id` at it.
    pub believed: Epoch,
    /// Machine-to-machine transfers so far (relays through gateways not counted).
    pub hops: u32,
    pub kind: RoutedKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoutedKind {
    /// An application message; `seq` numbers messages per (origin, id) for FIFO and exactly-once.
    App {
        seq: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The coordinator asks the owner of `id` to give part of its IDs to `joiner`.
    Donate { joiner: HostId, tries: u32 },
    /// `requester` asks the owners of `range` (starting with the owner of `id`) to hand it over.
    Assume { range: IdRange, requester: HostId },
    /// After a crash recovery: the origin's messages to `id` numbered below `upto` that have not
    /// arrived yet may have died with the crashed machine; the owner stops waiting for them.
    Floor { upto: u64 },
}

/// A membership change queued or served by the coordinator.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Join(HostId),
    Leave(HostId),
}

/// A member's life stage as reported in a census.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    Joining,
    Active,
    LeaveRequested,
    Draining,
}

/// Everything the coordinator role holds (replicated to the deputy, handed to a successor).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordSnapshot {
    pub gen: u32,
    pub members: Vec<HostId>,
    pub queue: Vec<Change>,
    pub busy: Option<Change>,
    /// Crash recovery rounds started so far.
    pub rounds: u32,
    /// Machines declared crashed (joiners among them must never be admitted).
    pub crashed: Vec<HostId>,
}

/// An application message that reached the owner of its ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Id,
    pub from: HostId,
    pub seq: u64,
    pub hops: u32,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Transfer of IDs with everything attached to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The IDs, each with its new epoch (previous epoch + 1).
    pub pieces: Vec<Piece>,
    /// Application data per piece, as produced by `IdData::pack`.
    pub data: Vec<Vec<u8>>,
    /// Messages delivered to the giver but not yet received by its application, in order.
    pub inbox: Vec<Delivery>,
    /// Messages that arrived ahead of an earlier one from the same (origin, id).
    pub early: Vec<Delivery>,
    /// Next expected sequence number per (id, origin).
    pub next_seq: Vec<(Id, HostId, u64)>,
    /// For a joiner: the giver's whole routing table and the coordinator's identity.
    pub bootstrap: Option<Bootstrap>,
    /// IDs reclaimed after a crash (their sequence counters were lost with the crashed machine).
    pub resync: Vec<IdRange>,
    /// (id, origin) pairs whose counter a `Floor` advanced: a late earlier message is stale,
    /// not a duplicate.
    pub floored: Vec<(Id, HostId)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub table: Vec<Entry>,
    pub coordinator: HostId,
    /// The coordinator's generation and the giver's view of the members.
    pub gen: u32,
    pub members: Vec<HostId>,
    /// Machines that have left (never hand-off or correction targets).
    pub departed: Vec<HostId>,
    /// Machines declared crashed (same, and their late frames are void).
    pub crashed: Vec<HostId>,
}

/// Serialises a frame.
pub fn encode(frame: &Frame) -> Vec<u8> {
    ENVELOPE.seal(frame, 64 + payload_len(&frame.body))
}

fn payload_len(body: &Body) -> usize {
    match body {
        Body::Routed(Routed {
            kind: RoutedKind::App { payload, .. },
            ..
        }) => payload.len(),
        _ => 0,
    }
}

/// Parses an untrusted frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    ENVELOPE.open(bytes)
}

/// Highest epoch a frame may carry. Epochs grow by one per ownership move, so no run comes near
/// it; a larger one is forged or corrupt, and refusing it leaves room for the `+ 1` of a move.
pub const MAX_EPOCH: Epoch = u64::MAX >> 1;
/// Highest coordinator generation a frame may carry: crash rounds start at `gen << 16`, which
/// must stay below [`MAX_ROUND`].
pub const MAX_GEN: u32 = (1 << 15) - 1;
/// Highest crash-recovery or leave round a frame may carry (leaves room for the next round).
pub const MAX_ROUND: u32 = u32::MAX >> 1;

/// Checks the counters of a received frame before the node acts on them: epochs, generations
/// and rounds within their bounds, sequence numbers below `u64::MAX` (the next one must exist),
/// hop counts below `u32::MAX`. Returns what is wrong, for the rejection log.
pub fn check_counters(frame: &Frame) -> Result<(), &'static str> {
    let epoch = |e: Epoch| {
        if e <= MAX_EPOCH {
            Ok(())
        } else {
            Err("epoch out of range")
        }
    };
    let entries = |es: &[Entry]| es.iter().try_for_each(|e| epoch(e.epoch));
    let pieces = |ps: &[Piece]| ps.iter().try_for_each(|p| epoch(p.epoch));
    let gen = |g: u32| {
        if g <= MAX_GEN {
            Ok(())
        } else {
            Err("generation out of range")
        }
    };
    let round = |r: u32| {
        if r <= MAX_ROUND {
            Ok(())
        } else {
            Err("round out of range")
        }
    };
    let seq = |s: u64| {
        if s < u64::MAX {
            Ok(())
        } else {
            Err("sequence number out of range")
        }
    };
    let delivery = |d: &Delivery| {
        seq(d.seq)?;
        if d.hops == u32::MAX {
            return Err("hop count out of range");
        }
        Ok(())
    };
    match &frame.body {
        Body::Routed(r) => {
            epoch(r.e0)?;
            epoch(r.believed)?;
            if r.hops == u32::MAX {
                return Err("hop count out of range");
            }
            match r.kind {
                RoutedKind::App { seq: s, .. } => seq(s),
                RoutedKind::Floor { upto } => seq(upto),
                RoutedKind::Donate { .. } | RoutedKind::Assume { .. } => Ok(()),
            }
        }
        Body::Facts(es) => entries(es),
        Body::Handoff(h) => {
            pieces(&h.pieces)?;
            h.inbox.iter().chain(&h.early).try_for_each(delivery)?;
            h.next_seq.iter().try_for_each(|&(_, _, s)| seq(s))?;
            if let Some(b) = &h.bootstrap {
                entries(&b.table)?;
                gen(b.gen)?;
            }
            Ok(())
        }
        Body::Departing { round: r, table } => {
            round(*r)?;
            entries(table)
        }
        Body::Farewell { round: r } | Body::CrashFlush { round: r } => round(*r),
        Body::CoordState { state, .. } => {
            gen(state.gen)?;
            round(state.rounds)
        }
        Body::NewCoordinator { gen: g, .. } => gen(*g),
        Body::CrashBegin {
            gen: g, round: r, ..
        } => {
            gen(*g)?;
            round(*r)
        }
        Body::Census {
            round: r,
            owned,
            max_epoch,
            ..
        } => {
            round(*r)?;
            pieces(owned)?;
            epoch(*max_epoch)
        }
        Body::Reclaim { round: r, map, .. } => {
            round(*r)?;
            entries(map)
        }
        Body::JoinReq { .. }
        | Body::JoinDone { .. }
        | Body::LeaveReq { .. }
        | Body::LeaveGo { .. }
        | Body::LeaveComplete { .. }
        | Body::Gone
        | Body::Suspect { .. }
        | Body::CoordAck { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame {
            src: HostId(1),
            dst: HostId(2),
            body: Body::Routed(Routed {
                id: 7,
                origin: HostId(1),
                e0: 0,
                believed: 3,
                hops: 1,
                kind: RoutedKind::App {
                    seq: 9,
                    payload: vec![1, 2, 3],
                },
            }),
        }
    }

    /// Header checks are the envelope's (tested in `envelope.rs`); here: this format's bytes.
    #[test]
    fn round_trip_and_this_formats_header() {
        let bytes = encode(&sample());
        assert_eq!(&bytes[..2], &[MAGIC, VERSION]);
        assert_eq!(decode(&bytes).unwrap(), sample());
        let mut other = bytes.clone();
        other[0] = crate::overlay::wire::MAGIC;
        assert!(
            decode(&other).is_err(),
            "an overlay frame is not a protocol frame"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decoder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// Valid frames with arbitrary corruption (flipped byte, truncation) never panic either.
        #[test]
        fn decoder_survives_corrupted_frames(pos in 0usize..64, val in any::<u8>(), cut in 0usize..64) {
            let mut bytes = encode(&sample());
            let n = bytes.len();
            bytes[pos % n] = val;
            bytes.truncate(n - cut % n);
            let _ = decode(&bytes);
        }
    }
}
