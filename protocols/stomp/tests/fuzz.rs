//! Property tests ("fuzz"): arbitrary bytes in arbitrary chunkings never panic a session and
//! keep its output bounded; valid frames decode identically however they are split.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_stomp::{Command, Decoded, Decoder, Event, Frame, Session, SessionConfig, Version, encode};
use ferry_wire::Limits;
use proptest::prelude::*;

/// A session writes at most CONNECTED, one ERROR and some heart-beats on its own.
const SESSION_OUTPUT_BYTES_MAX: usize = 4096;

const TOKENS: [&[u8]; 22] = [
    b"CONNECT\n",
    b"STOMP\n",
    b"SEND\n",
    b"SUBSCRIBE\n",
    b"ACK\n",
    b"NACK\n",
    b"BEGIN\n",
    b"DISCONNECT\n",
    b"accept-version:1.2\n",
    b"accept-version:1.0\n",
    b"heart-beat:1,1\n",
    b"destination:/q\n",
    b"id:1\n",
    b"content-length:",
    b"3",
    b"\n",
    b"\r\n",
    b"\0",
    b":",
    b"\\",
    b"\\c",
    b"x",
];

fn config() -> SessionConfig {
    let mut limits = Limits::test_min();
    limits.frame_size_bytes_max = 512;
    limits.frame_header_bytes_max = 256;
    limits.connection_input_bytes_max = 768;
    SessionConfig { limits, server: "ferry/test".to_owned() }
}

/// Feeds `bytes` cut at `cuts`, draining events like an engine would; returns the events.
fn drive(bytes: &[u8], cuts: &[usize]) -> Vec<Event> {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    let mut events = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for (step, end) in ends.into_iter().enumerate() {
        let now = t0 + Duration::from_millis(step as u64);
        session.handle_input(&bytes[at..end], now);
        at = end;
        while let Some(event) = session.poll_event() {
            if let Event::Connect { .. } = event {
                session.accept_connect("s");
            }
            events.push(event);
        }
        session.handle_timeout(now);
        events.extend(std::iter::from_fn(|| session.poll_event()));
        assert!(session.pending_output_bytes() <= SESSION_OUTPUT_BYTES_MAX);
    }
    let closed = events.iter().filter(|e| matches!(e, Event::Closed { .. })).count();
    assert!(closed <= 1);
    if closed == 1 {
        assert!(matches!(events.last(), Some(Event::Closed { .. })));
    }
    events
}

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..TOKENS.len(), 0..120)
        .prop_map(|picks| picks.into_iter().flat_map(|i| TOKENS[i].iter().copied()).collect())
}

/// Header text that survives a round trip in `version` (1.1 cannot carry a trailing CR).
fn header_text(version: Version) -> BoxedStrategy<String> {
    match version {
        Version::V1_0 => "[a-z0-9/ -]{0,12}".boxed(),
        Version::V1_1 => "[a-z0-9:\\\\\n\u{e9}/ -]{0,12}".boxed(),
        Version::V1_2 => "[a-z0-9:\\\\\r\n\u{e9}/ -]{0,12}".boxed(),
    }
}

/// A client or server frame (not CONNECT/STOMP/CONNECTED, whose headers are never escaped).
fn frame(version: Version) -> impl Strategy<Value = Frame> {
    let command =
        prop::sample::select(Command::ALL.iter().copied().filter(|c| c.escapes_headers()).collect::<Vec<_>>());
    let header = ("x[a-z]{0,6}", header_text(version));
    let headers = prop::collection::vec(header, 0..6);
    let body = prop::collection::vec(any::<u8>(), 0..200);
    (command, headers, body, any::<bool>()).prop_map(|(command, mut headers, mut body, sized)| {
        if sized {
            headers.push(("content-length".to_owned(), body.len().to_string()));
        } else {
            body.retain(|&b| b != 0);
        }
        let headers = headers.into_iter().map(|(n, v)| (n.into(), v.into())).collect();
        Frame { command, headers, body: Bytes::from(body) }
    })
}

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), cuts in prop::collection::vec(any::<usize>(), 0..16), connect in any::<bool>()) {
        let mut input = if connect { b"CONNECT\naccept-version:1.2\n\n\0".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        drive(&input, &cuts);
    }

    #[test]
    fn token_soup_never_panics(bytes in token_soup(), cuts in prop::collection::vec(any::<usize>(), 0..16)) {
        drive(&bytes, &cuts);
    }

    #[test]
    fn valid_frame_decodes_identically_at_every_split((version, frame) in version().prop_flat_map(|v| (Just(v), frame(v)))) {
        let mut wire = Vec::new();
        encode(&frame, version, &mut wire);
        let limits = Limits::test_min();
        let mut decoder = Decoder::new();
        for end in 0..wire.len() {
            let step = decoder.decode(&wire[..end], version, &limits);
            prop_assert!(matches!(step, Ok(Decoded::Incomplete { .. })), "{:?}", step);
        }
        let whole = decoder.decode(&wire, version, &limits);
        prop_assert_eq!(whole, Ok(Decoded::Frame { frame, consumed: wire.len() }));
    }

    #[test]
    fn v1_0_frame_round_trips(frame in frame(Version::V1_0)) {
        let mut wire = Vec::new();
        encode(&frame, Version::V1_0, &mut wire);
        let got = ferry_stomp::decode(&wire, Version::V1_0, &Limits::test_min());
        prop_assert_eq!(got, Ok(Decoded::Frame { frame, consumed: wire.len() }));
    }

    #[test]
    fn session_events_do_not_depend_on_chunking(sends in prop::collection::vec(frame(Version::V1_2), 1..4), cut in any::<usize>()) {
        let mut wire = b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0\n".to_vec();
        for mut send in sends {
            send.command = Command::Send;
            send.headers.insert(0, ("destination".into(), "/q".into()));
            encode(&send, Version::V1_2, &mut wire);
            wire.extend_from_slice(b"\r\n");
        }
        let whole = drive(&wire, &[]);
        prop_assert!(whole.iter().all(|e| !matches!(e, Event::Closed { .. })), "{:?}", whole);
        prop_assert_eq!(drive(&wire, &[cut]), whole.clone());
        for split in 0..=wire.len() {
            prop_assert_eq!(&drive(&wire, &[split]), &whole);
        }
    }
}
