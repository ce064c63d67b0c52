//! Method and path to handler, with request metrics around every answer.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::app::App;
use crate::body::{self, Body};
use crate::endpoint;
use crate::error::Error;
use crate::metrics::{MethodLabels, RequestLabels};

/// The public listener: the MCP endpoint and nothing else.
pub async fn public(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = method_label(req.method());
    let response = if req.uri().path() == app.settings.path {
        endpoint::handle(app.clone(), req).await
    } else {
        Error::NotFound.into_response(None)
    };
    let status = response.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&RequestLabels { method, status })
        .inc();
    app.metrics
        .request_duration
        .get_or_create(&MethodLabels { method })
        .observe(start.elapsed().as_secs_f64());
    Ok(response)
}

/// The admin listener: health, readiness, metrics.
pub async fn admin(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let response = match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match app.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let mut r = text(StatusCode::OK, app.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn text(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::HEAD => "HEAD",
        _ => "other",
    }
}
