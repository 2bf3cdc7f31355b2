//! Header escaping per STOMP version. 1.0: none; 1.1: `\n` `\c` `\\`; 1.2: also `\r`.
//! Decoding rejects undefined sequences (1.1+; the decoder checks UTF-8 for the whole header
//! section before); encoding never fails.
//! On 1.0, which has no escapes, CR and LF in a value are written as spaces so a header
//! can never break the frame apart. Works on one header name or value at a time.

use crate::error::FrameError;
use crate::frame::Version;

use std::borrow::Cow;

/// Decodes one header name or value (UTF-8 already checked, with the rest of its header
/// section) into a [`crate::HeaderText`]: no allocation for short text without escapes.
pub(crate) fn unescape_text(text: &str, version: Version) -> Result<crate::HeaderText, FrameError> {
    unescape_str(text, version).map(|text| match text {
        Cow::Borrowed(text) => crate::HeaderText::from(text),
        Cow::Owned(text) => crate::HeaderText::from(text),
    })
}

/// Decodes one header name or value already known to be UTF-8; borrowed when it holds no
/// escapes.
fn unescape_str(text: &str, version: Version) -> Result<Cow<'_, str>, FrameError> {
    if version == Version::V1_0 || !text.as_bytes().contains(&b'\\') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('n') => '\n',
            Some('c') => ':',
            Some('\\') => '\\',
            Some('r') if version == Version::V1_2 => '\r',
            _ => return Err(FrameError::InvalidEscape),
        };
        out.push(decoded);
    }
    Ok(Cow::Owned(out))
}

/// Encodes one header name or value into `out`.
pub(crate) fn escape_into(text: &str, version: Version, out: &mut Vec<u8>) {
    let special = |b: u8| matches!(b, b'\n' | b'\r' | b':' | b'\\');
    // A fold with no early exit: the compiler checks many bytes per step, and header values
    // are short enough that stopping at the first special byte saves nothing.
    if !text.bytes().fold(false, |seen, b| seen | special(b)) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for b in text.bytes() {
        match (version, b) {
            (Version::V1_0, b'\n' | b'\r') => out.push(b' '),
            (Version::V1_0, _) => out.push(b),
            (_, b'\n') => out.extend_from_slice(b"\\n"),
            (_, b':') => out.extend_from_slice(b"\\c"),
            (_, b'\\') => out.extend_from_slice(b"\\\\"),
            (Version::V1_2, b'\r') => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the decoder keeps of a header name or value (UTF-8 is checked by the decoder, for
    /// the whole header section: `codec_tests::invalid_utf8_header_is_rejected`).
    fn unescape(raw: &str, version: Version) -> Result<String, FrameError> {
        unescape_text(raw, version).map(crate::HeaderText::into_string)
    }

    fn escaped(text: &str, version: Version) -> String {
        let mut out = Vec::new();
        escape_into(text, version, &mut out);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn v1_0_has_no_escapes() {
        assert_eq!(unescape(r"a\nb\q", Version::V1_0), Ok(r"a\nb\q".to_owned()));
        assert_eq!(escaped("a:b\\c", Version::V1_0), "a:b\\c");
        assert_eq!(escaped("a\nb\rc", Version::V1_0), "a b c");
    }

    #[test]
    fn v1_1_escapes_lf_colon_backslash() {
        assert_eq!(unescape(r"a\nb\cc\\d", Version::V1_1), Ok("a\nb:c\\d".to_owned()));
        assert_eq!(unescape(r"a\rb", Version::V1_1), Err(FrameError::InvalidEscape));
        assert_eq!(escaped("a\nb:c\\d", Version::V1_1), r"a\nb\cc\\d");
        assert_eq!(escaped("a\rb", Version::V1_1), "a\rb");
    }

    #[test]
    fn v1_2_also_escapes_cr() {
        assert_eq!(unescape(r"a\rb", Version::V1_2), Ok("a\rb".to_owned()));
        assert_eq!(escaped("a\r\n:\\", Version::V1_2), r"a\r\n\c\\");
    }

    #[test]
    fn undefined_or_truncated_escapes_are_rejected() {
        for version in [Version::V1_1, Version::V1_2] {
            assert_eq!(unescape(r"a\tb", version), Err(FrameError::InvalidEscape));
            assert_eq!(unescape(r"ab\", version), Err(FrameError::InvalidEscape));
        }
    }

    #[test]
    fn round_trip_every_version() {
        let text = "x:y\\z\nw\u{e9}";
        for version in [Version::V1_1, Version::V1_2] {
            let wire = escaped(text, version);
            assert_eq!(unescape(&wire, version), Ok(text.to_owned()));
        }
    }
}
