//! Named litmus tests with their verdicts under x86-TSO, as the herdtools7 x86 catalogue and the
//! x86-TSO papers give them. Each test's `exists` names its relaxed outcome; `allowed` says
//! whether x86-TSO permits it. Written here in the documented subset of herd's syntax.
//!
//! Shapes checked against herdtools7's `catalogue/x86/tests/` (via the search tool): MP, LB, 2+2W,
//! S, SB, SB+mfences, SB+mfence+po, R, R+po+mfence; MP, LB, SB and WRC (as the SDM's examples
//! 8-1, 8-2, 8-3 and 8-6, with verdicts) also against Sewell et al., CACM 53(7) 2010, p. 96
//! (mags.acm.org/communications/201007/?pg=96). IRIW, WWC, RWC, RWC+po+mfence follow
//! the standard shapes of the x86-TSO papers (Owens, Sarkar & Sewell 2009; Sewell et al., CACM
//! 2010); n6 is the test of that name from Owens et al.; `iriw-internal` is the
//! store-forwarding variant of IRIW with each writer reading its own write first (Intel SDM
//! 8.2.3.5, "intra-processor forwarding is allowed"; herd's SB+rfi-pos shape).

/// One catalogue entry.
pub struct Named {
    pub name: &'static str,
    /// Whether x86-TSO allows the outcome the test's `exists` names.
    pub allowed: bool,
    pub text: &'static str,
}

pub const TESTS: &[Named] = &[
    Named {
        name: "MP",
        allowed: false,
        text: "X86 MP\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV EAX,[y] ;\n MOV [y],$1 | MOV EBX,[x] ;\nexists (1:EAX=1 /\\ 1:EBX=0)\n",
    },
    Named {
        name: "LB",
        allowed: false,
        text: "X86 LB\n{ x=0; y=0; }\n P0 | P1 ;\n MOV EAX,[x] | MOV EAX,[y] ;\n MOV [y],$1 | MOV [x],$1 ;\nexists (0:EAX=1 /\\ 1:EAX=1)\n",
    },
    Named {
        name: "WRC",
        allowed: false,
        text: "X86 WRC\n{ x=0; y=0; }\n P0 | P1 | P2 ;\n MOV [x],$1 | MOV EAX,[x] | MOV EAX,[y] ;\n | MOV [y],$1 | MOV EBX,[x] ;\nexists (1:EAX=1 /\\ 2:EAX=1 /\\ 2:EBX=0)\n",
    },
    Named {
        name: "2+2W",
        allowed: false,
        text: "X86 2+2W\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$2 | MOV [y],$2 ;\n MOV [y],$1 | MOV [x],$1 ;\nexists (x=2 /\\ y=2)\n",
    },
    Named {
        name: "IRIW",
        allowed: false,
        text: "X86 IRIW\n{ x=0; y=0; }\n P0 | P1 | P2 | P3 ;\n MOV [x],$1 | MOV EAX,[x] | MOV [y],$1 | MOV EAX,[y] ;\n | MOV EBX,[y] | | MOV EBX,[x] ;\nexists (1:EAX=1 /\\ 1:EBX=0 /\\ 3:EAX=1 /\\ 3:EBX=0)\n",
    },
    Named {
        name: "S",
        allowed: false,
        text: "X86 S\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$2 | MOV EAX,[y] ;\n MOV [y],$1 | MOV [x],$1 ;\nexists (x=2 /\\ 1:EAX=1)\n",
    },
    Named {
        name: "WWC",
        allowed: false,
        text: "X86 WWC\n{ x=0; y=0; }\n P0 | P1 | P2 ;\n MOV [x],$2 | MOV EAX,[x] | MOV EAX,[y] ;\n | MOV [y],$1 | MOV [x],$1 ;\nexists (x=2 /\\ 1:EAX=2 /\\ 2:EAX=1)\n",
    },
    Named {
        name: "SB+mfences",
        allowed: false,
        text: "X86 SB+mfences\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$1 ;\n MFENCE | MFENCE ;\n MOV EAX,[y] | MOV EAX,[x] ;\nexists (0:EAX=0 /\\ 1:EAX=0)\n",
    },
    Named {
        name: "R+po+mfence",
        allowed: false,
        text: "X86 R+po+mfence\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$2 ;\n MOV [y],$1 | MFENCE ;\n | MOV EAX,[x] ;\nexists (y=2 /\\ 1:EAX=0)\n",
    },
    Named {
        name: "RWC+po+mfence",
        allowed: false,
        text: "X86 RWC+po+mfence\n{ x=0; y=0; }\n P0 | P1 | P2 ;\n MOV [x],$1 | MOV EAX,[x] | MOV [y],$1 ;\n | MOV EBX,[y] | MFENCE ;\n | | MOV EAX,[x] ;\nexists (1:EAX=1 /\\ 1:EBX=0 /\\ 2:EAX=0)\n",
    },
    Named {
        name: "SB",
        allowed: true,
        text: "X86 SB\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$1 ;\n MOV EAX,[y] | MOV EAX,[x] ;\nexists (0:EAX=0 /\\ 1:EAX=0)\n",
    },
    Named {
        name: "SB+mfence+po",
        allowed: true,
        text: "X86 SB+mfence+po\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$1 ;\n MFENCE | MOV EAX,[x] ;\n MOV EAX,[y] | ;\nexists (0:EAX=0 /\\ 1:EAX=0)\n",
    },
    Named {
        name: "R",
        allowed: true,
        text: "X86 R\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$2 ;\n MOV [y],$1 | MOV EAX,[x] ;\nexists (y=2 /\\ 1:EAX=0)\n",
    },
    Named {
        name: "RWC",
        allowed: true,
        text: "X86 RWC\n{ x=0; y=0; }\n P0 | P1 | P2 ;\n MOV [x],$1 | MOV EAX,[x] | MOV [y],$1 ;\n | MOV EBX,[y] | MOV EAX,[x] ;\nexists (1:EAX=1 /\\ 1:EBX=0 /\\ 2:EAX=0)\n",
    },
    Named {
        name: "n6",
        allowed: true,
        text: "X86 n6\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$2 ;\n MOV EAX,[x] | MOV [x],$2 ;\n MOV EBX,[y] | ;\nexists (0:EAX=1 /\\ 0:EBX=0 /\\ x=1)\n",
    },
    Named {
        name: "iriw-internal",
        allowed: true,
        text: "X86 iriw-internal\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$1 ;\n MOV EAX,[x] | MOV EAX,[y] ;\n MOV EBX,[y] | MOV EBX,[x] ;\nexists (0:EAX=1 /\\ 0:EBX=0 /\\ 1:EAX=1 /\\ 1:EBX=0)\n",
    },
];

/// The catalogue entry called `name`.
pub fn get(name: &str) -> Option<&'static Named> {
    TESTS.iter().find(|t| t.name == name)
}
