//! `redis-cli` against one node of a test deployment, each run bounded in time.

use std::process::{Command, Stdio};

use super::DEADLINE;

/// `command` run under coreutils' `timeout`: killed if it is still running after `limit`
/// (a node that is paused or never answers), then reported as failed (status 124).
pub fn bounded(limit: std::time::Duration, program: &str) -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["--kill-after=2", &format!("{}s", limit.as_secs().max(1))])
        .arg(program);
    command
}

/// Runs the commands in `script` (one per line) on one connection to one node and
/// returns their output (what it printed before [`DEADLINE`], if it had to be stopped).
pub fn cli_script(port: u16, script: &str) -> String {
    use std::io::Write;
    let mut child = bounded(DEADLINE, "redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run redis-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to redis-cli");
    let output = child.wait_with_output().expect("redis-cli output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs one command against one node and returns its output (empty if it did not finish
/// within [`DEADLINE`]).
pub fn cli(port: u16, args: &[&str]) -> String {
    bounded(DEADLINE, "redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
