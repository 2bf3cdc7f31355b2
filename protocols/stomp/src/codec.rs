//! STOMP wire codec: [`decode`] / [`Decoder`] turn bytes into [`Frame`]s, [`encode`] writes a
//! frame into the caller's buffer. Caps are checked before anything is allocated: the header
//! section (command line, header lines and the blank line) is bounded by
//! `frame_header_bytes_max` and `frame_header_count_max`, the body by `frame_size_bytes_max`.
//! [`Decoder`] remembers how far it has scanned, so a frame arriving in many small pieces is
//! scanned once (linear, not quadratic). Pure: no I/O, no clock; never panics on any input.

use bytes::Bytes;
use ferry_wire::Limits;

use crate::error::FrameError;
use crate::escape::{escape_into, unescape_text};
use crate::frame::{Command, Frame, Version};

/// What one decode step found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, `consumed` bytes long (up to and including its NUL).
    Frame { frame: Frame, consumed: usize },
    /// `consumed` bytes of EOLs between frames (heart-beats).
    Heartbeat { consumed: usize },
    /// The buffer holds only part of a frame; at least `need` more bytes are required.
    Incomplete { need: usize },
}

/// Decodes the frame or heart-beat at the start of `buf` (stateless; see [`Decoder`]).
pub fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<Decoded, FrameError> {
    Decoder::new().decode(buf, version, limits)
}

/// An incremental decoder. Between two results other than `Incomplete`, every call must be
/// given the same buffer start, grown or unchanged; it then resumes where it stopped. A
/// shorter buffer restarts the scan. After a frame, heart-beat or error it starts afresh.
#[derive(Debug, Default)]
pub struct Decoder {
    state: State,
    seen: usize,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Fresh,
    Head(HeadScan),
    Body(BodyScan),
}

/// Progress through the header section: all lines before `line_start` are complete.
#[derive(Debug, Default)]
struct HeadScan {
    line_start: usize,
    searched: usize,
    lines: usize,
}

/// A parsed header section waiting for its body.
#[derive(Debug)]
struct BodyScan {
    command: Command,
    headers: Vec<crate::Header>,
    start: usize,
    length: Option<usize>,
    searched: usize,
}

impl Decoder {
    /// A decoder at the start of a frame.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes the frame or heart-beat at the start of `buf`, resuming a previous scan.
    pub fn decode(&mut self, buf: &[u8], version: Version, limits: &Limits) -> Result<Decoded, FrameError> {
        if buf.len() < self.seen {
            self.state = State::Fresh;
        }
        self.seen = buf.len();
        let result = self.step(buf, version, limits);
        if !matches!(result, Ok(Decoded::Incomplete { .. })) {
            self.state = State::Fresh;
            self.seen = 0;
        }
        result
    }

    fn step(&mut self, buf: &[u8], version: Version, limits: &Limits) -> Result<Decoded, FrameError> {
        if let State::Fresh = self.state {
            if let Some(decoded) = leading_eols(buf)? {
                return Ok(decoded);
            }
            self.state = State::Head(HeadScan::default());
        }
        if let State::Head(scan) = &mut self.state {
            let Some(start) = scan_head(scan, buf, limits)? else {
                return Ok(Decoded::Incomplete { need: 1 });
            };
            let (command, headers) = parse_head(&buf[..start], scan.lines, version, limits)?;
            let length = content_length(&headers, limits)?;
            self.state = State::Body(BodyScan { command, headers, start, length, searched: start });
        }
        match &mut self.state {
            State::Body(body) => scan_body(body, buf, limits),
            _ => Ok(Decoded::Incomplete { need: 1 }),
        }
    }
}

/// EOLs before a frame: heart-beats. `None` when the buffer starts with a frame byte.
fn leading_eols(buf: &[u8]) -> Result<Option<Decoded>, FrameError> {
    let mut at = 0;
    loop {
        match (buf.get(at), buf.get(at + 1)) {
            (Some(b'\n'), _) => at += 1,
            (Some(b'\r'), Some(b'\n')) => at += 2,
            (Some(b'\r'), Some(_)) => return Err(FrameError::Malformed),
            (Some(b'\r'), None) | (None, _) if at == 0 => {
                return Ok(Some(Decoded::Incomplete { need: 1 }));
            }
            (Some(b'\r'), None) | (None, _) => break,
            (Some(_), _) if at == 0 => return Ok(None),
            (Some(_), _) => break,
        }
    }
    Ok(Some(Decoded::Heartbeat { consumed: at }))
}

/// Finds the blank line ending the header section; returns the body's start offset.
fn scan_head(scan: &mut HeadScan, buf: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
    loop {
        let rest = buf.get(scan.searched..).unwrap_or_default();
        let Some(offset) = rest.iter().position(|&b| b == b'\n' || b == 0) else {
            scan.searched = buf.len();
            let line = buf.get(scan.line_start..).unwrap_or_default();
            if scan.lines == 0 && line.len() > Command::NAME_BYTES_MAX + 1 {
                return Err(unknown_command(line));
            }
            if buf.len() >= limits.frame_header_bytes_max {
                return Err(FrameError::HeadersTooLarge);
            }
            return Ok(None);
        };
        let eol = scan.searched + offset;
        if buf.get(eol) == Some(&0) {
            return Err(FrameError::Malformed);
        }
        if eol + 1 > limits.frame_header_bytes_max {
            return Err(FrameError::HeadersTooLarge);
        }
        let line = strip_cr(buf.get(scan.line_start..eol).unwrap_or_default());
        if scan.lines == 0 {
            if Command::from_bytes(line).is_none() {
                return Err(unknown_command(line));
            }
        } else if line.is_empty() {
            return Ok(Some(eol + 1));
        } else if scan.lines > limits.frame_header_count_max {
            return Err(FrameError::TooManyHeaders);
        }
        scan.lines += 1;
        scan.line_start = eol + 1;
        scan.searched = eol + 1;
    }
}

