//! The generated-code check (STYLE §10): regenerating `src/generated.rs` from the spec JSON
//! must reproduce the committed file byte for byte. With `AMQP091_REGENERATE=1` the test
//! rewrites the file instead (then review and commit the diff). The spec JSON is vendored in
//! `codegen/` (MIT, see `codegen/license_info`); when the workspace's
//! `shared/specs` copy is present, the vendored copy must equal it.

#[path = "../codegen/generate.rs"]
mod generate;
#[path = "../codegen/json.rs"]
mod json;

use std::path::{Path, PathBuf};

const SPEC: &str = "amqp-rabbitmq-0.9.1.json";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_generated_rs_matches_the_spec() {
    let spec = read(&crate_dir().join("codegen").join(SPEC));
    let generated = generate::generate(&spec).expect("spec generates");
    let target = crate_dir().join("src/generated.rs");
    if std::env::var_os("AMQP091_REGENERATE").is_some() {
        std::fs::write(&target, &generated).expect("write src/generated.rs");
        return;
    }
    let committed = read(&target);
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b).map_or(0, |i| i + 1);
        panic!(
            "src/generated.rs differs from the generator's output (first difference near line {line}); \
             run `AMQP091_REGENERATE=1 cargo test -p ferry-amqp091 --test generated` and commit the result"
        );
    }
}

#[test]
fn vendored_spec_equals_the_shared_one() {
    let shared = crate_dir().join("../../../shared/specs").join(SPEC);
    if shared.exists() {
        assert!(read(&shared) == read(&crate_dir().join("codegen").join(SPEC)), "codegen/{SPEC} is stale");
    }
}

#[test]
fn generation_is_deterministic_and_complete() {
    let spec = read(&crate_dir().join("codegen").join(SPEC));
    let first = generate::generate(&spec).expect("spec generates");
    assert_eq!(first, generate::generate(&spec).expect("spec generates"));
    let methods = first.lines().filter(|l| l.starts_with("pub struct ") && !l.contains("Properties")).count();
    assert_eq!(methods, 66, "one struct per method of the spec");
    assert!(generate::generate("{").is_err());
}
