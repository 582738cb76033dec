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

#[derive(Default)]
pub struct BlockCache {
    front: Vec<Option<(Key, BlockInfo)>>,
    #[allow(clippy::disallowed_types)] // fixed hasher, lookups only (see the import)
    all: HashMap<Key, Rc<[u16]>, BuildHasherDefault<BlockKeyHasher>>,
}

fn slot(key: Key) -> usize {
    ((key.0 ^ (key.0 >> 8) ^ key.1) as usize) & (FRONT - 1)
}

impl BlockCache {
    pub fn new() -> Self {
        BlockCache {
            front: vec![None; FRONT],
            #[allow(clippy::disallowed_types)] // fixed hasher, lookups only (see the import)
            all: HashMap::default(),
        }
    }

    /// Count and last offset of the block at `addr` with `size` bytes, if seen before.
    pub fn info(&mut self, addr: u32, size: u32) -> Option<BlockInfo> {
        let key = (addr, size);
        let s = slot(key);
        if let Some((k, v)) = &self.front[s] {
            if *k == key {
                return Some(*v);
            }
        }
        let v = BlockInfo::of(self.all.get(&key)?);
        self.front[s] = Some((key, v));
        Some(v)
    }

    /// Instruction offsets of a block seen before (used on traps and stops, not per block).
    pub fn offsets(&self, addr: u32, size: u32) -> Option<&Rc<[u16]>> {
        self.all.get(&(addr, size))
    }

    pub fn insert(&mut self, addr: u32, size: u32, offsets: Rc<[u16]>) -> BlockInfo {
        let key = (addr, size);
        let info = BlockInfo::of(&offsets);
        self.front[slot(key)] = Some((key, info));
        self.all.insert(key, offsets);
        info
    }

    pub fn clear(&mut self) {
        self.front.iter_mut().for_each(|e| *e = None);
        self.all.clear();
    }

    /// Forgets the blocks starting in `start..end` (their code changed or gained hooks).
    pub fn forget_range(&mut self, start: u32, end: u32) {
        let inside = |a: u32| a >= start && a < end;
        self.all.retain(|(a, _), _| !inside(*a));
        for e in self.front.iter_mut() {
            if e.as_ref().is_some_and(|((a, _), _)| inside(*a)) {
                *e = None;
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
