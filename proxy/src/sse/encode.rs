//! Writing events onto the wire.

use bytes::{BufMut, Bytes, BytesMut};

/// Encodes one event. Data lines are split on any line ending so a payload can
/// never end the event early or inject fields.
pub fn encode_event(id: Option<&str>, event: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 48);
    if let Some(id) = id {
        put_field(&mut out, "id", id);
    }
    if let Some(event) = event {
        put_field(&mut out, "event", event);
    }
    let mut rest = data;
    loop {
        match memchr::memchr2(b'\r', b'\n', rest.as_bytes()) {
            Some(i) => {
                put_field(&mut out, "data", &rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                put_field(&mut out, "data", rest);
                break;
            }
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// A comment line, used as a keep-alive.
pub fn comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// A `retry:` field on its own, sent before Shadowcat closes a connection.
pub fn retry(millis: u128) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    if value.is_empty() {
        out.put_slice(b":\n");
        return;
    }
    out.put_slice(b": ");
    // Field values never carry line breaks: callers split data, and ids/types
    // come from the parser, which cannot produce them. Made sure of, without
    // a copy when (as always) there is none.
    match memchr::memchr2(b'\r', b'\n', value.as_bytes()) {
        None => out.put_slice(value.as_bytes()),
        Some(_) => out.put_slice(value.replace(['\r', '\n'], " ").as_bytes()),
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::super::Parser;
    use super::*;

    #[test]
    fn encoded_events_parse_back() {
        let frame = encode_event(Some("s.3"), Some("message"), "line1\nline2\r\nline3");
        assert_eq!(
            &frame[..],
            b"id: s.3\nevent: message\ndata: line1\ndata: line2\ndata: line3\n\n"
        );
        let parsed = Parser::new().feed(frame).unwrap();
        assert_eq!(parsed[0].data.as_deref(), Some("line1\nline2\nline3"));
        assert_eq!(parsed[0].id.as_deref(), Some("s.3"));
    }

    #[test]
    fn priming_event_is_id_and_empty_data() {
        assert_eq!(&encode_event(Some("s.0"), None, "")[..], b"id: s.0\ndata:\n\n");
    }
}
