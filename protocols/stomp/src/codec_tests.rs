//! Unit tests of the wire codec: framing, content-length, caps, escaping on both paths,
//! incremental scanning. Test-only; limits come from `Limits::test_min()`.

use super::*;

fn limits() -> Limits {
    Limits::test_min()
}

fn frame_of(bytes: &[u8], version: Version) -> (Frame, usize) {
    match decode(bytes, version, &limits()) {
        Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn error_of(bytes: &[u8], version: Version) -> FrameError {
    match decode(bytes, version, &limits()) {
        Err(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn decodes_a_simple_frame() {
    let wire = b"SEND\ndestination:/queue/a\n\nhello\0";
    let mut bytes = wire.to_vec();
    bytes.extend_from_slice(b"\n\n");
    let (frame, consumed) = frame_of(&bytes, Version::V1_2);
    assert_eq!(frame.command, Command::Send);
    assert_eq!(frame.header("destination"), Some("/queue/a"));
    assert_eq!(&frame.body[..], b"hello");
    assert_eq!(consumed, wire.len());
}

#[test]
fn eols_between_frames_are_heartbeats() {
    let l = limits();
    assert_eq!(decode(b"\n\r\n\nSEND", Version::V1_2, &l), Ok(Decoded::Heartbeat { consumed: 4 }));
    assert_eq!(decode(b"\r", Version::V1_2, &l), Ok(Decoded::Incomplete { need: 1 }));
    assert_eq!(decode(b"", Version::V1_2, &l), Ok(Decoded::Incomplete { need: 1 }));
    assert_eq!(decode(b"\rX", Version::V1_2, &l), Err(FrameError::Malformed));
}

#[test]
fn crlf_line_endings_are_accepted_on_every_version() {
    for version in Version::ALL {
        let (frame, _) = frame_of(b"SEND\r\ndestination:/q\r\n\r\nx\0", version);
        assert_eq!(frame.header("destination"), Some("/q"));
        assert_eq!(&frame.body[..], b"x");
    }
}

#[test]
fn content_length_body_may_hold_nul() {
    let wire = b"SEND\ncontent-length:3\n\na\0b\0SEND";
    let (frame, consumed) = frame_of(wire, Version::V1_1);
    assert_eq!(&frame.body[..], b"a\0b");
    assert_eq!(consumed, wire.len() - 4);
}

#[test]
fn content_length_needs_exact_bytes_then_nul() {
    let l = limits();
    assert_eq!(decode(b"SEND\ncontent-length:5\n\nab", Version::V1_2, &l), Ok(Decoded::Incomplete { need: 4 }));
    assert_eq!(error_of(b"SEND\ncontent-length:2\n\nabc\0", Version::V1_2), FrameError::MissingNul);
}

#[test]
fn malformed_content_length_is_rejected() {
    for text in ["x", "-1", "", "1 2", "0x10"] {
        let bytes = format!("SEND\ncontent-length:{text}\n\n\0");
        assert_eq!(error_of(bytes.as_bytes(), Version::V1_2), FrameError::BadContentLength);
    }
}

#[test]
fn oversize_content_length_is_rejected_before_the_body_arrives() {
    let bytes = b"SEND\ncontent-length:99999999999999999999999\n\n";
    assert_eq!(error_of(bytes, Version::V1_2), FrameError::FrameTooLarge);
    let too_big = format!("SEND\ncontent-length:{}\n\n", limits().frame_size_bytes_max + 1);
    assert_eq!(error_of(too_big.as_bytes(), Version::V1_2), FrameError::FrameTooLarge);
}

#[test]
fn body_without_nul_is_capped() {
    let mut bytes = b"SEND\n\n".to_vec();
    bytes.resize(bytes.len() + limits().frame_size_bytes_max, b'x');
    assert_eq!(decode(&bytes, Version::V1_2, &limits()), Ok(Decoded::Incomplete { need: 1 }));
    bytes.push(b'x');
    assert_eq!(error_of(&bytes, Version::V1_2), FrameError::FrameTooLarge);
}

#[test]
fn header_section_is_capped_in_bytes_and_count() {
    let mut bytes = b"SEND\nh:".to_vec();
    bytes.resize(limits().frame_header_bytes_max, b'v');
    assert_eq!(error_of(&bytes, Version::V1_2), FrameError::HeadersTooLarge);

    let mut many = b"SEND\n".to_vec();
    for i in 0..=limits().frame_header_count_max {
        many.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    assert_eq!(error_of(&many, Version::V1_2), FrameError::TooManyHeaders);
}

#[test]
fn header_count_at_the_cap_is_fine() {
    let mut bytes = b"SEND\n".to_vec();
    for i in 0..limits().frame_header_count_max {
        bytes.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    bytes.extend_from_slice(b"\n\0");
    let (frame, _) = frame_of(&bytes, Version::V1_2);
    assert_eq!(frame.headers.len(), limits().frame_header_count_max);
}

#[test]
fn unknown_command_is_rejected_early() {
    assert!(matches!(error_of(b"FOO\n\n\0", Version::V1_2), FrameError::UnknownCommand(n) if n == "FOO"));
    assert!(matches!(error_of(b"GET / HTTP/1.1", Version::V1_2), FrameError::UnknownCommand(_)));
    assert!(matches!(error_of(b"send\n\n\0", Version::V1_2), FrameError::UnknownCommand(_)));
}

#[test]
fn header_line_without_colon_is_rejected() {
    for version in Version::ALL {
        assert_eq!(error_of(b"SEND\nnocolon\n\n\0", version), FrameError::MalformedHeader);
    }
}

#[test]
fn nul_in_header_section_is_rejected() {
    assert_eq!(error_of(b"SEND\na:b\0", Version::V1_2), FrameError::Malformed);
}

#[test]
fn invalid_utf8_header_is_rejected() {
    // Checked once per header section: in a value, in a name, a truncated sequence, any version.
    for version in Version::ALL {
        assert_eq!(error_of(b"SEND\na:\xff\n\n\0", version), FrameError::InvalidUtf8);
        assert_eq!(error_of(b"SEND\n\xc3:b\n\n\0", version), FrameError::InvalidUtf8);
        assert_eq!(error_of(b"SEND\na:b\xc3\n\n\0", version), FrameError::InvalidUtf8);
    }
}

#[test]
fn escapes_are_decoded_per_version() {
    let raw = b"SEND\na\\cb:x\\ny\\\\z\n\n\0";
    let (v10, _) = frame_of(raw, Version::V1_0);
    assert_eq!(v10.headers[0], ("a\\cb".into(), "x\\ny\\\\z".into()));
    let (v11, _) = frame_of(raw, Version::V1_1);
    assert_eq!(v11.headers[0], ("a:b".into(), "x\ny\\z".into()));
    assert_eq!(error_of(b"SEND\na:\\r\n\n\0", Version::V1_1), FrameError::InvalidEscape);
    let (v12, _) = frame_of(b"SEND\na:\\r\n\n\0", Version::V1_2);
    assert_eq!(v12.header("a"), Some("\r"));
    assert_eq!(error_of(b"SEND\na:\\t\n\n\0", Version::V1_2), FrameError::InvalidEscape);
}

#[test]
fn connect_headers_are_never_unescaped() {
    let (frame, _) = frame_of(b"CONNECT\npasscode:a\\tb\n\n\0", Version::V1_2);
    assert_eq!(frame.header("passcode"), Some("a\\tb"));
}

#[test]
fn colon_in_value_is_kept() {
    let (frame, _) = frame_of(b"SEND\nurl:http://x:1\n\n\0", Version::V1_0);
    assert_eq!(frame.header("url"), Some("http://x:1"));
}

#[test]
fn encode_escapes_per_version_and_keeps_order() {
    let frame = Frame::new(Command::Message)
        .with_header("b", "1:2")
        .with_header("a", "x\ny")
        .with_header("b", "\r")
        .with_body(&b"hi"[..]);
    let expect: [(Version, &[u8]); 3] = [
        (Version::V1_0, b"MESSAGE\nb:1:2\na:x y\nb: \n\nhi\0"),
        (Version::V1_1, b"MESSAGE\nb:1\\c2\na:x\\ny\nb:\r\n\nhi\0"),
        (Version::V1_2, b"MESSAGE\nb:1\\c2\na:x\\ny\nb:\\r\n\nhi\0"),
    ];
    for (version, bytes) in expect {
        let mut out = Vec::new();
        encode(&frame, version, &mut out);
        assert_eq!(out, bytes, "{version:?}");
    }
}

#[test]
fn connected_is_never_escaped() {
    let frame = Frame::new(Command::Connected).with_header("server", "a:b");
    let mut out = Vec::new();
    encode(&frame, Version::V1_2, &mut out);
    assert_eq!(out, b"CONNECTED\nserver:a:b\n\n\0");
}

#[test]
fn encode_then_decode_round_trips() {
    let frame = Frame::new(Command::Send)
        .with_header("destination", "/queue/a:b\\c\nd")
        .with_header("content-length", "3")
        .with_body(&b"\0x\0"[..]);
    for version in [Version::V1_1, Version::V1_2] {
        let mut out = Vec::new();
        encode(&frame, version, &mut out);
        let (back, consumed) = frame_of(&out, version);
        assert_eq!(back, frame);
        assert_eq!(consumed, out.len());
    }
}

#[test]
fn incremental_decoder_resumes_and_matches_one_shot() {
    let bytes = b"SEND\ndestination:/q\nreceipt:1\n\nsome body bytes\0";
    let whole = decode(bytes, Version::V1_2, &limits());
    let mut decoder = Decoder::new();
    for end in 0..bytes.len() {
        let step = decoder.decode(&bytes[..end], Version::V1_2, &limits());
        assert!(matches!(step, Ok(Decoded::Incomplete { .. })), "{end}: {step:?}");
    }
    assert_eq!(decoder.decode(bytes, Version::V1_2, &limits()), whole);
}

#[test]
fn decoder_restarts_on_a_shorter_buffer() {
    let mut decoder = Decoder::new();
    let l = limits();
    let _ = decoder.decode(b"SEND\ndest", Version::V1_2, &l);
    assert_eq!(decoder.decode(b"SE", Version::V1_2, &l), Ok(Decoded::Incomplete { need: 1 }));
    let (frame, _) = match decoder.decode(b"SEND\n\n\0", Version::V1_2, &l) {
        Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
        other => panic!("{other:?}"),
    };
    assert_eq!(frame.command, Command::Send);
}
