//! Write tracking (`machine::wtrack`): the first write to a page per epoch faults, the callback
//! sees the page before the write, `take_dirty` re-protects, and every page the guest or the
//! monitor changed is in the dirty set.

use std::sync::{Arc, Mutex};

use gridbed_vmp::guest::{image::build_image, programs};
use gridbed_vmp::layout::*;
use gridbed_vmp::machine::{flat, Config, Exit, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;

const A: u32 = KERNEL_DATA + 0x1000;
const B: u32 = KERNEL_DATA + 0x3000;
const SPIN: u32 = 2000;

/// Stores 0x11 to A, spins, stores 0x22 to A and 0x33 to B, powers off.
fn image() -> GuestImage {
    let mut k = CodeAssembler::new(32).unwrap();
    let mut spin = k.create_label();
    k.mov(dword_ptr(A as u64), 0x11u32).unwrap();
    k.mov(ecx, SPIN).unwrap();
    k.set_label(&mut spin).unwrap();
    k.dec(ecx).unwrap();
    k.jnz(spin).unwrap();
    k.mov(dword_ptr(A as u64), 0x22u32).unwrap();
    k.mov(dword_ptr(B as u64 + 8), 0x33u32).unwrap();
    k.xor(eax, eax).unwrap();
    k.out(PORT_POWER as u32, eax).unwrap();
    k.hlt().unwrap();
    let text = k.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    let data = vec![0xAAu8; 0x4000];
    GuestImage {
        segments: vec![(KERNEL_TEXT, text), (KERNEL_DATA, data)],
        kernel_text: (KERNEL_TEXT, end),
        user_text: vec![],
        entry: KERNEL_TEXT,
    }
}

type Twins = Arc<Mutex<Vec<(u32, Vec<u8>)>>>;

fn tracked(config: Config) -> (Machine, Twins) {
    let mut m = Machine::new(config, Preset::PC_2005.cpu, &image()).unwrap();
    m.set_budget(1_000_000);
    let twins: Twins = Arc::default();
    let t = twins.clone();
    m.start_tracking(Some(Box::new(move |page, bytes| {
        t.lock().unwrap().push((page, bytes.to_vec()))
    })))
    .unwrap();
    (m, twins)
}

#[test]
fn first_write_per_epoch_faults_and_twins_see_old_contents() {
    for config in [Config::Vmp, Config::Native] {
        let (mut m, twins) = tracked(config);
        // Stop inside the spin loop: only A has been written.
        assert_eq!(m.run(Some(SPIN as u64 / 2)).unwrap(), Exit::SliceEnd);
        assert_eq!(m.dirty_pages(), vec![A], "{config:?}");
        assert_eq!(m.write_faults(), 1, "{config:?}");
        {
            let t = twins.lock().unwrap();
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].0, A);
            assert!(
                t[0].1.iter().all(|b| *b == 0xAA),
                "twin taken before the store"
            );
        }
        assert_eq!(m.take_dirty().unwrap(), vec![A]);
        assert!(m.dirty_pages().is_empty());
        // Next epoch: A is protected again, so its second store faults and is twinned anew.
        assert_eq!(m.run(None).unwrap(), Exit::PowerOff(0));
        assert_eq!(m.take_dirty().unwrap(), vec![A, B], "{config:?}");
        assert_eq!(m.write_faults(), 3, "{config:?}");
        let t = twins.lock().unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].0, A);
        assert_eq!(
            &t[1].1[..4],
            &0x11u32.to_le_bytes(),
            "second twin holds epoch-1 data"
        );
        assert_eq!(t[2].0, B);
        let mut word = [0u8; 4];
        assert!(m.read_ram(B + 8, &mut word));
        assert_eq!(word, 0x33u32.to_le_bytes());
    }
}

#[test]
fn stopped_tracking_takes_no_faults() {
    let (mut m, _) = tracked(Config::Vmp);
    m.stop_tracking().unwrap();
    assert_eq!(m.run(None).unwrap(), Exit::PowerOff(0));
    assert_eq!(m.write_faults(), 0);
    assert!(m.take_dirty().unwrap().is_empty());
}

/// Every page that differs after a full guest run (kernel data, kernel stacks written by the
/// monitor's interrupt delivery in `vmp`, user data and stack) is in the dirty set.
#[test]
fn dirty_set_covers_every_changed_page() {
    let img = build_image(&[programs::fib(0, 18).unwrap()], 1000).unwrap();
    let ranges = [
        (KERNEL_TEXT, KSTACKS + MAX_PROCS * KSTACK_SIZE),
        (USER_SLOT_BASE, USER_SLOT_BASE + USER_SLOT_SIZE),
        (RAM_TOP - USER_STACK_SIZE, RAM_TOP),
    ];
    for config in [Config::Vmp, Config::Native] {
        let mut m = Machine::new(config, Preset::PC_2005.cpu, &img).unwrap();
        m.set_budget(200_000_000);
        let snap = |m: &Machine| -> Vec<Vec<u8>> {
            ranges
                .iter()
                .map(|(s, e)| {
                    let mut b = vec![0u8; (e - s) as usize];
                    assert!(m.read_ram(*s, &mut b));
                    b
                })
                .collect()
        };
        let before = snap(&m);
        m.start_tracking(None).unwrap();
        assert!(matches!(m.run(None).unwrap(), Exit::PowerOff(_)));
        let after = snap(&m);
        let dirty = m.take_dirty().unwrap();
        let mut changed = 0;
        for ((s, _), (b, a)) in ranges.iter().zip(before.iter().zip(&after)) {
            for (i, (pb, pa)) in b
                .chunks(PAGE as usize)
                .zip(a.chunks(PAGE as usize))
                .enumerate()
            {
                if pb != pa {
                    changed += 1;
                    let page = s + i as u32 * PAGE;
                    assert!(
                        dirty.contains(&page),
                        "{config:?}: page {page:#x} changed, not dirty"
                    );
                }
            }
        }
        assert!(
            changed >= 3,
            "{config:?}: the guest changed only {changed} pages"
        );
    }
}

