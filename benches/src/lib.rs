//! Shared fixtures for the criterion benches in `benches/benches` (`stomp_codec`,
//! `log_append`, `routing`). Runs on the bench thread only; nothing here is timed itself.
//! Limits: fixtures are built once per bench group and sized by the caller.

use bytes::Bytes;

/// Body sizes every size-parameterised bench runs at: 16 B, 1 KiB, 64 KiB.
pub const BODY_SIZES_BYTES: [usize; 3] = [16, 1024, 64 * 1024];

/// A deterministic body of `len` bytes (printable, so codecs see realistic data).
pub fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + u8::try_from(i % 26).expect("i % 26 < 256")).collect::<Vec<u8>>())
}

/// A short human label for a byte size (`16B`, `1KiB`, `64KiB`).
pub fn size_label(len: usize) -> String {
    if len >= 1024 && len.is_multiple_of(1024) { format!("{}KiB", len / 1024) } else { format!("{len}B") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_requested_length() {
        for len in BODY_SIZES_BYTES {
            assert_eq!(body(len).len(), len);
        }
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(16), "16B");
        assert_eq!(size_label(1024), "1KiB");
        assert_eq!(size_label(64 * 1024), "64KiB");
    }
}
