//! Taking a session over from an owner that is gone, and re-creating a
//! session the local upstream forgot.

use std::sync::Arc;

use http::HeaderMap;

use super::{orphans, reinit};
use crate::app::App;
use crate::endpoint::standalone;
use crate::error::{Error, Result};
use crate::session::{Session, Standalone};
use crate::store::{Owner, SessionChange};

/// Claims session `id` (whose owner is gone, for reason `why`), re-creates it
/// on this replica's upstream, and answers the requests the lost owner left
/// unanswered. `headers` are the client's, for the upstream standalone GET.
pub async fn adopt(app: &Arc<App>, id: &str, why: &str, headers: &HeaderMap) -> Result<Session> {
    let record = app.store.get_session(id).await?.ok_or(Error::UnknownSession)?;
    let me = app.sessions.me().clone();
    if record.owner.is(&me) {
        return app.sessions.lookup(id).await;
    }
    app.sessions.admit_adoption()?;
    let from = record.owner.clone();
    let addr = app.sessions.addr().map(str::to_owned);
    let Some(epoch) = app
        .store
        .claim_session(id, record.epoch, &Owner::Held(me.clone()), addr.as_deref())
        .await?
    else {
        app.metrics.adoptions_lost.inc();
        return Err(Error::AdoptionRace);
    };
    tracing::info!(session = %id, %from, why, epoch, "adopting session");
    app.metrics.adoptions.inc();
    let mut record = record;
    record.owner = Owner::Held(me);
    record.epoch = epoch;
    record.owner_addr = addr;
    let mut session = app.sessions.install(record);
    let local = session.local.clone();
    let _once = local.reinit.lock().await;
    recreate_upstream(app, &mut session).await?;
    tracing::debug!(session = %id, upstream = ?session.record.upstream_id, "upstream re-initialized");
    orphans::fail_abandoned(app, &session.record).await;
    // The new upstream session's standalone stream.
    standalone::open_in_background(app, &session, headers);
    Ok(session)
}

/// The upstream lost a session this replica owns (it restarted): give it a
/// new upstream session the same way an adoption would, once, however many
/// requests notice at the same time.
pub async fn reinitialize_owned(app: &Arc<App>, failed: &Session, headers: &HeaderMap) -> Result<Session> {
    let id = &failed.record.id;
    let local = failed.local.clone();
    let _once = local.reinit.lock().await;
    let current = app.store.get_session(id).await?.ok_or(Error::UnknownSession)?;
    if !current.owner.is(app.sessions.me()) {
        return Err(Error::OwnershipMoved);
    }
    let forgotten = current.upstream_id == failed.record.upstream_id;
    let mut session = app.sessions.install(current);
    if !forgotten {
        // Another request re-initialized it while this one waited.
        return Ok(session);
    }
    tracing::info!(session = %id, "upstream lost the session; re-initializing it");
    app.metrics.reinitializations.inc();
    recreate_upstream(app, &mut session).await?;
    // The standalone pump belonged to the forgotten upstream session.
    if let Standalone::Pumping(pump) = std::mem::take(&mut *local.standalone.lock().await) {
        pump.abort();
    }
    // The new upstream session's standalone stream.
    standalone::open_in_background(app, &session, headers);
    Ok(session)
}

/// Creates the session on this replica's upstream and records the new
/// upstream session id.
async fn recreate_upstream(app: &App, session: &mut Session) -> Result<()> {
    let upstream_id = reinit::run(app, &session.record).await?;
    app.sessions
        .update(session, SessionChange::Upstream(upstream_id.clone()))
        .await?;
    Arc::make_mut(&mut session.record).upstream_id = upstream_id;
    Ok(())
}
