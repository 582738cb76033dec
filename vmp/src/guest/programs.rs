//! Built-in user programs, from the slides' benchmarks: a loop calling getpid() and a recursive
//! Fibonacci. Each is assembled for its own address slot (the guest does not page).

use iced_x86::code_asm::*;

use super::image::UserProgram;
use crate::error::{Result, VmpError};
use crate::layout::*;

fn slot(i: u32) -> u32 {
    USER_SLOT_BASE + i * USER_SLOT_SIZE
}

fn err(e: IcedError) -> VmpError {
    VmpError::BadImage(format!("program assembly: {e}"))
}

/// Program data lives one page after the code start (code stays below 4 KiB).
const DATA_OFF: u32 = 0x1000;

fn finish(name: &str, a: &mut CodeAssembler, base: u32, data: Vec<u8>) -> Result<UserProgram> {
    let code = a.assemble(base as u64).map_err(err)?;
    if code.len() as u32 > DATA_OFF {
        return Err(VmpError::BadImage(format!(
            "program {name} code exceeds {DATA_OFF} bytes"
        )));
    }
    let end = base + DATA_OFF + data.len() as u32;
    let text = vec![(base, base + code.len() as u32)];
    Ok(UserProgram {
        name: name.into(),
        text,
        segments: vec![(base, code), (base + DATA_OFF, data)],
        entry: base,
        end,
    })
}

/// `write(1, msg, len)` followed by `exit(status)`.
fn write_and_exit(
    a: &mut CodeAssembler,
    msg: u32,
    len: u32,
    status: u32,
) -> std::result::Result<(), IcedError> {
    a.mov(eax, SYS_WRITE)?;
    a.mov(ebx, 1u32)?;
    a.mov(ecx, msg)?;
    a.mov(edx, len)?;
    a.int(0x80)?;
    a.mov(eax, SYS_EXIT)?;
    a.mov(ebx, status)?;
    a.int(0x80)?;
    Ok(())
}

/// Calls getpid() `n` times (the slides: 1000 times), then prints a line and exits 0.
pub fn getpid_loop(slot_index: u32, n: u32) -> Result<UserProgram> {
    let base = slot(slot_index);
    let text = format!("getpid x{n} done\n");
    let mut a = CodeAssembler::new(32).map_err(err)?;
    (|| -> std::result::Result<(), IcedError> {
        let (mut top, mut done) = (a.create_label(), a.create_label());
        a.mov(esi, n)?;
        a.test(esi, esi)?;
        a.jz(done)?;
        a.set_label(&mut top)?;
        a.mov(eax, SYS_GETPID)?;
        a.int(0x80)?;
        a.dec(esi)?;
        a.jnz(top)?;
        a.set_label(&mut done)?;
        write_and_exit(&mut a, base + DATA_OFF, text.len() as u32, 0)
    })()
    .map_err(err)?;
    finish("getpid", &mut a, base, text.into_bytes())
}

