//! Experiment `vmp-getpid` (seeds document 2, "preliminary results"): getpid() called 1000 times
//! on one processor; the paper's VM took 0.54 s, about 500 times the real machine.

use std::time::Instant;

use crate::outcome::{ExperimentOutput, Figure, Mode, Series, TraceRecord};
use anyhow::{Context, Result};

use gridbed_vmp::band;
use gridbed_vmp::guest::programs;
use gridbed_vmp::run::{run_programs, RunOptions, RunReport};
use gridbed_vmp::time::Preset;
use gridbed_vmp::Config;

/// Calls in the slides' benchmark.
pub const CALLS: u32 = 1000;
/// Paper values (slides: "仮想マシン 0.54 秒", "500倍近く").
pub const PAPER_VM_S: f64 = 0.54;
pub const PAPER_OVERHEAD_X: f64 = 500.0;
/// Relative tolerance asked for by the issue.
pub const TOLERANCE: f64 = 0.10;

fn run(config: Config, calls: u32, preset: &Preset) -> Result<RunReport> {
    let prog = programs::getpid_loop(0, calls)?;
    let r = run_programs(&[prog], RunOptions::new(config, preset.cpu))
        .with_context(|| format!("getpid guest ({config:?}, {calls} calls)"))?;
    anyhow::ensure!(
        r.exit_status == 0,
        "getpid guest exited with status {}",
        r.exit_status
    );
    Ok(r)
}

/// Modelled seconds of a run on `preset`: guest instructions, hardware interrupt round trips (in
/// `native`), and the monitor's per-trap costs (in `vmp`). Idle time is excluded.
pub fn modelled_seconds(r: &RunReport, preset: &Preset) -> f64 {
    let cpu = preset.cpu.seconds(preset.cpu.cycles(r.retired));
    match r.config {
        Config::Native => cpu + r.stats.deliveries as f64 * preset.cpu.int_round_trip_s,
        Config::Vmp => cpu + preset.trap.monitor_seconds(&r.stats),
    }
}

/// Barham et al. (SOSP 2003, Table 3) on the machine `Preset::PC_2005` describes: lmbench null
/// call under User-Mode Linux (skas3), a ptrace-based VM of the paper's family. The value is as
/// recalled, *not verified*: no retrievable copy of the paper includes the table (see `time.rs`).
pub const UML_NULL_CALL_S: f64 = 24.7e-6;

pub fn getpid(mode: Mode) -> Result<ExperimentOutput> {
    match mode {
        Mode::Sim => getpid_sim(),
        Mode::Real => getpid_real(),
    }
}

