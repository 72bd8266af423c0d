//! The `stdac` commands as a user runs them.

use std::process::{Command, Stdio};

fn stdac(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stdac")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn last_json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

#[test]
fn selftest_without_a_port_checks_a_local_firmware_end_to_end() {
    let output = stdac(&["selftest", "--pings", "50"]);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let report = last_json_line(&output.stdout);
    assert_eq!(report["ok"], true);
    assert_eq!(report["pings"], 50);
    assert_eq!(report["device"]["protocol"], stdac_protocol::PROTOCOL_VERSION);
    assert_eq!(report["device"]["model"], serde_json::Value::Null);
    assert!(report["device_rx_errors"].as_u64().unwrap() >= 3, "the injected noise was seen: {report}");
    assert!(report["rtt_us_median"].as_u64().unwrap() > 0);
}

#[test]
fn info_reads_the_hello_of_the_firmware_run_by_stdac_device() {
    // Two pseudo-terminals joined back to back, like a null-modem cable: each end has a path to open.
    let line = stdac::relay::Relay::start(Default::default()).unwrap();
    let (board_end, host_end) = (line.device_port.clone(), line.host_port.clone());
    let mut device = Command::new(env!("CARGO_BIN_EXE_stdac"))
        .args(["device", "--port", &board_end])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = stdac(&["info", "--port", &host_end]);
    let _ = device.kill();
    let _ = device.wait();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let hello = last_json_line(&output.stdout);
    assert_eq!(hello["port"], host_end.as_str());
    assert_eq!(hello["protocol"], stdac_protocol::PROTOCOL_VERSION);
    assert_eq!(hello["firmware"], env!("CARGO_PKG_VERSION"));
    assert_eq!(hello["model"], serde_json::Value::Null);
}

#[test]
fn flash_refuses_a_file_that_is_no_bundle_before_touching_any_port() {
    let output = stdac(&["flash", "--port", "/dev/stdac-no-such-port", "--bundle", "Cargo.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Cargo.toml"), "the error names the file: {stderr}");
    assert!(!stderr.contains("no-such-port"), "the port is not opened for a bad bundle: {stderr}");
}

#[test]
fn a_missing_port_fails_with_its_name_and_a_non_zero_exit() {
    let output = stdac(&["info", "--port", "/dev/stdac-no-such-port", "--timeout-ms", "100"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("stdac: error: cannot open serial port /dev/stdac-no-such-port"), "{stderr}");
}
