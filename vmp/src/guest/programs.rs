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
