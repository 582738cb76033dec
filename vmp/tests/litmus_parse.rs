//! The litmus parser: herd's own layout is accepted, every syntax error is one line naming its
//! line number, and `vmp litmus` reports verdicts and exit codes.

use std::process::Command;

use gridbed_vmp::litmus::{catalogue, parse, Instr, Observable, Operand, Quantifier, Reg};

/// herd's catalogue layout: metadata lines, braces on their own lines, condition on two lines,
/// comments.
#[test]
fn herd_layout_parses() {
    let src = "X86 R+po+mfence\n\"PodWW Wse MFencedWR Fre\"\nCycle=Fre PodWW Wse MFencedWR\n\
               (* a comment\n spanning lines *)\n{\n}\n P0         | P1          ;\n\
               MOV [x],$1 | MOV [y],$2  ;\n MOV [y],$1 | MFENCE      ; // trailing\n\
                          | MOV EAX,[x] ;\nexists\n(y=2 /\\ 1:EAX=0)\n";
    let t = parse(src).unwrap();
    assert_eq!(t.name, "R+po+mfence");
    assert_eq!(t.locations, ["x", "y"]);
    assert_eq!(t.threads[0].len(), 2);
    assert_eq!(t.threads[1][1], Instr::Mfence);
    assert_eq!(
        t.threads[1][2],
        Instr::Load {
            dst: Reg::Eax,
            loc: 0
        }
    );
    assert_eq!(t.condition.as_ref().unwrap().quantifier, Quantifier::Exists);
    assert_eq!(
        t.observed,
        [
            Observable::Reg {
                cpu: 1,
                reg: Reg::Eax
            },
            Observable::Mem("y".into())
        ]
    );
}

#[test]
fn initial_values_locked_ops_and_quantifiers() {
    let t = parse(
        "X86 t\n{ x=5; 1:EBX=0x10; }\n P0 | P1 ;\n lock xadd [x],EAX | XCHG EBX,[y] ;\n\
         LOCK ADD [y],-1 | mov ecx,ebx ;\nlocations [x;]\n~exists (~(0:EAX=5) \\/ false)\n",
    )
    .unwrap();
    assert_eq!(t.init_mem, [5, 0]);
    assert_eq!(t.init_regs[1][Reg::Ebx.index()], 16);
    assert_eq!(
        t.threads[0][0],
        Instr::LockXadd {
            loc: 0,
            reg: Reg::Eax
        }
    );
    assert_eq!(
        t.threads[0][1],
        Instr::LockAdd {
            loc: 1,
            src: Operand::Imm(u32::MAX)
        }
    );
    assert_eq!(
        t.threads[1][0],
        Instr::Xchg {
            loc: 1,
            reg: Reg::Ebx
        }
    );
    assert_eq!(
        t.condition.as_ref().unwrap().quantifier,
        Quantifier::NotExists
    );
    assert!(t.observed.contains(&Observable::Mem("x".into())));
}

fn error_of(src: &str) -> String {
    parse(src).expect_err("must be rejected").to_string()
}

#[test]
fn syntax_errors_name_their_line() {
    let ok = "X86 t\n{ x=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV EAX,[x] ;\nexists (1:EAX=1)\n";
    assert!(parse(ok).is_ok());
    let cases: &[(&str, &str)] = &[
        ("", "line 1: empty litmus file"),
        ("ARM t\n{}\n", "line 1: expected `X86 <name>`"),
        ("X86 t\nfoo\n", "line 2: expected the initial state"),
        (
            "X86 t\n{ x=0;\n",
            "line 2: initial state `{` is never closed",
        ),
        ("X86 t\n{ x 0; }\n P0 ;\n", "line 2: expected `name=value`"),
        (
            "X86 t\n{ x=zz; }\n P0 ;\n",
            "line 2: expected a 32-bit integer",
        ),
        (
            "X86 t\n{ }\n P0 | P2 ;\n",
            "line 3: expected processor `P1`",
        ),
        (
            "X86 t\n{ }\n P0 | P1\n",
            "line 3: the processor header must end with `;`",
        ),
        (
            "X86 t\n{ }\n P0 | P1 ;\n MOV [x],$1 ;\n",
            "line 4: row has 1 columns, the header 2",
        ),
        (
            "X86 t\n{ }\n P0 ;\n\n MOV [x],$1\n",
            "line 5: expected an instruction row ending with `;`",
        ),
        (
            "X86 t\n{ }\n P0 ;\n ADD [x],$1 ;\n",
            "line 4: unsupported instruction `ADD [x],$1`",
        ),
        ("X86 t\n{ }\n P0 ;\n MOV [x,$1 ;\n", "line 4: missing `]`"),
        (
            "X86 t\n{ }\n P0 ;\n MOV [EAX],$1 ;\n",
            "line 4: expected a location name",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,@ ;\n",
            "line 4: unsupported operand `@`",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nexists (0:EAX=1 /\\\n",
            "line 5: condition ends too early",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nexists (0:EAX=1 /\\)\n",
            "line 5: expected a location name, found `)`",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nexists\n(3:EAX=1)\n",
            "line 6: processor 3 does not exist",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nexists (0:EAX=1) x\n",
            "line 5: unexpected `x` after the condition",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nexists (0:EAX=1 & x=1)\n",
            "line 5: unexpected character `&`",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nmaybe (0:EAX=1)\n",
            "line 5: expected an instruction row ending with `;` or a condition",
        ),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\n~ forall (0:EAX=1)\n",
            "line 5: expected exists, ~exists or forall",
        ),
        ("X86 t\n(* open\n{ }\n", "line 2: unterminated comment"),
        (
            "X86 t\n{ }\n P0 ;\n MOV EAX,[x] ;\nlocations x\n",
            "line 5: expected `locations [a; b; ...]`",
        ),
    ];
    for (src, want) in cases {
        let got = error_of(src);
        assert!(
            got.starts_with(want),
            "for {src:?}\n got: {got}\nwant: {want}..."
        );
        assert!(!got.contains('\n'), "error is not one line: {got:?}");
    }
}