fn getpid_sim() -> Result<ExperimentOutput> {
    let p = Preset::PC_2005;
    let mut out = ExperimentOutput::default();
    let mut events = Vec::new();
    let mut vm_series = Series {
        name: "vmp (modelled, 2005 PC)".into(),
        points: vec![],
    };
    let mut native_series = Series {
        name: "native (modelled, 2005 PC)".into(),
        points: vec![],
    };
    let (base_vm, base_native) = (run(Config::Vmp, 0, &p)?, run(Config::Native, 0, &p)?);
    let (t0_vm, t0_native) = (
        modelled_seconds(&base_vm, &p),
        modelled_seconds(&base_native, &p),
    );
    let mut last = None;
    for calls in [0, 250, 500, 750, CALLS] {
        let (vm, native) = (
            run(Config::Vmp, calls, &p)?,
            run(Config::Native, calls, &p)?,
        );
        let (vm_s, native_s) = (
            modelled_seconds(&vm, &p) - t0_vm,
            modelled_seconds(&native, &p) - t0_native,
        );
        vm_series.points.push((calls as f64, vm_s));
        native_series.points.push((calls as f64, native_s));
        events.push(format!(
            "calls={calls} vmp_retired={} vmp_traps={} vmp_words={} vmp_insn_words={} vmp_cpl_switches={} native_retired={} vm_s={vm_s:.9} native_s={native_s:.9}",
            vm.retired,
            vm.stats.total(),
            vm.stats.mem_words,
            vm.stats.insn_words,
            vm.stats.cpl_switches,
            native.retired
        ));
        last = Some((vm, native, vm_s, native_s));
    }
    let (vm, native, vm_s, native_s) = last.context("no runs")?;
    let per_call = CALLS as f64;
    // Everything the 1000-call loop added over the 0-call run, per call: counted, not assumed.
    let d = vm.stats.since(&base_vm.stats);
    let m = &mut out.metrics;
    for (k, v) in &d.by_kind {
        m.insert(
            format!("traps_per_getpid_{}", k.name()),
            *v as f64 / per_call,
        );
        events.push(format!(
            "traps_per_getpid {} {}",
            k.name(),
            *v as f64 / per_call
        ));
    }
    m.insert("traps_per_getpid".into(), d.total() as f64 / per_call);
    m.insert(
        "guest_words_per_getpid".into(),
        d.mem_words as f64 / per_call,
    );
    m.insert(
        "insn_words_per_getpid".into(),
        d.insn_words as f64 / per_call,
    );
    m.insert(
        "cpl_switches_per_getpid".into(),
        d.cpl_switches as f64 / per_call,
    );
    m.insert(
        "guest_instructions_per_getpid".into(),
        (vm.retired - base_vm.retired) as f64 / per_call,
    );
    m.insert(
        "native_instructions_per_getpid".into(),
        (native.retired - base_native.retired) as f64 / per_call,
    );
    let b = p.trap.breakdown(&d);
    for (name, v) in [
        ("stop_resume", b.stop_resume_s),
        ("getregs_setregs_cont", b.regs_s),
        ("peek_instruction", b.insn_peek_s),
        ("peek_poke_guest_data", b.data_peek_poke_s),
        ("emulate", b.emulate_s),
        ("protection_switch", b.protection_s),
    ] {
        m.insert(format!("model_us_per_getpid_{name}"), v / per_call * 1e6);
    }
    let per_getpid = vm_s / per_call;
    m.insert("model_us_per_getpid".into(), per_getpid * 1e6);
    m.insert("vm_s".into(), vm_s);
    m.insert("native_s".into(), native_s);
    m.insert("overhead_x".into(), vm_s / native_s);
    // What the honest model leaves unexplained, expressed in the unit a naive monitor spends most
    // freely: extra PEEK/POKEDATA calls per getpid that would close the gap to the paper.
    let gap_words = (PAPER_VM_S / per_call - per_getpid).max(0.0) / p.trap.ptrace_call_s;
    m.insert("gap_ptrace_calls_per_getpid".into(), gap_words);
    out.paper.insert("vm_s".into(), PAPER_VM_S);
    out.paper.insert("overhead_x".into(), PAPER_OVERHEAD_X);
    out.tolerance.insert("vm_s".into(), TOLERANCE);
    out.tolerance.insert("overhead_x".into(), TOLERANCE);
    out.figures.push(Figure {
        id: "vmp-getpid".into(),
        title: "getpid() loop on one virtual processor (2005 PC model)".into(),
        x_label: "getpid() calls".into(),
        y_label: "modelled time (s)".into(),
        log_x: false,
        log_y: false,
        series: vec![vm_series, native_series],
        paper_points: vec![Series {
            name: "paper: VM, 1000 calls in 0.54 s".into(),
            points: vec![(CALLS as f64, PAPER_VM_S)],
        }],
    });
    let why = "the documented ptrace trap-and-emulate costs give ~55 us per getpid; the slides call \
               the prototype buggy with partly naive consistency control and its results for reference \
               only (see the notes of this section)";
    out.explained.insert("vm_s".into(), why.into());
    out.explained.insert("overhead_x".into(), why.into());
    let t = &p.trap;
    out.notes.push(format!(
        "model (preset {}, lmbench L-UP figures from Barham et al. SOSP 2003 for a 2.4 GHz Xeon, Linux 2.4.21): \
         per trap one stop/resume round trip (signal {:.2} us + 2 context switches x {:.2} us + waitpid {:.2} us) \
         + GETREGS/SETREGS/CONT + PEEKDATA per instruction word, {:.2} us per ptrace request (estimate: 2 null calls) \
         + PEEK/POKEDATA per guest word the emulation touched + {:.2} us emulation; \
         per guest kernel<->user switch an injected mprotect of the {} guest-kernel pages \
         (another round trip + 3 ptrace requests + null call + {:.3} us per page)",
        p.name,
        t.signal_s * 1e6,
        t.context_switch_s * 1e6,
        t.syscall_s * 1e6,
        t.ptrace_call_s * 1e6,
        t.emulate_s * 1e6,
        gridbed_vmp::layout::GUEST_KERNEL_PAGES,
        t.mprotect_page_s * 1e6,
    ));
    out.notes.push(format!(
        "counted per getpid: {:.0} traps (int 0x80 into the guest kernel, iret back; the kernel's getpid path \
         contains no other sensitive instruction), {:.1} guest data words (IDT gate, GDT descriptor, TSS stack, \
         5-word interrupt frame; 3+2 words for iret), {:.1} instruction words, {:.0} privilege switches",
        d.total() as f64 / per_call,
        d.mem_words as f64 / per_call,
        d.insn_words as f64 / per_call,
        d.cpl_switches as f64 / per_call,
    ));
    out.notes.push(format!(
        "result: {:.1} us per getpid ({:.1}x the {:.1} us Barham et al. measured for a UML null call on the same \
         machine, as expected for 2 traps + 2 protection switches against UML's 2 ptrace stops), i.e. vm_s {:.4} s: \
         {:.1}x below the paper's 0.54 s, outside the 10% tolerance. Not tuned: the gap ({:.0} us per getpid) would \
         take ~{:.0} more ptrace requests per call, e.g. a naive monitor re-reading the 2 KiB virtual IDT \
         (512 PEEKDATA) on every delivery or copying the whole register/segment state word by word; the slides \
         call the prototype buggy and naive and report monitor and VM process each taking about half the time \
         for fib, which this model (monitor-dominated) does not reproduce either",
        per_getpid * 1e6,
        per_getpid / UML_NULL_CALL_S,
        UML_NULL_CALL_S * 1e6,
        vm_s,
        PAPER_VM_S / vm_s.max(1e-12),
        (PAPER_VM_S / per_call - per_getpid).max(0.0) * 1e6,
        gap_words,
    ));
    out.notes.push(
        "sources: Barham et al.'s text (section 4) confirms the machine (Dell 2650, 2.4 GHz Xeon, one CPU), \
         Linux 2.4.21, lmbench 3.0-a3 with L-UP/L-SMP kernels and UML in its skas3 variant; the four table \
         values used (null call 0.45 us, sig hndl 2.49 us, ctx 2p/0K 0.77 us, UML null call 24.7 us) could \
         not be verified: every copy reachable here (docslib.org/doc/6616819, ru.scribd.com/document/330821283, \
         an OCR extraction of the PDF) lacks or truncates Tables 3-4; nothing found contradicts them"
            .into(),
    );
    out.notes.push(
        "cross-checks (not model inputs): the UML authors count four host context switches per UML system \
         call under PTRACE_SYSCALL, i.e. two per ptrace stop as modelled \
         (user-mode-linux.sourceforge.net/old/slides/ols2002/text18.html), and list two host kernel \
         entries/exits as the floor without a tracing thread (.../text20.html); the SYSEMU patch page \
         (sysemu.sourceforge.net) says UML, without that patch, replaces each intercepted call by a \
         host getpid(), which \"generates two context-switches instead of one\"; King & Chen (UMLinux, 2002 tech report, citeseerx 10.1.1.175.3648) report \
         819-1240% overhead for system-call/I-O intensive workloads before their KTrace/MMA host \
         extensions. No per-operation numbers for UMLinux (King, Dunlap & Chen, USENIX 2003) or LilyVM \
         (Eiraku et al. 2003) were found with the tools available"
            .into(),
    );
    band_metrics(&mut out, &d, &vm, &base_vm, &native, &base_native, &p);
    let gap_s = (PAPER_VM_S / per_call - per_getpid).max(0.0);
    out.notes.push(format!(
        "explanation hypothesis (not modelled: its parameters are undocumented): the slides call the \
         prototype's consistency control partly naive, and its protocol write-protects *all* guest pages at \
         every synchronisation point; iret is a serialising instruction on IA-32, so a naive 1-CPU run \
         could re-protect all guest memory once per getpid. The {:.0} us gap per call would then need \
         {:.0} ns ({:.0} cycles at 2.4 GHz) per page for a 64 MiB guest, {:.0} ns for 128 MiB, plus the \
         write faults and 4 KiB twin copies that follow; the prototype's guest memory size, its \
         re-protection points and the 2005 per-page mprotect cost are not given, so this stays a hypothesis",
        gap_s * 1e6,
        gap_s / 16384.0 * 1e9,
        gap_s / 16384.0 * 2.4e9,
        gap_s / 32768.0 * 1e9,
    ));
    out.set_units(&[
        ("cpl_switches_per_getpid", "count"),
        ("gap_ptrace_calls_per_getpid", "calls"),
        ("guest_instructions_per_getpid", "count"),
        ("guest_words_per_getpid", "words"),
        ("insn_words_per_getpid", "words"),
        ("model_us_per_getpid", "us"),
        ("native_instructions_per_getpid", "count"),
        ("native_s", "s"),
        ("overhead_x", "x"),
        ("traps_per_getpid", "traps"),
        ("vm_s", "s"),
    ]);
    let per_getpid_metrics: Vec<String> = out.metrics.keys().cloned().collect();
    for k in per_getpid_metrics {
        if k.starts_with("model_us_per_getpid_") {
            out.units.insert(k, "us".into());
        } else if k.starts_with("traps_per_getpid_") {
            out.units.insert(k, "traps".into());
        } else if k.starts_with("vm_s_") {
            out.units.insert(k, "s".into());
        } else if k.starts_with("overhead_x_") || k.starts_with("paper_over_band_max_") {
            out.units.insert(k, "x".into());
        }
    }
    out.trace = Some(TraceRecord::from_events(events));
    Ok(out)
}

