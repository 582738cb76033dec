//! The report pages: rebuilt from every result present, a corrupt result listed rather than
//! skipped, verdicts only where a paper value or target exists, nothing left half-written.

use gridbed_experiments::outcome::{ExperimentOutput, Figure, Mode, Series};
use gridbed_experiments::{registry, report};

fn output(metric: f64) -> ExperimentOutput {
    let mut out = ExperimentOutput::default();
    out.metrics.insert("lapi_mbit_s".into(), metric);
    out.metrics.insert("retries".into(), 3.0);
    out.paper.insert("lapi_mbit_s".into(), 443.0);
    out.tolerance.insert("lapi_mbit_s".into(), 0.05);
    out.set_units(&[("lapi_mbit_s", "Mbit/s"), ("retries", "count")]);
    out.figures.push(Figure {
        id: "curve".into(),
        title: "t".into(),
        x_label: "block size (bytes)".into(),
        y_label: "time (s)".into(),
        series: vec![Series {
            name: "two points".into(),
            points: vec![(1.0, 1.0), (2.0, 3.0)],
        }],
        paper_points: vec![Series {
            name: "paper".into(),
            points: vec![(2.0, 2.5)],
        }],
        ..Default::default()
    });
    out
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn index_covers_every_result_and_lists_a_corrupt_one() {
    let tmp = tempfile::tempdir().unwrap();
    let bw = registry::find("migration-bandwidth").unwrap();
    let vmp = registry::find("vmp-getpid").unwrap();
    report::write(tmp.path(), &bw, Mode::Sim, 1, output(446.0)).unwrap();
    let mut v = ExperimentOutput::default();
    v.metrics.insert("vm_s".into(), 0.0546);
    v.paper.insert("vm_s".into(), 0.54);
    v.tolerance.insert("vm_s".into(), 0.1);
    v.explained
        .insert("vm_s".into(), "the modelled costs are lower".into());
    v.set_units(&[("vm_s", "s")]);
    report::write(tmp.path(), &vmp, Mode::Sim, 1, v).unwrap();
    // Rerunning one experiment keeps the other's section.
    report::write(tmp.path(), &bw, Mode::Sim, 2, output(300.0)).unwrap();
    let html = read(&tmp.path().join("index.html"));
    assert!(html.contains("id=\"vmp-getpid\""), "vmp section lost");
    assert!(html.contains("id=\"migration-bandwidth\""));
    assert!(html.contains("--seed 2"), "rerun command of the new run");
    // 300 Mbit/s is outside 5% of 443; the vmp value is outside but explained.
    assert!(html.contains("outside tolerance"));
    assert!(html.contains("outside, explained"));
    assert!(html.contains("the modelled costs are lower"));
    // Catalogue rows whose experiment is missing are listed, not left out.
    assert!(html.contains("not built yet"), "unbuilt systems listed");
    assert!(html.contains("not run yet"), "unrun experiments listed");
    // A count prints as an integer and a metric without paper value gets no verdict.
    let retries = html.split("<td>retries</td>").nth(1).unwrap();
    let row = &retries[..retries.find("</tr>").unwrap()];
    assert!(row.contains(">3<"), "{row}");
    assert!(row.contains("class=\"none\""), "no verdict: {row}");

    std::fs::write(
        tmp.path().join("vmp-getpid/result.json"),
        "{\"experiment\": ",
    )
    .unwrap();
    report::write_index(tmp.path()).unwrap();
    let html = read(&tmp.path().join("index.html"));
    assert!(
        html.contains("Unreadable results"),
        "corrupt result not reported"
    );
    assert!(html.contains("vmp-getpid/result.json"));
    assert!(html.contains("id=\"migration-bandwidth\""));
    let md = read(&tmp.path().join("README.md"));
    assert!(md.contains("Unreadable results"));

    let leftovers: Vec<_> = walk(tmp.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn real_mode_repeats_give_min_median_max_and_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let bw = registry::find("migration-bandwidth").unwrap();
    let runs: Vec<_> = [5.0, 1.0, 3.0]
        .iter()
        .map(|&v| {
            let mut m = std::collections::BTreeMap::new();
            m.insert("lapi_mbit_s".to_string(), v);
            m
        })
        .collect();
    let extra = report::RunExtra {
        repeats: runs,
        ..Default::default()
    };
    let dir = report::write_with(tmp.path(), &bw, Mode::Real, 1, output(5.0), &extra).unwrap();
    let r: report::ResultFile = serde_json::from_str(&read(&dir.join("result.json"))).unwrap();
    assert_eq!(r.repeats, 3);
    let s = r.spread["lapi_mbit_s"];
    assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
    assert_eq!(r.metrics["lapi_mbit_s"], 3.0, "metrics hold the median");
    let p = r.provenance.expect("real mode records its machine");
    assert!(p.cores >= 1 && !p.cpu.is_empty() && p.date.ends_with('Z'));
    assert!(r.command.contains("--mode real") && r.command.contains("--repeat 3"));
    let html = read(&tmp.path().join("index.html"));
    assert!(html.contains("<th>min</th><th>max</th>"));

    // An experiment that repeats itself reports `<m>_min` / `<m>_max` and `repeats`.
    let ray = registry::find("phoenix-raytrace").unwrap();
    let mut own = ExperimentOutput::default();
    for (k, v) in [
        ("eff", 0.96),
        ("eff_min", 0.95),
        ("eff_max", 0.97),
        ("repeats", 3.0),
    ] {
        own.metrics.insert(k.into(), v);
    }
    let dir = report::write(tmp.path(), &ray, Mode::Real, 1, own).unwrap();
    let r: report::ResultFile = serde_json::from_str(&read(&dir.join("result.json"))).unwrap();
    assert_eq!(r.repeats, 3);
    let s = r.spread["eff"];
    assert_eq!((s.min, s.median, s.max), (0.95, 0.96, 0.97));
}
