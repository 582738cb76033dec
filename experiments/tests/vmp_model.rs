//! The 2005 time model is counted events times documented costs: the getpid experiment's figures
//! must follow from the traps the guest actually took, term by term.

use gridbed_experiments::outcome::Mode;
use gridbed_experiments::vmp::getpid::{getpid, CALLS};
use gridbed_vmp::time::Preset;
use gridbed_vmp::vcpu::{TrapKind, TrapPath, TrapStats};

#[test]
fn getpid_model_is_the_sum_of_its_counted_terms() {
    let out = getpid(Mode::Sim).unwrap();
    let m = &out.metrics;
    // Counted from the guest: one int 0x80 and one iret per call, and they switch privilege.
    assert_eq!(m["traps_per_getpid_int"], 1.0);
    assert_eq!(m["traps_per_getpid_iret"], 1.0);
    assert_eq!(m["traps_per_getpid"], 2.0);
    assert_eq!(m["cpl_switches_per_getpid"], 2.0);
    let parts: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("model_us_per_getpid_"))
        .map(|(_, v)| v)
        .sum();
    let total = m["model_us_per_getpid"];
    assert!((parts - total).abs() < 0.02 * total, "{parts} vs {total}");
    assert!((m["vm_s"] - total * 1e-6 * CALLS as f64).abs() < 1e-9);
    assert!((m["overhead_x"] - m["vm_s"] / m["native_s"]).abs() < 1e-9);
}

#[test]
fn monitor_time_is_linear_in_counted_events() {
    let t = Preset::PC_2005.trap;
    let mut one = TrapStats::default();
    one.record(TrapKind::Int, TrapPath::Hook);
    one.mem_words = 11;
    one.insn_words = 1;
    one.cpl_switches = 1;
    let mut two = one.clone();
    two.record(TrapKind::Int, TrapPath::Hook);
    two.mem_words *= 2;
    two.insn_words *= 2;
    two.cpl_switches *= 2;
    let (a, b) = (t.monitor_seconds(&one), t.monitor_seconds(&two));
    assert!((b - 2.0 * a).abs() < 1e-15, "{a} {b}");
    // Each PEEK/POKEDATA word costs one ptrace request.
    let mut more = one.clone();
    more.mem_words += 1;
    let d = t.monitor_seconds(&more) - a;
    assert!((d - t.ptrace_call_s).abs() < 1e-15);
    assert_eq!(two.since(&one), one);
}

/// The band over the documented ptrace variants brackets the base model, and the report says why
/// the paper lies above it.
#[test]
fn experiment_reports_band_and_explanation() {
    let out = getpid(Mode::Sim).unwrap();
    let m = &out.metrics;
    let (lo, hi, vm) = (m["vm_s_band_min"], m["vm_s_band_max"], m["vm_s"]);
    assert!(
        lo <= vm * (1.0 + 1e-9) && vm <= hi && lo < hi,
        "{lo} {vm} {hi}"
    );
    assert!((m["vm_s_variant_base"] - vm).abs() < 1e-9 * vm);
    let (xlo, xhi) = (m["overhead_x_band_min"], m["overhead_x_band_max"]);
    assert!(xlo <= m["overhead_x"] * (1.0 + 1e-9) && m["overhead_x"] <= xhi);
    assert!(out.explained["vm_s"].contains("the band's top"));
    assert!(out.explained.contains_key("overhead_x"));
    assert_eq!(out.paper["vm_s"], 0.54);
}
