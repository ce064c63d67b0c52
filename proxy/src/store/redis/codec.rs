//! How records, registry entries and log entries look in Redis, both ways.

use std::collections::{BTreeSet, HashMap};

use redis::streams::StreamId;

use super::super::{
    Owner, Result, SessionRecord, StoreError, StoredEvent, StreamKey, StreamKind, StreamMeta,
};

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn fields(record: &SessionRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", record.id.clone()),
        ("protocol_version", record.protocol_version.clone()),
        ("owner", record.owner.stored()),
        ("epoch", record.epoch.to_string()),
        ("initialize", record.initialize.clone()),
        ("standalone_stream", record.standalone_stream.clone()),
        ("created_ms", record.created_ms.to_string()),
    ];
    for (name, value) in [
        ("upstream_id", &record.upstream_id),
        ("owner_addr", &record.owner_addr),
        ("log_level", &record.log_level),
        ("principal", &record.principal),
    ] {
        if let Some(value) = value {
            fields.push((name, value.clone()));
        }
    }
    fields
}

pub(super) fn record_from(
    mut map: HashMap<String, String>,
    subscriptions: BTreeSet<String>,
) -> Result<Option<SessionRecord>> {
    if map.is_empty() {
        return Ok(None);
    }
    let mut take = |k: &str| {
        map.remove(k)
            .ok_or_else(|| corrupt(format!("session without `{k}`")))
    };
    let owner = take("owner")?;
    Ok(Some(SessionRecord {
        id: take("id")?,
        protocol_version: take("protocol_version")?,
        owner: Owner::from_stored(&owner).ok_or_else(|| corrupt(format!("bad owner {owner:?}")))?,
        epoch: take("epoch")?.parse().map_err(|_| corrupt("bad epoch"))?,
        initialize: take("initialize")?,
        standalone_stream: take("standalone_stream")?,
        created_ms: take("created_ms")?
            .parse()
            .map_err(|_| corrupt("bad created_ms"))?,
        upstream_id: map.remove("upstream_id"),
        owner_addr: map.remove("owner_addr"),
        log_level: map.remove("log_level"),
        principal: map.remove("principal"),
        subscriptions,
    }))
}

/// A stream registry entry as Redis keeps it. Lua's cjson writes an empty
/// array as `{}`, so `p` is read leniently.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Entry {
    pub(super) k: String,
    #[serde(default)]
    pub(super) p: serde_json::Value,
}

pub(super) fn meta_from(key: &StreamKey, text: &str) -> Result<StreamMeta> {
    let entry: Entry = serde_json::from_str(text).map_err(|e| corrupt(format!("bad stream entry: {e}")))?;
    let kind = match entry.k.as_str() {
        "request" => StreamKind::Request,
        "standalone" => StreamKind::Standalone,
        other => return Err(corrupt(format!("unknown stream kind {other}"))),
    };
    Ok(StreamMeta {
        id: key.id.clone(),
        session_id: key.session.clone(),
        kind,
        pending: match entry.p {
            serde_json::Value::Array(ids) => ids,
            _ => Vec::new(),
        },
    })
}

/// What a range of log entries holds.
#[derive(Default)]
pub(super) struct Entries {
    pub(super) events: Vec<StoredEvent>,
    /// The newest acknowledgement mark.
    pub(super) acked: u64,
    pub(super) ended: bool,
    /// The id of the last entry, to block for what comes after it.
    pub(super) last_id: Option<String>,
}

pub(super) fn entries_from(ids: Vec<StreamId>) -> Result<Entries> {
    let mut out = Entries::default();
    for entry in ids {
        out.last_id = Some(entry.id.clone());
        if entry.contains_key("end") {
            out.ended = true;
            break;
        }
        let (seq, sub) = entry
            .id
            .split_once('-')
            .and_then(|(seq, sub)| Some((seq.parse::<u64>().ok()?, sub)))
            .ok_or_else(|| corrupt(format!("bad entry id {}", entry.id)))?;
        if sub != "0" {
            out.acked = out.acked.max(seq);
            continue;
        }
        let data: String = entry
            .get("d")
            .ok_or_else(|| corrupt(format!("entry {} without data", entry.id)))?;
        out.events.push(StoredEvent {
            seq,
            event: entry.get("e"),
            data,
        });
    }
    Ok(out)
}
