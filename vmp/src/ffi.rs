//! Two things the safe unicorn binding gets wrong or lacks, done through the C API directly.
//!
//! 1. GDTR/IDTR/LDTR/TR are the 24-byte `uc_x86_mmr` struct; the binding's `reg_read_long` sizes them
//!    at 10 bytes while C writes 24 (a heap overflow), so we read/write them with a `repr(C)` copy.
//! 2. Unicorn never delivers exceptions through the guest IDT, so QEMU's "exception in flight"
//!    (`CPUX86State::old_exception`) is never reset: after one handled #GP the next arrives as #DF and
//!    the third ends emulation (unicorn issues #578, #1883). [`ExceptionReset`] clears it by saving
//!    the CPU context, patching that field to -1 and restoring, as QEMU's own delivery path does.
//!    The field's offset inside the context is found once, empirically (see `find_offset`), rather
//!    than hard-coded from one build's struct layout.

use std::sync::OnceLock;

use unicorn_engine::{Arch, Mode, Prot, RegisterX86, Unicorn};
use unicorn_engine_sys as sys;

use crate::error::{Result, VmpError};

/// `uc_x86_mmr` from unicorn's `x86.h`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Mmr {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    pub flags: u32,
}

pub fn read_mmr<D>(uc: &Unicorn<D>, reg: RegisterX86) -> Result<Mmr> {
    let mut m = Mmr::default();
    // SAFETY: `m` is a valid, writable `uc_x86_mmr` of the size C writes for these registers.
    let err = unsafe { sys::uc_reg_read(uc.get_handle(), reg as i32, (&raw mut m).cast()) };
    if err != sys::uc_error::OK {
        return Err(err.into());
    }
    Ok(m)
}

pub fn write_mmr<D>(uc: &mut Unicorn<D>, reg: RegisterX86, m: Mmr) -> Result<()> {
    // SAFETY: `m` is a valid `uc_x86_mmr`; C only reads it.
    let err = unsafe { sys::uc_reg_write(uc.get_handle(), reg as i32, (&raw const m).cast()) };
    if err != sys::uc_error::OK {
        return Err(err.into());
    }
    Ok(())
}

/// A raw unicorn context kept for resetting the pending-exception state.
pub struct ExceptionReset {
    ctx: *mut sys::uc_context,
    size: usize,
    offset: usize,
}

impl ExceptionReset {
    pub fn new<D>(uc: &Unicorn<D>) -> Result<Self> {
        let offset = OFFSET
            .get_or_init(find_offset)
            .clone()
            .map_err(VmpError::Engine)?;
        let (ctx, size) = alloc_context(uc.get_handle())?;
        Ok(ExceptionReset { ctx, size, offset })
    }

    /// Clears QEMU's "exception in flight" so the next fault is seen as a first fault.
    pub fn reset<D>(&mut self, uc: &mut Unicorn<D>) -> Result<()> {
        let h = uc.get_handle();
        // SAFETY: `ctx` was allocated for this engine's arch/mode and is `size` bytes long;
        // `offset + 4 <= size` was checked when the offset was found.
        unsafe {
            check(sys::uc_context_save(h, self.ctx))?;
            let p = self.ctx.cast::<u8>().add(self.offset);
            std::ptr::write_unaligned(p.cast::<i32>(), -1);
            check(sys::uc_context_restore(h, self.ctx))?;
        }
        debug_assert!(self.offset + 4 <= self.size);
        Ok(())
    }
}

impl Drop for ExceptionReset {
    fn drop(&mut self) {
        // SAFETY: allocated by `uc_context_alloc`, freed once.
        unsafe {
            sys::uc_context_free(self.ctx);
        }
    }
}

fn check(e: sys::uc_error) -> Result<()> {
    if e == sys::uc_error::OK {
        Ok(())
    } else {
        Err(e.into())
    }
}

fn alloc_context(h: *mut sys::uc_engine) -> Result<(*mut sys::uc_context, usize)> {
    let mut ctx: *mut sys::uc_context = std::ptr::null_mut();
    // SAFETY: plain C allocation calls on a live engine handle.
    unsafe {
        check(sys::uc_context_alloc(h, &raw mut ctx))?;
        let size = sys::uc_context_size(h);
        Ok((ctx, size))
    }
}

static OFFSET: OnceLock<std::result::Result<usize, String>> = OnceLock::new();

/// Finds the byte offset of `old_exception` in a saved context: on a scratch engine, snapshot the
/// context before any fault (field = -1), after one #DE (field = 0) and after a second #DE (which
/// QEMU escalates to #DF: field = 8). Exactly one 4-byte slot must follow -1 → 0 → 8.
fn find_offset() -> std::result::Result<usize, String> {
    probe().map_err(|e| format!("cannot locate unicorn's pending-exception field: {e}"))
}

fn probe() -> std::result::Result<usize, String> {
    let e = |x: unicorn_engine::uc_error| format!("{x:?}");
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32).map_err(e)?;
    uc.mem_map(0x1000, 0x1000, Prot::ALL).map_err(e)?;
    // xor edx,edx; xor ecx,ecx; div ecx; div ecx; hlt
    let code = [0x31, 0xd2, 0x31, 0xc9, 0xf7, 0xf1, 0xf7, 0xf1, 0xf4];
    uc.mem_write(0x1000, &code).map_err(e)?;
    let snaps = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
    let h = uc.get_handle();
    let snap = move || -> Vec<u8> {
        let (ctx, size) = alloc_context(h).expect("context alloc");
        // SAFETY: `ctx` is `size` bytes, freshly saved.
        let bytes = unsafe {
            sys::uc_context_save(h, ctx);
            let v = std::slice::from_raw_parts(ctx.cast::<u8>(), size).to_vec();
            sys::uc_context_free(ctx);
            v
        };
        bytes
    };
    snaps.borrow_mut().push(snap());
    let s2 = snaps.clone();
    uc.add_intr_hook(move |uc, _intno| {
        s2.borrow_mut().push(snap());
        // Skip the faulting 2-byte `div ecx`.
        let eip = uc.reg_read(RegisterX86::EIP).unwrap_or(0);
        let _ = uc.reg_write(RegisterX86::EIP, eip + 2);
    })
    .map_err(e)?;
    uc.emu_start(0x1000, 0x1000 + code.len() as u64, 0, 0)
        .map_err(e)?;
    let s = snaps.borrow();
    if s.len() != 3 {
        return Err(format!("expected 2 faults, saw {}", s.len() - 1));
    }
    let word = |v: &Vec<u8>, i: usize| i32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    let size = s[0].len().min(s[1].len()).min(s[2].len());
    let hits: Vec<usize> = (0..size.saturating_sub(3))
        .step_by(4)
        .filter(|&i| word(&s[0], i) == -1 && word(&s[1], i) == 0 && word(&s[2], i) == 8)
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        other => Err(format!("{} candidate offsets", other.len())),
    }
}