/// Computes fib(n) recursively and prints "fib(n) = value"; exits with value & 0xff.
pub fn fib(slot_index: u32, n: u32) -> Result<UserProgram> {
    let base = slot(slot_index);
    let prefix = format!("fib({n}) = ");
    let mut a = CodeAssembler::new(32).map_err(err)?;
    (|| -> std::result::Result<(), IcedError> {
        let (mut f, mut small, mut conv) = (a.create_label(), a.create_label(), a.create_label());
        let (msg, digits) = (base + DATA_OFF, base + DATA_OFF + prefix.len() as u32);
        a.mov(eax, n)?;
        a.call(f)?;
        a.mov(edi, eax)?; // keep the result
                          // Decimal conversion into `digits`, right to left.
        a.mov(ebx, 10u32)?;
        a.mov(ecx, digits)?;
        a.add(ecx, 11)?;
        a.mov(byte_ptr(ecx), 10u32)?; // '\n'
        a.set_label(&mut conv)?;
        a.dec(ecx)?;
        a.xor(edx, edx)?;
        a.div(ebx)?;
        a.add(dl, 0x30u32)?;
        a.mov(byte_ptr(ecx), dl)?;
        a.test(eax, eax)?;
        a.jnz(conv)?;
        a.push(ecx)?;
        a.mov(eax, SYS_WRITE)?;
        a.mov(ebx, 1u32)?;
        a.mov(ecx, msg)?;
        a.mov(edx, prefix.len() as u32)?;
        a.int(0x80)?;
        a.pop(ecx)?;
        a.mov(edx, digits)?;
        a.add(edx, 12)?;
        a.sub(edx, ecx)?;
        a.mov(eax, SYS_WRITE)?;
        a.mov(ebx, 1u32)?;
        a.int(0x80)?;
        a.mov(eax, SYS_EXIT)?;
        a.mov(ebx, edi)?;
        a.and(ebx, 0xffu32)?;
        a.int(0x80)?;
        // fib(eax) -> eax, recursive.
        a.set_label(&mut f)?;
        a.cmp(eax, 2)?;
        a.jb(small)?;
        a.push(eax)?;
        a.dec(eax)?;
        a.call(f)?;
        a.xchg(dword_ptr(esp), eax)?;
        a.sub(eax, 2)?;
        a.call(f)?;
        a.pop(ecx)?;
        a.add(eax, ecx)?;
        a.set_label(&mut small)?;
        a.ret()?;
        Ok(())
    })()
    .map_err(err)?;
    let mut data = prefix.into_bytes();
    data.extend_from_slice(&[0u8; 12]);
    finish("fib", &mut a, base, data)
}

/// Prints its pid-tagged line `rounds` times, yielding in between (shows round-robin scheduling).
pub fn chatter(slot_index: u32, tag: u8, rounds: u32) -> Result<UserProgram> {
    let base = slot(slot_index);
    let text = [b'[', tag, b']', b' ', b'h', b'i', b'\n'];
    let mut a = CodeAssembler::new(32).map_err(err)?;
    (|| -> std::result::Result<(), IcedError> {
        let mut top = a.create_label();
        let msg = base + DATA_OFF;
        a.mov(esi, rounds)?;
        a.set_label(&mut top)?;
        a.mov(eax, SYS_WRITE)?;
        a.mov(ebx, 1u32)?;
        a.mov(ecx, msg)?;
        a.mov(edx, text.len() as u32)?;
        a.int(0x80)?;
        a.mov(eax, SYS_SCHED_YIELD)?;
        a.int(0x80)?;
        a.dec(esi)?;
        a.jnz(top)?;
        a.mov(eax, SYS_EXIT)?;
        a.xor(ebx, ebx)?;
        a.int(0x80)?;
        Ok(())
    })()
    .map_err(err)?;
    finish("chatter", &mut a, base, text.to_vec())
}

/// Where [`dirty`] keeps its memory: from above the four program slots to below the user
/// stacks at the top of RAM (1 MiB per process, `image::user_stack_top`).
pub const DIRTY_REGION: (u32, u32) = (
    USER_SLOT_BASE + MAX_PROCS * USER_SLOT_SIZE,
    RAM_TOP - MAX_PROCS * 0x0010_0000,
);

