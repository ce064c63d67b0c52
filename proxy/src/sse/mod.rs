//! Server-sent events: an incremental parser for what the upstream sends and an
//! encoder for what Shadowcat sends, both following the WHATWG event-stream rules.

mod encode;
mod parser;

pub use encode::{comment, encode_event, retry};
pub use parser::{Parser, RawEvent, TooLarge};