fn unknown_command(line: &[u8]) -> FrameError {
    let shown = line.get(..32).unwrap_or(line);
    FrameError::UnknownCommand(String::from_utf8_lossy(shown).into_owned())
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a complete header section (already bounded by the caps) of `lines` lines. UTF-8 is
/// checked once for the whole section: it splits only at ASCII bytes, so that is the same as
/// checking every name and value.
fn parse_head(
    head: &[u8],
    lines: usize,
    version: Version,
    limits: &Limits,
) -> Result<(Command, Vec<crate::Header>), FrameError> {
    let text = std::str::from_utf8(head).map_err(|_| FrameError::InvalidUtf8)?;
    // Split on bytes, not with `str` patterns (whose searcher showed in profiles for lines
    // this short); every cut is at an ASCII byte, so the slices are whole characters.
    let mut at = 0;
    let mut lines_of = head.split(|&b| b == b'\n').map(|raw| {
        let line = &text[at..at + raw.len()];
        at += raw.len() + 1;
        line.strip_suffix('\r').unwrap_or(line)
    });
    let name = lines_of.next().unwrap_or_default();
    let command = Command::from_bytes(name.as_bytes()).ok_or_else(|| unknown_command(name.as_bytes()))?;
    let escaping = if command.escapes_headers() { version } else { Version::V1_0 };
    // Sized once: at most one header per line after the command.
    let mut headers = Vec::with_capacity(lines.saturating_sub(1).min(limits.frame_header_count_max));
    for line in lines_of.filter(|l| !l.is_empty()) {
        if headers.len() >= limits.frame_header_count_max {
            return Err(FrameError::TooManyHeaders);
        }
        let colon = line.bytes().position(|b| b == b':').ok_or(FrameError::MalformedHeader)?;
        let name = unescape_text(&line[..colon], escaping)?;
        let value = unescape_text(&line[colon + 1..], escaping)?;
        headers.push((name, value));
    }
    Ok((command, headers))
}

/// The first `content-length` header, checked against `frame_size_bytes_max`.
fn content_length(headers: &[crate::Header], limits: &Limits) -> Result<Option<usize>, FrameError> {
    let Some((_, text)) = headers.iter().find(|(n, _)| *n == "content-length") else {
        return Ok(None);
    };
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::BadContentLength);
    }
    match digits.parse::<usize>() {
        Ok(length) if length <= limits.frame_size_bytes_max => Ok(Some(length)),
        _ => Err(FrameError::FrameTooLarge),
    }
}

/// Finds the end of the body: after `content-length` bytes, or at the first NUL.
fn scan_body(body: &mut BodyScan, buf: &[u8], limits: &Limits) -> Result<Decoded, FrameError> {
    let end = match body.length {
        Some(length) => {
            let end = body.start.saturating_add(length);
            if buf.len() <= end {
                let need = end.saturating_add(1).saturating_sub(buf.len());
                return Ok(Decoded::Incomplete { need });
            }
            if buf.get(end) != Some(&0) {
                return Err(FrameError::MissingNul);
            }
            end
        }
        None => {
            let rest = buf.get(body.searched..).unwrap_or_default();
            match rest.iter().position(|&b| b == 0) {
                Some(offset) => body.searched + offset,
                None => {
                    body.searched = buf.len();
                    if buf.len() - body.start > limits.frame_size_bytes_max {
                        return Err(FrameError::FrameTooLarge);
                    }
                    return Ok(Decoded::Incomplete { need: 1 });
                }
            }
        }
    };
    if end - body.start > limits.frame_size_bytes_max {
        return Err(FrameError::FrameTooLarge);
    }
    let frame = Frame {
        command: body.command,
        headers: std::mem::take(&mut body.headers),
        body: Bytes::copy_from_slice(buf.get(body.start..end).unwrap_or_default()),
    };
    Ok(Decoded::Frame { frame, consumed: end + 1 })
}

/// Appends `frame` to `out`: headers in stored order, escaped per `version` (never for
/// CONNECT, STOMP and CONNECTED), then the body and a NUL. Adds no headers of its own.
pub fn encode(frame: &Frame, version: Version, out: &mut Vec<u8>) {
    let headers = frame.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    encode_parts(frame.command, headers, &frame.body, version, out);
}

/// [`encode`] from borrowed parts, so the session writes frames without building one.
pub(crate) fn encode_parts<'a>(
    command: Command,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
    version: Version,
    out: &mut Vec<u8>,
) {
    let escaping = if command.escapes_headers() { version } else { Version::V1_0 };
    out.extend_from_slice(command.as_str().as_bytes());
    out.push(b'\n');
    for (name, value) in headers {
        escape_into(name, escaping, out);
        out.push(b':');
        escape_into(value, escaping, out);
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
