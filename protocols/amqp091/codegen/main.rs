//! Command-line entry of the AMQP 0-9-1 generator, for use without cargo:
//! `rustc --edition 2024 codegen/main.rs -o /tmp/amqp091-codegen &&
//!  /tmp/amqp091-codegen codegen/amqp-rabbitmq-0.9.1.json src/generated.rs`.
//! The usual way is `AMQP091_REGENERATE=1 cargo test -p ferry-amqp091 --test generated`,
//! which runs the same `generate` function. Build-time only; reads and writes the named files.

mod generate;
mod json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, spec, output] = args.as_slice() else {
        eprintln!("usage: amqp091-codegen SPEC.json OUTPUT.rs");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let generated = generate::generate(&text).unwrap_or_else(|e| panic!("{spec}: {e}"));
    std::fs::write(output, generated).unwrap_or_else(|e| panic!("{output}: {e}"));
}
