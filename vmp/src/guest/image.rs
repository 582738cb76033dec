//! Putting a guest together: kernel text, kernel boot parameters (process table, PIT divisor) and
//! the user programs' segments, as a boot loader would.

use crate::devices::PIT_HZ;
use crate::error::{Result, VmpError};
use crate::guest::kernel::{self, data};
use crate::layout::*;
use crate::machine::GuestImage;

/// One user process to start: its memory, entry point and where its heap begins.
#[derive(Clone, Debug, Default)]
pub struct UserProgram {
    pub name: String,
    pub segments: Vec<(u32, Vec<u8>)>,
    pub entry: u32,
    /// Code ranges (executable segments), scanned by the monitor for `int n`.
    pub text: Vec<(u32, u32)>,
    /// First byte after the image (page-aligned up by the loader): initial `brk`.
    pub end: u32,
}

/// Top of process `i`'s user stack: stacks sit below the top of RAM, one MiB apart.
pub fn user_stack_top(i: u32) -> u32 {
    RAM_TOP - i * 0x0010_0000 - 16
}

/// Builds the guest: kernel plus up to `MAX_PROCS` processes, timer at `timer_hz` (0: no timer).
pub fn build_image(programs: &[UserProgram], timer_hz: u32) -> Result<GuestImage> {
    if programs.is_empty() || programs.len() > MAX_PROCS as usize {
        return Err(VmpError::BadImage(format!(
            "need 1..={MAX_PROCS} processes, got {}",
            programs.len()
        )));
    }
    let text = kernel::assemble()?;
    let text_end = KERNEL_TEXT + text.len() as u32;
    if text_end > KERNEL_DATA {
        return Err(VmpError::BadImage("kernel text overlaps its data".into()));
    }
    let mut kd = vec![0u8; 0x1000];
    let put = |kd: &mut Vec<u8>, off: u32, v: u32| {
        kd[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes())
    };
    put(&mut kd, data::NPROCS, programs.len() as u32);
    let divisor = if timer_hz == 0 {
        0
    } else {
        (PIT_HZ / timer_hz as f64).round().clamp(1.0, 65535.0) as u32
    };
    put(&mut kd, data::PIT_DIVISOR, divisor);
    let msg = kernel::KILLED_TEXT;
    kd[data::KILLED_MSG as usize..data::KILLED_MSG as usize + msg.len()].copy_from_slice(msg);
    let mut segments = vec![(KERNEL_TEXT, text)];
    let mut user_text = Vec::new();
    let mut claimed: Vec<(u32, u32)> = vec![(KERNEL_TEXT, KSTACKS + MAX_PROCS * KSTACK_SIZE)];
    for (i, p) in programs.iter().enumerate() {
        let i = i as u32;
        let rec = data::PROCS + i * data::PROC_SIZE;
        let brk = (p.end + PAGE - 1) & !(PAGE - 1);
        let stack_top = user_stack_top(i);
        let ranges = p
            .segments
            .iter()
            .map(|(a, b)| (*a, a + b.len() as u32))
            .chain([
                (brk, brk + HEAP_SIZE),
                (stack_top + 16 - USER_STACK_SIZE, stack_top + 16),
            ]);
        for (s, e) in ranges {
            if let Some((cs, ce)) = claimed.iter().find(|(cs, ce)| s < *ce && *cs < e) {
                return Err(VmpError::BadImage(format!(
                    "process {} ({}) memory {s:#x}..{e:#x} overlaps {cs:#x}..{ce:#x}",
                    i, p.name
                )));
            }
            claimed.push((s, e));
        }
        put(&mut kd, rec + data::P_PID, i + 1);
        put(
            &mut kd,
            rec + data::P_KSTACK_TOP,
            KSTACKS + (i + 1) * KSTACK_SIZE,
        );
        put(&mut kd, rec + data::P_BRK, brk);
        put(&mut kd, rec + data::P_BRK_MIN, brk);
        put(&mut kd, rec + data::P_BRK_MAX, brk + HEAP_SIZE);
        put(&mut kd, rec + data::P_ENTRY, p.entry);
        put(&mut kd, rec + data::P_USER_ESP, stack_top);
        segments.extend(p.segments.iter().cloned());
        user_text.extend(p.text.iter().copied());
    }
    segments.push((KERNEL_DATA, kd));
    Ok(GuestImage {
        segments,
        kernel_text: (KERNEL_TEXT, text_end),
        user_text,
        entry: KERNEL_TEXT,
    })
}
