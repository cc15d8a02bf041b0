//! Checks a closed log directory without changing it, and prints what the next open will do
//! with every damaged range: `cargo run --release -p moldau-examples --bin log-verify -- DIR`.
//! Exits 0 when nothing is found, 1 when something is, 2 when the directory cannot be read.
//! (The `moldau` command-line tool will take this over as `moldau verify`.)

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: log-verify DIR");
        return ExitCode::from(2);
    };
    let report = match core_log::verify(&dir) {
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
