//! The report as a person sees it: `index.html` loaded in headless Chromium. [`check_page`]
//! reports images that did not load, JavaScript errors and local links that lead nowhere;
//! [`screenshot`] writes a full-page PNG for review.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

/// Most time one headless page load may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// Screenshots taller than this are cut (a bound on the PNG, about 200 MB of pixels).
const MAX_SCREENSHOT_HEIGHT: u32 = 60_000;

/// What the browser saw.
#[derive(Debug, Default)]
pub struct PageCheck {
    pub images: usize,
    pub broken_images: Vec<String>,
    pub js_errors: Vec<String>,
    pub broken_links: Vec<String>,
    /// Full page height in CSS pixels.
    pub height: u32,
}

impl PageCheck {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        p.extend(
            self.broken_images
                .iter()
                .map(|i| format!("image not loaded: {i}")),
        );
        p.extend(
            self.js_errors
                .iter()
                .map(|e| format!("JavaScript error: {e}")),
        );
        p.extend(
            self.broken_links
                .iter()
                .map(|l| format!("broken link: {l}")),
        );
        p
    }
}

/// The browser: `$GRIDBED_CHROMIUM`, else the first of chromium / chromium-browser /
/// google-chrome on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GRIDBED_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| {
            ["chromium", "chromium-browser", "google-chrome"]
                .into_iter()
                .map(move |n| d.join(n))
        })
        .find(|p| p.is_file())
}

/// Runs at the very start of the page: records errors, and after `load` writes what it found
/// into a `<pre>` that `--dump-dom` prints.
const PROBE: &str = r#"<script>
window.__gbErrors = [];
window.addEventListener('error', function (e) {
  if (e.target && e.target !== window && (e.target.src || e.target.href)) return;
  window.__gbErrors.push(String(e.message || e.error || 'error'));
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__gbErrors.push('unhandled rejection: ' + String(e.reason)); });
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = {
    images: imgs.length,
    broken_images: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.getAttribute('src'); }),
    errors: window.__gbErrors,
    links: Array.prototype.map.call(document.querySelectorAll('a[href]'), function (a) { return a.getAttribute('href'); }),
    ids: Array.prototype.map.call(document.querySelectorAll('[id]'), function (e) { return e.id; }),
    height: Math.ceil(document.documentElement.scrollHeight)
  };
  var pre = document.createElement('pre');
  pre.id = 'gridbed-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

#[derive(Deserialize)]
struct Probe {
    images: usize,
    broken_images: Vec<Option<String>>,
    errors: Vec<String>,
    links: Vec<String>,
    ids: Vec<String>,
    height: u32,
}

/// A fresh, private browser profile, removed on drop.
struct Profile(PathBuf);

impl Profile {
    fn new() -> anyhow::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("gridbed-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Profile(dir))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Chromium with the flags of a quiet, private, offline headless run.
fn chromium(profile: &Profile) -> anyhow::Result<Command> {
    let exe = find_chromium()
        .context("no Chromium found (install it with scripts/setup.sh, or set GRIDBED_CHROMIUM)")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.0.display()));
    Ok(cmd)
}

/// Runs the command to completion within [`BROWSER_TIMEOUT`]; returns stdout.
fn run_bounded(mut cmd: Command) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start Chromium")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let out = reader.join().unwrap_or_default();
            anyhow::ensure!(status.success(), "Chromium exited with {status}");
            return Ok(out);
        }
        if t0.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("Chromium took more than {BROWSER_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_url(p: &Path) -> anyhow::Result<String> {
    let abs = p
        .canonicalize()
        .with_context(|| format!("cannot find {}", p.display()))?;
    Ok(format!("file://{}", abs.display()))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Loads `page` in headless Chromium and reports what did not work.
pub fn check_page(page: &Path) -> anyhow::Result<PageCheck> {
    let html =
        std::fs::read_to_string(page).with_context(|| format!("cannot read {}", page.display()))?;
    let dir = page.parent().unwrap_or(Path::new("."));
    // A probed copy beside the page, so its relative links resolve the same way.
    let probed = dir.join(format!(".gridbed-check-{}.html", std::process::id()));
    let body = match html.find("<head>") {
        Some(i) => format!("{}{PROBE}{}", &html[..i + 6], &html[i + 6..]),
        None => format!("{PROBE}{html}"),
    };
    std::fs::write(&probed, body).with_context(|| format!("cannot write {}", probed.display()))?;
    let result = (|| {
        let profile = Profile::new()?;
        let mut cmd = chromium(&profile)?;
        cmd.args(["--virtual-time-budget=10000", "--dump-dom"]);
        cmd.arg(file_url(&probed)?);
        let dom = run_bounded(cmd)?;
        let start = dom
            .find("<pre id=\"gridbed-check\">")
            .context("the page never finished loading (no probe output)")?;
        let rest = &dom[start + "<pre id=\"gridbed-check\">".len()..];
        let end = rest.find("</pre>").context("probe output cut short")?;
        let probe: Probe =
            serde_json::from_str(&unescape(&rest[..end])).context("probe output unreadable")?;
        Ok::<_, anyhow::Error>(probe)
    })();
    let _ = std::fs::remove_file(&probed);
    let probe = result?;
    Ok(PageCheck {
        images: probe.images,
        broken_images: probe
            .broken_images
            .into_iter()
            .map(|s| s.unwrap_or_else(|| "<no src>".into()))
            .collect(),
        js_errors: probe.errors,
        broken_links: broken_links(dir, &probe.links, &probe.ids),
        height: probe.height,
    })
}

/// Local links whose file or anchor does not exist (links to other sites are not followed).
fn broken_links(dir: &Path, links: &[String], ids: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for link in links {
        if let Some(anchor) = link.strip_prefix('#') {
            if !ids.iter().any(|i| i == anchor) {
                bad.push(link.clone());
            }
            continue;
        }
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let path = link.split(['#', '?']).next().unwrap_or("");
        if path.is_empty() || !dir.join(path).exists() {
            bad.push(link.clone());
        }
    }
    bad
}

/// Writes a full-page PNG of `page`, `width` CSS pixels wide; returns the height captured.
pub fn screenshot(page: &Path, png: &Path, width: u32) -> anyhow::Result<u32> {
    let height = check_page(page)?.height.clamp(200, MAX_SCREENSHOT_HEIGHT);
    let profile = Profile::new()?;
    let mut cmd = chromium(&profile)?;
    let abs_png = std::env::current_dir()?.join(png);
    cmd.arg(format!("--screenshot={}", abs_png.display()));
    cmd.arg(format!("--window-size={width},{height}"));
    cmd.arg(file_url(page)?);
    run_bounded(cmd)?;
    anyhow::ensure!(abs_png.is_file(), "Chromium wrote no screenshot");
    Ok(height)
}
