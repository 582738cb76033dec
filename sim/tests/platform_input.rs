//! Platform files are user input: every bad one is a one-line error, never a panic or a huge
//! allocation.

use gridbed_sim::{Platform, SimError};

fn err(text: &str) -> String {
    match Platform::from_toml(text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

const LAN: &str = "[[lans]]\nname = \"a\"\nhosts = 2\npreset = \"gige-tcp\"\n";

#[test]
fn a_good_file_parses() {
    let p = Platform::from_toml(LAN).unwrap();
    assert_eq!(p.host_count(), 2);
    let mut want = Platform::lans(1, 2, "gige-tcp").unwrap();
    want.lans[0].name = "a".into();
    assert_eq!(p, want);
}

#[test]
fn bad_platforms_are_one_line_errors() {
    let cases: &[(String, &str)] = &[
        (
            format!("cpu_hz = 0.0\n{LAN}"),
            "cpu_hz must be a number from",
        ),
        (
            format!("cpu_hz = -1e9\n{LAN}"),
            "cpu_hz must be a number from",
        ),
        (
            format!("cpu_hz = nan\n{LAN}"),
            "cpu_hz must be a number from",
        ),
        (
            format!("cpu_hz = inf\n{LAN}"),
            "cpu_hz must be a number from",
        ),
        (
            "[[lans]]\nname = \"a\"\nhosts = 4000000000\npreset = \"gige-tcp\"\n".into(),
            "at most 100000",
        ),
        (
            format!("{LAN}[[lans]]\nname = \"b\"\nhosts = 4294967295\npreset = \"gige-tcp\"\n"),
            "at most 100000",
        ),
        (
            "[[lans]]\nname = \"a\"\nhosts = 99999999999\npreset = \"gige-tcp\"\n".into(),
            "hosts",
        ),
        (
            "[[lans]]\nname = \"a\"\nhosts = -1\npreset = \"gige-tcp\"\n".into(),
            "hosts",
        ),
        (
            format!("{LAN}[[lans]]\nname = \"z\"\nhosts = 0\npreset = \"gige-tcp\"\n"),
            "LAN z has no hosts",
        ),
        ("lans = []\n".into(), "at least one host"),
        (
            "[[lans]]\nname = \"a\"\nhosts = 2\npreset = \"token-ring\"\n".into(),
            "unknown transport preset 'token-ring'",
        ),
        (
            "[[lans]]\nname = \"a\"\nhosts = 2\n".into(),
            "neither preset nor transport",
        ),
        (
            format!("{LAN}[backbone]\nuplink_mbit_s = 0.0\nlatency_us = 1.0\n"),
            "uplink_mbit_s must be a number from",
        ),
        (
            format!("{LAN}[backbone]\nuplink_mbit_s = 10.0\nlatency_us = -1.0\n"),
            "latency_us must be a number from",
        ),
        (
            format!("{LAN}[[hosts]]\nhost = 7\n"),
            "override for host 7 but only 2 hosts",
        ),
        (
            format!("{LAN}[[hosts]]\nhost = 1\ncpu_hz = 0.0\n"),
            "host 1: cpu_hz must be a number from",
        ),
        (
            format!("{LAN}[[hosts]]\nhost = 1\nbackground_jobs = 100000\n"),
            "at most 1000",
        ),
        (format!("{LAN}colour = \"blue\"\n"), "unknown field"),
        // Finite and positive is not enough: a 1e-300 Hz CPU or link makes every time infinite.
        (
            format!("cpu_hz = 1e-300\n{LAN}"),
            "cpu_hz must be a number from",
        ),
        (
            format!("cpu_hz = 1e300\n{LAN}"),
            "cpu_hz must be a number from",
        ),
        (
            format!("{LAN}[backbone]\nuplink_mbit_s = 1e-300\nlatency_us = 1.0\n"),
            "uplink_mbit_s must be a number from",
        ),
        (
            transport("1e-300", "38"),
            "link_mbit_s must be a number from",
        ),
        // header + framing bytes were summed in a u32.
        (
            transport("100.0", "4294967295"),
            "framing_bytes must be at most",
        ),
        (
            format!("{LAN}[[hosts]]\nhost = 1\ncpu_hz = 1e9\n[[hosts]]\nhost = 1\n"),
            "two overrides for host 1",
        ),
        (format!("{LAN}{LAN}"), "two LANs are named a"),
        (LAN.replace("\"a\"", "\"\""), "empty name"),
        ("this is not toml".into(), "invalid platform"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(!e.contains('\n'), "{text:?}: more than one line: {e}");
    }
}

/// A LAN with explicit transport parameters.
fn transport(link_mbit_s: &str, framing_bytes: &str) -> String {
    format!(
        "[[lans]]\nname = \"a\"\nhosts = 2\n[lans.transport]\nlink_mbit_s = {link_mbit_s}\n\
         latency_us = 10.0\nmtu_bytes = 1500\nheader_bytes = 40\nframing_bytes = {framing_bytes}\n\
         per_packet_us = 1.0\ncopy_mb_s = 1000.0\ncopies = 1.0\nsoftware_checksum = false\n\
         per_call_us = 1.0\nacks_share_link = false\npackets_per_ack = 1\nack_frame_bytes = 0\n"
    )
}

#[test]
fn explicit_transport_parses() {
    let p = Platform::from_toml(&transport("100.0", "38")).unwrap();
    assert!(p.transport_of(0).cost().alpha_s > 0.0);
}

#[test]
fn a_missing_file_names_the_file() {
    let e = Platform::from_toml_file(std::path::Path::new("/nonexistent/p.toml")).unwrap_err();
    assert!(matches!(e, SimError::Platform(_)));
    assert!(e.to_string().contains("/nonexistent/p.toml"), "{e}");
}
