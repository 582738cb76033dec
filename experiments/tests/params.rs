//! Experiment parameters: every declared field has a unit and a source, `--set` goes through serde
//! (unknown keys and bad values are refused in one line), the values change the mechanism, and the
//! platform files under experiments/platforms/ are the simulator's own format.

use std::path::{Path, PathBuf};

use gridbed_experiments::outcome::Mode;
use gridbed_experiments::registry;
use gridbed_sim::Platform;

fn def(name: &str) -> gridbed_experiments::params::ParamsDef {
    registry::find(name)
        .unwrap()
        .params
        .expect("declares parameters")
}

fn platforms_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("platforms")
}

#[test]
fn every_declared_field_has_a_spec_and_its_defaults_deserialize() {
    let mut declared = 0;
    for exp in registry::all() {
        let Some(def) = exp.params else { continue };
        declared += 1;
        assert_eq!(def.spec_mismatch(), None, "{}", exp.name);
        for &(name, unit, source) in def.specs {
            assert!(
                !unit.is_empty() && !source.is_empty(),
                "{}.{name}",
                exp.name
            );
        }
        for &m in exp.modes {
            (def.check)(&(def.defaults)(m)).unwrap();
        }
    }
    assert!(declared >= 2, "migration-bandwidth and gxp-scale at least");
}

#[test]
fn set_refuses_unknown_keys_and_bad_values_in_one_line() {
    let d = def("migration-bandwidth");
    let cases = [
        (
            "nope=1",
            "unknown parameter 'nope' (known: socket_buffer_bytes, largest_block_log2)",
        ),
        ("socket_buffer_bytes", "expected key=value"),
        ("socket_buffer_bytes=lots", "'lots' is not a value"),
        ("socket_buffer_bytes=-5", "bad value '-5'"),
        ("socket_buffer_bytes=1.5", "bad value '1.5'"),
        ("socket_buffer_bytes=\"64k\"", "bad value"),
        ("largest_block_log2=[1,2]", "bad value"),
    ];
    for (set, want) in cases {
        let e = format!("{:#}", d.apply(Mode::Sim, &[set.to_string()]).unwrap_err());
        assert!(e.contains(want), "{set}: {e}");
        assert!(!e.contains('\n'), "{set}: {e}");
    }
    let v = d
        .apply(Mode::Sim, &["socket_buffer_bytes = 65536".into()])
        .unwrap();
    assert_eq!(v["socket_buffer_bytes"], 65536);
    assert_eq!(v["largest_block_log2"], 26);
    let rec = d.records(Mode::Sim, &v);
    assert_eq!(rec[0].name, "socket_buffer_bytes");
    assert_eq!(
        (rec[0].value.clone(), rec[0].default.clone()),
        (65536.into(), 16384.into())
    );
    assert_eq!(rec[0].unit, "bytes");
    assert_eq!(d.from_records(Mode::Sim, &rec).unwrap(), v);
    // Vectors and strings: gxp-scale's sizes and platform.
    let g = def("gxp-scale");
    let v = g
        .apply(
            Mode::Sim,
            &["sizes=[10,20]".into(), "platform=a b.toml".into()],
        )
        .unwrap();
    assert_eq!(v["sizes"], serde_json::json!([10, 20]));
    assert_eq!(v["platform"], "a b.toml");
}

#[test]
fn values_out_of_range_are_refused_by_the_experiment() {
    let d = def("migration-bandwidth");
    for set in ["socket_buffer_bytes=0", "largest_block_log2=40"] {
        let v = d.apply(Mode::Sim, &[set.into()]).unwrap();
        let e = format!("{:#}", (d.run)(Mode::Sim, 1, &v).unwrap_err());
        assert!(e.contains("must be"), "{set}: {e}");
    }
    let g = def("gxp-scale");
    let v = g.apply(Mode::Sim, &["sizes=[1]".into()]).unwrap();
    let e = format!("{:#}", (g.run)(Mode::Sim, 1, &v).unwrap_err());
    assert!(e.contains("expected 2 to 100000"), "{e}");
}

/// Figure 3 with a 64 KiB socket buffer: the stop-and-wait TCP over the SP Switch speeds up (until
/// the sending host's per-packet work limits it), LAPI (no socket buffer) does not change.
#[test]
fn a_larger_socket_buffer_speeds_up_tcp_only() {
    let d = def("migration-bandwidth");
    let small = ["largest_block_log2=22".to_string()];
    let base = (d.run)(Mode::Sim, 1, &d.apply(Mode::Sim, &small).unwrap()).unwrap();
    let mut sets = small.to_vec();
    sets.push("socket_buffer_bytes=65536".into());
    let big = (d.run)(Mode::Sim, 1, &d.apply(Mode::Sim, &sets).unwrap()).unwrap();
    let m = |o: &gridbed_experiments::outcome::ExperimentOutput, k: &str| o.metrics[k];
    assert!(
        m(&big, "sp_tcp_mbit_s") > 1.1 * m(&base, "sp_tcp_mbit_s"),
        "{:?} vs {:?}",
        big.metrics,
        base.metrics
    );
    assert_eq!(m(&big, "lapi_mbit_s"), m(&base, "lapi_mbit_s"));
    assert!(m(&big, "ethernet_tcp_mbit_s") >= m(&base, "ethernet_tcp_mbit_s"));
    assert!(big.notes.iter().any(|n| n.contains("65536 bytes")));
}

#[test]
fn each_preset_has_its_platform_file() {
    for name in gridbed_sim::presets::PRESET_NAMES {
        let file = platforms_dir().join(format!("{name}.toml"));
        let p = Platform::from_toml_file(&file).unwrap();
        assert_eq!(p, Platform::preset(name).unwrap(), "{}", file.display());
    }
}

#[test]
fn gxp_scale_runs_on_a_platform_file() {
    let g = def("gxp-scale");
    let file = platforms_dir().join("gxp-3lans-nat.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let v = g.apply(Mode::Sim, &[format!("platform={text}")]).unwrap();
    let out = (g.run)(Mode::Sim, 3, &v).unwrap();
    assert!(out.metrics["explore_60_s"] > 0.0, "{:?}", out.metrics);
    assert!(out.metrics["tree_depth_60"] >= 2.0, "{:?}", out.metrics);
    assert!(
        out.notes.iter().any(|n| n.contains("3 LANs, 2 behind NAT")),
        "{:?}",
        out.notes
    );
    // A private LAN 0 could never be left: refused with the reason.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("p.toml");
    let text = text.replacen(
        "preset = \"ethernet-100\"\n",
        "preset = \"ethernet-100\"\nprivate = true\n",
        1,
    );
    std::fs::write(&bad, &text).unwrap();
    let v = g.apply(Mode::Sim, &[format!("platform={text}")]).unwrap();
    let e = format!("{:#}", (g.run)(Mode::Sim, 3, &v).unwrap_err());
    assert!(e.contains("must be public"), "{e}");
}
