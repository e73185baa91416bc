//! The `keyward` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Starts `keyward <args> serve` on a free port and returns the log lines up to the one that
/// says it is serving.
fn log_until_serving(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .args(["serve", "--demo", "false", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("keyward is serving");
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("keyward is serving")),
        "{lines:?}"
    );
    lines
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    let lines = log_until_serving(&["--log-format", "json"]);
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
    }
    let serving: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["fields"]["message"], "keyward is serving");
    assert!(
        serving["fields"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[test]
fn the_default_log_is_text_for_people() {
    let lines = log_until_serving(&[]);
    let last = lines.last().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(last).is_err(),
        "{last}"
    );
    assert!(last.contains("INFO"), "{last}");
}
