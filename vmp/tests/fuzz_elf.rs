//! Fuzzing the ELF32 loader (`guest/elf.rs`) on the stable toolchain: random bytes, structured
//! executables (valid header, random program headers and contents) and mutations of them, and the
//! committed seed corpus (`vmp/fuzz/corpus/`). Bounded in `cargo test`; `scripts/fuzz.sh` runs
//! it longer (`PROPTEST_CASES`).
//!
//! Each input ends in an image or a one-line error, never a panic; an accepted image has disjoint
//! segments inside guest RAM, within the memory cap, with the entry point inside one of them.

use std::path::PathBuf;

use gridbed_vmp::guest::elf::{self, MAX_IMAGE_BYTES};
use gridbed_vmp::layout::{RAM_BASE, RAM_TOP};
use gridbed_vmp::VmpError;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

const PT_LOAD: u32 = 1;
const PF_RX: u32 = 5;
const PF_RW: u32 = 6;

/// One program header: (type, file offset, vaddr, file size, memory size, flags).
type Ph = (u32, u32, u32, u32, u32, u32);

/// An ELF32 i386 executable: header, program headers right after it, then `body`.
fn elf(entry: u32, phs: &[Ph], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 52];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 1; // ELFCLASS32
    b[5] = 1; // little endian
    b[6] = 1; // EV_CURRENT
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..28].copy_from_slice(&entry.to_le_bytes());
    b[28..32].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
    b[40..42].copy_from_slice(&52u16.to_le_bytes()); // e_ehsize
    b[42..44].copy_from_slice(&32u16.to_le_bytes()); // e_phentsize
    b[44..46].copy_from_slice(&(phs.len() as u16).to_le_bytes());
    for &(ty, off, vaddr, filesz, memsz, flags) in phs {
        for v in [ty, off, vaddr, vaddr, filesz, memsz, flags, 0x1000] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b.extend_from_slice(body);
    b
}

/// Offset of `body` in a file made by [`elf`] with `n` program headers.
fn body_at(n: usize) -> u32 {
    52 + 32 * n as u32
}

/// Loads `bytes` and checks what an accepted image promises.
fn load(bytes: &[u8]) -> Result<(), String> {
    match elf::load("fuzz", bytes) {
        Ok(p) => {
            let mut segs: Vec<(u64, u64)> = p
                .segments
                .iter()
                .map(|(a, d)| (u64::from(*a), u64::from(*a) + d.len() as u64))
                .collect();
            segs.sort_unstable();
            let total: u64 = segs.iter().map(|(a, e)| e - a).sum();
            assert!(total <= u64::from(MAX_IMAGE_BYTES));
            for w in segs.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlapping segments accepted: {segs:x?}");
            }
            for &(a, e) in &segs {
                assert!(a >= u64::from(RAM_BASE) && e <= u64::from(RAM_TOP));
            }
            let entry = u64::from(p.entry);
            assert!(segs.iter().any(|&(a, e)| entry >= a && entry < e));
            assert!(u64::from(p.end) == segs.iter().map(|s| s.1).max().unwrap());
            Ok(())
        }
        Err(VmpError::BadElf(m)) => {
            assert!(!m.contains('\n'), "multi-line error: {m}");
            Err(m)
        }
        Err(e) => panic!("not a BadElf error: {e}"),
    }
}

/// Mostly disjoint segments one MiB apart (so that many files are accepted), sometimes anywhere.
fn vaddr(i: usize) -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(0x0804_8000 + 0x10_0000 * i as u32),
        1 => (RAM_BASE..RAM_TOP).prop_map(|a| a & !0xfff),
        1 => any::<u32>(),
    ]
}

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0x40u32..0x2000, 1 => 0u32..0x10_0000, 1 => any::<u32>()]
}

fn ph(n: usize, i: usize) -> impl Strategy<Value = Ph> {
    (
        prop_oneof![8 => Just(PT_LOAD), 1 => 0u32..8],
        prop_oneof![8 => Just(body_at(n)), 1 => any::<u32>()],
        vaddr(i),
        prop_oneof![8 => 0u32..64, 1 => any::<u32>()],
        size(),
        prop_oneof![4 => Just(PF_RX), 4 => Just(PF_RW), 1 => any::<u32>()],
    )
}

