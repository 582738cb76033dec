//! Lazy CS/SS loads for the `vmp` configuration.
//!
//! Every guest kernel<->user switch changes CS and SS, and a segment-register write through
//! unicorn re-reads the descriptor through QEMU's softmmu slow path twice (a check, then the
//! load): about a quarter of a getpid() round trip in a perf profile. In the shadow GDT the
//! guest's kernel and user segments are usually the same flat DPL-3 descriptor under different
//! selectors, so the real register can keep the descriptor it already holds:
//! - a load is skipped when the real register already holds the same selector with the same
//!   shadow descriptor (a reload would change nothing);
//! - on entry to the guest kernel, a load is also skipped when only the selector differs; the
//!   guest's CS is then kept here (`cs_pending`), its SS in `VirtualCpu::ss` as before. Kernel
//!   text is scanned, so every kernel instruction that could see the real CS selector (`push cs`,
//!   `mov r/m, cs`, far `call`/`jmp`/`ret`) has a hook that first performs the deferred load
//!   ([`materialize`]); SS reads there are emulated already;
//! - returning to user mode (unscanned code) always leaves the exact selectors loaded.
//!
//! What the real registers hold is only trusted while the monitor knows it: a native load in user
//! mode shows up as a different selector on the next entry (`resync`), and `lgdt` (a new shadow)
//! forgets everything.

use unicorn_engine::{RegisterX86 as X, Unicorn};

use super::{regs, Monitor};
use crate::error::Result;

type Uc<'a> = Unicorn<'a, Monitor>;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Cs = 0,
    Ss = 1,
}

impl Seg {
    fn reg(self) -> X {
        match self {
            Seg::Cs => X::CS,
            Seg::Ss => X::SS,
        }
    }
}

/// What the monitor knows about the real CS and SS.
#[derive(Clone, Debug, Default)]
pub(super) struct SegState {
    /// Per register: the real selector and the shadow descriptor its hidden part was loaded from.
    known: [Option<(u16, u64)>; 2],
    /// The guest's CS selector while the real CS holds an equivalent descriptor under another one.
    cs_pending: Option<u16>,
    /// A copy of the shadow GDT as loaded into monitor memory.
    shadow: Vec<u64>,
    /// The access byte of each entry of the guest's own GDT (the shadow raises DPLs to 3).
    guest_access: Vec<u8>,
}

impl SegState {
    /// The shadow descriptor `sel` would load, if the monitor knows it (GDT selectors only).
    fn shadow_desc(&self, sel: u16) -> Option<u64> {
        let i = (sel >> 3) as usize;
        if sel & 4 != 0 || i == 0 {
            return None;
        }
        self.shadow.get(i).copied()
    }

    /// Records a new shadow GDT and the guest's access bytes it came from: what the real
    /// registers hold is no longer comparable.
    pub(super) fn set_shadow(&mut self, table: &[u8], guest_access: Vec<u8>) {
        self.guest_access = guest_access;
        self.shadow = table
            .chunks_exact(8)
            .map(|d| u64::from_le_bytes(d.try_into().unwrap_or([0; 8])))
            .collect();
        self.known = [None, None];
    }
}

/// What a checkpoint keeps of [`SegState`]: the deferred CS selector and the shadow GDT copy. What
/// the real registers were known to hold is not kept; a restored machine starts by not knowing,
/// which only costs one real load per register.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegSnapshot {
    pub cs_pending: Option<u16>,
    pub shadow: Vec<u64>,
    pub guest_access: Vec<u8>,
}

impl SegState {
    pub(super) fn snapshot(&self) -> SegSnapshot {
        SegSnapshot {
            cs_pending: self.cs_pending,
            shadow: self.shadow.clone(),
            guest_access: self.guest_access.clone(),
        }
    }

    pub(super) fn restore(s: &SegSnapshot) -> Self {
        SegState {
            known: [None, None],
            cs_pending: s.cs_pending,
            shadow: s.shadow.clone(),
            guest_access: s.guest_access.clone(),
        }
    }
}

/// Descriptors equal up to the accessed bit (which the processor sets on load).
fn same(a: u64, b: u64) -> bool {
    (a | 1 << 40) == (b | 1 << 40)
}

