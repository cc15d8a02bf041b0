//! The example programs' command lines, as the README shows them: like-count runs a small job
//! to a verified result with options in both `--key value` and `--key=value` form, refuses a
//! bad value with a usage error (exit code 2) before touching any data; log-verify reports a
//! cleanly closed log without findings and refuses a missing argument.

use std::process::Command;

fn like_count() -> Command {
    Command::new(env!("CARGO_BIN_EXE_like-count"))
}

#[test]
fn like_count_verifies_a_small_run_and_log_verify_finds_a_clean_log_clean() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let out = like_count()
        .args([
            "--events",
            "3000",
            "--products=20",
            "--users",
            "100",
            "--threads=1",
        ])
        .args(["--guarantee", "at_least_once", "--dir"])
        .arg(&data)
        .output()
        .expect("like-count runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verified: 20 products, 3000 events") && stdout.contains(" 0 mismatches"),
        "{stdout}"
    );
    // like-count removes its data when it ends, so log-verify checks a log closed here.
    let log = core_log::Log::open(dir.path().join("log")).expect("a log");
    log.create_topic("t", 1, core_log::TopicConfig::default())
        .expect("a topic");
    log.close().expect("a clean close");
    let verify = Command::new(env!("CARGO_BIN_EXE_log-verify"))
        .arg(dir.path().join("log"))
        .output()
        .expect("log-verify runs");
    assert!(verify.status.success(), "{verify:?}");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("0 findings"));
}

#[test]
fn a_bad_option_is_a_usage_error_that_names_it() {
    for args in [
        &["--unlike-ratio", "1.5"][..],
        &["--threads", "0"],
        &["--guarantee", "exactly_once"],
        &["--events", "many"],
        &["--no-such-option"],
    ] {
        let out = like_count().args(args).output().expect("like-count runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_log-verify"))
        .output()
        .expect("log-verify runs");
    assert_eq!(out.status.code(), Some(2));
}
