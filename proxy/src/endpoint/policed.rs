//! The HTTP side of policy on a POST: deciding its messages before the
//! upstream sees them, answering for the refused ones, and deciding the
//! upstream's JSON answer before the client sees it. Event streams are
//! decided event by event by their pump instead.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::Value;

use crate::app::App;
use crate::body::{self, Body};
use crate::error::Error;
use crate::mcp::headers::MCP_NAME;
use crate::mcp::jsonrpc::code;
use crate::policy::{Exchange, Policy, Scope};
use crate::relay::json;

/// A POST the policy let (at least partly) through.
#[derive(Debug, Default)]
pub struct Admission {
    /// The policy that decided, if one is in force.
    pub policy: Option<Arc<Policy>>,
    /// Who and where.
    pub scope: Scope,
    /// The body to forward.
    pub bytes: Bytes,
    /// The requests forwarded, for their responses.
    pub exchange: Exchange,
    /// Error responses for the requests refused; they join the answer.
    pub refusals: Vec<Value>,
}

impl Admission {
    /// Whether the upstream's JSON answer must be read before it is
    /// passed on.
    fn reads_answer(&self) -> bool {
        !self.refusals.is_empty() || self.policy.as_ref().is_some_and(|p| p.reads_answers())
    }
}

/// Decides the messages of a POST. `Err` is the whole answer when no
/// message is left to forward.
pub async fn admit(app: &App, scope: Scope, bytes: Bytes, batch: bool) -> Result<Admission, Response<Body>> {
    let Some(policy) = app.policies.current() else {
        return Ok(Admission {
            scope,
            bytes,
            ..Default::default()
        });
    };
    let admitted = policy.client(&scope, &bytes).await;
    let Some(forward) = admitted.forward else {
        return Err(refused(
            admitted.refusals,
            admitted.refused_other,
            admitted.retry_after,
            batch,
        ));
    };
    Ok(Admission {
        policy: Some(policy),
        scope,
        bytes: forward,
        exchange: admitted.pending,
        refusals: admitted.refusals,
    })
}

/// The answer to a POST none of whose messages may go on.
fn refused(
    mut refusals: Vec<Value>,
    other: Option<Value>,
    retry_after: Option<std::time::Duration>,
    batch: bool,
) -> Response<Body> {
    if refusals.is_empty() {
        // Notifications or responses only: nothing to answer them with but
        // an HTTP error, with the reason in the body.
        let body = other.unwrap_or_else(|| {
            serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code::POLICY_DENIED, "message": "denied by policy"}})
        });
        return json_response(StatusCode::FORBIDDEN, &body);
    }
    if batch {
        return json_response(StatusCode::OK, &Value::Array(refusals));
    }
    let refusal = refusals.swap_remove(0);
    let Some(wait) = retry_after else {
        return json_response(StatusCode::OK, &refusal);
    };
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &refusal);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from(
        serde_json::to_vec(value).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Passes a non-stream upstream answer on: straight through when nothing
/// needs to see it, else read whole (one JSON message or batch, bounded like
/// an event), decided, and joined by the answers for refused requests.
pub async fn answer(
    app: &App,
    response: Response<Incoming>,
    admission: &mut Admission,
) -> Result<Response<Body>, Error> {
    if !admission.reads_answer() {
        return Ok(json::pass_through(response));
    }
    if response.status() == StatusCode::ACCEPTED && !admission.refusals.is_empty() {
        // The forwarded messages needed no answer; the refused requests do.
        let refusals = std::mem::take(&mut admission.refusals);
        return Ok(json_response(StatusCode::OK, &Value::Array(refusals)));
    }
    let is_json = crate::mcp::headers::content_type(response.headers())
        .is_some_and(|ct| ct.eq_ignore_ascii_case("application/json"));
    if !is_json || (!response.status().is_success() && admission.refusals.is_empty()) {
        return Ok(json::pass_through(response));
    }
    // From here: a JSON answer, or the upstream's JSON error for the part of
    // a batch it got, which the refusals still join (same status).
    let (parts, incoming) = response.into_parts();
    let limit = u64::try_from(app.settings.sse.max_event_bytes).unwrap_or(u64::MAX);
    let bytes = json::collect(incoming, limit).await.map_err(|e| {
        Error::UpstreamProtocol(format!(
            "the upstream's answer is over the {limit} bytes the policy reads (sse.maxEventBytes): {e}"
        ))
    })?;
    let mut bytes = match &admission.policy {
        Some(policy) => policy
            .server_body(&admission.scope, &mut admission.exchange, &bytes)
            .await
            .unwrap_or(bytes),
        None => bytes,
    };
    bytes = with_refusals(bytes, admission);
    Ok(json::buffered(parts, bytes))
}

/// A JSON answer joined by the answers for the requests the policy refused,
/// if there are any.
pub fn with_refusals(answer: Bytes, admission: &mut Admission) -> Bytes {
    if admission.refusals.is_empty() {
        return answer;
    }
    join(&answer, std::mem::take(&mut admission.refusals))
}

/// The client's headers with `Mcp-Name` (2026-07-28) made to agree with a
/// body the policy rewrote (a renamed tool), as the upstream checks it.
pub fn routing_headers_for(headers: &http::HeaderMap, admission: &Admission) -> Option<http::HeaderMap> {
    let sent = headers.get(&MCP_NAME)?;
    let body: Value = serde_json::from_slice(&admission.bytes).ok()?;
    let name = body
        .pointer("/params/name")
        .or_else(|| body.pointer("/params/uri"))
        .and_then(Value::as_str)?;
    if sent.as_bytes() == name.as_bytes() {
        return None;
    }
    let mut headers = headers.clone();
    headers.insert(MCP_NAME.clone(), HeaderValue::from_str(name).ok()?);
    Some(headers)
}

/// A JSON answer (one message or a batch) with `more` responses added: a batch.
fn join(answer: &[u8], more: Vec<Value>) -> Bytes {
    let mut all = match serde_json::from_slice::<Value>(answer) {
        Ok(Value::Array(list)) => list,
        Ok(single) => vec![single],
        Err(_) => Vec::new(),
    };
    all.extend(more);
    Bytes::from(serde_json::to_vec(&Value::Array(all)).unwrap_or_default())
}
