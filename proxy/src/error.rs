//! One error type for the request path. Each error knows who caused it, and
//! [`Error::into_response`] turns it into the HTTP status, the JSON-RPC error
//! body and the metric label — the one place where that mapping lives.

use std::time::Duration;

use http::{Response, StatusCode, header};
use serde_json::Value;

use crate::body::{self, Body};
use crate::mcp::jsonrpc::code;
use crate::store::StoreError;

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The request was wrong.
    Client,
    /// The upstream MCP server failed.
    Upstream,
    /// The session store failed.
    Store,
    /// Shadowcat itself failed.
    Internal,
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Body is not JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// Body is JSON but not a valid JSON-RPC message for this endpoint.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// `Content-Type` is not `application/json`.
    #[error("unsupported Content-Type {0:?}: POST bodies must be application/json")]
    UnsupportedMediaType(String),
    /// `Accept` lacks a required media type.
    #[error("not acceptable: Accept must include {0}")]
    NotAcceptable(&'static str),
    /// Body over the configured limit.
    #[error("request body exceeds the {0}-byte limit")]
    PayloadTooLarge(u64),
    /// The body did not arrive in time.
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
    /// Request bodies in flight fill their budget.
    #[error("request bodies in flight fill the {0}-byte budget; retry")]
    Overloaded(usize),
    /// `MCP-Protocol-Version` names a version Shadowcat does not support.
    #[error("unsupported MCP-Protocol-Version {0:?}")]
    UnsupportedVersion(String),
    /// `Origin` not in the allow-list.
    #[error("origin {0:?} is not allowed")]
    ForbiddenOrigin(String),
    /// `Host` not in the allow-list (DNS-rebinding protection).
    #[error("host {0:?} is not allowed; see --allowed-hosts")]
    ForbiddenHost(String),
    /// A request other than initialize came without `Mcp-Session-Id`.
    #[error("missing Mcp-Session-Id header: send initialize first")]
    MissingSession,
    /// The session id is unknown, ended or expired.
    #[error("session not found: it ended or expired; initialize a new one")]
    UnknownSession,
    /// `Last-Event-ID` is not an id Shadowcat issued.
    #[error("malformed Last-Event-ID {0:?}")]
    BadLastEventId(String),
    /// The events after `Last-Event-ID` are no longer all there.
    #[error("{0}; events in between are lost")]
    ReplayMiss(String),
    /// 2026-07-28 routing headers disagree with the body.
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
    /// HTTP method not served on the MCP endpoint.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No route.
    #[error("not found")]
    NotFound,
    /// The upstream could not be reached or failed mid-exchange.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream did not answer in time.
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    /// The upstream answered with something that breaks the protocol.
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(String),
    /// The replica owning the session got the request but did not answer
    /// in time. It may still run it: it is not sent anywhere else.
    #[error("the replica serving this session did not answer within {0:?}")]
    OwnerTimeout(Duration),
    /// The replica owning the session got the request and then failed.
    #[error("the replica serving this session failed: {0}")]
    OwnerFailed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A peer request without a valid signature.
    #[error("peer request not authenticated")]
    PeerUnauthorized,
    /// Another replica took the session over at the same moment.
    #[error("session is moving between replicas; retry")]
    AdoptionRace,
    /// This replica no longer owns the session (another claimed it).
    #[error("session moved to another replica; retry")]
    OwnershipMoved,
    /// This replica holds as many sessions as it may.
    #[error("this replica holds its maximum of {0} sessions; retry")]
    TooManySessions(usize),
    /// New sessions arrive faster than this replica accepts them.
    #[error("more than {0} new sessions per second; retry")]
    SessionRateExceeded(u32),
    /// Shadowcat is shutting down and takes no new sessions.
    #[error("shutting down")]
    ShuttingDown,
    /// No valid access token, or not enough scope for the request.
    #[error("{0}")]
    Auth(crate::auth::Denied),
}

