//! The parts of a JSON-RPC message the upstream acts on, borrowed from the
//! request body: no `Value` tree, no copies unless a string has escapes.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::value::RawValue;

/// One JSON-RPC message (request, notification or response).
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    /// The id, as written (requests and responses).
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// The method (requests and notifications).
    #[serde(borrow, default, deserialize_with = "text")]
    pub method: Option<Cow<'a, str>>,
    /// The parameters the upstream reads.
    #[serde(borrow, default)]
    pub params: Option<Params<'a>>,
}

/// `params` of `initialize` and `tools/call`.
#[derive(Debug, Default, Deserialize)]
pub struct Params<'a> {
    /// `initialize`: the version the client asks for.
    #[serde(rename = "protocolVersion", borrow, default, deserialize_with = "text")]
    pub protocol_version: Option<Cow<'a, str>>,
    /// `tools/call`: the tool.
    #[serde(borrow, default, deserialize_with = "text")]
    pub name: Option<Cow<'a, str>>,
    /// `tools/call`: its arguments.
    #[serde(default)]
    pub arguments: Option<Arguments>,
    /// `_meta`, for the progress token.
    #[serde(rename = "_meta", borrow, default)]
    pub meta: Option<Meta<'a>>,
}

/// The tool arguments the upstream understands.
#[derive(Debug, Default, Deserialize)]
pub struct Arguments {
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// `params._meta`.
#[derive(Debug, Default, Deserialize)]
pub struct Meta<'a> {
    /// Progress notifications carry it back.
    #[serde(rename = "progressToken", borrow, default)]
    pub progress_token: Option<&'a RawValue>,
}

/// What a message is, for the answer it gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has an id and a method: answer it.
    Request,
    /// A notification or a response: 202, no body.
    Accepted,
}

/// A string borrowed from the body, copied only when it has escapes (serde
/// borrows a `Cow` only when it is not inside an `Option`).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    d.deserialize_option(Text)
}

impl<'a> Message<'a> {
    /// Parses one message object; batches (arrays) and other shapes are errors.
    pub fn parse(body: &'a [u8]) -> serde_json::Result<Message<'a>> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(serde::de::Error::custom("not a JSON-RPC message object"));
        }
        serde_json::from_slice(body)
    }

    /// Request, or something that is only acknowledged.
    pub fn kind(&self) -> Kind {
        match (&self.id, &self.method) {
            (Some(_), Some(_)) => Kind::Request,
            _ => Kind::Accepted,
        }
    }

    /// `params.name`, if any.
    pub fn name(&self) -> Option<&str> {
        self.params.as_ref()?.name.as_deref()
    }

    /// `params.arguments.delay_ms`, if any.
    pub fn delay_ms(&self) -> Option<u64> {
        self.params.as_ref()?.arguments.as_ref()?.delay_ms
    }

    /// `params._meta.progressToken`, if any.
    pub fn progress_token(&self) -> Option<&'a RawValue> {
        self.params.as_ref()?.meta.as_ref()?.progress_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tool_call_without_copying() {
        let body = br#"{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"sse",
            "arguments":{"delay_ms":5,"other":[1]},"_meta":{"progressToken":7}}}"#;
        let m = Message::parse(body).expect("valid");
        assert_eq!(m.kind(), Kind::Request);
        assert_eq!(m.id.map(RawValue::get), Some(r#""a-1""#));
        assert!(matches!(m.method, Some(Cow::Borrowed("tools/call"))));
        assert_eq!((m.name(), m.delay_ms()), (Some("sse"), Some(5)));
        assert_eq!(m.progress_token().map(RawValue::get), Some("7"));
    }

    #[test]
    fn notifications_and_responses_are_only_acknowledged() {
        for body in [
            &br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#[..],
            br#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
        ] {
            assert_eq!(Message::parse(body).expect("valid").kind(), Kind::Accepted);
        }
        assert!(Message::parse(b" [1]").is_err());
        let escaped = Message::parse(br#"{"id":1,"method":"tools\/call"}"#).expect("valid");
        assert_eq!(escaped.method.as_deref(), Some("tools/call"));
    }
}
