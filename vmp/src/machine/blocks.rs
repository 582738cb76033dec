//! The instruction offsets of translated blocks, looked up on every executed block (the virtual
//! clock counts instructions block by block). A small direct-mapped table in front of a hash map
//! keeps the common case — a loop re-running the same few blocks — to one compare, which matters
//! because this lookup is most of what the monitor costs when nothing traps.

// The cache's map has a fixed hasher (BlockKeyHasher, no random seed) and is only looked up, never
// iterated, so no order can reach a result; a BTreeMap would slow every translated block.
#[allow(clippy::disallowed_types)]
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Slots of the direct-mapped front table (a power of two).
const FRONT: usize = 256;

type Key = (u32, u32);

/// What the per-block hook needs: instruction count and offset of the last instruction.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockInfo {
    pub count: u32,
    pub last_offset: u16,
}

impl BlockInfo {
    fn of(offsets: &[u16]) -> Self {
        BlockInfo {
            count: offsets.len() as u32,
            last_offset: offsets.last().copied().unwrap_or(0),
        }
    }
}

/// A key no translation block has (blocks are never 4 GiB long): marks an empty front slot,
/// so a lookup is one compare with no emptiness test.
const EMPTY: Key = (u32::MAX, u32::MAX);

pub struct BlockCache {
    /// Fixed size, indexed by a masked hash: the compiler drops the bounds check.
    front: Box<[(Key, BlockInfo); FRONT]>,
    #[allow(clippy::disallowed_types)] // fixed hasher, lookups only (see the import)
    all: HashMap<Key, Rc<[u16]>, BuildHasherDefault<BlockKeyHasher>>,
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

#[inline(always)]
fn slot(key: Key) -> usize {
    ((key.0 ^ (key.0 >> 8) ^ key.1) as usize) & (FRONT - 1)
}

impl BlockCache {
    pub fn new() -> Self {
        BlockCache {
            front: Box::new([(EMPTY, BlockInfo::default()); FRONT]),
            #[allow(clippy::disallowed_types)] // fixed hasher, lookups only (see the import)
            all: HashMap::default(),
        }
    }

    /// Count and last offset of the block at `addr` with `size` bytes, if seen before. Runs on
    /// every executed block, so the front-table hit is kept inline at the caller.
    #[inline(always)]
    pub fn info(&mut self, addr: u32, size: u32) -> Option<BlockInfo> {
        let key = (addr, size);
        let (k, v) = self.front[slot(key)];
        if k == key {
            return Some(v);
        }
        self.info_slow(key)
    }

    /// The front-table entry for the block, if it holds it (no fallback to the map).
    #[inline(always)]
    pub fn front_hit(&self, addr: u32, size: u32) -> Option<BlockInfo> {
        let (k, v) = self.front[slot((addr, size))];
        (k == (addr, size)).then_some(v)
    }

    #[inline(never)]
    fn info_slow(&mut self, key: Key) -> Option<BlockInfo> {
        let v = BlockInfo::of(self.all.get(&key)?);
        self.front[slot(key)] = (key, v);
        Some(v)
    }

    /// Instruction offsets of a block seen before (used on traps and stops, not per block).
    pub fn offsets(&self, addr: u32, size: u32) -> Option<&Rc<[u16]>> {
        self.all.get(&(addr, size))
    }

    pub fn insert(&mut self, addr: u32, size: u32, offsets: Rc<[u16]>) -> BlockInfo {
        let key = (addr, size);
        let info = BlockInfo::of(&offsets);
        self.front[slot(key)] = (key, info);
        self.all.insert(key, offsets);
        info
    }

    pub fn clear(&mut self) {
        self.front.iter_mut().for_each(|e| e.0 = EMPTY);
        self.all.clear();
    }

    /// Forgets the blocks starting in `start..end` (their code changed or gained hooks).
    pub fn forget_range(&mut self, start: u32, end: u32) {
        let inside = |a: u32| a >= start && a < end;
        self.all.retain(|(a, _), _| !inside(*a));
        for e in self.front.iter_mut() {
            if e.0 != EMPTY && inside(e.0 .0) {
                e.0 = EMPTY;
            }
        }
    }
}

/// The translation block being executed: where it starts, its size and instruction count.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CurBlock {
    pub start: u32,
    pub size: u32,
    pub count: u32,
}

/// Multiply-shift hash of the (address, size) key instead of SipHash; the map is only looked
/// up, never iterated, so its order cannot leak into results.
#[derive(Default)]
pub struct BlockKeyHasher(u64);

impl Hasher for BlockKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(29) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
