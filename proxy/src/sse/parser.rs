//! An incremental `text/event-stream` parser.
//!
//! Network chunks split anywhere: inside a line, between `\r` and `\n`, inside
//! a UTF-8 sequence. The parser keeps the unfinished line as bytes and only
//! decodes complete lines, so no split can change what it yields. What it
//! holds is bounded: a line or an event's data longer than its limit is an
//! error, never an ever-growing buffer.

use bytes::{Buf, Bytes, BytesMut};

/// One dispatched block of fields. `data` is `None` when the block carried no
/// `data` field (an id-only priming event or a bare `retry:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// The `id` field, if this block set one.
    pub id: Option<String>,
    /// The `event` field (the event type), if any.
    pub event: Option<String>,
    /// The `data` lines, joined with `\n`.
    pub data: Option<String>,
    /// The `retry` field in milliseconds, if valid.
    pub retry: Option<u64>,
}

/// A line or an event's data went past the parser's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event or line exceeds {limit} bytes")]
pub struct TooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

/// Incremental parser: feed chunks, take events.
#[derive(Debug)]
pub struct Parser {
    limit: usize,
    line: BytesMut,
    /// The previous chunk ended in `\r`; a `\n` starting the next one belongs
    /// to the same line ending.
    after_cr: bool,
    pending: RawEvent,
    seen_field: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser at the start of a stream, with no practical limit.
    pub fn new() -> Self {
        Self::with_limit(usize::MAX)
    }

    /// A parser that refuses lines and event data over `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            line: BytesMut::new(),
            after_cr: false,
            pending: RawEvent::default(),
            seen_field: false,
        }
    }

    /// Feeds one chunk and returns the events it completed, in order.
    pub fn feed(&mut self, mut chunk: Bytes) -> Result<Vec<RawEvent>, TooLarge> {
        let mut out = Vec::new();
        if chunk.is_empty() {
            // An empty chunk must not forget a `\r` that ended the previous one.
            return Ok(out);
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk.advance(1);
        }
        self.after_cr = false;
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', &chunk) {
            let is_cr = chunk[pos] == b'\r';
            // A line whole in this chunk is taken as a slice of it; only a
            // line split across chunks is gathered in `self.line`.
            let line = if self.line.is_empty() {
                chunk.slice(..pos)
            } else {
                self.line.extend_from_slice(&chunk[..pos]);
                self.line.split().freeze()
            };
            let mut skip = pos + 1;
            if is_cr {
                match chunk.get(pos + 1) {
                    Some(b'\n') => skip += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            chunk.advance(skip);
            self.check(line.len())?;
            if let Some(event) = self.line_done(&line) {
                out.push(event);
            }
            self.check(self.pending.data.as_ref().map_or(0, String::len))?;
        }
        self.line.extend_from_slice(&chunk);
        self.check(self.line.len())?;
        Ok(out)
    }

    fn check(&self, len: usize) -> Result<(), TooLarge> {
        if len > self.limit {
            return Err(TooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Option<RawEvent> {
        if line.is_empty() {
            if !std::mem::take(&mut self.seen_field) {
                return None;
            }
            return Some(std::mem::take(&mut self.pending));
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (name, value) = match text.find(':') {
            Some(i) => {
                let value = &text[i + 1..];
                (&text[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&text[..], ""),
        };
        match name {
            "data" => match &mut self.pending.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.pending.data = Some(value.to_owned()),
            },
            "event" => self.pending.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.pending.retry = value.parse().ok();
            }
            _ => return None,
        }
        self.seen_field = true;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<RawEvent> {
        let mut parser = Parser::new();
        chunks
            .iter()
            .flat_map(|c| parser.feed(Bytes::copy_from_slice(c)).unwrap())
            .collect()
    }

    fn data(d: &str) -> RawEvent {
        RawEvent {
            data: Some(d.into()),
            ..Default::default()
        }
    }

    #[test]
    fn fields_join_and_dispatch_on_blank_line() {
        let events = parse_all(&[b"id: 7\nevent: message\ndata: a\ndata:b\nretry: 1500\n\n"]);
        assert_eq!(
            events,
            vec![RawEvent {
                id: Some("7".into()),
                event: Some("message".into()),
                data: Some("a\nb".into()),
                retry: Some(1500),
            }]
        );
    }

    #[test]
    fn comments_and_unknown_fields_are_skipped() {
        assert_eq!(
            parse_all(&[b": keep-alive\n\nfoo: bar\n\ndata: x\n\n"]),
            vec![data("x")]
        );
    }

    #[test]
    fn id_with_nul_is_ignored_and_bad_retry_too() {
        let events = parse_all(&[b"id: a\0b\nretry: 1x\ndata: y\n\n"]);
        assert_eq!(events, vec![data("y")]);
    }

    #[test]
    fn priming_event_has_id_and_no_data() {
        let events = parse_all(&[b"id: s.0\ndata:\n\n", b"id: only\n\n"]);
        assert_eq!(events[0].data.as_deref(), Some(""));
        assert_eq!(
            events[1],
            RawEvent {
                id: Some("only".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn cr_then_lf_across_chunks_is_one_line_ending() {
        let events = parse_all(&[b"data: a\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(events, vec![data("a\nb")]);
    }

    #[test]
    fn empty_chunk_between_cr_and_lf_keeps_them_one_line_ending() {
        assert_eq!(parse_all(&[b"data: a\r", b"", b"\n\n"]), vec![data("a")]);
    }

    #[test]
    fn lines_and_data_over_the_limit_are_refused_not_buffered() {
        let mut parser = Parser::with_limit(16);
        assert_eq!(
            parser.feed(Bytes::from_static(b"data: short\n\n")).unwrap(),
            vec![data("short")]
        );
        // A line that never ends is refused once it passes the limit.
        assert_eq!(
            Parser::with_limit(16).feed(Bytes::from(vec![b'x'; 17])),
            Err(TooLarge { limit: 16 })
        );
        // Many short data lines add up to one event too large.
        let mut parser = Parser::with_limit(16);
        let lines = b"data: 0123456\ndata: 0123456\ndata: 0123456\n";
        assert_eq!(
            parser.feed(Bytes::from_static(lines)),
            Err(TooLarge { limit: 16 })
        );
    }

    #[test]
    fn unfinished_event_is_not_dispatched() {
        assert!(parse_all(&[b"data: never ends"]).is_empty());
    }

    const STREAM: &str = "id: 1\r\ndata: {\"a\":\"\u{e9}t\u{e9} \u{1f600}\"}\r\n\r\n: ping\rdata: two\rdata: lines\r\r\
        event: x\ndata:  spaced\n\nid: 3\ndata\n\n";

    proptest! {
        #[test]
        fn any_split_yields_the_same_events(cuts in proptest::collection::vec(0usize..=STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let whole = parse_all(&[bytes]);
            prop_assert_eq!(whole.len(), 4);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            prop_assert_eq!(parse_all(&chunks), whole);
        }
    }
}
