//! Which replica serves a session's request: its owner.
//!
//! A request that lands on another replica is forwarded to the owner while
//! the owner is alive. Only when the owner is *proven* gone — released,
//! restarted as another incarnation, refusing the connection before the
//! request was written, or unregistered and not answering a liveness probe —
//! does the receiving replica adopt the session ([`adopt`]). A forward that
//! fails after the request was sent is an error for the client (504/502),
//! never a reason to run the request again elsewhere: slow is not dead.
//!
//! - [`liveness`]: is a replica (or a stream's writer) alive?
//! - [`adopt`]: take a session over, re-create it upstream ([`reinit`]), and
//!   answer what the lost owner left unanswered ([`orphans`]).

pub mod adopt;
pub mod liveness;
pub mod orphans;
pub mod reinit;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};

use self::liveness::{Check, Liveness};
use crate::app::App;
use crate::auth::Identity;
use crate::body::Body;
use crate::error::{Error, Result};
use crate::peer::Forwarded;
use crate::session::Session;
use crate::store::{Instance, Owner};

/// What a request is, as far as forwarding it needs.
#[derive(Debug)]
pub struct Forwardable<'a> {
    /// HTTP method.
    pub method: Method,
    /// Request path.
    pub path: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The body (empty for GET and DELETE).
    pub body: Bytes,
    /// Who sent it, when tokens are verified.
    pub identity: Option<Arc<Identity>>,
}

impl<'a> Forwardable<'a> {
    /// The request `parts` describe, with `body` (empty for GET and DELETE).
    pub fn new(parts: &'a http::request::Parts, body: Bytes) -> Self {
        Self {
            method: parts.method.clone(),
            path: parts.uri.path(),
            headers: &parts.headers,
            body,
            identity: parts.extensions.get::<Arc<Identity>>().cloned(),
        }
    }

    /// Whether the request came over the peer port (only that listener lets
    /// the hop marker through).
    fn came_from_peer(&self) -> bool {
        self.headers.contains_key(&crate::peer::PEER_HOP)
    }
}

/// Where a request ended up.
#[derive(Debug)]
pub enum Located {
    /// Serve it here: this process owns the session (perhaps just adopted).
    Here(Session),
    /// The owner answered it; its response.
    Answered(Response<Body>),
}

/// Attempts at placing one request: an adoption lost to another replica
/// means that replica now owns the session, so place the request again.
const ATTEMPTS: usize = 3;

/// Finds where a request of session `id` is served, and forwards it there
/// when that is another replica.
pub async fn locate(app: &Arc<App>, id: &str, request: &Forwardable<'_>) -> Result<Located> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match place_once(app, id, request).await {
            Err(Error::AdoptionRace) if attempt < ATTEMPTS => continue,
            other => return other,
        }
    }
}

async fn place_once(app: &Arc<App>, id: &str, request: &Forwardable<'_>) -> Result<Located> {
    let session = app.sessions.lookup(id).await?;
    check_principal(app, &session, request.identity.as_deref())?;
    let why = match &session.record.owner {
        Owner::Held(owner) if owner == app.sessions.me() => {
            return Ok(Located::Here(settled(app, session).await?));
        }
        Owner::Released => "its owner released it",
        Owner::Held(owner) => match forward(app, &session, owner, request).await? {
            ToOwner::Answered(response) => return Ok(Located::Answered(response)),
            ToOwner::Gone(why) => why,
        },
    };
    adopt::adopt(app, id, why, request.headers)
        .await
        .map(Located::Here)
}

/// With token verification on, a session serves only the principal that
/// created it. Any other gets 404, as if the session did not exist, so
/// session ids cannot be probed; the refusal is counted and logged.
pub fn check_principal(app: &App, session: &Session, identity: Option<&Identity>) -> Result<()> {
    let Some(auth) = &app.auth else { return Ok(()) };
    let theirs = identity.map(Identity::principal);
    if theirs.is_some() && theirs == session.record.principal.as_deref() {
        return Ok(());
    }
    auth.count_wrong_principal(identity, &session.record.id);
    Err(Error::UnknownSession)
}

/// What became of a request for another replica's session.
enum ToOwner {
    /// The owner answered; its response.
    Answered(Response<Body>),
    /// The owner is gone (or cannot be forwarded to), and why: adopt.
    Gone(&'static str),
}

/// Forwards a request to the session's owner, `owner`, while it is alive.
async fn forward(
    app: &Arc<App>,
    session: &Session,
    owner: &Instance,
    request: &Forwardable<'_>,
) -> Result<ToOwner> {
    let Some(peer) = &app.peer else {
        // Without a peer secret there is no forwarding: every replica serves
        // what it receives (each request moves the session; fenced owners
        // step back), which is correct but costly.
        return Ok(ToOwner::Gone("replicas cannot forward without a peer secret"));
    };
    let addr = match liveness::of_owner(app, &session.record, Check::Registration).await? {
        Liveness::Serving(addr) => addr,
        Liveness::Draining => return Ok(ToOwner::Gone("its owner is draining")),
        Liveness::Gone(why) => return Ok(ToOwner::Gone(why)),
    };
    if request.came_from_peer() {
        // The forwarding replica saw another owner than the store does now:
        // never forward twice; the client retries and lands right.
        return Err(Error::OwnershipMoved);
    }
    let id = &session.record.id;
    match peer.forward(&addr, request, id).await? {
        Forwarded::Answer(response) => {
            app.metrics.forwards.inc();
            Ok(ToOwner::Answered(response))
        }
        Forwarded::NotSent(why) => {
            tracing::warn!(session = %id, %owner, owner_addr = %addr, why, "owner unreachable; adopting");
            Ok(ToOwner::Gone("its owner refused the connection"))
        }
    }
}

/// A session this process owns, once any adoption or re-initialization of
/// it in this process has finished (so the request sees the new upstream).
async fn settled(app: &App, session: Session) -> Result<Session> {
    if session.local.reinit.try_lock().is_ok() {
        return Ok(session);
    }
    drop(session.local.reinit.lock().await);
    app.sessions.lookup(&session.record.id).await
}

/// The session, adopted first if its owner is proven gone. For resumption,
/// which any replica serves from the store: taking over first answers the
/// lost owner's unfinished requests into their logs.
pub async fn adopt_if_orphaned(app: &Arc<App>, session: Session, headers: &HeaderMap) -> Result<Session> {
    let Owner::Held(owner) = &session.record.owner else {
        return adopt::adopt(app, &session.record.id, "its owner released it", headers).await;
    };
    if owner == app.sessions.me() || app.peer.is_none() {
        return Ok(session);
    }
    match liveness::of_owner(app, &session.record, Check::Confirm).await? {
        Liveness::Serving(_) | Liveness::Draining => Ok(session),
        Liveness::Gone(why) => match adopt::adopt(app, &session.record.id, why, headers).await {
            Err(Error::AdoptionRace) => app.sessions.lookup(&session.record.id).await,
            other => other,
        },
    }
}
