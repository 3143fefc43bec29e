//! `loci bench udp-send` and `udp-recv` on loopback: every paced datagram counted, none lost,
//! and targets outside loopback refused.

use std::net::UdpSocket;
use std::process::{Command, Stdio};

fn loci() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loci"))
}

fn field(json: &str, key: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {json}"))
}

#[test]
fn paced_datagrams_arrive_counted_and_in_sequence() {
    // A free port: bind, note it, let go (the receiver binds it next).
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let recv = loci()
        .args(["bench", "udp-recv", "--listen", &addr, "--secs", "10", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let send = loci()
        .args(["bench", "udp-send", "--to", &addr, "--size", "64", "--pps", "4000", "--secs", "0.5"])
        .args(["--flows", "3", "--json"])
        .output()
        .unwrap();
    assert!(send.status.success(), "{}", String::from_utf8_lossy(&send.stderr));
    let sent = String::from_utf8(send.stdout).unwrap();
    assert_eq!(field(&sent, "packets"), 2000.0, "{sent}");
    let elapsed = field(&sent, "secs");
    assert!((0.45..2.0).contains(&elapsed), "paced over about 0.5 s: {sent}");
    let out = recv.wait_with_output().unwrap();
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(&got, "packets"), 2000.0, "{got}");
    assert_eq!(field(&got, "lost"), 0.0, "{got}");
}

#[test]
fn udp_targets_beyond_loopback_need_lab_and_lab_ranges() {
    for (to, lab, why) in [
        ("8.8.8.8:9", true, "only loopback"),
        ("10.2.2.2:9", false, "only loopback"),
        ("192.168.1.1:9", true, "only loopback"),
        ("127.0.0.1:9", false, "--size"),
    ] {
        let mut c = loci();
        c.args(["bench", "udp-send", "--to", to, "--pps", "10", "--secs", "0.1", "--size", "4"]);
        if lab {
            c.arg("--lab");
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{to}: {err}");
    }
}