/// The monitor's own stores count: in `vmp` the interrupt frame of an `int 0x80` is written by
/// the monitor's delivery, onto a stack page no guest instruction stores to.
#[test]
fn monitor_stores_are_tracked() {
    const IDTR_AT: u32 = KERNEL_DATA;
    const IDT_AT: u32 = KERNEL_DATA + 0x800;
    const GDTR_AT: u32 = KERNEL_DATA + 8;
    const GDT_AT: u32 = KERNEL_DATA + 0x100;
    const STACK_TOP: u32 = KERNEL_DATA + 0x3000;
    let mut h = CodeAssembler::new(32).unwrap();
    h.xor(eax, eax).unwrap();
    h.out(PORT_POWER as u32, eax).unwrap();
    h.hlt().unwrap();
    let handler = h.assemble(KERNEL_TEXT as u64).unwrap();
    let entry = KERNEL_TEXT + 0x100;
    let mut k = CodeAssembler::new(32).unwrap();
    k.lgdt(ptr(GDTR_AT as u64)).unwrap();
    k.lidt(ptr(IDTR_AT as u64)).unwrap();
    k.mov(esp, STACK_TOP).unwrap();
    k.int(0x80).unwrap();
    k.hlt().unwrap();
    let main = k.assemble(entry as u64).unwrap();
    let mut text = handler;
    text.resize(0x100, 0x90);
    text.extend(main);
    let mut data = vec![0u8; 0x4000];
    data[0..2].copy_from_slice(&(0x81u16 * 8 - 1).to_le_bytes());
    data[2..6].copy_from_slice(&IDT_AT.to_le_bytes());
    data[8..10].copy_from_slice(&23u16.to_le_bytes());
    data[10..14].copy_from_slice(&GDT_AT.to_le_bytes());
    for (i, d) in [0, flat(0x9A), flat(0x92)].iter().enumerate() {
        let o = (GDT_AT - KERNEL_DATA) as usize + 8 * i;
        data[o..o + 8].copy_from_slice(&d.to_le_bytes());
    }
    let off = KERNEL_TEXT as u64;
    let gate = (off & 0xFFFF) | (SEL_KCODE as u64) << 16 | 0x8Eu64 << 40 | (off >> 16) << 48;
    let g = (IDT_AT - KERNEL_DATA) as usize + 0x80 * 8;
    data[g..g + 8].copy_from_slice(&gate.to_le_bytes());
    let end = KERNEL_TEXT + text.len() as u32;
    let img = GuestImage {
        segments: vec![(KERNEL_TEXT, text), (KERNEL_DATA, data)],
        kernel_text: (KERNEL_TEXT, end),
        user_text: vec![],
        entry,
    };
    for config in [Config::Vmp, Config::Native] {
        let mut m = Machine::new(config, Preset::PC_2005.cpu, &img).unwrap();
        m.set_budget(10_000);
        m.start_tracking(None).unwrap();
        assert_eq!(m.run(None).unwrap(), Exit::PowerOff(0), "{config:?}");
        let mut frame = [0u8; 4];
        assert!(m.read_ram(STACK_TOP - 4, &mut frame));
        assert_ne!(frame, [0; 4], "{config:?}: no interrupt frame was pushed");
        assert!(
            m.take_dirty().unwrap().contains(&(STACK_TOP - PAGE)),
            "{config:?}: the frame's page is not dirty"
        );
    }
}

/// Stores 0xAAAAAAAA (the value already there) to A and one byte to B + 5, powers off: stores
/// that change nothing are still recorded as written, byte for byte.
fn silent_image() -> GuestImage {
    let mut k = CodeAssembler::new(32).unwrap();
    k.mov(dword_ptr(A as u64), 0xAAAA_AAAAu32).unwrap();
    k.mov(byte_ptr(B as u64 + 5), 0x01u32).unwrap();
    k.xor(eax, eax).unwrap();
    k.out(PORT_POWER as u32, eax).unwrap();
    k.hlt().unwrap();
    let text = k.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    GuestImage {
        segments: vec![(KERNEL_TEXT, text), (KERNEL_DATA, vec![0xAAu8; 0x4000])],
        kernel_text: (KERNEL_TEXT, end),
        user_text: vec![],
        entry: KERNEL_TEXT,
    }
}

#[test]
fn written_bytes_include_silent_stores() {
    let mut m = Machine::new(Config::Vmp, Preset::PC_2005.cpu, &silent_image()).unwrap();
    m.set_budget(1_000_000);
    m.start_tracking(None).unwrap();
    m.track_written_bytes().unwrap();
    assert!(matches!(m.run(None).unwrap(), Exit::PowerOff(0)));
    let dirty = m.take_dirty().unwrap();
    assert!(dirty.contains(&A) && dirty.contains(&B), "{dirty:?}");
    assert_eq!(m.take_written(A).runs(), vec![(0, 4)]);
    assert_eq!(m.take_written(B).runs(), vec![(5, 1)]);
    // Taken: the record starts afresh.
    assert!(m.take_written(A).is_empty());
    // Without written-byte tracking nothing is recorded.
    let mut m = Machine::new(Config::Vmp, Preset::PC_2005.cpu, &silent_image()).unwrap();
    m.set_budget(1_000_000);
    m.start_tracking(None).unwrap();
    assert!(matches!(m.run(None).unwrap(), Exit::PowerOff(0)));
    assert!(m.take_written(A).is_empty());
}
