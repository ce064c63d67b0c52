//! Server to client: JSON answers and each event of a stream, as it comes.

use bytes::Bytes;
use serde_json::{Value, json};
use shadowcat_crds::Decision;

use super::eval::{Activation, Facts};
use super::{
    Direction, Exchange, LISTS, Policy, Scope, Verdict, error_response, key_param, kind_of, named, same_id,
    to_bytes,
};
use crate::mcp::jsonrpc::Kind;

impl Policy {
    /// Decides a whole JSON answer (one message or a batch); `None` to send
    /// it unchanged.
    pub async fn server_body(&self, scope: &Scope, exchange: &mut Exchange, body: &[u8]) -> Option<Bytes> {
        let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let (messages, batch) = match parsed {
            Value::Array(messages) => (messages, true),
            single => (vec![single], false),
        };
        let mut kept = Vec::with_capacity(messages.len());
        let mut changed = false;
        for mut message in messages {
            match self
                .server_message(scope, exchange, &mut message, body.len())
                .await
            {
                Verdict::Same => kept.push(message),
                Verdict::Replace(_) => {
                    changed = true;
                    kept.push(message);
                }
                // A JSON answer holds responses; a withheld one was
                // replaced by an error, so these are for stray messages.
                Verdict::Drop | Verdict::Answer { .. } => changed = true,
            }
        }
        if !changed {
            return None;
        }
        Some(match (batch, kept.len()) {
            (false, 1) => to_bytes(&kept[0]),
            _ => to_bytes(&Value::Array(kept)),
        })
    }

    /// Decides one event's data from the server.
    pub async fn server_event(&self, scope: &Scope, exchange: &mut Exchange, data: &str) -> Verdict {
        let Ok(mut message) = serde_json::from_str::<Value>(data) else {
            return Verdict::Same;
        };
        if let Value::Array(messages) = message {
            // A batch in one event (2025-03-26): decide each.
            let mut kept = Vec::new();
            let mut answers = Vec::new();
            let mut changed = false;
            for mut m in messages {
                match Box::pin(self.server_message(scope, exchange, &mut m, data.len())).await {
                    Verdict::Same => kept.push(m),
                    Verdict::Replace(_) => {
                        changed = true;
                        kept.push(m);
                    }
                    Verdict::Drop => changed = true,
                    Verdict::Answer { replies, .. } => {
                        changed = true;
                        answers.extend(replies);
                    }
                }
            }
            let rest = (!kept.is_empty())
                .then(|| String::from_utf8_lossy(&to_bytes(&Value::Array(kept))).into_owned());
            return match (changed, answers.is_empty(), rest) {
                (false, ..) => Verdict::Same,
                (true, false, rest) => Verdict::Answer {
                    replies: answers,
                    rest,
                },
                (true, true, None) => Verdict::Drop,
                (true, true, Some(rest)) => Verdict::Replace(rest),
            };
        }
        match self
            .server_message(scope, exchange, &mut message, data.len())
            .await
        {
            Verdict::Replace(_) => {
                Verdict::Replace(String::from_utf8_lossy(&to_bytes(&message)).into_owned())
            }
            other => other,
        }
    }

    /// One message from the server; `message` holds the outcome when the
    /// verdict is [`Verdict::Replace`].
    async fn server_message(
        &self,
        scope: &Scope,
        exchange: &mut Exchange,
        message: &mut Value,
        bytes: usize,
    ) -> Verdict {
        let kind = kind_of(message);
        let answered = (kind == Kind::Response)
            .then(|| {
                let id = message.get("id")?;
                let at = exchange.iter().position(|p| same_id(&p.id, id))?;
                Some(exchange.swap_remove(at))
            })
            .flatten();
        let method = match &answered {
            Some(p) => p.method.clone(),
            None => message
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        };
        let name = match &answered {
            Some(p) => p.name.clone(),
            None => named(message).unwrap_or("").to_owned(),
        };
        let mut changed = false;
        if kind == Kind::Response && message.get("result").is_some() {
            changed |= self.filter_list(scope, &method, message);
        }
        let facts = Facts {
            direction: Direction::Server,
            kind,
            method: &method,
            name: &name,
            message,
        };
        let activation = Activation::new(&self.env, &self.reads, scope, &facts);
        let (decision, rule) = self.decide(&activation);
        drop(activation);
        let refusal = match decision {
            Decision::Deny => Some(self.denial(rule.to_owned(), "", &name)),
            Decision::Allow => match self
                .run_hooks(scope, Direction::Server, kind, &method, &name, message)
                .await
            {
                Ok(modified) => {
                    changed |= modified;
                    None
                }
                Err(refusal) => Some(refusal),
            },
        };
        let Some(refusal) = refusal else {
            self.count(Direction::Server, "allow", rule);
            if let Some(audit) = &self.audit {
                match answered {
                    Some(pending) => audit.pair(scope, &pending, message, bytes),
                    // Server requests (sampling, elicitation) are audited; its
                    // notifications (progress, logs) would drown the rest.
                    None if kind == Kind::Request => {
                        audit.one(scope, Direction::Server, message, "allow", rule, None)
                    }
                    None => {}
                }
            }
            return if changed {
                Verdict::Replace(String::new())
            } else {
                Verdict::Same
            };
        };
        self.refused(scope, Direction::Server, kind, &method, &name, message, &refusal);
        match kind {
            Kind::Response => {
                // The client still gets an answer to its request.
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                *message = error_response(&id, &refusal);
                if let (Some(audit), Some(pending)) = (&self.audit, answered) {
                    audit.pair(scope, &pending, message, bytes);
                }
                Verdict::Replace(String::new())
            }
            Kind::Request => {
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                Verdict::Answer {
                    replies: vec![to_bytes(&error_response(&id, &refusal))],
                    rest: None,
                }
            }
            Kind::Notification => Verdict::Drop,
        }
    }

    /// Filters and renames a list result; whether anything changed.
    fn filter_list(&self, scope: &Scope, method: &str, message: &mut Value) -> bool {
        let Some(&(_, field, stands_for, key)) = LISTS.iter().find(|(m, ..)| *m == method) else {
            return false;
        };
        let Some(items) = message
            .pointer_mut(&format!("/result/{field}"))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = items.len();
        let mut renamed = false;
        items.retain_mut(|item| {
            let Some(name) = item.get(key).and_then(Value::as_str).map(str::to_owned) else {
                return true;
            };
            if stands_for == "tools/call" && !self.tools.visible(&name) {
                return false;
            }
            let probe = json!({
                "jsonrpc": "2.0", "id": 0, "method": stands_for,
                "params": { key_param(key): name, "arguments": {} },
            });
            let facts = Facts {
                direction: Direction::Client,
                kind: Kind::Request,
                method: stands_for,
                name: &name,
                message: &probe,
            };
            let activation = Activation::new(&self.env, &self.reads, scope, &facts);
            if self.decide(&activation).0 == Decision::Deny {
                return false;
            }
            if stands_for == "tools/call"
                && let Some((to, description)) = self.tools.shown(&name)
                && let Some(tool) = item.as_object_mut()
            {
                tool.insert("name".into(), json!(to));
                if let Some(description) = description {
                    tool.insert("description".into(), json!(description));
                }
                renamed = true;
            }
            true
        });
        renamed || items.len() != before
    }
}
