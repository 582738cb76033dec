//! Differential property test: random sequences of privileged and ordinary instructions run in the
//! `native` and `vmp` configurations must leave identical architectural state and memory. A second
//! property runs the `vmp` configuration *without* the pre-scan, so every privileged instruction
//! reaches the monitor as a real #GP (the fault path), and compares it with `native` as well.

use gridbed_vmp::layout::*;
use gridbed_vmp::machine::{ArchState, Config, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;
use proptest::prelude::*;

const SCRATCH: u32 = KERNEL_DATA + 0x800;
const GDT_AT: u32 = KERNEL_DATA;
const GDTR_AT: u32 = KERNEL_DATA + 0x100;
const IDTR_AT: u32 = KERNEL_DATA + 0x108;

#[derive(Clone, Debug)]
enum Op {
    MovImm(u8, u32),
    Alu(u8, u8, u8),
    Push(u8),
    Pop(u8),
    Lgdt,
    Lidt(u16, u32),
    Sgdt(u8),
    Sidt(u8),
    MovCr0(u32),
    MovCr(u8, u32),
    ReadCr(u8, u8),
    Clts,
    Cli,
    Sti,
    PushfPopf(u32),
    Pushf,
    InPit,
    OutConsole(u8),
    Rdtsc,
    Cpuid(u32),
    Invlpg(u8),
    Wbinvd,
    Lldt0,
    MovSs,
    ReadSs,
}

impl Op {
    /// Unprivileged-but-sensitive: only catchable by the pre-scan, not by a #GP.
    fn needs_scan(&self) -> bool {
        matches!(
            self,
            Op::Sgdt(_)
                | Op::Sidt(_)
                | Op::PushfPopf(_)
                | Op::Pushf
                | Op::Rdtsc
                | Op::Cpuid(_)
                | Op::ReadSs
        )
    }
}

const GPR: [AsmRegister32; 7] = [eax, ecx, edx, ebx, ebp, esi, edi];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..7u8, any::<u32>()).prop_map(|(r, v)| Op::MovImm(r, v)),
        (0..3u8, 0..7u8, 0..7u8).prop_map(|(k, a, b)| Op::Alu(k, a, b)),
        (0..7u8).prop_map(Op::Push),
        (0..7u8).prop_map(Op::Pop),
        Just(Op::Lgdt),
        (any::<u16>(), any::<u32>()).prop_map(|(l, b)| Op::Lidt(l, b)),
        (0..16u8).prop_map(Op::Sgdt),
        (0..16u8).prop_map(Op::Sidt),
        // MP, TS, NE, WP, AM over PE|ET.
        (0..32u32).prop_map(|m| Op::MovCr0(
            0x11 | (m & 1) << 1 | (m & 2) << 2 | (m & 4) << 3 | (m & 8) << 13 | (m & 16) << 14
        )),
        (prop_oneof![Just(2u8), Just(3u8), Just(4u8)], any::<u32>())
            .prop_map(|(c, v)| Op::MovCr(c, v)),
        (
            0..7u8,
            prop_oneof![Just(0u8), Just(2u8), Just(3u8), Just(4u8)]
        )
            .prop_map(|(r, c)| Op::ReadCr(r, c)),
        Just(Op::Clts),
        Just(Op::Cli),
        Just(Op::Sti),
        // CF PF AF ZF SF IF DF OF and IOPL.
        any::<u32>().prop_map(|v| Op::PushfPopf(v & 0x3ED5 | 2)),
        Just(Op::Pushf),
        Just(Op::InPit),
        any::<u8>().prop_map(Op::OutConsole),
        Just(Op::Rdtsc),
        (0..3u32).prop_map(Op::Cpuid),
        (0..7u8).prop_map(Op::Invlpg),
        Just(Op::Wbinvd),
        Just(Op::Lldt0),
        Just(Op::MovSs),
        Just(Op::ReadSs),
    ]
}

