//! Loading a static ELF32 i386 executable as a guest user process.

use object::elf::{FileHeader32, EM_386, ET_EXEC, PF_X, PT_INTERP, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use super::image::UserProgram;
use crate::error::{Result, VmpError};
use crate::layout::{RAM_BASE, RAM_TOP};

/// Most memory an executable's segments may take together: half of guest RAM, so the kernel, the
/// stacks and the heap keep room, and a file cannot make the loader allocate more.
pub const MAX_IMAGE_BYTES: u32 = (RAM_TOP - RAM_BASE) / 2;

fn bad(s: impl Into<String>) -> VmpError {
    VmpError::BadElf(s.into())
}

/// Parses `bytes` as a static i386 executable and returns its loadable image.
pub fn load(name: &str, bytes: &[u8]) -> Result<UserProgram> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file (bad magic)"));
    }
    if bytes.get(4) != Some(&1) {
        return Err(bad("not a 32-bit ELF (EI_CLASS is not ELFCLASS32)"));
    }
    let hdr = FileHeader32::<Endianness>::parse(bytes)
        .map_err(|e| bad(format!("truncated or malformed header: {e}")))?;
    let endian = hdr.endian().map_err(|e| bad(format!("{e}")))?;
    if endian != Endianness::Little {
        return Err(bad("big-endian ELF; i386 is little-endian"));
    }
    if hdr.e_machine(endian) != EM_386 {
        return Err(bad(format!(
            "machine {} is not i386 (EM_386 = 3)",
            hdr.e_machine(endian)
        )));
    }
    if hdr.e_type(endian) != ET_EXEC {
        return Err(bad(
            "not a static executable (ET_EXEC); shared objects and PIE are not supported",
        ));
    }
    let phdrs = hdr
        .program_headers(endian, bytes)
        .map_err(|e| bad(format!("bad program headers: {e}")))?;
    // Every segment is checked, and the set of them too, before any memory is allocated: a
    // hostile file may declare many large segments over the same addresses.
    let mut loads: Vec<(u32, u32, &[u8], bool)> = Vec::new();
    for ph in phdrs {
        match ph.p_type(endian) {
            PT_INTERP => {
                return Err(bad(
                    "dynamically linked (has PT_INTERP); build with -static",
                ))
            }
            PT_LOAD => {}
            _ => continue,
        }
        let vaddr = ph.p_vaddr(endian);
        let memsz = ph.p_memsz(endian);
        let data = ph.data(endian, bytes).map_err(|_| {
            bad(format!(
                "segment at {vaddr:#x} extends past the end of the file"
            ))
        })?;
        if data.len() as u64 > u64::from(memsz) {
            return Err(bad(format!(
                "segment at {vaddr:#x}: file size exceeds memory size"
            )));
        }
        let seg_end = vaddr
            .checked_add(memsz)
            .ok_or_else(|| bad(format!("segment at {vaddr:#x} wraps around")))?;
        if vaddr < RAM_BASE || seg_end > RAM_TOP {
            return Err(bad(format!(
                "segment {vaddr:#x}..{seg_end:#x} outside guest RAM {RAM_BASE:#x}..{RAM_TOP:#x}"
            )));
        }
        loads.push((vaddr, memsz, data, ph.p_flags(endian) & PF_X != 0));
    }
    let mut by_addr: Vec<(u32, u32)> = loads.iter().map(|&(a, m, _, _)| (a, m)).collect();
    by_addr.sort_unstable();
    for w in by_addr.windows(2) {
        let ((a, m), (b, _)) = (w[0], w[1]);
        // Both are inside guest RAM, so `a + m` cannot overflow.
        if a + m > b {
            return Err(bad(format!("segments at {a:#x} and {b:#x} overlap")));
        }
    }
    let total: u64 = loads.iter().map(|&(_, m, _, _)| u64::from(m)).sum();
    if total > u64::from(MAX_IMAGE_BYTES) {
        return Err(bad(format!(
            "segments need {total} bytes of memory, at most {MAX_IMAGE_BYTES}"
        )));
    }
    let mut segments = Vec::with_capacity(loads.len());
    let mut text = Vec::new();
    let mut end = 0u32;
    for (vaddr, memsz, data, exec) in loads {
        let mut img = Vec::with_capacity(memsz as usize);
        img.extend_from_slice(data);
        img.resize(memsz as usize, 0); // .bss
        if exec {
            text.push((vaddr, vaddr + data.len() as u32));
        }
        segments.push((vaddr, img));
        end = end.max(vaddr + memsz);
    }
    if segments.is_empty() {
        return Err(bad("no loadable segments"));
    }
    let entry = hdr.e_entry(endian);
    if !segments
        .iter()
        .any(|(a, b)| entry >= *a && entry < a + b.len() as u32)
    {
        return Err(bad(format!(
            "entry point {entry:#x} is not inside a loadable segment"
        )));
    }
    Ok(UserProgram {
        name: name.into(),
        segments,
        text,
        entry,
        end,
    })
}
