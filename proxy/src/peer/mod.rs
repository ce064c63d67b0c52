//! Replica to replica: a request for a session another live replica owns is
//! forwarded to that replica's peer listener, authenticated with the secret
//! all replicas share and marked so it is never forwarded twice.

pub(crate) mod auth;
mod forward;

pub use auth::{PEER_AUTH, PEER_HOP, PEER_IDENTITY, PeerSecret, Refused, Signed};
pub use forward::{Forwarded, INSTANCE_PATH, PeerClient, Probe};
