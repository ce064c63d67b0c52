//! Is a replica alive? Only proof that it is gone justifies taking its
//! sessions or streams over.
//!
//! - Registered as another incarnation: the pod restarted under its name;
//!   the old process is gone.
//! - Registered as the same incarnation: alive (serving or draining) —
//!   unless, when asked to confirm, its peer port refuses the connection
//!   (killed: its registration outlives it by up to a heartbeat TTL) or
//!   another process answers there. A probe that merely times out proves
//!   nothing: a slow owner is not a dead one.
//! - Not registered: its heartbeat may just have missed a Redis hiccup, so
//!   ask it directly at its last known peer address. It is gone only if that
//!   probe fails or another process answers.

use std::time::Duration;

use crate::app::App;
use crate::error::Result;
use crate::peer::Probe;
use crate::store::{Instance, Owner, SessionRecord};

/// How long a liveness probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What is known of a process.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Alive and taking requests at this peer address.
    Serving(String),
    /// Alive but shutting down: its pumps still run, it takes nothing new.
    Draining,
    /// Gone, and why that is certain.
    Gone(&'static str),
}

/// Whether a registered process is taken at its word, or asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Its registration is enough (a forward that follows finds out anyway
    /// whether it is refused).
    Registration,
    /// Ask it at its address too (before taking its streams over).
    Confirm,
}

/// Checks the owner of `record` (not this process).
pub async fn of_owner(app: &App, record: &SessionRecord, check: Check) -> Result<Liveness> {
    let Owner::Held(owner) = &record.owner else {
        return Ok(Liveness::Gone("its owner released it"));
    };
    of_instance(app, owner, record.owner_addr.as_deref(), check).await
}

/// Checks a stream's writer, given as [`Instance`] text. Its last known
/// address is the session's owner address when it owns the session.
pub async fn of_writer(app: &App, writer: &str, record: Option<&SessionRecord>) -> Result<Liveness> {
    let Some(instance) = Instance::parse(writer) else {
        return Ok(Liveness::Gone("its writer is unreadable"));
    };
    let addr = record
        .filter(|r| r.owner.is(&instance))
        .and_then(|r| r.owner_addr.as_deref());
    of_instance(app, &instance, addr, Check::Confirm).await
}

async fn of_instance(app: &App, instance: &Instance, addr: Option<&str>, check: Check) -> Result<Liveness> {
    let registered = match app.store.registration(&instance.replica).await? {
        Some(r) if r.incarnation != instance.incarnation => {
            return Ok(Liveness::Gone("its replica restarted as another process"));
        }
        Some(r) => r,
        None => {
            let Some(addr) = addr else {
                return Ok(Liveness::Gone("it is not registered and left no address"));
            };
            return Ok(match probe(app, instance, addr).await {
                Some(true) => {
                    tracing::info!(%instance, addr, "not registered but answering; treating it as alive");
                    Liveness::Serving(addr.to_owned())
                }
                _ => Liveness::Gone("it is not registered and does not answer"),
            });
        }
    };
    if check == Check::Confirm
        && !registered.addr.is_empty()
        && probe(app, instance, &registered.addr).await == Some(false)
    {
        return Ok(Liveness::Gone("its peer port refuses it"));
    }
    Ok(match registered.draining {
        true => Liveness::Draining,
        false => Liveness::Serving(registered.addr),
    })
}