/// A guest for pre-copy migration: it fills `fill_pages` pages of [`DIRTY_REGION`] (one dword
/// per page, so each is non-zero), then makes `writes` stores, one per page in turn over the
/// first `hot_pages` pages (its working set), each store followed by a `spin`-iteration busy
/// loop — so it dirties one page per about `2 * spin + 12` instructions. Store `i` adds `i + 1`
/// to its page's first dword, so every store's effect lasts. Then it folds the first dword of
/// every filled page into a checksum, prints `dirty: <writes> writes, sum <hex>` and exits 0:
/// the sum shows whether any store was lost (or made twice).
pub fn dirty(
    slot_index: u32,
    fill_pages: u32,
    hot_pages: u32,
    writes: u32,
    spin: u32,
) -> Result<UserProgram> {
    let (lo, hi) = DIRTY_REGION;
    let most = (hi - lo) / PAGE;
    if fill_pages == 0 || fill_pages > most || hot_pages == 0 || hot_pages > fill_pages {
        return Err(VmpError::BadImage(format!(
            "dirty guest: need 1 <= hot pages ({hot_pages}) <= fill pages ({fill_pages}) <= {most}"
        )));
    }
    let base = slot(slot_index);
    let prefix = format!("dirty: {writes} writes, sum ");
    let end = lo + fill_pages * PAGE;
    let mut a = CodeAssembler::new(32).map_err(err)?;
    (|| -> std::result::Result<(), IcedError> {
        let (mut fill, mut work, mut nowrap) =
            (a.create_label(), a.create_label(), a.create_label());
        let (mut spinning, mut spun, mut sum) =
            (a.create_label(), a.create_label(), a.create_label());
        let (mut fold, mut hex, mut digit) = (a.create_label(), a.create_label(), a.create_label());
        let msg = base + DATA_OFF;
        let digits = msg + prefix.len() as u32;
        // Fill: each page's first dword holds its address.
        a.mov(edi, lo)?;
        a.set_label(&mut fill)?;
        a.mov(dword_ptr(edi), edi)?;
        a.add(edi, PAGE)?;
        a.cmp(edi, end)?;
        a.jb(fill)?;
        // Work: add i+1 to page (i mod hot) for i in 0..writes.
        a.xor(esi, esi)?; // i
        a.xor(ebx, ebx)?; // page index
        a.mov(ebp, writes)?;
        a.test(ebp, ebp)?;
        a.jz(sum)?;
        a.set_label(&mut work)?;
        a.mov(eax, ebx)?;
        a.shl(eax, 12)?;
        a.add(eax, lo)?;
        a.lea(edx, dword_ptr(esi + 1))?;
        a.add(dword_ptr(eax), edx)?;
        a.inc(ebx)?;
        a.cmp(ebx, hot_pages)?;
        a.jb(nowrap)?;
        a.xor(ebx, ebx)?;
        a.set_label(&mut nowrap)?;
        a.mov(ecx, spin)?;
        a.test(ecx, ecx)?;
        a.jz(spun)?;
        a.set_label(&mut spinning)?;
        a.dec(ecx)?;
        a.jnz(spinning)?;
        a.set_label(&mut spun)?;
        a.inc(esi)?;
        a.cmp(esi, ebp)?;
        a.jb(work)?;
        // Checksum over every filled page's first dword, order-sensitive.
        a.set_label(&mut sum)?;
        a.xor(edx, edx)?;
        a.mov(edi, lo)?;
        a.set_label(&mut fold)?;
        a.rol(edx, 5)?;
        a.xor(edx, dword_ptr(edi))?;
        a.add(edi, PAGE)?;
        a.cmp(edi, end)?;
        a.jb(fold)?;
        // Eight hex digits and a newline after the prefix.
        a.mov(edi, digits)?;
        a.mov(ecx, 8u32)?;
        a.set_label(&mut hex)?;
        a.rol(edx, 4)?;
        a.mov(eax, edx)?;
        a.and(eax, 0xfu32)?;
        a.add(eax, 0x30u32)?;
        a.cmp(eax, 0x3au32)?;
        a.jb(digit)?;
        a.add(eax, 0x27u32)?; // 'a' - '0' - 10
        a.set_label(&mut digit)?;
        a.mov(byte_ptr(edi), al)?;
        a.inc(edi)?;
        a.dec(ecx)?;
        a.jnz(hex)?;
        a.mov(byte_ptr(edi), 10u32)?;
        write_and_exit(&mut a, msg, prefix.len() as u32 + 9, 0)
    })()
    .map_err(err)?;
    let mut data = prefix.into_bytes();
    data.extend_from_slice(&[0u8; 9]);
    finish("dirty", &mut a, base, data)
}