/// Loads real `seg` with `sel`, or skips the load where that is invisible (see the module doc).
/// `lazy` allows keeping a different selector with the same descriptor (guest kernel entry).
pub(super) fn load(uc: &mut Uc, seg: Seg, sel: u16, lazy: bool) -> Result<()> {
    let st = &uc.get_data().segs;
    let want = st.shadow_desc(sel);
    if let (Some(w), Some((cur_sel, cur))) = (want, st.known[seg as usize]) {
        if same(w, cur) && (cur_sel == sel || lazy) {
            let st = &mut uc.get_data_mut().segs;
            if seg == Seg::Cs {
                st.cs_pending = (cur_sel != sel).then_some(sel);
            }
            return Ok(());
        }
    }
    regs::set(uc, seg.reg(), sel as u32)?;
    let st = &mut uc.get_data_mut().segs;
    st.known[seg as usize] = want.map(|w| (sel, w));
    if seg == Seg::Cs {
        st.cs_pending = None;
    }
    Ok(())
}

/// Performs a deferred CS load, so the real CS is the guest's again.
pub(super) fn materialize(uc: &mut Uc) -> Result<()> {
    if let Some(sel) = uc.get_data().segs.cs_pending {
        load(uc, Seg::Cs, sel, false)?;
    }
    Ok(())
}

/// The guest's CS selector.
pub(super) fn guest_cs(uc: &Uc) -> Result<u16> {
    match uc.get_data().segs.cs_pending {
        Some(s) => Ok(s),
        None => Ok(regs::get(uc, X::CS)? as u16),
    }
}

/// On entry from user mode: forget what user code may have reloaded natively.
pub(super) fn resync(uc: &mut Uc) -> Result<()> {
    for seg in [Seg::Cs, Seg::Ss] {
        let real = regs::get(uc, seg.reg())? as u16;
        let st = &mut uc.get_data_mut().segs;
        if st.known[seg as usize].is_some_and(|(s, _)| s != real) {
            st.known[seg as usize] = None;
        }
    }
    Ok(())
}

/// `iret` to an outer level: like the processor, null DS/ES/FS/GS when they hold a data (or
/// non-conforming code) segment more privileged than the new level. The real registers hold the
/// guest's selectors; the guest's DPLs come from its GDT as copied at `lgdt`.
pub(super) fn null_inner_data_segments(uc: &mut Uc, new_cpl: u8) -> Result<()> {
    const DATA_SEGS: [X; 4] = [X::DS, X::ES, X::FS, X::GS];
    // One batched read: this runs on every return to user mode.
    let ids = DATA_SEGS.map(|r| r as i32);
    let mut vals = [0u64; 4];
    let mut ptrs = vals
        .each_mut()
        .map(|v| (v as *mut u64).cast::<std::ffi::c_void>());
    // SAFETY: four register ids and four pointers to writable u64s (selectors are 16-bit).
    let err = unsafe {
        unicorn_engine_sys::uc_reg_read_batch(uc.get_handle(), ids.as_ptr(), ptrs.as_mut_ptr(), 4)
    };
    if err != unicorn_engine::uc_error::OK {
        return Err(err.into());
    }
    for (reg, sel) in DATA_SEGS.into_iter().zip(vals) {
        let sel = sel as u16;
        if sel & !3 == 0 || sel & 4 != 0 {
            continue;
        }
        let access = uc
            .get_data()
            .segs
            .guest_access
            .get((sel >> 3) as usize)
            .copied();
        let Some(access) = access else { continue };
        let conforming_code = access & 0x0C == 0x0C;
        let dpl = (access >> 5) & 3;
        if access & 0x10 != 0 && !conforming_code && dpl < new_cpl {
            regs::set(uc, reg, 0)?;
        }
    }
    Ok(())
}

/// Kernel instructions that read or load the real CS natively (they need [`materialize`]).
pub(super) fn touches_cs(i: &iced_x86::Instruction) -> bool {
    use iced_x86::{Mnemonic, OpKind, Register};
    let cs_op = |n: u32| {
        i.op_count() > n && i.op_kind(n) == OpKind::Register && i.op_register(n) == Register::CS
    };
    match i.mnemonic() {
        Mnemonic::Push => cs_op(0),
        Mnemonic::Mov => cs_op(1),
        Mnemonic::Retf => true,
        _ => {
            i.is_call_far() || i.is_jmp_far() || i.is_call_far_indirect() || i.is_jmp_far_indirect()
        }
    }
}
