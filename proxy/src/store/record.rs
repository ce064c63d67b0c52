//! What the store keeps of a session, and the identities that own sessions
//! and write streams.

use std::collections::BTreeSet;
use std::fmt;

use rand::RngCore;

/// One Shadowcat process: its replica name and the incarnation it drew when
/// it started. A pod that restarts under the same name (a StatefulSet) is a
/// new incarnation, so nothing the old process held is taken for alive.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// The replica's name (`POD_NAME`).
    pub replica: String,
    /// Random, drawn once per process.
    pub incarnation: String,
}

impl Instance {
    /// This process, as replica `replica`.
    pub fn new(replica: impl Into<String>) -> Self {
        let mut bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut bytes);
        Self {
            replica: replica.into(),
            incarnation: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Reads `replica@incarnation`.
    pub fn parse(text: &str) -> Option<Self> {
        let (replica, incarnation) = text.rsplit_once('@')?;
        (!replica.is_empty() && !incarnation.is_empty()).then(|| Self {
            replica: replica.to_owned(),
            incarnation: incarnation.to_owned(),
        })
    }
}

impl Instance {
    /// Whether `text` (as [`fmt::Display`] writes it) names this instance.
    pub fn matches(&self, text: &str) -> bool {
        text.rsplit_once('@') == Some((self.replica.as_str(), self.incarnation.as_str()))
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.replica, self.incarnation)
    }
}

/// Who holds a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Nobody: its owner handed it back (shutdown), so any replica may take
    /// it without asking whether the owner is alive.
    Released,
    /// The process whose upstream holds the session.
    Held(Instance),
}

impl Owner {
    /// How a store writes it: the instance, or empty when released.
    pub fn stored(&self) -> String {
        match self {
            Owner::Released => String::new(),
            Owner::Held(instance) => instance.to_string(),
        }
    }

    /// Reads what [`Owner::stored`] wrote.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "" => Some(Owner::Released),
            other => Instance::parse(other).map(Owner::Held),
        }
    }

    /// Whether `instance` holds it.
    pub fn is(&self, instance: &Instance) -> bool {
        matches!(self, Owner::Held(held) if held == instance)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Released => f.write_str("(released)"),
            Owner::Held(instance) => instance.fmt(f),
        }
    }
}

/// What the store keeps of a session: what requests need to route it, and
/// what a replica needs to re-create it on its own upstream (adoption).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Shadowcat's session id, the one clients see.
    pub id: String,
    /// The upstream's own session id, if the upstream is stateful.
    pub upstream_id: Option<String>,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// Who holds the session.
    pub owner: Owner,
    /// Ownership epoch: every claim increments it, and a write on behalf of
    /// the owner names the epoch it believes in, so an owner that lost the
    /// session (fenced) cannot write over its successor.
    pub epoch: u64,
    /// The owner's peer address when it claimed the session: where to ask
    /// whether it is still alive once its registration is gone.
    pub owner_addr: Option<String>,
    /// The `initialize` request, reduced to what re-initializing needs
    /// (protocol version, capabilities, client info).
    pub initialize: String,
    /// The id of the session's standalone (GET) stream log.
    pub standalone_stream: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The level the client set with `logging/setLevel`, if any.
    pub log_level: Option<String>,
    /// Resources the client subscribed to (`resources/subscribe`).
    pub subscriptions: BTreeSet<String>,
    /// The principal that created the session ([`crate::auth::Identity::principal`]),
    /// when tokens are verified: no other may use it.
    pub principal: Option<String>,
}

/// One field-level change to a session, made on behalf of its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// The upstream gave the session a new id (re-initialized).
    Upstream(Option<String>),
    /// The initialize answer told the negotiated version.
    Version(String),
    /// `logging/setLevel` succeeded.
    LogLevel(String),
    /// `resources/subscribe` succeeded.
    Subscribe(String),
    /// `resources/unsubscribe` succeeded.
    Unsubscribe(String),
}

impl SessionChange {
    /// Applies the change to a record (what a store does under its lock).
    pub fn apply(&self, record: &mut SessionRecord) {
        match self {
            SessionChange::Upstream(id) => record.upstream_id.clone_from(id),
            SessionChange::Version(v) => record.protocol_version.clone_from(v),
            SessionChange::LogLevel(level) => record.log_level = Some(level.clone()),
            SessionChange::Subscribe(uri) => {
                record.subscriptions.insert(uri.clone());
            }
            SessionChange::Unsubscribe(uri) => {
                record.subscriptions.remove(uri);
            }
        }
    }
}

/// The outcome of an owner's write to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Written.
    Applied,
    /// The session no longer exists.
    Gone,
    /// Another claim moved the session on: the writer is not its owner any
    /// more and must stop serving it.
    Fenced,
}

/// A live replica's registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The incarnation that registered.
    pub incarnation: String,
    /// Its peer address.
    pub addr: String,
    /// It is shutting down: its pumps still run, it takes nothing new.
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_through_their_stored_form() {
        let me = Instance::new("pod-0");
        assert_eq!(me.incarnation.len(), 12);
        assert_eq!(
            Owner::from_stored(&Owner::Held(me.clone()).stored()),
            Some(Owner::Held(me.clone()))
        );
        assert_eq!(Owner::from_stored(""), Some(Owner::Released));
        assert_eq!(Owner::from_stored("no-incarnation"), None);
        let again = Instance::new("pod-0");
        assert_ne!(me, again, "a restart under the same name is another instance");
        assert!(Owner::Held(me.clone()).is(&me) && !Owner::Held(me.clone()).is(&again));
        assert!(me.matches(&me.to_string()) && !again.matches(&me.to_string()));
    }
}
