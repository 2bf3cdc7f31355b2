//! libFuzzer target: arbitrary bytes, in arbitrary chunks, into a server connection.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_amqp091_fuzz::connection(data));
