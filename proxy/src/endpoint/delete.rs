//! DELETE: the client ends its session, upstream and here.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::validate;
use crate::app::App;
use crate::body::{self, Body};
use crate::error::Failure;
use crate::placement::{self, Forwardable, Located};
use crate::relay::json;
use crate::upstream::{UpstreamRequest, client_headers_for_upstream};

/// Serves a DELETE.
pub async fn handle(app: &Arc<App>, req: Request<Body>) -> Result<Response<Body>, Failure> {
    let (parts, _) = req.into_parts();
    let headers = &parts.headers;
    validate::origin_and_host(&parts, &app.settings)?;
    let id = validate::session_id(headers)?;
    let request = Forwardable::new(&parts, Bytes::new());
    let session = match placement::locate(app, id, &request).await? {
        Located::Here(session) => session,
        Located::Answered(response) => return Ok(response),
    };
    let upstream = match &session.record.upstream_id {
        None => None,
        Some(id) => {
            let request = UpstreamRequest {
                method: Method::DELETE,
                headers: client_headers_for_upstream(headers),
                session: Some(id.clone()),
                ..Default::default()
            };
            Some(app.upstream.send(request).await)
        }
    };
    // The session ends here whatever the upstream says: the client asked for
    // it, and an upstream that cannot end its own session lets it expire.
    app.sessions.end(&session.record.id).await?;
    tracing::info!(session = %session.record.id, "session ended by client");
    match upstream {
        Some(Ok(response)) if response.status().is_success() => Ok(json::pass_through(response)),
        Some(Ok(response)) => {
            tracing::debug!(status = %response.status(), "upstream did not end its session");
            Ok(ok())
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot end the upstream session");
            Ok(ok())
        }
        None => Ok(ok()),
    }
}

fn ok() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    response
}
