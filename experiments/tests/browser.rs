//! The report in a real browser: headless Chromium loads index.html; a missing image, a broken
//! local link or a JavaScript error fails. Needs Chromium (scripts/setup.sh installs it); set
//! GRIDBED_NO_BROWSER=1 to skip on a machine without one.

use std::path::Path;

use gridbed_experiments::outcome::{ExperimentOutput, Figure, Mode, Series};
use gridbed_experiments::{browser, registry, report};

fn browser_available() -> bool {
    if browser::find_chromium().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("GRIDBED_NO_BROWSER").is_some(),
        "no Chromium: run scripts/setup.sh (or set GRIDBED_NO_BROWSER=1 to skip)"
    );
    false
}

fn sample_report(dir: &Path) {
    let mut out = ExperimentOutput::default();
    out.metrics.insert("lapi_mbit_s".into(), 446.0);
    out.set_units(&[("lapi_mbit_s", "Mbit/s")]);
    out.figures.push(Figure {
        id: "curve".into(),
        title: "curve".into(),
        x_label: "block size (bytes)".into(),
        y_label: "time (s)".into(),
        series: vec![Series {
            name: "a".into(),
            points: vec![(1.0, 1.0), (2.0, 2.0), (3.0, 2.5)],
        }],
        ..Default::default()
    });
    let exp = registry::find("migration-bandwidth").unwrap();
    report::write(dir, &exp, Mode::Sim, 1, out).unwrap();
}

#[test]
fn generated_report_renders_cleanly_and_breakage_is_caught() {
    if !browser_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    sample_report(tmp.path());
    let page = tmp.path().join("index.html");
    let ok = browser::check_page(&page).unwrap();
    assert!(ok.problems().is_empty(), "{:?}", ok.problems());
    assert!(ok.images >= 1 && ok.height > 500, "{ok:?}");

    // The same page with a missing image, a dangling anchor, a missing file and a script error.
    let html = std::fs::read_to_string(&page).unwrap().replace(
        "</body>",
        "<img src=\"no-such.svg\" alt=\"x\"><a href=\"#nowhere\">a</a><a href=\"gone/result.json\">b</a><script>notDefined();</script></body>",
    );
    let bad = tmp.path().join("bad.html");
    std::fs::write(&bad, html).unwrap();
    let c = browser::check_page(&bad).unwrap();
    assert_eq!(c.broken_images, vec!["no-such.svg".to_string()], "{c:?}");
    assert!(
        c.js_errors.iter().any(|e| e.contains("notDefined")),
        "{c:?}"
    );
    assert!(c.broken_links.contains(&"#nowhere".to_string()), "{c:?}");
    assert!(
        c.broken_links.contains(&"gone/result.json".to_string()),
        "{c:?}"
    );
}

#[test]
fn committed_report_renders_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports");
    if !dir.join("index.html").is_file() || !browser_available() {
        return;
    }
    // Checked in a copy: the probe page is written beside index.html.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir, tmp.path());
    let c = browser::check_page(&tmp.path().join("index.html")).unwrap();
    assert!(
        c.problems().is_empty(),
        "reports/index.html: {:?}",
        c.problems()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let target = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}