/// Result of the request path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Who caused it: the upstream (or the owning replica) for 502/504, the
    /// store, this process for any other 5xx, the client otherwise.
    pub fn cause(&self) -> Cause {
        match (self, self.status()) {
            (Error::Store(_), _) => Cause::Store,
            (_, StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT) => Cause::Upstream,
            (_, status) if status.is_server_error() => Cause::Internal,
            _ => Cause::Client,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Parse(_)
            | Error::InvalidRequest(_)
            | Error::UnsupportedVersion(_)
            | Error::MissingSession
            | Error::BadLastEventId(_)
            | Error::HeaderMismatch(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::ForbiddenOrigin(_) | Error::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            Error::ReplayMiss(_) => StatusCode::GONE,
            Error::UnknownSession | Error::NotFound => StatusCode::NOT_FOUND,
            Error::PeerUnauthorized => StatusCode::UNAUTHORIZED,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::UpstreamUnavailable(_) | Error::UpstreamProtocol(_) | Error::OwnerFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            Error::UpstreamTimeout(_) | Error::OwnerTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Auth(denied) => denied.status,
            Error::Store(_)
            | Error::ShuttingDown
            | Error::AdoptionRace
            | Error::OwnershipMoved
            | Error::TooManySessions(_)
            | Error::SessionRateExceeded(_)
            | Error::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON-RPC error code of the body: an internal error for every
    /// failure on Shadowcat's side (5xx), invalid request for the client's.
    pub fn code(&self) -> i64 {
        match self {
            Error::Parse(_) => code::PARSE_ERROR,
            Error::HeaderMismatch(_) => code::HEADER_MISMATCH,
            Error::NotFound => code::METHOD_NOT_FOUND,
            Error::ReplayMiss(_) => code::SERVER_ERROR,
            _ if self.status().is_server_error() => code::INTERNAL_ERROR,
            _ => code::INVALID_REQUEST,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Parse(_) => "parse_error",
            Error::InvalidRequest(_) => "invalid_request",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::NotAcceptable(_) => "not_acceptable",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::BodyTimeout(_) => "body_timeout",
            Error::Overloaded(_) => "bodies_over_budget",
            Error::UnsupportedVersion(_) => "unsupported_version",
            Error::ForbiddenOrigin(_) => "forbidden_origin",
            Error::ForbiddenHost(_) => "forbidden_host",
            Error::ReplayMiss(_) => "replay_miss",
            Error::OwnerTimeout(_) => "owner_timeout",
            Error::OwnerFailed(_) => "owner_failed",
            Error::OwnershipMoved => "ownership_moved",
            Error::TooManySessions(_) => "too_many_sessions",
            Error::SessionRateExceeded(_) => "session_rate_exceeded",
            Error::MissingSession => "missing_session",
            Error::UnknownSession => "unknown_session",
            Error::BadLastEventId(_) => "bad_last_event_id",
            Error::HeaderMismatch(_) => "header_mismatch",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NotFound => "not_found",
            Error::UpstreamUnavailable(_) => "upstream_unavailable",
            Error::UpstreamTimeout(_) => "upstream_timeout",
            Error::UpstreamProtocol(_) => "upstream_protocol",
            Error::Store(_) => "store_unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::AdoptionRace => "adoption_race",
            Error::PeerUnauthorized => "peer_unauthorized",
            Error::Auth(denied) => denied.outcome,
        }
    }

    /// The HTTP answer: status, and a JSON-RPC error body carrying `id`.
    pub fn into_response(self, id: Option<&Value>) -> Response<Body> {
        let status = self.status();
        match self.cause() {
            Cause::Client => tracing::debug!(error = %self, label = self.label(), "refused request"),
            cause => tracing::warn!(error = %self, label = self.label(), ?cause, "request failed"),
        }
        let body = crate::mcp::jsonrpc::error_body(id, self.code(), &self.to_string());
        let mut response = Response::new(body::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Error::Auth(crate::auth::Denied {
            challenge: Some(challenge),
            ..
        }) = &self
            && let Ok(value) = header::HeaderValue::from_str(challenge)
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(
                    header::ALLOW,
                    header::HeaderValue::from_static("GET, POST, DELETE"),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// An [`Error`] with the JSON-RPC id of the request it answers.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// The id of the request, when it is known.
    pub id: Option<Value>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, id: None }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Error::Store(error).into()
    }
}

impl Error {
    /// Attaches the id of the request this error answers.
    pub fn with_id(self, id: Option<Value>) -> Failure {
        Failure { error: self, id }
    }
}

impl From<crate::mcp::jsonrpc::ParseError> for Error {
    fn from(e: crate::mcp::jsonrpc::ParseError) -> Self {
        match e {
            crate::mcp::jsonrpc::ParseError::Json(m) => Error::Parse(m),
            crate::mcp::jsonrpc::ParseError::Shape(m) => Error::InvalidRequest(m),
        }
    }
}
