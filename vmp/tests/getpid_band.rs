//! The vmp-getpid band: every documented variant is computed from the same counted events, the
//! base variant is the reported `vm_s`, and each mechanism moves the figure the way it must.

use gridbed_vmp::band::{self, variants};
use gridbed_vmp::time::Preset;
use gridbed_vmp::vcpu::{TrapKind, TrapStats};

fn getpid_like() -> TrapStats {
    let mut s = TrapStats::default();
    s.by_kind.insert(TrapKind::Int, 1000);
    s.by_kind.insert(TrapKind::Iret, 1000);
    s.mem_words = 18_000;
    s.insn_words = 2_000;
    s.cpl_switches = 2_000;
    s.deliveries = 1000;
    s
}

#[test]
fn base_variant_is_the_base_model() {
    let d = getpid_like();
    let v = variants();
    assert_eq!(v[0].name, "base");
    let base = Preset::PC_2005.trap.monitor_seconds(&d);
    assert!((v[0].monitor_seconds(&d) - base).abs() < 1e-12);
}

#[test]
fn each_mechanism_moves_the_cost_by_its_own_term() {
    let d = getpid_like();
    let by = |n: &str| variants().into_iter().find(|v| v.name == n).unwrap();
    let base = by("base").monitor_seconds(&d);
    let t = Preset::PC_2005.trap;
    // No SYSEMU: one more stop/resume, two ptrace requests and a null call per int 0x80.
    let extra = by("no_sysemu").monitor_seconds(&d) - base;
    let want = 1000.0 * (t.round_trip_s() + 2.0 * t.ptrace_call_s + t.syscall_s);
    assert!((extra - want).abs() < 1e-9, "{extra} vs {want}");
    // Word-by-word transfers: 20 000 words at 2 us instead of one ptrace request each.
    let extra = by("peek_poke_2us").monitor_seconds(&d) - base;
    let want = 20_000.0 * (band::WORD_TRANSFER_S - t.ptrace_call_s);
    assert!((extra - want).abs() < 1e-9, "{extra} vs {want}");
    // The combined slow variant costs at least as much as each of its parts.
    let worst = by("all_slow").monitor_seconds(&d);
    for v in variants() {
        assert!(worst >= v.monitor_seconds(&d) - 1e-12, "{}", v.name);
    }
    assert!(
        by("lmbench_2002_low").monitor_seconds(&d) < by("lmbench_2002_high").monitor_seconds(&d)
    );
}
