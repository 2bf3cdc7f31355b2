//! Unit tests of frame-to-event translation: required headers per command and version,
//! ack modes, ACK/NACK id normalisation, receipts. Test-only.

use super::*;

fn frame(command: Command, headers: &[(&str, &str)]) -> Frame {
    headers.iter().fold(Frame::new(command), |f, (n, v)| f.with_header(*n, *v))
}

fn rejected(command: Command, headers: &[(&str, &str)], version: Version) -> Rejection {
    match interpret(frame(command, headers), version) {
        Err(rejection) => rejection,
        Ok(event) => panic!("expected a rejection, got {event:?}"),
    }
}

fn accepted(command: Command, headers: &[(&str, &str)], version: Version) -> Event {
    match interpret(frame(command, headers), version) {
        Ok(event) => event,
        Err(rejection) => panic!("expected an event, got {rejection:?}"),
    }
}

#[test]
fn send_requires_destination_and_keeps_headers() {
    let r = rejected(Command::Send, &[("receipt", "r1")], Version::V1_2);
    assert_eq!(r.message, "Missing 'destination' header");
    assert_eq!(r.receipt.as_deref(), Some("r1"));
    let event =
        accepted(Command::Send, &[("destination", "/q"), ("x", "1"), ("transaction", "t"), ("x", "2")], Version::V1_2);
    let Event::Send { destination, transaction, receipt, headers, .. } = event else {
        panic!("not a send");
    };
    assert_eq!((destination.as_str(), transaction.as_deref(), receipt), ("/q", Some("t"), None));
    assert_eq!(headers.len(), 4);
}

#[test]
fn subscribe_id_rules_per_version() {
    let r = rejected(Command::Subscribe, &[("destination", "/q")], Version::V1_1);
    assert_eq!(r.message, "Missing 'id' header");
    let event = accepted(Command::Subscribe, &[("destination", "/q")], Version::V1_0);
    assert!(matches!(event, Event::Subscribe { id, ack: AckMode::Auto, .. } if id == "/q"));
    let r = rejected(Command::Subscribe, &[("id", "1")], Version::V1_0);
    assert_eq!(r.message, "Missing 'destination' header");
}

#[test]
fn ack_modes() {
    for (text, mode) in
        [("auto", AckMode::Auto), ("client", AckMode::Client), ("client-individual", AckMode::ClientIndividual)]
    {
        for version in Version::ALL {
            let event = accepted(Command::Subscribe, &[("destination", "/q"), ("id", "0"), ("ack", text)], version);
            assert!(matches!(event, Event::Subscribe { ack, .. } if ack == mode));
        }
    }
    let r = rejected(Command::Subscribe, &[("destination", "/q"), ("id", "0"), ("ack", "sometimes")], Version::V1_2);
    assert_eq!(r.message, "Invalid ack header");
}

#[test]
fn unsubscribe_id_or_destination_on_1_0() {
    let event = accepted(Command::Unsubscribe, &[("destination", "/q")], Version::V1_0);
    assert!(matches!(event, Event::Unsubscribe { id, .. } if id == "/q"));
    let r = rejected(Command::Unsubscribe, &[("destination", "/q")], Version::V1_1);
    assert_eq!(r.message, "Missing 'id' header");
}

#[test]
fn ack_id_is_normalised_per_version() {
    let headers = [("id", "a"), ("message-id", "m"), ("subscription", "s")];
    for (version, expect) in [(Version::V1_0, "m"), (Version::V1_1, "m"), (Version::V1_2, "a")] {
        let event = accepted(Command::Ack, &headers, version);
        assert!(matches!(event, Event::Ack { id, .. } if id == expect), "{version:?}");
    }
    assert_eq!(rejected(Command::Ack, &[("message-id", "m")], Version::V1_2).message, "Missing 'id' header");
    assert_eq!(rejected(Command::Ack, &[("id", "a")], Version::V1_1).message, "Missing 'message-id' header");
}

#[test]
fn nack_is_unknown_on_1_0() {
    let r = rejected(Command::Nack, &[("message-id", "m")], Version::V1_0);
    assert_eq!(r.message, "Unknown STOMP command");
    let event = accepted(Command::Nack, &[("message-id", "m"), ("requeue", "false")], Version::V1_1);
    assert!(matches!(event, Event::Nack { id, headers, .. } if id == "m" && headers.len() == 2));
}

#[test]
fn transactions_require_their_header() {
    for command in [Command::Begin, Command::Commit, Command::Abort] {
        let r = rejected(command, &[], Version::V1_2);
        assert_eq!(r.message, "Missing 'transaction' header");
        let event = accepted(command, &[("transaction", "tx"), ("receipt", "9")], Version::V1_2);
        let (Event::Begin { transaction, receipt }
        | Event::Commit { transaction, receipt }
        | Event::Abort { transaction, receipt }) = event
        else {
            panic!("not a transaction event");
        };
        assert_eq!((transaction.as_str(), receipt.as_deref()), ("tx", Some("9")));
    }
}

#[test]
fn server_commands_from_a_client_are_unknown() {
    for command in [Command::Connected, Command::Message, Command::Receipt, Command::Error] {
        assert_eq!(rejected(command, &[], Version::V1_2).message, "Unknown STOMP command");
    }
}

#[test]
fn disconnect_surfaces_receipt() {
    let event = accepted(Command::Disconnect, &[("receipt", "bye")], Version::V1_2);
    assert_eq!(event, Event::Disconnect { receipt: Some("bye".to_owned()) });
}
