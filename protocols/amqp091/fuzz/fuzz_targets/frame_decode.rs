//! libFuzzer target: arbitrary bytes through the AMQP 0-9-1 frame decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_amqp091_fuzz::frame_decode(data));
