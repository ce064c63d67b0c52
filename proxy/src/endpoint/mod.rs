//! The MCP endpoint: one module per HTTP method, after the checks every
//! request passes ([`validate`]).

pub mod body;
pub mod delete;
pub mod get;
pub mod post;
pub mod standalone;
pub mod validate;

use std::sync::Arc;

use http::{HeaderValue, Request, Response};

use crate::app::App;
use crate::body::Body;
use crate::error::Failure;
use crate::mcp::headers::MCP_SESSION_ID;
use crate::metrics::ErrorLabels;

/// Serves one request on the MCP endpoint.
pub async fn handle(app: Arc<App>, req: Request<Body>) -> Response<Body> {
    let result = match *req.method() {
        http::Method::POST => post::handle(&app, req).await,
        http::Method::GET => get::handle(&app, req).await,
        http::Method::DELETE => delete::handle(&app, req).await,
        _ => Err(crate::error::Error::MethodNotAllowed.into()),
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

/// Sets Shadowcat's session id on a response.
pub fn with_session_id(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(MCP_SESSION_ID.clone(), value);
    }
    response
}
