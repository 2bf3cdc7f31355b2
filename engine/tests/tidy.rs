//! House rules enforced by a test (STYLE §15): glommio is named only in `engine/src/runtime/`;
//! no protocols crate depends on a runtime, the engine or storage; every Rust source file
//! opens with a `//!` paragraph and stays under the size limit (files whose opening
//! paragraph says `@generated` are exempt from the size limit).

use std::fs;
use std::path::{Path, PathBuf};

const LINES_MAX: usize = 800;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("engine sits in the workspace").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != ".venv" && name != "fuzz" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["engine", "protocols", "storage", "benches", "perf"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found the sources ({} files)", files.len());
    files
}

#[test]
fn glommio_is_named_only_in_the_runtime() {
    let runtime = workspace_root().join("engine/src/runtime");
    let offenders: Vec<String> = all_sources()
        .into_iter()
        .filter(|f| !f.starts_with(&runtime) && !f.ends_with("tidy.rs"))
        .filter(|f| fs::read_to_string(f).is_ok_and(|text| text.contains("glommio::") || text.contains("use glommio")))
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "glommio named outside engine/src/runtime: {offenders:?}");
}

#[test]
fn protocol_crates_depend_on_no_runtime_engine_or_storage() {
    let forbidden = ["glommio", "tokio", "ferry-engine", "ferry-storage", "io-uring", "async-std", "smol"];
    let dir = workspace_root().join("protocols");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("protocols/").flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        checked += 1;
        let deps = text.split("[dependencies]").nth(1).unwrap_or("");
        let deps = deps.split("\n[").next().unwrap_or("");
        for name in forbidden {
            let named = deps.lines().any(|l| l.trim_start().starts_with(name));
            assert!(!named, "{} depends on {name}", manifest.display());
        }
    }
    assert!(checked >= 2, "checked the protocol crates");
}

#[test]
fn sources_are_small_and_documented() {
    let mut problems = Vec::new();
    for file in all_sources() {
        let text = fs::read_to_string(&file).expect("readable source");
        let lines = text.lines().count();
        // Generated code (STYLE §10: generated from the spec and committed) is exempt from the
        // size limit, but must say so in its opening paragraph.
        let generated = text.lines().take(5).any(|l| l.starts_with("//!") && l.contains("@generated"));
        if lines > LINES_MAX && !generated {
            problems.push(format!("{} has {lines} lines (max {LINES_MAX})", file.display()));
        }
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!("{} does not open with a //! paragraph", file.display()));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