fn emit(a: &mut CodeAssembler, op: &Op) -> Result<(), IcedError> {
    match *op {
        Op::MovImm(r, v) => a.mov(GPR[r as usize], v)?,
        Op::Alu(k, x, y) => match k {
            0 => a.add(GPR[x as usize], GPR[y as usize])?,
            1 => a.xor(GPR[x as usize], GPR[y as usize])?,
            _ => a.sub(GPR[x as usize], GPR[y as usize])?,
        },
        Op::Push(r) => a.push(GPR[r as usize])?,
        Op::Pop(r) => a.pop(GPR[r as usize])?,
        Op::Lgdt => a.lgdt(ptr(GDTR_AT as u64))?,
        Op::Lidt(l, b) => {
            a.mov(word_ptr(IDTR_AT as u64), l as u32)?;
            a.mov(dword_ptr(IDTR_AT as u64 + 2), b)?;
            a.lidt(ptr(IDTR_AT as u64))?;
        }
        Op::Sgdt(k) => a.sgdt(ptr(SCRATCH as u64 + 8 * k as u64))?,
        Op::Sidt(k) => a.sidt(ptr(SCRATCH as u64 + 8 * k as u64 + 128))?,
        Op::MovCr0(v) => {
            a.mov(eax, v)?;
            a.mov(cr0, eax)?;
        }
        Op::MovCr(c, v) => {
            let (v, r) = match c {
                2 => (v, cr2),
                3 => (v & !0xFFF, cr3),
                // DE, PSE, TSD, PCE.
                _ => (v & 0x11C, cr4),
            };
            a.mov(ecx, v)?;
            a.mov(r, ecx)?;
        }
        Op::ReadCr(r, c) => {
            let cr = [cr0, cr0, cr2, cr3, cr4][c as usize];
            a.mov(GPR[r as usize], cr)?;
        }
        Op::Clts => a.clts()?,
        Op::Cli => a.cli()?,
        Op::Sti => a.sti()?,
        Op::PushfPopf(v) => {
            a.push(v)?;
            a.popfd()?;
        }
        Op::Pushf => a.pushfd()?,
        Op::InPit => a.in_(al, 0x40)?,
        Op::OutConsole(v) => {
            a.mov(al, v as u32)?;
            a.out(PORT_CONSOLE as u32, al)?;
        }
        Op::Rdtsc => a.rdtsc()?,
        Op::Cpuid(l) => {
            a.mov(eax, l)?;
            a.cpuid()?;
        }
        Op::Invlpg(r) => a.invlpg(ptr(GPR[r as usize]))?,
        Op::Wbinvd => a.wbinvd()?,
        Op::Lldt0 => {
            a.xor(eax, eax)?;
            a.lldt(ax)?;
        }
        Op::MovSs => {
            a.mov(eax, SEL_KDATA as u32)?;
            a.mov(ss, ax)?;
        }
        Op::ReadSs => a.mov(edx, ss)?,
    }
    Ok(())
}

fn image(ops: &[Op], scan: bool) -> GuestImage {
    let mut a = CodeAssembler::new(32).unwrap();
    for o in ops {
        emit(&mut a, o).unwrap();
    }
    a.xor(eax, eax).unwrap();
    a.out(PORT_POWER as u32, eax).unwrap();
    a.hlt().unwrap();
    let text = a.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    let mut data = vec![0u8; 0x1000];
    let gdt: [u64; 5] = [
        0,
        0x00CF_9A00_0000_FFFF,
        0x00CF_9200_0000_FFFF,
        0x00CF_FA00_0000_FFFF,
        0x00CF_F200_0000_FFFF,
    ];
    for (i, d) in gdt.iter().enumerate() {
        data[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    let g = (GDTR_AT - KERNEL_DATA) as usize;
    data[g..g + 2].copy_from_slice(&39u16.to_le_bytes());
    data[g + 2..g + 6].copy_from_slice(&GDT_AT.to_le_bytes());
    GuestImage {
        segments: vec![(KERNEL_TEXT, text), (KERNEL_DATA, data)],
        kernel_text: if scan { (KERNEL_TEXT, end) } else { (0, 0) },
        user_text: vec![],
        entry: KERNEL_TEXT,
    }
}

fn run(config: Config, img: &GuestImage) -> (ArchState, Vec<u8>, Vec<u8>) {
    let mut m = Machine::new(config, Preset::PC_2005.cpu, img).unwrap();
    m.set_budget(1_000_000);
    m.run(None).unwrap();
    let mut s = m.arch_state().unwrap();
    s.eip = 0; // native stops after the trailing hlt, vmp at it: compared via the state it left
    let mut mem = vec![0u8; 0x1000];
    m.unicorn().mem_read(KERNEL_DATA as u64, &mut mem).unwrap();
    let mut stack = vec![0u8; 0x2000];
    m.unicorn()
        .mem_read((KERNEL_BOOT_STACK - 0x1000) as u64, &mut stack)
        .unwrap();
    mem.extend(stack);
    (s, mem, m.console().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn vmp_matches_native(ops in prop::collection::vec(op(), 1..40)) {
        let img = image(&ops, true);
        let native = run(Config::Native, &img);
        let vmp = run(Config::Vmp, &img);
        prop_assert_eq!(&native.0, &vmp.0);
        prop_assert!(native.1 == vmp.1, "memory differs");
        prop_assert_eq!(native.2, vmp.2);
    }

    #[test]
    fn fault_path_matches_native(ops in prop::collection::vec(op(), 1..40)) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| !o.needs_scan()).collect();
        let img = image(&ops, false);
        let native = run(Config::Native, &img);
        let vmp = run(Config::Vmp, &img);
        prop_assert_eq!(&native.0, &vmp.0);
        prop_assert!(native.1 == vmp.1, "memory differs");
        prop_assert_eq!(native.2, vmp.2);
    }
}

#[test]
fn fault_path_mov_cr2() {
    let ops = vec![
        Op::MovCr(2, 5),
        Op::MovCr(3, 0x5000),
        Op::Cli,
        Op::Sti,
        Op::Lgdt,
    ];
    let img = image(&ops, false);
    let native = run(Config::Native, &img);
    let vmp = run(Config::Vmp, &img);
    assert_eq!(native.0, vmp.0);
}
