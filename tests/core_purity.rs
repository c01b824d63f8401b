//! `src/core` is the pure decision core: observation in, decision out. It may not reach the
//! runtime, the network, the disk, processes or a clock, and it may not depend on any other
//! module of quorate (everything else depends on it, never the other way round). This test
//! reads every file under `src/core` as text and names each line that breaks the rule.

use std::fs;
use std::path::{Path, PathBuf};

/// Names a pure core never mentions: runtimes, RPC, storage engines, I/O, processes, threads
/// and clocks. Matched as whole path segments, outside comments.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tonic",
    "prost",
    "sled",
    "redb",
    "openraft",
    "nix",
    "libc",
    "rtnetlink",
    "mysql_async",
    "std::process",
    "std::net",
    "std::fs",
    "std::thread",
    "std::io",
    "std::env",
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
];

/// Every violation in one file's text, as `line: what`.
fn violations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = strip_comment(line);
        for name in FORBIDDEN {
            if mentions(code, name) {
                found.push(format!("{}: names `{name}`: {}", number + 1, line.trim()));
            }
        }
        if let Some(at) = code.find("crate::") {
            let rest = &code[at + "crate::".len()..];
            if !rest.starts_with("core") {
                found.push(format!(
                    "{}: depends on another quorate module: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

/// The line without a trailing `//` comment (core has no string literal holding `//`).
fn strip_comment(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// True when `name` occurs in `code` as a whole path: not as part of a longer identifier.
fn mentions(code: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(offset) = code[from..].find(name) {
        let start = from + offset;
        let end = start + name.len();
        let before_ok = code[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c));
        let after_ok = code[end..].chars().next().is_none_or(|c| !is_ident(c));
        if before_ok && after_ok {
            return true;
        }
        from = end;
    }
    false
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_names_no_io_runtime_clock_or_other_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() >= 5,
        "expected the core's files under {}, found {files:?}",
        root.display()
    );
    let mut report = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("read a core file");
        for v in violations(&text) {
            report.push(format!("{}:{v}", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "src/core must stay pure:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_scanner_catches_what_it_forbids_and_passes_the_rest() {
    let bad = "use tokio::time::sleep;\n\
               let now = std::time::Instant::now();\n\
               use crate::consensus::state::Request;\n\
               let out = std::process::Command::new(\"x\");\n";
    let found = violations(bad);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].starts_with("1: names `tokio`"), "{found:?}");
    assert!(found[2].contains("another quorate module"), "{found:?}");

    let good = "use crate::core::view::Owner;\n\
                // tokio is never named here, only in comments\n\
                let tokios_friend = 1; // sled\n\
                let x = super::time::Millis(3);\n";
    assert!(violations(good).is_empty(), "{:?}", violations(good));
}
