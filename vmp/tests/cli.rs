//! `vmp run FILE` on a static ELF32 i386 executable written here byte by byte (linked at the
//! i386 default base 0x08048000), and its error on a bad file.

use std::process::Command;

use gridbed_vmp::layout::{SYS_EXIT, SYS_WRITE};
use iced_x86::code_asm::*;

const BASE: u32 = 0x0804_8000;

const CODE_AT: u32 = BASE + 0x54; // after the ELF header (52) and one program header (32)

/// Prints a line and exits with status 5.
fn hello() -> Vec<u8> {
    let msg_at = CODE_AT + 0x40;
    let msg = b"hi from elf\n";
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(eax, SYS_WRITE).unwrap();
    a.mov(ebx, 1u32).unwrap();
    a.mov(ecx, msg_at).unwrap();
    a.mov(edx, msg.len() as u32).unwrap();
    a.int(0x80).unwrap();
    a.mov(eax, SYS_EXIT).unwrap();
    a.mov(ebx, 5u32).unwrap();
    a.int(0x80).unwrap();
    elf(a, msg)
}

/// Spins forever (`jmp $`): a runaway guest.
fn spinner() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.jmp(top).unwrap();
    elf(a, b"")
}

/// A static ELF32 i386 executable: one R+X PT_LOAD holding the headers, `a`'s code and `msg`
/// 0x40 bytes after the code start.
fn elf(mut a: CodeAssembler, msg: &[u8]) -> Vec<u8> {
    let code_at = CODE_AT;
    let mut code = a.assemble(code_at as u64).unwrap();
    code.resize(0x40, 0x90);
    code.extend_from_slice(msg);
    let mut f = vec![0u8; 0x54];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 1; // ELFCLASS32
    f[5] = 1; // little endian
    f[6] = 1; // version
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 3); // EM_386
    put32(&mut f, 20, 1);
    put32(&mut f, 24, code_at); // e_entry
    put32(&mut f, 28, 52); // e_phoff
    put16(&mut f, 40, 52); // e_ehsize
    put16(&mut f, 42, 32); // e_phentsize
    put16(&mut f, 44, 1); // e_phnum
    let total = (0x54 + code.len()) as u32;
    put32(&mut f, 52, 1); // PT_LOAD
    put32(&mut f, 56, 0); // p_offset
    put32(&mut f, 60, BASE); // p_vaddr
    put32(&mut f, 64, BASE);
    put32(&mut f, 68, total); // p_filesz
    put32(&mut f, 72, total + 0x100); // p_memsz (with .bss)
    put32(&mut f, 76, 5); // R+X
    put32(&mut f, 80, 0x1000);
    f.extend_from_slice(&code);
    f
}

#[test]
fn vmp_run_executes_a_static_elf_in_both_configs() {
    let dir = std::env::temp_dir().join(format!("vmp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hi.elf");
    std::fs::write(&path, hello()).unwrap();
    for config in ["native", "vmp"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmp"))
            .args(["run", path.to_str().unwrap(), "--config", config])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from elf\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("exit status 5"), "{err}");
    }
    std::fs::write(&path, b"\x7fELF\x02garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(["run", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("vmp: error: bad ELF") && err.lines().count() == 1,
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `vmp run` on `bytes` with extra arguments; returns (exit code, stdout, stderr).
fn vmp_run(name: &str, bytes: &[u8], extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("vmp-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.elf");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(["run", path.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn runaway_elf_is_stopped_with_eip_and_instruction() {
    for config in ["native", "vmp"] {
        let (code, _, err) = vmp_run(
            &format!("spin-{config}"),
            &spinner(),
            &["--config", config, "--budget", "200000"],
        );
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("eip {CODE_AT:#010x}")), "{err}");
        assert!(err.contains("jmp"), "{err}");
    }
}

#[test]
fn malformed_elf_files_give_one_line_errors() {
    let good = hello();
    let mut not_i386 = good.clone();
    not_i386[18] = 40; // EM_ARM
    let mut entry_outside = good.clone();
    entry_outside[24..28].copy_from_slice(&0x1000_0000u32.to_le_bytes());
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..60].to_vec(), "bad ELF"),
        ("not-i386", not_i386, "not i386"),
        ("entry", entry_outside, "entry point"),
        ("empty", Vec::new(), "bad magic"),
    ];
    for (name, bytes, want) in cases {
        let (code, out, err) = vmp_run(name, &bytes, &[]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(out.is_empty(), "{name}: {out}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.starts_with("vmp: error: bad ELF"), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// `vmp smp`: programs placed on processors of the SMP guest kernel; bad input is one line.
#[test]
fn vmp_smp_runs_programs_on_chosen_processors() {
    let dir = std::env::temp_dir().join(format!("vmp-cli-smp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hello.elf");
    std::fs::write(&path, hello()).unwrap();
    let elf_arg = format!("{}@1", path.display());
    let out = Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(["smp", "--cpus", "2", &elf_arg, "builtin:chatter:2@0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "process 0's status: {stdout}");
    assert_eq!(stdout.matches("hi from elf\n").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("[B] hi\n").count(), 2, "{stdout}");
    assert!(stdout.contains("cpu 1:"), "{stdout}");
    for bad in [
        vec!["smp", "--cpus", "9", "builtin:fib:5@0"],
        vec!["smp", "--cpus", "2", "builtin:fib:5@2"],
        vec!["smp", "builtin:nope@0"],
        vec!["smp", "builtin:fib@x"],
        vec!["smp", "no-such-file@0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmp"))
            .args(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
