//! Checks a closed log directory without changing it, and prints what the next open will do
//! with every damaged range: `cargo run --release -p moldau-examples --bin log-verify -- DIR`.
//! Exits 0 when nothing is found, 1 when something is, 2 when the directory cannot be read.
//! (The `moldau` command-line tool will take this over as `moldau verify`.)

use std::process::ExitCode;

/// Checks a closed log directory without changing it.
#[derive(clap::Parser)]
#[command(name = "log-verify", version)]
struct Args {
    /// The log directory.
    dir: std::path::PathBuf,
}

fn main() -> ExitCode {
    let args = match <Args as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; a bad command line is exit code 2, as below.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let dir = args.dir.display().to_string();
    let report = match core_log::verify(&args.dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("log-verify: {dir}: {e}");
            return ExitCode::from(2);
        }
    };
    for finding in &report.findings {
        println!("{finding}");
    }
    println!(
        "{dir}: {} partitions, {} segments, {} batches ({} bytes) checked; {} findings",
        report.partitions,
        report.segments,
        report.batches,
        report.bytes,
        report.findings.len()
    );
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
