//! The crate's layers import only downward (ARCHITECTURE.md, "Layers"). Each source file
//! belongs to a layer by its path; every `crate::<module>` it names must be of its own layer or
//! one below. Test code (`tests.rs`, `*_tests.rs`, and what follows `mod tests {`) may reach
//! anything, and so may comments and doc examples.
//!
//! ```text
//!   4  log.rs, lib.rs              the Log façade
//!   3  client/                     producer, consumer, admin
//!   2  coordinator/, broker.rs     group and transaction coordinators, producer ids
//!   1  storage/                    partitions, segments, recovery, topics, maintenance
//!   0  records and codec           record, codec, compression, wire, serialization, error,
//!                                  clock, sync
//! ```

use std::path::{Path, PathBuf};

/// The layer of the top-level module `name` (`crate::<name>`).
fn layer_of_module(name: &str) -> Option<u8> {
    Some(match name {
        "error" | "clock" | "sync" | "record" | "codec" | "compression" | "wire"
        | "serialization" => 0,
        "storage" => 1,
        "coordinator" | "broker" => 2,
        "client" => 3,
        "log" => 4,
        _ => return None,
    })
}

/// The layer of a source file, by its path under `src/`.
fn layer_of_file(relative: &Path) -> u8 {
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    let module = first.strip_suffix(".rs").unwrap_or(first);
    if module == "lib" {
        return 4;
    }
    layer_of_module(module).unwrap_or_else(|| panic!("{} is in no layer", relative.display()))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` a line of code names.
fn crate_modules(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        // `crate::{a, b}` groups: each name counts.
        if after.starts_with('{') {
            let close = after.find('}').unwrap_or(after.len());
            out.extend(
                after[1..close]
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or_default())
                    .filter(|s| !s.is_empty()),
            );
        } else if end > 0 {
            out.push(&after[..end]);
        }
        rest = &after[end.max(1).min(after.len())..];
    }
    out
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 40, "found only {} files", files.len());
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let layer = layer_of_file(relative);
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("mod tests") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for module in crate_modules(code) {
                let Some(target) = layer_of_module(module) else {
                    continue; // a re-exported item of lib.rs (`crate::Log`) in test code
                };
                if target > layer {
                    violations.push(format!(
                        "{}:{}: layer {layer} names crate::{module} (layer {target})",
                        relative.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The checker itself finds what it must: grouped imports, paths in expressions.
#[test]
fn the_checker_reads_paths_in_every_form() {
    assert_eq!(
        crate_modules("use crate::storage::partition::Partition;"),
        ["storage"]
    );
    assert_eq!(
        crate_modules("use crate::{log, client::admin};"),
        ["log", "client"]
    );
    assert_eq!(
        crate_modules("let g = crate::sync::lock(&self.x);"),
        ["sync"]
    );
    assert_eq!(layer_of_file(Path::new("storage/partition/segment.rs")), 1);
    assert_eq!(layer_of_file(Path::new("broker.rs")), 2);
    assert_eq!(layer_of_file(Path::new("lib.rs")), 4);
}