/// The band of the documented ptrace variants ([`band::variants`]) for the counted events of the
/// 1000-call loop: metrics, the paper's factor over the band, and the reason it stays outside.
fn band_metrics(
    out: &mut ExperimentOutput,
    d: &gridbed_vmp::vcpu::TrapStats,
    vm: &RunReport,
    base_vm: &RunReport,
    native: &RunReport,
    base_native: &RunReport,
    p: &Preset,
) {
    let points = band::evaluate(
        d,
        vm.retired - base_vm.retired,
        native.retired - base_native.retired,
        native.stats.deliveries - base_native.stats.deliveries,
        &p.cpu,
    );
    let fold = |f: fn(&band::Point) -> f64, pick: fn(f64, f64) -> f64, init: f64| {
        points.iter().map(f).fold(init, pick)
    };
    let (vm_min, vm_max) = (
        fold(|q| q.vm_s, f64::min, f64::INFINITY),
        fold(|q| q.vm_s, f64::max, 0.0),
    );
    let (x_min, x_max) = (
        fold(|q| q.overhead_x, f64::min, f64::INFINITY),
        fold(|q| q.overhead_x, f64::max, 0.0),
    );
    let m = &mut out.metrics;
    for q in &points {
        m.insert(format!("vm_s_variant_{}", q.name), q.vm_s);
        m.insert(format!("overhead_x_variant_{}", q.name), q.overhead_x);
    }
    m.insert("vm_s_band_min".into(), vm_min);
    m.insert("vm_s_band_max".into(), vm_max);
    m.insert("overhead_x_band_min".into(), x_min);
    m.insert("overhead_x_band_max".into(), x_max);
    m.insert("paper_over_band_max_vm_s_x".into(), PAPER_VM_S / vm_max);
    m.insert(
        "paper_over_band_max_overhead_x".into(),
        PAPER_OVERHEAD_X / x_max,
    );
    let caveat = "the slides call their prototype buggy, with a partly naive consistency control";
    out.explained.insert(
        "vm_s".into(),
        format!(
            "documented ptrace mechanisms give {vm_min:.3}-{vm_max:.3} s (base model {:.3} s); \
             the paper's {PAPER_VM_S} s is {:.1}x the band's top; {caveat}",
            points[0].vm_s,
            PAPER_VM_S / vm_max
        ),
    );
    out.explained.insert(
        "overhead_x".into(),
        format!(
            "documented ptrace mechanisms give {x_min:.0}-{x_max:.0}x (base model {:.0}x); \
             the paper's ~{PAPER_OVERHEAD_X}x is {:.1}x the band's top; {caveat}",
            points[0].overhead_x,
            PAPER_OVERHEAD_X / x_max
        ),
    );
    let list: Vec<String> = band::variants()
        .iter()
        .zip(&points)
        .map(|(v, q)| {
            format!(
                "{} {:.4} s / {:.0}x ({})",
                q.name, q.vm_s, q.overhead_x, v.source
            )
        })
        .collect();
    out.notes.push(format!(
        "band over the documented ptrace variants: vm_s {vm_min:.4}-{vm_max:.4} s, overhead_x \
         {x_min:.0}-{x_max:.0}x against the paper's {PAPER_VM_S} s / ~{PAPER_OVERHEAD_X}x, a factor \
         {:.1} (vm_s) and {:.1} (overhead_x) above the band's top; variants: {}. Verification: the \
         LKML 2002 lmbench figures (null call 0.66-0.67 us, sig hndl 2.70-2.85 us, ctx 2p \
         0.73-1.14 us, prot fault 1.31-1.41 us) are not verified (the post was not found); the \
         ~2 us per PEEK/POKEDATA word is derived from the umview PTRACE_MULTI measurement on \
         LKML (18 May 2006, 1 GHz G4: cp of a kernel tarball 22.6 s word by word vs 1.85 s \
         batched, found) with an assumed ~40 MB file, so not verified either; the UML \
         entry+exit stops without SYSEMU are confirmed by the SYSEMU patch page and the UML \
         OLS 2002 slides (see the cross-checks note). Caveat: {caveat}, so no documented \
         mechanism is expected to reach its figure",
        PAPER_VM_S / vm_max,
        PAPER_OVERHEAD_X / x_max,
        list.join("; "),
    ));
}