fn vmp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_reports_verdict_histogram_and_errors() {
    let dir = std::env::temp_dir().join(format!("gridbed-litmus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sb = dir.join("sb.litmus");
    std::fs::write(&sb, catalogue::get("SB").unwrap().text).unwrap();
    let out = vmp(&["litmus", sb.to_str().unwrap(), "--machine", "oracle"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("x86-TSO allows 4 outcome(s), sequential consistency 3"),
        "{text}"
    );
    assert!(text.contains("0:EAX=0; 1:EAX=0;  (TSO only)"), "{text}");
    assert!(text.contains("validated under x86-TSO (Ok)"), "{text}");

    let out = vmp(&["litmus", sb.to_str().unwrap(), "--seeds", "50"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Histogram (50 runs on Interleave):"),
        "{text}"
    );
    assert!(!text.contains("FORBIDDEN"), "{text}");

    let bad = dir.join("bad.litmus");
    std::fs::write(&bad, "X86 t\n{ }\n P0 ;\n FOO ;\n").unwrap();
    let out = vmp(&["litmus", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("line 4: unsupported instruction `FOO`"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = vmp(&[
        "litmus",
        sb.to_str().unwrap(),
        "--machine",
        "smp",
        "--seeds",
        "20",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Histogram (20 runs on Smp):"), "{text}");

    // The shape that broke twin/diff (litmus_smp.rs): no forbidden outcome, exit 0.
    let silent = dir.join("silent.litmus");
    std::fs::write(&silent, SILENT_2_2W).unwrap();
    let out = vmp(&[
        "litmus",
        silent.to_str().unwrap(),
        "--machine",
        "smp",
        "--seeds",
        "32",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FORBIDDEN"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const SILENT_2_2W: &str = "X86 2+2W+silent\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$2 ;\n MOV [y],$0 | MOV [x],$2 ;\nexists (x=1 /\\ y=2)\n";

/// A machine that runs MP with P1's loads swapped: sequentially, it can read the new y and the
/// old x, an outcome x86-TSO forbids for MP itself. The report must flag it.
struct SwappedLoads;

impl gridbed_vmp::litmus::LitmusMachine for SwappedLoads {
    fn run(
        &mut self,
        _asm: &gridbed_vmp::litmus::Assembled,
        seed: u64,
    ) -> anyhow::Result<gridbed_vmp::litmus::Outcome> {
        let t = gridbed_vmp::litmus::parse(MP_SWAPPED)?;
        let asm = gridbed_vmp::litmus::assemble(&t, gridbed_vmp::litmus::Layout::default())?;
        gridbed_vmp::litmus::interleave::InterleaveMachine.run(&asm, seed)
    }
}

const MP: &str = "X86 MP\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV EAX,[y] ;\n MOV [y],$1 | MOV EBX,[x] ;\nexists (1:EAX=1 /\\ 1:EBX=0)\n";
const MP_SWAPPED: &str = "X86 MP\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV EBX,[x] ;\n MOV [y],$1 | MOV EAX,[y] ;\nexists (1:EAX=1 /\\ 1:EBX=0)\n";

#[test]
fn report_flags_a_forbidden_outcome() {
    use gridbed_vmp::litmus::cli::run_on;
    let mut m = SwappedLoads;
    let r = run_on(MP, 64, Some(("swapped", &mut m))).unwrap();
    assert!(r.forbidden_seen, "{}", r.text);
    assert!(r.text.contains("FORBIDDEN by x86-TSO"), "{}", r.text);
    let mut ok = gridbed_vmp::litmus::interleave::InterleaveMachine;
    let r = run_on(MP, 64, Some(("interleave", &mut ok))).unwrap();
    assert!(!r.forbidden_seen, "{}", r.text);
}
