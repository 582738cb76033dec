//! The workspace's dependency rules (ARCHITECTURE.md, "Invariants"), checked on `cargo metadata`:
//! every arrow between gridbed crates points one way, and the model crates know only the runtime
//! interface. Dev-dependencies are free (tests may run a model on either backend).

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Where a workspace crate sits, from its manifest's folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Runtime,
    Backend,
    Model,
    Vmp,
    Driver,
    Experiments,
}

fn layer(manifest_dir: &str) -> Option<Layer> {
    let dir = manifest_dir.trim_end_matches('/');
    let (parent, name) = dir.rsplit_once('/')?;
    let grand = parent.rsplit('/').next()?;
    Some(match (grand, name) {
        ("models", _) => Layer::Model,
        ("drivers", _) => Layer::Driver,
        (_, "runtime") => Layer::Runtime,
        (_, "sim") | (_, "real") => Layer::Backend,
        (_, "vmp") => Layer::Vmp,
        (_, "experiments") => Layer::Experiments,
        _ => return None,
    })
}

/// May a crate of layer `from` depend (normally, not as a dev-dependency) on workspace crate `to`?
fn allowed(from: Layer, from_name: &str, to: Layer, to_name: &str) -> bool {
    use Layer::*;
    match from {
        Runtime => false,
        Backend | Model => to == Runtime,
        // vmp implements migration's `Migratable` for its guests; its `vmp litmus --machine smp`
        // runs the multiprocessor on the simulator (debt: that command belongs in a driver crate,
        // which would put vmp back on runtime + migration only).
        Vmp => to == Runtime || to_name == "gridbed-migration" || to_name == "gridbed-sim",
        // The cluster launcher is built on GXP's real driver (its daemon tree and logins); no
        // other driver depends on another.
        Driver => {
            matches!(to, Runtime | Model | Vmp)
                || to_name == "gridbed-real"
                || (from_name == "gridbed-cluster-driver" && to_name == "gridbed-gxp-driver")
        }
        Experiments => true,
    }
}

/// Libraries a model crate must not use: runtimes, argument parsers and OS process code belong
/// to the backends and drivers.
const NOT_IN_MODELS: &[&str] = &["tokio", "madsim", "clap", "libc", "nix", "rand"];

/// All the interface crate may use: it knows no report, no hash, no backend.
const RUNTIME_MAY_USE: &[&str] = &["serde", "thiserror"];

/// Every broken rule, one line each.
fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().expect("packages");
    let mut layers = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().expect("name");
        let manifest = p["manifest_path"].as_str().expect("manifest_path");
        let dir = manifest.trim_end_matches("Cargo.toml");
        layers.insert(name.to_string(), layer(dir));
    }
    let mut bad = Vec::new();
    for p in packages {
        let name = p["name"].as_str().expect("name");
        let Some(from) = layers[name] else {
            bad.push(format!("{name}: not in a known layer (runtime, sim, real, models/*, vmp, drivers/*, experiments)"));
            continue;
        };
        for d in p["dependencies"].as_array().expect("dependencies") {
            if !d["kind"].is_null() {
                continue; // dev- and build-dependencies
            }
            let dep = d["name"].as_str().expect("dependency name");
            match layers.get(dep) {
                Some(Some(to)) if !allowed(from, name, *to, dep) => bad.push(format!(
                    "{name} ({from:?}) must not depend on {dep} ({to:?})"
                )),
                Some(_) => {}
                None if from == Layer::Model && NOT_IN_MODELS.contains(&dep) => {
                    bad.push(format!("{name} (Model) must not depend on {dep}"))
                }
                None if from == Layer::Runtime && !RUNTIME_MAY_USE.contains(&dep) => {
                    bad.push(format!("{name} (Runtime) must not depend on {dep}"))
                }
                None => {}
            }
        }
    }
    bad
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

#[test]
fn dependencies_point_one_way() {
    let m = metadata();
    let names: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "gridbed-runtime",
        "gridbed-sim",
        "gridbed-real",
        "gridbed-gxp",
        "gridbed-phoenix",
        "gridbed-migration",
        "gridbed-vmp",
        "gridbed-experiments",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    assert_eq!(violations(&m), Vec::<String>::new());
}

/// The check itself must catch a model crate that gains a backend or an OS-process dependency.
#[test]
fn a_model_with_a_backend_dependency_is_caught() {
    let mut m = metadata();
    let gxp = m["packages"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"] == "gridbed-gxp")
        .expect("gridbed-gxp");
    let deps = gxp["dependencies"].as_array_mut().unwrap();
    deps.push(serde_json::json!({ "name": "gridbed-sim", "kind": null }));
    deps.push(serde_json::json!({ "name": "tokio", "kind": null }));
    deps.push(serde_json::json!({ "name": "gridbed-real", "kind": "dev" }));
    let mut v = violations(&m);
    v.retain(|line| line.starts_with("gridbed-gxp "));
    assert_eq!(
        v,
        vec![
            "gridbed-gxp (Model) must not depend on gridbed-sim (Backend)".to_string(),
            "gridbed-gxp (Model) must not depend on tokio".to_string(),
        ]
    );
}

/// ... and an interface crate that gains a report or hash dependency.
#[test]
fn a_runtime_with_a_report_dependency_is_caught() {
    let mut m = metadata();
    let rt = m["packages"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"] == "gridbed-runtime")
        .expect("gridbed-runtime");
    let deps = rt["dependencies"].as_array_mut().unwrap();
    deps.push(serde_json::json!({ "name": "sha2", "kind": null }));
    let v = violations(&m);
    assert_eq!(
        v,
        vec!["gridbed-runtime (Runtime) must not depend on sha2".to_string()]
    );
}
