//! Running the `stdac` binary as a user does, shared by the command-line test files.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Command, Output};

pub fn stdac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stdac")).args(args).output().unwrap()
}

/// The standard output of a command that must succeed (both outputs shown when it does not).
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The standard error of a command that must fail.
pub fn error(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The JSON object a command prints as its last line.
pub fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}