/// Minimum of `f` over `n` runs: on a shared machine the least-disturbed run is the best
/// estimate of the mechanism's own cost.
fn min_of(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..n {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Wall seconds of `calls` host getpid() system calls (raw syscall: glibc may cache getpid).
pub fn host_getpid_wall(calls: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..calls {
        // SAFETY: getpid takes no arguments and cannot fail.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        std::hint::black_box(pid);
    }
    t.elapsed().as_secs_f64()
}

fn getpid_real() -> Result<ExperimentOutput> {
    let p = Preset::THIS_MACHINE;
    let mut out = ExperimentOutput::default();
    const REPS: usize = 9;
    // Loop time = best run(1000) - best run(0): boot, first timer tick and exit cancel out.
    let loop_time = |c: Config, cpu: bool| -> Result<f64> {
        let time = |r: RunReport| if cpu { r.cpu_s } else { r.wall_s };
        let full = min_of(REPS, || Ok(time(run(c, CALLS, &p)?)))?;
        let empty = min_of(REPS, || Ok(time(run(c, 0, &p)?)))?;
        Ok((full - empty).max(0.0))
    };
    let vmp_wall = loop_time(Config::Vmp, false)?;
    let native_wall = loop_time(Config::Native, false)?;
    let vmp_cpu = loop_time(Config::Vmp, true)?;
    let host_wall = min_of(REPS, || Ok(host_getpid_wall(CALLS)))?;
    let (vm, base) = (run(Config::Vmp, CALLS, &p)?, run(Config::Vmp, 0, &p)?);
    let d = vm.stats.since(&base.stats);
    let traps = d.total() as f64;
    let m = &mut out.metrics;
    m.insert("vmp_wall_s".into(), vmp_wall);
    m.insert("native_guest_wall_s".into(), native_wall);
    m.insert("host_getpid_wall_s".into(), host_wall);
    m.insert("vmp_over_host_x".into(), vmp_wall / host_wall);
    m.insert(
        "vmp_over_native_guest_x".into(),
        vmp_wall / native_wall.max(1e-12),
    );
    m.insert("traps_per_getpid".into(), traps / CALLS as f64);
    m.insert("vmp_ns_per_trap".into(), vmp_wall * 1e9 / traps.max(1.0));
    m.insert("vmp_cpu_ns_per_trap".into(), vmp_cpu * 1e9 / traps.max(1.0));
    for (k, v) in &d.by_kind {
        m.insert(
            format!("traps_per_getpid_{}", k.name()),
            *v as f64 / CALLS as f64,
        );
    }
    out.set_units(&[
        ("vmp_wall_s", "s"),
        ("native_guest_wall_s", "s"),
        ("host_getpid_wall_s", "s"),
        ("vmp_over_host_x", "x"),
        ("vmp_over_native_guest_x", "x"),
        ("traps_per_getpid", "traps"),
        ("vmp_ns_per_trap", "ns"),
        ("vmp_cpu_ns_per_trap", "ns"),
    ]);
    for k in d.by_kind.keys() {
        out.units
            .insert(format!("traps_per_getpid_{}", k.name()), "traps".into());
    }
    out.notes.push(format!(
        "loop time = min over {REPS} runs with {CALLS} calls - min over {REPS} runs with 0 calls; \
         vmp_ns_per_trap is loop wall time / traps (guest instructions included), \
         vmp_cpu_ns_per_trap the same in thread CPU time"
    ));
    out.notes
        .push("goals: vmp_over_host_x <= 50 (paper ~500); <= 1 us per trap-and-emulate".into());
    out.notes.push(
        "native_guest_wall_s is no real-machine baseline here: unicorn never delivers interrupts, so in \
         `native` the monitor plays the processor's IDT delivery, and entering ring 0 from ring 3 needs a \
         ring-0 SS load that unicorn refuses at CPL 3; the monitor drops CR0.PE for one SS load, and each \
         PE toggle flushes QEMU's TLB and jump cache (about 40% of native time in a perf profile). `vmp` \
         never changes the real CPL (guest kernel and user both run at ring 3), so it avoids that cost \
         and comes out faster; both configurations fill unicorn's TLB the same way while the guest has \
         paging off (guest stores to data pages stay on the fast path; `native` follows the guest's \
         own `mov cr0` through hooks), so the TLB path is like for like; \
         host_getpid_wall_s is the real-machine reference"
            .into(),
    );
    Ok(out)
}