/// Asks the process at `addr` who it is: `Some(true)` when it is
/// `instance`, `Some(false)` when something else answers or nothing listens,
/// `None` when there is no answer in time (which proves nothing).
async fn probe(app: &App, instance: &Instance, addr: &str) -> Option<bool> {
    let peer = app.peer.as_ref()?;
    match tokio::time::timeout(PROBE_TIMEOUT, peer.instance_at(addr)).await {
        Ok(Probe::Instance(answer)) => Some(instance.matches(&answer)),
        Ok(Probe::Refused) => Some(false),
        Ok(Probe::NoAnswer) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shadowcat_crds::SidecarConfig;

    use super::*;
    use crate::store::{Store, suite};

    #[tokio::test]
    async fn only_proof_makes_an_owner_gone() {
        let (app, store) = crate::test_support::app(SidecarConfig::default());
        let owner = Instance::new("owner");
        let mut record = suite::record("s");
        record.owner = Owner::Held(owner.clone());
        record.owner_addr = Some("127.0.0.1:1".into());
        let ttl = Duration::from_secs(60);
        async fn check(app: &App, record: &SessionRecord) -> Liveness {
            of_owner(app, record, Check::Registration).await.unwrap()
        }

        store
            .heartbeat(&owner, "10.0.0.1:8081", false, ttl)
            .await
            .unwrap();
        assert_eq!(
            check(&app, &record).await,
            Liveness::Serving("10.0.0.1:8081".into())
        );
        store.heartbeat(&owner, "10.0.0.1:8081", true, ttl).await.unwrap();
        assert_eq!(check(&app, &record).await, Liveness::Draining);
        // The pod came back under the same name: another process.
        let again = Instance {
            replica: "owner".into(),
            incarnation: "new".into(),
        };
        store
            .heartbeat(&again, "10.0.0.1:8081", false, ttl)
            .await
            .unwrap();
        assert!(matches!(check(&app, &record).await, Liveness::Gone(_)));
        // Unregistered (without a peer client nothing can be asked).
        store.deregister(&again).await.unwrap();
        assert!(matches!(check(&app, &record).await, Liveness::Gone(_)));
        record.owner = Owner::Released;
        assert!(matches!(check(&app, &record).await, Liveness::Gone(_)));
    }

    #[tokio::test]
    async fn an_owner_that_answers_is_alive_registered_or_not() {
        use crate::test_support::{app_as, peer_client, serve_peer};
        let me = Instance::new("me");
        let (app, store) = app_as(SidecarConfig::default(), me, Some(peer_client()));
        let owner = Instance::new("owner");
        let (owner_app, _) = app_as(SidecarConfig::default(), owner.clone(), None);
        let addr = serve_peer(owner_app).await;
        let mut record = suite::record("s");
        record.owner = Owner::Held(owner.clone());
        record.owner_addr = Some(addr.clone());

        // Its heartbeat missed a Redis hiccup, but it answers: alive.
        assert_eq!(
            of_owner(&app, &record, Check::Registration).await.unwrap(),
            Liveness::Serving(addr.clone())
        );
        // Registered, and its port answers as itself when asked to confirm.
        let ttl = Duration::from_secs(60);
        store.heartbeat(&owner, &addr, false, ttl).await.unwrap();
        assert_eq!(
            of_owner(&app, &record, Check::Confirm).await.unwrap(),
            Liveness::Serving(addr.clone())
        );
        // Another process answers at that address: the owner is gone.
        let (stranger, _) = app_as(SidecarConfig::default(), Instance::new("owner"), None);
        let elsewhere = serve_peer(stranger).await;
        store.heartbeat(&owner, &elsewhere, false, ttl).await.unwrap();
        assert_eq!(
            of_owner(&app, &record, Check::Confirm).await.unwrap(),
            Liveness::Gone("its peer port refuses it")
        );
        // Registered, but nothing listens at its port any more (killed).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        store.heartbeat(&owner, &closed, false, ttl).await.unwrap();
        assert_eq!(
            of_owner(&app, &record, Check::Confirm).await.unwrap(),
            Liveness::Gone("its peer port refuses it")
        );
        assert_eq!(
            of_owner(&app, &record, Check::Registration).await.unwrap(),
            Liveness::Serving(closed),
            "a registration alone is taken at its word"
        );
        // Unregistered, and nothing answers at its last address.
        store.deregister(&owner).await.unwrap();
        record.owner_addr = Some(
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string(),
        );
        assert_eq!(
            of_owner(&app, &record, Check::Registration).await.unwrap(),
            Liveness::Gone("it is not registered and does not answer")
        );
    }
}