fn structured() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => Just(0usize), 8 => 1usize..5].prop_flat_map(|n| {
        (
            (0..n).map(|i| ph(n, i)).collect::<Vec<_>>(),
            proptest::collection::vec(any::<u8>(), 64..96),
            prop_oneof![6 => Just(0x0804_8000u32), 1 => any::<u32>()],
        )
            .prop_map(|(phs, body, entry)| elf(entry, &phs, &body))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn loader_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = load(&bytes);
    }

    /// Structured executables and their mutations (header fields included).
    #[test]
    fn loader_survives_structured_and_mutated_files(
        file in structured(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let _ = load(&file);
        let mut m = file;
        for (at, v) in edits {
            let n = m.len();
            m[at % n] ^= v | 1;
        }
        let n = m.len();
        m.truncate(n - cut % (n / 4 + 1));
        let _ = load(&m);
    }
}

/// A valid two-segment executable: text at 0x08048000, data + bss after it.
fn valid() -> Vec<u8> {
    let code = [0xB8, 1, 0, 0, 0, 0xCD, 0x80]; // mov eax, 1; int 0x80
    let off = body_at(2);
    elf(
        0x0804_8000,
        &[
            (PT_LOAD, off, 0x0804_8000, 7, 7, PF_RX),
            (PT_LOAD, off, 0x0804_9000, 4, 0x10_0000, PF_RW),
        ],
        &code,
    )
}

#[test]
fn valid_executable_loads() {
    let p = elf::load("ok", &valid()).unwrap();
    assert_eq!(p.segments.len(), 2);
    assert_eq!(p.text, vec![(0x0804_8000, 0x0804_8007)]);
    assert_eq!(p.end, 0x0804_9000 + 0x10_0000);
}

/// Overlapping segments are refused, and before the loader allocates any of them (1000 segments
/// of 128 MiB over the same addresses would otherwise be 128 GiB).
#[test]
fn overlapping_segments_are_rejected() {
    let off = body_at(2);
    let two = elf(
        0x0804_8000,
        &[
            (PT_LOAD, off, 0x0804_8000, 7, 0x2000, PF_RX),
            (PT_LOAD, off, 0x0804_9000, 7, 0x1000, PF_RW),
        ],
        &[0x90; 7],
    );
    let e = load(&two).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
    let phs: Vec<Ph> = (0..1000)
        .map(|_| (PT_LOAD, body_at(1000), 0x0100_0000, 0, 128 << 20, PF_RW))
        .collect();
    let e = load(&elf(0x0100_0000, &phs, &[])).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
}

#[test]
fn total_segment_memory_is_capped() {
    let off = body_at(1);
    let big = elf(
        0x0100_0000,
        &[(
            PT_LOAD,
            off,
            0x0100_0000,
            1,
            MAX_IMAGE_BYTES + 0x1000,
            PF_RX,
        )],
        &[0x90],
    );
    let e = load(&big).unwrap_err();
    assert!(e.contains("at most"), "{e}");
}

/// The generator is not all rejects: a fixed sample of structured files includes accepted ones.
#[test]
fn structured_files_are_sometimes_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = structured();
    let accepted = (0..2000)
        .filter(|_| load(&strategy.new_tree(&mut runner).unwrap().current()).is_ok())
        .count();
    assert!(accepted >= 20, "only {accepted} of 2000 accepted");
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn seed_corpus() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("seed corpus directory") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("seed file");
        let _ = load(&bytes);
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", corpus_dir().display());
}

/// Writes the seed corpus (run once with `GRIDBED_WRITE_SEEDS=1`; the files are committed).
#[test]
fn write_seed_corpus() {
    if std::env::var_os("GRIDBED_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let off = body_at(1);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("valid", valid()),
        (
            "overlap",
            elf(
                0x0804_8000,
                &[
                    (PT_LOAD, body_at(2), 0x0804_8000, 0, 0x2000, PF_RX),
                    (PT_LOAD, body_at(2), 0x0804_9000, 0, 0x1000, PF_RW),
                ],
                &[],
            ),
        ),
        (
            "over-cap",
            elf(
                0x0100_0000,
                &[(PT_LOAD, off, 0x0100_0000, 0, MAX_IMAGE_BYTES + 1, PF_RX)],
                &[],
            ),
        ),
        (
            "wraps",
            elf(
                0x0804_8000,
                &[(PT_LOAD, off, 0xFFFF_F000, 0, 0x2000, PF_RX)],
                &[],
            ),
        ),
        (
            "filesz-past-eof",
            elf(
                0x0804_8000,
                &[(PT_LOAD, off, 0x0804_8000, 0x1000, 0x1000, PF_RX)],
                &[],
            ),
        ),
        (
            "entry-outside",
            elf(0x10, &[(PT_LOAD, off, 0x0804_8000, 1, 1, PF_RX)], &[0x90]),
        ),
        ("interp", elf(0, &[(3, off, 0, 0, 0, 0)], &[])),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}
