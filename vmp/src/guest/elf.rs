//! Loading a static ELF32 i386 executable as a guest user process.

use object::elf::{FileHeader32, EM_386, ET_EXEC, PF_X, PT_INTERP, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use super::image::UserProgram;
use crate::error::{Result, VmpError};
use crate::layout::{RAM_BASE, RAM_TOP};

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
    let mut segments = Vec::new();
    let mut text = Vec::new();
    let mut end = 0u32;
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
        if data.len() as u32 > memsz {
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
        let mut img = data.to_vec();
        img.resize(memsz as usize, 0); // .bss
        if ph.p_flags(endian) & PF_X != 0 {
            text.push((vaddr, vaddr + data.len() as u32));
        }
        segments.push((vaddr, img));
        end = end.max(seg_end);
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
