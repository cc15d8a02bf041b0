//! The crate's layers, checked from its source files: a file imports only modules of its own
//! layer or of layers below it (ARCHITECTURE.md, "streams: layers"). In particular the
//! declaration (`dsl/`, `builder.rs`, `topology.rs`) never imports the runtime, and the
//! runtime never imports the `Streams` handle (`app.rs`) that owns it.
//!
//! The check reads `crate::` paths, outside comments and `#[cfg(test)]` modules (a test may
//! run a whole application). Paths through the crate root's re-exports (`crate::KStream`)
//! hide the module they come from, so they are refused.
//!
//! A second check keeps the client seam: only `client/` (the embedded log's clients) and the
//! test driver (which pipes records through the embedded log) name core-log's log, broker,
//! partitions or clients; everything else reaches the log through `client`'s traits.

use std::path::{Path, PathBuf};

/// The layers, lowest first, and the top-level modules of each.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &["error", "serde", "window", "hot_keys", "sync"],
    ),
    ("clients", &["client"]),
    ("record collector", &["record_collector"]),
    ("state stores", &["state"]),
    ("config", &["config"]),
    ("processor API", &["processor"]),
    ("declaration", &["topology", "builder", "dsl"]),
    ("runtime", &["runtime"]),
    ("application", &["app", "test_driver"]),
];

/// Inside `state/`, the store layers, lowest first: each file imports only the layers below
/// it (`state.rs` holds the backend trait).
const STORE_LAYERS: &[(&str, &[&str])] = &[
    ("backends", &["state", "state/memory", "state/rocksdb"]),
    ("change logging", &["state/change_logging"]),
    ("held writes", &["state/held_writes"]),
    ("caching", &["state/caching"]),
    ("typed store", &["state/store"]),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

fn store_layer_of(file: &str) -> Option<(usize, &'static str)> {
    STORE_LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, files))| files.contains(&file))
        .map(|(i, (name, _))| (i, *name))
}

/// The source without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = String::new();
    for line in text.lines() {
        let mut in_string = false;
        let mut prev = ' ';
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && prev != '\\' {
                in_string = !in_string;
            }
            if !in_string && c == '/' && prev == '/' {
                end = i - 1;
                break;
            }
            prev = c;
        }
        out.push_str(&line[..end]);
        out.push('\n');
    }
    out
}

/// The first path segment after each `crate::` (each item of a `crate::{a::X, b::Y}` group),
/// with the rest of the path: `("runtime", "runtime::task::Task")`.
fn crate_paths(code: &str) -> Vec<(String, String)> {
    paths(code, "crate::")
}

/// The first path segment after each `prefix` (each item of a `prefix{a::X, b::Y}` group),
/// with the rest of the path.
fn paths(code: &str, prefix: &str) -> Vec<(String, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let path = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        // `crate::` inside `moldau_crate::` is not this crate.
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let p = path(item.trim());
                        out.push((ident(&p), p));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            let p = path(item.trim());
            if !p.is_empty() {
                out.push((ident(&p), p));
            }
        } else {
            let p = path(rest);
            out.push((ident(&p), p));
        }
    }
    out
}

/// What is wrong with the imports of `file` (its path under `src/`, without `.rs`).
fn violations(file: &str, text: &str) -> Vec<String> {
    let own = file.split('/').next().unwrap_or(file);
    let Some((own_layer, own_name)) = layer_of(own) else {
        return vec![format!(
            "src/{file}.rs is in no layer: add its module to LAYERS in streams/tests/layers.rs \
             (and to ARCHITECTURE.md)"
        )];
    };
    let mut out = Vec::new();
    for (module, path) in crate_paths(&code(text)) {
        if module.starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push(format!(
                "src/{file}.rs uses crate::{path}, a root re-export: name its module instead"
            ));
            continue;
        }
        let Some((layer, name)) = layer_of(&module) else {
            out.push(format!(
                "src/{file}.rs uses crate::{path}, of a module in no layer"
            ));
            continue;
        };
        if layer > own_layer {
            out.push(format!(
                "src/{file}.rs ({own_name}) imports crate::{path} ({name}, a layer above it)"
            ));
        }
        if own == "state" && module == "state" {
            // `state::x::Item` is in file `state/x`; `state::Item` in `state.rs`.
            let segments: Vec<&str> = path.split("::").collect();
            let target = match segments.as_slice() {
                [_, sub, _, ..] => format!("state/{sub}"),
                _ => "state".to_owned(),
            };
            let from = store_layer_of(file);
            let to = store_layer_of(&target);
            if from.is_none() {
                out.push(format!(
                    "src/{file}.rs is in no store layer: add it to STORE_LAYERS"
                ));
            }
            if let (Some((from, from_name)), Some((to, to_name))) = (from, to)
                && to > from
            {
                out.push(format!(
                    "src/{file}.rs ({from_name}) imports crate::{path} ({to_name}, a store \
                     layer above it)"
                ));
            }
        }
    }
    out
}

