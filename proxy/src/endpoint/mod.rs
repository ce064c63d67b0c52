//! The MCP endpoint: one module per HTTP method, after the checks every
//! request passes ([`validate`]).

pub mod body;
pub mod delete;
pub mod get;
pub mod policed;
pub mod post;
pub mod standalone;
pub mod validate;

use std::sync::Arc;

use http::{HeaderValue, Request, Response};

use crate::app::App;
use crate::auth::Identity;
use crate::body::Body;
use crate::error::Failure;
use crate::mcp::headers::MCP_SESSION_ID;
use crate::metrics::ErrorLabels;

/// Serves one request on the MCP endpoint.
pub async fn handle(app: Arc<App>, req: Request<Body>) -> Response<Body> {
    let result = match authenticate(&app, req).await {
        Ok(req) => dispatch(&app, req).await,
        Err(error) => Err(error.into()),
    };
    result.unwrap_or_else(|Failure { error, id }| {
        app.metrics
            .errors
            .get_or_create(&ErrorLabels {
                reason: error.label(),
            })
            .inc();
        error.into_response(id.as_ref())
    })
}

/// With token verification on: the request's identity, from its token (or,
/// for a forwarded request, from the replica that verified it), in the
/// request's extensions; the token itself removed, the claim headers set.
/// GET and DELETE need the default scopes here; a POST's scopes depend on
/// its body and are checked once it is read.
async fn authenticate(app: &App, req: Request<Body>) -> Result<Request<Body>, crate::error::Error> {
    let Some(auth) = &app.auth else { return Ok(req) };
    let (mut parts, body) = req.into_parts();
    let identity = match parts.extensions.get::<Arc<Identity>>() {
        Some(forwarded) => forwarded.clone(),
        None => match auth.authenticate(&parts).await {
            Ok(identity) => identity,
            Err(denied) => {
                discard(body, app.settings.max_body_bytes).await;
                return Err(crate::error::Error::Auth(denied));
            }
        },
    };
    if parts.method != http::Method::POST {
        auth.authorize(&identity, None)
            .map_err(crate::error::Error::Auth)?;
    }
    auth.upstream_headers(&mut parts.headers, &identity);
    parts.extensions.insert(identity);
    Ok(Request::from_parts(parts, body))
}

/// Reads what has come of a refused request's body, and drops it (up to the
/// body limit, for a moment at most). Every OAuth client's first request is
/// refused, and its body may still be on the wire: closing the connection
/// with unread data in it makes the kernel reset it, and the client loses the
/// 401 it was about to read. Drained, the connection stays usable too.
async fn discard(body: Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut seen = 0u64;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > limit {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

async fn dispatch(app: &Arc<App>, req: Request<Body>) -> Result<Response<Body>, Failure> {
    let app = app.clone();
    match *req.method() {
        http::Method::POST => post::handle(&app, req).await,
        http::Method::GET => get::handle(&app, req).await,
        http::Method::DELETE => delete::handle(&app, req).await,
        _ => Err(crate::error::Error::MethodNotAllowed.into()),
    }
}

/// Sets Shadowcat's session id on a response.
pub fn with_session_id(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(MCP_SESSION_ID.clone(), value);
    }
    response
}
