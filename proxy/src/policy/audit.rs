//! Audit events: one JSON line per request/response pair and per refused
//! message, written by a thread of its own so a slow disk or a full pipe
//! never holds a message up. When the queue is full, events are dropped and
//! counted (`shadowcat_audit_write_errors_total`), never waited for.

use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value, json};
use shadowcat_crds::{AuditConfig, PolicyError};
use tokio::sync::mpsc;

use super::eval::{Expr, kind_name};
use super::{Direction, Pending, Scope, named};
use crate::mcp::jsonrpc::Kind;
use crate::metrics::Metrics;

/// Events queued for the writer at most.
const QUEUE: usize = 8192;

/// Where audit events go.
#[derive(Debug)]
pub struct Audit {
    /// Whether events carry the arguments.
    pub arguments: bool,
    /// Where true, the arguments are written as `"[redacted]"`.
    pub redact: Option<Expr>,
    queue: mpsc::Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
}

impl Audit {
    /// Opens the sink and starts its writer.
    pub fn new(config: &AuditConfig, metrics: Arc<Metrics>) -> Result<Self, PolicyError> {
        let mut sink: Box<dyn Write + Send> = if config.to == "stdout" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&config.to)
                .map_err(|e| PolicyError {
                    path: "audit.to".into(),
                    position: None,
                    message: format!("cannot open {}: {e}", config.to),
                })?;
            Box::new(file)
        };
        let (queue, mut lines) = mpsc::channel::<Vec<u8>>(QUEUE);
        let errors = metrics.clone();
        std::thread::Builder::new()
            .name("shadowcat-audit".into())
            .spawn(move || {
                while let Some(line) = lines.blocking_recv() {
                    if sink.write_all(&line).and_then(|()| sink.flush()).is_err() {
                        errors.audit_write_errors.inc();
                    }
                }
            })
            .map_err(|e| PolicyError {
                path: "audit".into(),
                position: None,
                message: format!("cannot start the audit writer: {e}"),
            })?;
        Ok(Self {
            arguments: config.arguments.unwrap_or(false),
            redact: config
                .redact
                .as_deref()
                .map(|r| Expr::compile("audit.redact", r))
                .transpose()?,
            queue,
            metrics,
        })
    }

    /// Writes one event: `fields` plus the time.
    pub fn write(&self, mut fields: Map<String, Value>) {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        fields.insert("time".into(), json!(time));
        fields.insert("type".into(), json!("shadowcat.audit"));
        let mut line = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
        line.push(b'\n');
        if self.queue.try_send(line).is_err() {
            self.metrics.audit_write_errors.inc();
        }
    }

    /// The event of a request and its response.
    pub fn pair(&self, scope: &Scope, pending: &Pending, response: &Value, bytes: usize) {
        let mut event = base_event(scope, Direction::Client, Kind::Request);
        event.insert("id".into(), pending.id.clone());
        event.insert("method".into(), json!(pending.method));
        event.insert("name".into(), json!(pending.name));
        event.insert("decision".into(), json!("allow"));
        event.insert("rule".into(), json!(pending.rule));
        match response.get("error") {
            Some(error) => {
                event.insert("outcome".into(), json!("error"));
                event.insert(
                    "errorCode".into(),
                    error.get("code").cloned().unwrap_or(Value::Null),
                );
            }
            None => {
                let is_error = response.pointer("/result/isError") == Some(&Value::Bool(true));
                event.insert(
                    "outcome".into(),
                    json!(if is_error { "tool_error" } else { "result" }),
                );
            }
        }
        event.insert(
            "durationMs".into(),
            json!(pending.started.elapsed().as_secs_f64() * 1000.0),
        );
        event.insert("bytesIn".into(), json!(pending.bytes));
        event.insert("bytesOut".into(), json!(bytes));
        if let Some(arguments) = &pending.arguments {
            event.insert("arguments".into(), arguments.clone());
        }
        self.write(event);
    }

    /// The event of a message nothing pairs with: refused (with the error
    /// code it got) or passed.
    pub fn one(
        &self,
        scope: &Scope,
        direction: Direction,
        message: &Value,
        decision: &str,
        rule: &str,
        error: Option<i64>,
    ) {
        let kind = super::kind_of(message);
        let mut event = base_event(scope, direction, kind);
        if let Some(id) = message.get("id") {
            event.insert("id".into(), id.clone());
        }
        event.insert(
            "method".into(),
            message.get("method").cloned().unwrap_or(json!("")),
        );
        event.insert("name".into(), json!(named(message).unwrap_or("")));
        event.insert("decision".into(), json!(decision));
        event.insert("rule".into(), json!(rule));
        event.insert(
            "outcome".into(),
            json!(if error.is_some() { "refused" } else { "passed" }),
        );
        if let Some(code) = error {
            event.insert("errorCode".into(), json!(code));
        }
        self.write(event);
    }
}

fn base_event(scope: &Scope, direction: Direction, kind: Kind) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("direction".into(), json!(direction.as_str()));
    event.insert("kind".into(), json!(kind_name(kind)));
    event.insert("session".into(), json!(scope.session));
    event.insert("version".into(), json!(scope.version));
    if let Some(identity) = &scope.identity {
        event.insert("principal".into(), json!(identity.subject));
        event.insert("issuer".into(), json!(identity.issuer));
    }
    event
}