/// What core-log's clients, log or storage are named, outside the client seam.
const BEHIND_THE_SEAM: &[&str] = &[
    "Log",
    "LogBuilder",
    "Broker",
    "Partition",
    "Producer",
    "Consumer",
    "Admin",
    "ConsumerRebalanceListener",
];

/// The files that may name what is behind the seam: the embedded log's clients, and the test
/// driver, which runs tasks on an embedded log it pipes records through.
fn may_name_the_log(file: &str) -> bool {
    file == "client" || file.starts_with("client/") || file == "test_driver"
}

/// Where `file` names core-log's log or clients past the client seam.
fn seam_violations(file: &str, text: &str) -> Vec<String> {
    if may_name_the_log(file) {
        return Vec::new();
    }
    paths(&code(text), "core_log::")
        .into_iter()
        .filter(|(first, path)| {
            let last = path.rsplit("::").next().unwrap_or(first);
            BEHIND_THE_SEAM.contains(&first.as_str()) || BEHIND_THE_SEAM.contains(&last)
        })
        .map(|(_, path)| {
            format!(
                "src/{file}.rs uses core_log::{path}: reach the log through crate::client's \
                 traits (the client seam)"
            )
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_imports_only_its_layer_and_those_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut problems = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&src).expect("under src/");
        let file = relative.with_extension("");
        let file = file.to_string_lossy().replace('\\', "/");
        if file == "lib" {
            continue; // the crate root: module declarations and the public re-exports
        }
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        problems.extend(violations(&file, &text));
        problems.extend(seam_violations(&file, &text));
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_finds_a_declaration_importing_the_runtime() {
    let dsl = "//! crate::runtime in a comment is fine\n\
               use crate::builder::Data;\n\
               use crate::runtime::task::Task;\n";
    let found = violations("dsl/stream", dsl);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("crate::runtime::task::Task"), "{found:?}");

    let grouped = "use crate::{error::Result, runtime::thread::run};";
    assert_eq!(violations("topology", grouped).len(), 1);
    assert!(
        violations("builder", "fn f() -> crate::Topology { todo!() }")[0]
            .contains("root re-export")
    );
}

#[test]
fn the_check_finds_the_runtime_importing_the_application() {
    let found = violations("runtime/thread", "use crate::app::Streams;\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(violations("app", "use crate::runtime::shared::AppShared;\n").is_empty());
    // Test modules may use anything.
    assert!(
        violations(
            "runtime/task",
            "#[cfg(test)]\nmod tests { use crate::app::Streams; }"
        )
        .is_empty()
    );
}

#[test]
fn the_check_finds_a_store_layer_importing_one_above_it() {
    let found = violations("state/caching", "use crate::state::store::Store;\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(violations("state/store", "use crate::state::caching::RecordCache;\n").is_empty());
    assert!(violations("state/caching", "use crate::state::KeyValueStore;\n").is_empty());
    let found = violations(
        "state/change_logging",
        "use crate::state::held_writes::HeldWrites;\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn the_check_finds_the_runtime_naming_the_log_past_the_seam() {
    let found = seam_violations(
        "runtime/task",
        "use core_log::{Clock, Log, TopicPartition};\nfn f(p: &core_log::Partition) {}\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("core_log::Log"), "{found:?}");
    let grouped = seam_violations("state/store", "use core_log::{client::Producer, Clock};");
    assert_eq!(grouped.len(), 1, "{grouped:?}");
    // Records, configs and errors are the seam's own vocabulary; the seam may name the log.
    assert!(
        seam_violations(
            "runtime/thread",
            "use core_log::{ConsumerConfig, ProducerRecord, TopicPartition};"
        )
        .is_empty()
    );
    assert!(seam_violations("client/embedded", "use core_log::{Log, Producer};").is_empty());
}
