//! The workload the migration strategies race: a process with a paged memory image that it
//! writes at a fixed rate while it runs (Clark et al.'s "writable working set" parameterised as a
//! page-write rate). Which page, offset and byte the k-th write touches depends only on k, so a
//! process that migrated ends with exactly the memory of one that did not.

/// Page size of the image (4 KiB, the IA-32 page).
pub const PAGE: usize = 4096;

pub struct PagedProcess {
    mem: Vec<u8>,
    writes_done: u64,
    /// Page writes per second of running.
    pub writes_per_s: f64,
    /// Seconds of running until the process ends.
    pub run_s: f64,
    /// Seconds of running so far (writes follow it).
    pub ran_s: f64,
    dirty: Vec<bool>,
    /// Pages this copy holds (post-copy destination: false until fetched or pushed).
    present: Vec<bool>,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl PagedProcess {
    /// An image of `bytes` (rounded up to pages, every page non-zero) dirtied at
    /// `writes_per_s`, ending after `run_s` seconds of running.
    pub fn new(bytes: usize, writes_per_s: f64, run_s: f64) -> Self {
        let pages = bytes.div_ceil(PAGE).max(1);
        let mem = (0..pages * PAGE).map(|i| (i % 251) as u8 | 1).collect();
        PagedProcess {
            mem,
            writes_done: 0,
            writes_per_s,
            run_s,
            ran_s: 0.0,
            dirty: vec![false; pages],
            present: vec![true; pages],
        }
    }

    /// The destination's empty copy of `self` for a page-by-page transfer: same parameters and
    /// progress, no pages yet.
    pub fn empty_copy(&self) -> Self {
        PagedProcess {
            mem: vec![0; self.mem.len()],
            writes_done: self.writes_done,
            writes_per_s: self.writes_per_s,
            run_s: self.run_s,
            ran_s: self.ran_s,
            dirty: vec![false; self.pages()],
            present: vec![false; self.pages()],
        }
    }

    pub fn pages(&self) -> usize {
        self.mem.len() / PAGE
    }

    pub fn finished(&self) -> bool {
        self.ran_s >= self.run_s
    }

    /// Runs `dt` seconds: performs the writes that fall due. Stops before a write to a page
    /// this copy does not hold and returns that page (post-copy's page fault).
    pub fn run(&mut self, dt: f64) -> Result<(), usize> {
        let due = ((self.ran_s + dt).min(self.run_s) * self.writes_per_s) as u64;
        while self.writes_done < due {
            let h = mix(self.writes_done);
            let page = (h % self.pages() as u64) as usize;
            if !self.present[page] {
                return Err(page);
            }
            let off = ((h >> 32) as usize) % PAGE;
            self.mem[page * PAGE + off] = (h >> 24) as u8;
            self.dirty[page] = true;
            self.writes_done += 1;
        }
        self.ran_s += dt;
        Ok(())
    }

    /// Pages written since the last call (pre-copy's dirty log), in order; clears the log.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let v = (0..self.pages())
            .filter(|&i| self.dirty[i])
            .map(|i| i as u32)
            .collect();
        self.dirty.iter_mut().for_each(|d| *d = false);
        v
    }

    pub fn page(&self, i: usize) -> &[u8] {
        &self.mem[i * PAGE..(i + 1) * PAGE]
    }

    pub fn has(&self, i: usize) -> bool {
        self.present.get(i).copied().unwrap_or(false)
    }

    /// Stores a page that arrived; true if this copy did not hold it yet.
    pub fn put_page(&mut self, i: usize, bytes: &[u8]) -> bool {
        if i >= self.pages() || bytes.len() != PAGE {
            return false;
        }
        self.mem[i * PAGE..(i + 1) * PAGE].copy_from_slice(bytes);
        !std::mem::replace(&mut self.present[i], true)
    }

    pub fn complete(&self) -> bool {
        self.present.iter().all(|p| *p)
    }

    /// A digest of the whole memory and progress (FNV-1a), for equality checks.
    pub fn digest(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ self.writes_done;
        for b in &self.mem {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
        h
    }
}
