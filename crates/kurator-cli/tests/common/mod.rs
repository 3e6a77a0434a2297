//! What the CLI's integration tests share: running the built `kurator` binary, and the
//! controller as a process of its own.

// Each test binary uses part of this module.
#![allow(dead_code)]

pub mod controller;

use std::time::Duration;

use tokio::process::Command;

/// One finished run of the binary.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to its end, at most `timeout` (then the test fails naming `what`).
pub async fn run(command: &mut Command, what: &str, timeout: Duration) -> Run {
    let out = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} still running after {timeout:?}"))
        .expect("kurator runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}
